"""``tcpweave audit`` partition by partition reports exactly what the whole-capture audit does.

The oracle is the whole-capture audit (packet table, flows, plan and matrix of the
capture held at once, checked on crafted captures in test_audit.py). Cutting the
capture by flow into partitions, auditing each on its own and merging -- counts
summed, per-stream facts scattered to global indexes, P_b groups merged across
partitions, the matrix written batch by batch -- must not change one byte of
``audit --json`` nor of the CSV matrix (Parquet: the same schema and rows).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import NO_CORPUS, ROOT, corpus_captures
from tcpweave import run as engine
from tcpweave.audit import report
from tcpweave.cli.app import app
from tcpweave.run import commands
from test_audit import planted

CAPTURES = corpus_captures()
WHOLE = "1000000000"  # --partition-rows: every test capture is audited whole


def _audit(capture: Path | str, rows: str, *extra: str) -> str:
    result = CliRunner().invoke(
        app, ["audit", str(capture), "--json", "--partition-rows", rows, *extra]
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_corpus_json_and_matrix_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every corpus capture: a partition every few packets (dozens to hundreds of
    partitions) gives the whole-capture JSON byte for byte; the largest captures also
    give the same CSV matrix, written a batch of three streams at a time."""
    if not CAPTURES:
        pytest.skip(NO_CORPUS)
    monkeypatch.setattr(commands, "MATRIX_BATCH_STREAMS", 3)
    several = 0
    largest = sorted(CAPTURES, key=lambda p: p.stat().st_size)[-6:]
    for capture in CAPTURES:
        extra: list[str] = []
        if capture in largest:
            extra = ["--matrix", str(tmp_path / "m.csv")]
        whole = _audit(capture, WHOLE, *extra)
        whole_matrix = (tmp_path / "m.csv").read_bytes() if extra else b""
        parts = _audit(capture, "5", "--jobs", "1", *extra)
        assert parts == whole, capture
        if extra:
            assert (tmp_path / "m.csv").read_bytes() == whole_matrix, capture
        several += json.loads(whole)["streams"]["sessions"] > 1
    assert several > 10  # captures whose sessions were spread over partitions


def test_planted_capture_port_groups_span_partitions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """test_audit's planted capture (nine sessions from one client to one server port, over
    eight client ports; a fragment, a bad checksum, a cut packet, a hole, a repeated
    payload...): partitions of a few packets give the same JSON and matrix, and its one
    P_b group is merged from several partitions."""
    path, _ = planted(tmp_path)
    whole = _audit(path, WHOLE, "--matrix", str(tmp_path / "whole.csv"))
    for rows in ("2", "8"):
        assert _audit(path, rows, "--matrix", str(tmp_path / "parts.csv")) == whole
        assert (tmp_path / "parts.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    seen: list[Any] = []
    real = report.merge_port_groups

    def spy(parts: list[Any]) -> Any:
        seen.extend(parts)
        return real(parts)

    monkeypatch.setattr(report, "merge_port_groups", spy)
    with engine.Run([str(path)], engine.Settings(), rows_per_partition=8) as run:
        merged = engine.audit(run)
    shares = [(int(g.sessions[0]), int(g.ports[0])) for g in seen if len(g.sessions)]
    # several partitions, some with several client ports, one with the reused port
    assert len(shares) > 2 and max(p for _, p in shares) > 1 and any(n > p for n, p in shares)
    assert (merged.reuse.groups, merged.reuse.observed) == (1, 1)
    assert (merged.reuse.top[0]["n"], merged.reuse.top[0]["reused"]) == (9, 1)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: Any) -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(ROOT / "bench"))
    extract_bench: Any = pytest.importorskip("extract")
    params = extract_bench.GenParams(size=3 << 20, sessions=1500, seed=23)
    out = tmp_path_factory.mktemp("gen") / "sessions.pcap"
    return extract_bench.ensure_capture(params, out)  # type: ignore[no-any-return]


def test_generated_capture_two_jobs(
    generated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/extract.py's generator (1,500 sessions, 4-tuple reuse, IPv6, reordering,
    retransmissions) over dozens of partitions on two workers."""
    path = generated["path"]
    monkeypatch.setattr(commands, "MATRIX_BATCH_STREAMS", 100)  # 15 row groups / CSV chunks
    whole = _audit(path, WHOLE, "--matrix", str(tmp_path / "whole.csv"))
    _audit(path, WHOLE, "--matrix", str(tmp_path / "whole.parquet"))
    parts = _audit(path, "400", "--jobs", "2", "--matrix", str(tmp_path / "parts.csv"))
    _audit(path, "400", "--jobs", "2", "--matrix", str(tmp_path / "parts.parquet"))
    assert parts == whole
    d = json.loads(whole)
    assert d["streams"]["sessions"] == 1500 and d["packets"]["total"] > 3000
    assert d["streams"]["reused_tuples"] > 0 and d["port_reuse"]["largest"]
    assert (tmp_path / "parts.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    a, b = pq.read_table(tmp_path / "parts.parquet"), pq.read_table(tmp_path / "whole.parquet")
    assert a.schema == b.schema and a.equals(b)
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.num_row_groups == 15
    assert len(a) == d["packets"]["total"]
