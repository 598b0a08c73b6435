"""Per-packet session columns: ``stream`` equals tshark's ``tcp.stream`` for every TCP
packet of every corpus capture (the stored tshark field output), whether the capture is one
in-memory partition or cut into many spilled ones; ``packets --parquet`` writes the same
rows as ``--format jsonl``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import CORPUS, ROOT
from tcpweave import run as engine
from test_tcp_stream_diff import _compare, _parse, _tsv_for, _with_tsv

EXE = str(Path(sys.executable).parent / "tcpweave")


def _streams(path: Path, rows_per_partition: int) -> dict[int, int]:
    with engine.Run([str(path)], engine.Settings(), rows_per_partition=rows_per_partition) as run:
        out: dict[int, int] = {}
        for window in engine.packet_rows(run):
            frames = window.column("frame").to_pylist()
            out.update(zip(frames, window.column("stream").to_pylist(), strict=True))
        return out


@pytest.mark.parametrize("path", _with_tsv(), ids=lambda p: str(p.relative_to(CORPUS)))
@pytest.mark.parametrize("rows", [1 << 30, 8], ids=["one-partition", "many-partitions"])
def test_packet_stream_column_is_tsharks_tcp_stream(path: Path, rows: int) -> None:
    theirs = _parse(_tsv_for(path).read_text())
    _compare(theirs, _streams(path, rows), str(path.relative_to(CORPUS)))


def test_parquet_holds_the_jsonl_rows(tmp_path: Path) -> None:
    sample = str(ROOT / "examples" / "sample-http.pcap")
    jsonl = subprocess.run([EXE, "packets", sample, "--format", "jsonl"], capture_output=True,
                           text=True, check=True, timeout=300).stdout  # fmt: skip
    rows = [json.loads(line) for line in jsonl.splitlines()]
    out = tmp_path / "p.parquet"
    subprocess.run([EXE, "packets", sample, "--parquet", str(out)], check=True, timeout=300)
    table = pq.read_table(out)
    assert table.column("frame").to_pylist() == [r["frame"] for r in rows]
    assert table.column("stream").to_pylist() == [r["stream"] for r in rows]
    assert [("c2s", "s2c")[d] for d in table.column("direction").to_pylist()] == [
        r["direction"] for r in rows
    ]
    assert {r["stream"] for r in rows} == {0, 1, 2, 3}
