"""``extract --store``: the streams as a Parquet dataset, read back with and without tcpweave.

Oracles: the file tree of the same extraction (its files and streams.jsonl), tshark's
``follow,tcp,raw`` output, and the corpus MANIFEST's stated outcome for a capture with a
hole. The store is read back by pyarrow, polars and DuckDB (each skipped when missing),
written on one in-memory partition and on many spilled ones, and stopped by the fault
points of ``tcpweave/_faults.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import tcpweave
from sessions import Trace
from tcpweave.output import store as store_module
from tcpweave.output.store import STORE_SCHEMA

CORPUS = Path(os.environ.get("TCPWEAVE_CORPUS", "/work/shared/corpus"))
WIKIPEDIA = CORPUS / "zeek" / "wikipedia.pcap"
GAP = CORPUS / "suricata-verify" / "eve-payload-05-tcp-data-gap" / "tcp-simple-gap2.pcap"
EXE = str(Path(sys.executable).parent / "tcpweave")


def _corpus(path: Path) -> str:
    if not path.exists():
        pytest.skip(f"corpus capture {path} not present")
    return str(path)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: Any) -> str:
    """Sessions with a hole, a conflicting overlap, and enough of them for many partitions."""
    trace = Trace()
    for k in range(20):
        s = trace.session(cport=41000 + k)
        s.handshake()
        s.c(0, b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % k)
        s.s(0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" * (k + 1))
        s.close()
    hole = trace.session(cport=42002)
    hole.handshake()
    hole.c(0, b"head")
    hole.c(10, b"tail")  # bytes 4..9 never captured
    hole.s(0, b"x" * 3000)
    hole.close()
    over = trace.session(cport=42000)
    over.handshake()
    over.c(0, b"AAAAAAAA")
    over.c(2, b"BBBB")
    over.close()
    return str(trace.write(tmp_path_factory.mktemp("store") / "crafted.pcap"))


def _rows(out: Path) -> dict[tuple[int, str], dict[str, Any]]:
    """The store's rows (read by pyarrow alone) by (stream, direction), pieces joined."""
    table = pq.read_table(out / "streams")
    assert table.schema.equals(STORE_SCHEMA, check_metadata=False)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for r in sorted(table.to_pylist(), key=lambda r: r["piece"]):
        key = (r["stream"], r["direction"])
        if key in rows:
            assert r["data_offset"] == len(rows[key]["data"])
            rows[key]["data"] += r["data"]
        else:
            rows[key] = r
    return rows


def _check_against_tree(store: Path, tree: Path) -> None:
    """Every record of streams.jsonl is a row of the store with the file's bytes."""
    lines = [json.loads(x) for x in (tree / "streams.jsonl").read_text().splitlines()]
    rows = _rows(store)
    assert sorted(rows) == sorted((x["stream"], x["direction"]) for x in lines)
    for line in lines:
        row = rows[(line["stream"], line["direction"])]
        data = (tree / line["path"]).read_bytes() if line["path"] else b""
        assert row["data"] == data, line
        for name, value in line.items():
            if name in ("first_ts", "last_ts"):  # float seconds there, nanoseconds here
                stamp = row[name].timestamp()
                assert abs(stamp - value) < 1e-6, (name, stamp, value)
            elif name != "path":
                assert row[name] == value, (name, row[name], value)


OPTIONS = [{}, {"gaps": "omit"}, {"policy": "last"}, {"checksums": "ignore"},
           {"idle_timeout": 10.0, "partition_rows": 8, "jobs": 2}]  # fmt: skip


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: str(o) if o else "defaults")
def test_store_holds_the_file_tree(crafted: str, tmp_path: Path, options: dict[str, Any]) -> None:
    """Every option means the same for the store as for the file tree."""
    options = {"jobs": 1, **options}
    tcpweave.extract(crafted, tmp_path / "tree", **options)
    tcpweave.extract(crafted, tmp_path / "store", store=True, **options)
    _check_against_tree(tmp_path / "store", tmp_path / "tree")
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["store"]["files"][0] == "streams/part-00000.parquet"
    assert not (tmp_path / "store" / "streams.jsonl").exists()


def test_store_of_a_corpus_capture_matches_tree_and_tshark(tmp_path: Path) -> None:
    cap = _corpus(WIKIPEDIA)
    tcpweave.extract(cap, tmp_path / "tree", jobs=1)
    tcpweave.extract(cap, tmp_path / "store", jobs=1, store=True)
    _check_against_tree(tmp_path / "store", tmp_path / "tree")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    store = tcpweave.open_store(tmp_path / "store")
    for stream in (0, 3, 9):
        assert store.stream(stream) == _tshark_follow_raw(cap, stream)


def test_store_of_the_sample_with_ipv6(tmp_path: Path) -> None:
    sample = str(Path(__file__).resolve().parent.parent / "examples" / "sample-http.pcap")
    tcpweave.extract(sample, tmp_path / "tree", jobs=1)
    tcpweave.extract(sample, tmp_path / "store", jobs=1, store=True)
    _check_against_tree(tmp_path / "store", tmp_path / "tree")
    assert any(":" in r["src"] for r in _rows(tmp_path / "store").values())


def _tshark_follow_raw(path: str, stream: int) -> tuple[bytes, bytes]:
    """Both directions of a stream as ``tshark -z follow,tcp,raw,N`` prints them (the
    client's chunks unindented, the server's indented by a tab)."""
    text = subprocess.run(
        ["tshark", "-q", "-r", path, "-z", f"follow,tcp,raw,{stream}"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    body = text.split("Node 1:", 1)[1].split("\n", 1)[1].split("=" * 20, 1)[0]
    lines = [x for x in body.splitlines() if x.strip()]
    c2s = b"".join(bytes.fromhex(x) for x in lines if not x[0].isspace())
    s2c = b"".join(bytes.fromhex(x.strip()) for x in lines if x[0].isspace())
    return c2s, s2c


def test_gap_is_zero_filled_at_its_offset(tmp_path: Path) -> None:
    """MANIFEST: the stream is ``VERY[4 bytes missing]DATA``."""
    tcpweave.extract(_corpus(GAP), tmp_path / "store", jobs=1, store=True)
    store = tcpweave.open_store(tmp_path / "store")
    records = store.records().to_pylist()
    [gapped] = [r for r in records if r["gaps"]]
    assert gapped["gap_list"] == [{"offset": 4, "length": 4, "reason": "not-captured"}]
    data = store.direction(gapped["stream"], gapped["direction"])
    assert data == b"VERY\x00\x00\x00\x00DATA"
    assert gapped["sha256"] == hashlib.sha256(data).hexdigest() and gapped["length"] == 12


def test_crafted_hole_and_conflict(crafted: str, tmp_path: Path) -> None:
    tcpweave.extract(crafted, tmp_path / "store", jobs=1, store=True)
    store = tcpweave.open_store(tmp_path / "store")
    by_port = {(r["sport"], r["direction"]): r for r in store.records().to_pylist()}
    hole = by_port[(42002, "c2s")]
    assert hole["gap_list"] == [{"offset": 4, "length": 6, "reason": "not-captured"}]
    assert store.direction(hole["stream"], "c2s") == b"head" + bytes(6) + b"tail"
    over = by_port[(42000, "c2s")]
    assert over["conflicts"] == 1 and over["conflict_list"][0]["offset"] == 2
    assert store.direction(over["stream"], "c2s") == b"AAAAAAAA"  # policy first


def test_one_and_many_partitions_give_the_same_rows(crafted: str, tmp_path: Path) -> None:
    tcpweave.extract(crafted, tmp_path / "one", jobs=1, store=True)
    tcpweave.extract(crafted, tmp_path / "many", jobs=2, partition_rows=8, store=True)
    files = json.loads((tmp_path / "many" / "manifest.json").read_text())["store"]["files"]
    assert len(files) > 1
    assert _rows(tmp_path / "one") == _rows(tmp_path / "many")
    index = pq.read_table(tmp_path / "many" / "index.parquet").to_pylist()
    assert [r["stream"] for r in index] == sorted(r["stream"] for r in index)
    for r in index:  # each index row finds its row
        group = pq.ParquetFile(tmp_path / "many" / r["file"]).read_row_group(r["row_group"])
        row = group.slice(r["row"], 1).to_pylist()[0]
        assert (row["stream"], row["direction"], row["piece"]) == (
            r["stream"], r["direction"], r["piece"])  # fmt: skip


def test_long_directions_continue_on_more_rows(
    crafted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet holds a value of at most 2 GiB: a longer direction continues on following
    rows (shown here with a 100-byte limit), and batches are cut by bytes."""
    tcpweave.extract(crafted, tmp_path / "whole", jobs=1, store=True)
    monkeypatch.setattr(store_module, "MAX_PIECE", 100)
    monkeypatch.setattr(store_module, "BATCH_BYTES", 250)
    tcpweave.extract(crafted, tmp_path / "cut", jobs=1, store=True)
    table = pq.read_table(tmp_path / "cut" / "streams")
    assert max(table.column("piece").to_pylist()) > 10
    assert max(len(x) for x in table.column("data").to_pylist()) == 100
    assert pq.ParquetFile(tmp_path / "cut" / "streams" / "part-00000.parquet").num_row_groups > 5
    whole = _rows(tmp_path / "whole")
    cut = _rows(tmp_path / "cut")
    for key, row in whole.items():
        assert cut[key]["data"] == row["data"]
    store = tcpweave.open_store(tmp_path / "cut")
    stream = max(whole, key=lambda k: len(whole[k]["data"]))[0]
    assert store.stream(stream) == (whole[(stream, "c2s")]["data"], whole[(stream, "s2c")]["data"])
    assert store.records().num_rows == len(whole)


def test_parquet_tables_beside_the_store(crafted: str, tmp_path: Path) -> None:
    tcpweave.extract(crafted, tmp_path / "store", jobs=2, partition_rows=8, store=True,
                     parquet=True)  # fmt: skip
    tcpweave.extract(crafted, tmp_path / "tree", jobs=1, parquet=True)
    for name in ("packets.parquet", "plan.parquet"):
        assert pq.read_table(tmp_path / "store" / name).equals(
            pq.read_table(tmp_path / "tree" / name)
        )


def test_stream_option_keeps_only_those_streams(crafted: str, tmp_path: Path) -> None:
    tcpweave.extract(crafted, tmp_path / "store", jobs=2, partition_rows=8, store=True,
                     streams=[3, 20])  # fmt: skip
    assert {k[0] for k in _rows(tmp_path / "store")} == {3, 20}


def test_readers_without_tcpweave(crafted: str, tmp_path: Path) -> None:
    """polars and DuckDB read the part files as they are."""
    tcpweave.extract(crafted, tmp_path / "store", jobs=2, partition_rows=8, store=True)
    rows = _rows(tmp_path / "store")
    pattern = str(tmp_path / "store" / "streams" / "*.parquet")
    total = sum(len(r["data"]) for r in rows.values())
    polars = pytest.importorskip("polars")
    frame = polars.read_parquet(pattern)
    assert frame.height == len(rows)
    assert sum(len(x) for x in frame["data"].to_list()) == total
    hole = frame.filter((polars.col("sport") == 42002) & (polars.col("direction") == "c2s"))
    assert hole["data"][0] == b"head" + bytes(6) + b"tail"
    duckdb = pytest.importorskip("duckdb")
    [got] = duckdb.sql(
        f"select count(*), sum(octet_length(data)), sum(length) from '{pattern}'"
    ).fetchall()
    assert tuple(int(x) for x in got) == (len(rows), total, total)
    [(data,)] = duckdb.sql(
        f"select data from '{pattern}' where sport = 42002 and direction = 'c2s'"
    ).fetchall()
    assert bytes(data) == b"head" + bytes(6) + b"tail"


def _cli(*args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TCPWEAVE_FAULT", None)
    if fault:
        env["TCPWEAVE_FAULT"] = fault
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)


def test_cli_store_interrupted_then_resumed(crafted: str, tmp_path: Path) -> None:
    out = tmp_path / "store"
    args = ("extract", crafted, "--store", str(out), "--jobs", "2", "--partition-rows", "8")
    stopped = _cli(*args, fault="write@2=driver:sigterm")
    assert stopped.returncode == 143, stopped.stderr
    assert json.loads((out / "INCOMPLETE.json").read_text())["state"] == "interrupted"
    assert not (out / "manifest.json").exists()
    with pytest.raises(tcpweave.UsageError, match="not a finished tcpweave store"):
        tcpweave.open_store(out)
    resumed = _cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not (out / "INCOMPLETE.json").exists()
    tcpweave.extract(crafted, tmp_path / "plain", jobs=1, store=True)
    assert _rows(out) == _rows(tmp_path / "plain")
    again = _cli(*args)  # a finished store of the same run: replaced, nothing foreign
    assert again.returncode == 0, again.stderr
    assert _rows(out) == _rows(tmp_path / "plain")


def test_cli_store_failure_leaves_marker(crafted: str, tmp_path: Path) -> None:
    out = tmp_path / "store"
    failed = _cli("extract", crafted, "--store", str(out), "--jobs", "1", fault="merge=enospc")
    assert failed.returncode == 1, failed.stderr
    assert json.loads((out / "INCOMPLETE.json").read_text())["state"] == "failed"


def test_cli_wants_one_of_output_and_store(crafted: str, tmp_path: Path) -> None:
    both = _cli("extract", crafted, "-o", str(tmp_path / "a"), "--store", str(tmp_path / "b"))
    neither = _cli("extract", crafted)
    for done in (both, neither):
        assert done.returncode == 2 and "--store" in done.stderr, done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_batches_are_cut_by_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """About BATCH_BYTES of stream bytes a batch; a row longer than that is alone."""
    import numpy as np

    monkeypatch.setattr(store_module, "BATCH_BYTES", 250)
    length = np.array([10, 300, 10, 10, 200, 100, 0, 5])
    start = np.concatenate(([0], np.cumsum(length)[:-1]))
    assert store_module._batch_bounds(start, length) == [(0, 1), (1, 2), (2, 5), (5, 8)]
