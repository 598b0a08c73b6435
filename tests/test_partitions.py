"""Partitioned extraction (bounded memory) writes exactly what one in-memory partition writes.

The oracle is the run of one partition (the capture's packet table, plan and streams held
at once in memory, itself checked against tshark, real stacks and crafted truths by the
rest of the suite): cutting the capture by flow into partitions spilled to disk, numbering
sessions per partition and ranking them globally, planning and writing partition by
partition, in any order and on any number of workers, must not change one byte of the
output.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tcpweave
from conftest import corpus_captures, stream_tree
from tcpweave.capture import open_sources
from tcpweave.capture.pieces import pieces
from tcpweave.errors import Interrupted
from tcpweave.run import driver
from tcpweave.run import extract as run_extract
from tcpweave.run.spill import partition_of

CAPTURES = corpus_captures()


def _whole(capture: Path, out: Path) -> dict[str, str]:
    """The tree of one in-memory partition."""
    tcpweave.extract(capture, out, partition_rows=1 << 40, jobs=1)
    return stream_tree(out)


@pytest.mark.parametrize("capture", CAPTURES, ids=[p.name for p in CAPTURES])
def test_partitioned_output_equals_whole_capture_output(capture: Path, tmp_path: Path) -> None:
    expected = _whole(capture, tmp_path / "whole")
    # a few hundred rows per partition: every corpus capture with more than a handful of
    # flows is spread over several partitions
    tcpweave.extract(capture, tmp_path / "parts", partition_rows=40, jobs=1)
    assert stream_tree(tmp_path / "parts") == expected


def test_partitions_hold_whole_flows(generated: dict[str, Any]) -> None:
    with tcpweave.open([generated["path"]]) as cap:
        parts = partition_of(cap.packets.columns, 7)
        flows = cap.flows
    # every stream's packets share one partition, and packets of both directions agree
    first = np.full(flows.n_streams, -1)
    first[flows.stream[::-1]] = parts[::-1]
    assert np.array_equal(first[flows.stream], parts)
    assert len(np.unique(parts)) == 7


@pytest.fixture(scope="module")
def generated(tmp_path_factory: Any) -> dict[str, Any]:
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "bench"))
    extract_bench: Any = pytest.importorskip("extract")
    params = extract_bench.GenParams(size=3 << 20, sessions=1500, seed=23)
    out = tmp_path_factory.mktemp("gen") / "sessions.pcap"
    capture = extract_bench.ensure_capture(params, out)
    capture["bench"] = extract_bench
    return capture  # type: ignore[no-any-return]


def test_interrupted_run_lists_what_is_complete_and_resume_finishes(
    generated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = generated["path"]
    tcpweave.extract(path, tmp_path / "fresh", partition_rows=2000, jobs=1)
    fresh = stream_tree(tmp_path / "fresh")
    out = tmp_path / "out"
    from tcpweave.run import extraction as extract_module

    real = extract_module.write_partition
    calls = []

    def flaky(part: Any, job: Any) -> Any:
        calls.append(part.index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(part, job)

    monkeypatch.setattr(extract_module, "write_partition", flaky)
    with pytest.raises(Interrupted) as info:
        tcpweave.extract(path, out, partition_rows=2000, jobs=1)
    assert info.value.done == 2 and info.value.total > 3
    listed = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
    partial = set(json.loads((out / "INCOMPLETE.json").read_text())["partial_streams"])
    fresh_lines = (tmp_path / "fresh" / "streams.jsonl").read_text().splitlines()
    # the listed streams are complete (their lines and files are final) and disjoint from
    # the partial ones; together they are all streams
    assert listed and set(map(json.dumps, listed)) <= set(
        map(json.dumps, map(json.loads, fresh_lines))
    )
    assert not partial & {r["stream"] for r in listed}
    assert partial | {r["stream"] for r in listed} == {json.loads(x)["stream"] for x in fresh_lines}
    for rec in listed:
        if rec["path"]:
            assert hashlib.sha256((out / rec["path"]).read_bytes()).hexdigest() == rec["sha256"]
    monkeypatch.setattr(extract_module, "write_partition", real)
    with pytest.raises(tcpweave.UsageError, match="other options"):
        tcpweave.extract(path, out, partition_rows=2000, jobs=1, resume=True, gaps="omit")
    tcpweave.extract(path, out, partition_rows=2000, jobs=1, resume=True)
    assert stream_tree(out) == fresh
    assert not (out / ".tcpweave" / "work").exists()


def test_two_jobs_write_what_one_job_writes_and_match_the_truth(
    generated: dict[str, Any], tmp_path: Path
) -> None:
    trees = {}
    for jobs in (1, 2):
        tcpweave.extract(generated["path"], tmp_path / f"j{jobs}", partition_rows=1500, jobs=jobs)
        trees[jobs] = stream_tree(tmp_path / f"j{jobs}")
    assert trees[1] == trees[2]
    check = generated["bench"].check_output(tmp_path / "j2", generated["truth"], True)
    assert check["exact"] == check["expected"] > 0
    assert check["mismatched"] == check["missing"] == check["unexpected"] == 0


def test_compressed_and_fragmented_captures_with_mapped_workers(tmp_path: Path) -> None:
    """Workers that map files by path (as Dask workers do) decode a compressed capture from
    its decompressed copy in the work directory, and find the payloads of rebuilt IP
    datagrams in the partitions' payload spill."""
    frag = [p for p in CAPTURES if "frag" in p.name.lower() and p.suffix == ".pcap"]
    if not frag:
        pytest.skip("no fragmented capture in the corpus")
    src = frag[0]
    gz = tmp_path / (src.name + ".gz")
    gz.write_bytes(gzip.compress(src.read_bytes()))
    expected = _whole(src, tmp_path / "whole")
    run_extract([str(gz)], tmp_path / "mapped", rows_per_partition=10,
                executor=_InProcessMapped())  # fmt: skip
    assert stream_tree(tmp_path / "mapped") == expected


class _InProcessMapped:
    """An executor that runs tasks here but is not a local pool: like a Dask worker, each
    task gets paths and the work directory, nothing inherited from the driver."""

    workers = 1
    shares_memory = False

    def __enter__(self) -> _InProcessMapped:
        return self

    def map(self, fn: Any, args: list[tuple[Any, ...]], warm: Any = None) -> Any:
        for a in args:
            yield fn(*a)

    def __exit__(self, *exc: object) -> None:
        pass


def test_files_decoded_by_mapped_workers_with_fragments_across_files(tmp_path: Path) -> None:
    """Several files: each is decoded by a worker (fragments collected there, datagrams
    rebuilt by the driver, even when their fragments sit in different files); one of
    the files is compressed; one has a damaged record, reported with its own name."""
    frag = [p for p in CAPTURES if "frag" in p.name.lower() and p.suffix == ".pcap"]
    if not frag:
        pytest.skip("no fragmented capture in the corpus")
    src = max(frag, key=lambda p: p.stat().st_size)
    data = src.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        pytest.skip("the split below reads little-endian microsecond pcap")
    header, records, pos = data[:24], [], 24
    while pos + 16 <= len(data):
        caplen = int.from_bytes(data[pos + 8 : pos + 12], "little")
        records.append(data[pos : pos + 16 + caplen])
        pos += 16 + caplen
    third = -(-len(records) // 3)
    cut = [records[i * third : (i + 1) * third] for i in range(3)]
    paths = []
    for i, part in enumerate(cut):
        body = header + b"".join(part)
        path = tmp_path / f"piece{i}.pcap"
        if i == 1:
            path = tmp_path / f"piece{i}.pcap.gz"
            path.write_bytes(gzip.compress(body))
        else:
            path.write_bytes(body)
        paths.append(path)
    expected = _whole(src, tmp_path / "whole")
    run_extract([str(p) for p in paths], tmp_path / "mapped", rows_per_partition=5,
                executor=_InProcessMapped())  # fmt: skip
    assert stream_tree(tmp_path / "mapped") == expected
    # a damaged last file: its error names it, the rest still comes out
    bad = tmp_path / "piece2.pcap"
    bad.write_bytes(bad.read_bytes() + b"\x00" * 7)
    _, run = run_extract([str(p) for p in paths], tmp_path / "damaged", rows_per_partition=5,
                         executor=_InProcessMapped())  # fmt: skip
    assert [e.path for e in run.capture_errors()] == [str(bad)]
    assert run.decode_stats().corrupt_records == 1


def test_streams_command_partition_by_partition_equals_whole(
    generated: dict[str, Any], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from tcpweave.cli import app

    outs = {}
    for rows in ("100000000", "400"):  # whole capture at once / dozens of partitions
        result = CliRunner().invoke(
            app,
            ["streams", generated["path"], "--format", "jsonl", "--partition-rows", rows,
             "--jobs", "2"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        outs[rows] = result.stdout
    assert outs["400"] == outs["100000000"]
    assert len(outs["400"].splitlines()) == 1500


@pytest.mark.parametrize("caplen", [1 << 30, 70000], ids=["absurd", "above-snaplen"])
def test_one_pcap_cut_into_record_ranges_for_workers(
    generated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplen: int
) -> None:
    """A big pcap file is decoded by several workers, each from a record boundary found by
    the driver's index pass: same streams, same damage reports as one sequential walk."""
    data = bytearray(Path(generated["path"]).read_bytes())
    # damage one record header in the middle: an absurd capture length, or one above the
    # snaplen that the next header does not confirm, forces a resync
    pos, n = 24, 0
    while n < 5000:
        pos += 16 + int.from_bytes(data[pos + 8 : pos + 12], "little")
        n += 1
    data[pos + 8 : pos + 12] = caplen.to_bytes(4, "little")
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(bytes(data))
    _, whole = run_extract([str(damaged)], tmp_path / "one")
    monkeypatch.setattr(driver, "RANGE_BYTES", 200_000)
    sources = open_sources([str(damaged)], None, populate=False)
    try:
        cut = pieces(sources, driver.RANGE_BYTES)
    finally:
        for src in sources:
            src.close()
    assert len(cut) > 10 and all(p.start < p.end for p in cut)
    _, ranged = run_extract([str(damaged)], tmp_path / "ranges", rows_per_partition=2000,
                            executor=_InProcessMapped())  # fmt: skip
    assert stream_tree(tmp_path / "ranges") == stream_tree(tmp_path / "one")
    assert list(map(str, ranged.capture_errors())) == list(map(str, whole.capture_errors()))
    assert [e.offset for e in whole.capture_errors()] == [pos]
    assert ranged.decode_stats() == whole.decode_stats()
    assert whole.decode_stats().skipped_bytes == whole.capture_errors()[0].skipped > 0


def test_ctrl_c_on_the_command_line_then_resume(generated: dict[str, Any], tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole process group, workers included) to `tcpweave extract
    --jobs 2` while partitions are being written: exit 130, a consistent directory, and
    --resume completes it exactly. The signal is sent from inside the run at a fixed point
    (tcpweave/_faults.py), so the test does not depend on timing."""
    import os
    import subprocess
    import sys

    tcpweave.extract(generated["path"], tmp_path / "fresh", partition_rows=100, jobs=1)
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "tcpweave"
    cmd = [str(exe), "extract", generated["path"], "-o", str(out), "--jobs", "2",
           "--partition-rows", "100"]  # fmt: skip
    env = {**os.environ, "TCPWEAVE_FAULT": "write@3=driver:ctrl-c"}
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=300, start_new_session=True)
    assert proc.returncode == 130, proc.stderr.decode()
    assert b"--resume" in proc.stderr and b"Traceback" not in proc.stderr
    marker = json.loads((out / "INCOMPLETE.json").read_text())
    partial = set(marker["partial_streams"])
    listed = {json.loads(x)["stream"] for x in (out / "streams.jsonl").read_text().splitlines()}
    assert partial and not partial & listed
    env.pop("TCPWEAVE_FAULT")
    done = subprocess.run([*cmd, "--resume"], capture_output=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert stream_tree(out) == stream_tree(tmp_path / "fresh")


def test_several_files_decoded_by_local_workers(
    generated: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--jobs 2 on a rotated capture (and on one pcap cut into record ranges): the files
    are decoded by the forked workers, the output is the one-process output."""
    from craft import split_pcap

    tcpweave.extract(generated["path"], tmp_path / "one", jobs=1, partition_rows=1000)
    expected = stream_tree(tmp_path / "one")
    cuts = split_pcap(Path(generated["path"]), 4, tmp_path)
    _, run = tcpweave.extract(cuts, tmp_path / "cuts", jobs=2, partition_rows=1000)
    assert run.state is not None
    assert len(run.state.layout.tags) == 5  # four pieces decoded by workers, one defrag
    assert stream_tree(tmp_path / "cuts") == expected
    monkeypatch.setattr(driver, "RANGE_BYTES", 300_000)
    _, run = tcpweave.extract(generated["path"], tmp_path / "ranges", jobs=2, partition_rows=1000)
    assert run.state is not None and len(run.state.layout.tags) > 3
    assert stream_tree(tmp_path / "ranges") == expected


@pytest.mark.parametrize("capture", CAPTURES, ids=[p.name for p in CAPTURES])
def test_gathered_blocks_give_the_same_bytes(
    capture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writers' gathered runs (one kernel copy per block) carry exactly the bytes of the
    per-segment views, gaps filled or omitted; also when the block's budget runs out."""
    from tcpweave.output import streams as streams_module

    with tcpweave.open([capture]) as cap:
        views = cap.stream_views()
        plain = [d for st in views.block(0, len(views)) for d in (st.c2s, st.s2c)]
        rows = views.columns(0, len(views)).row_bounds
        for budget in (1 << 26, 3000):
            monkeypatch.setattr(streams_module, "GATHER_BYTES", budget)
            j = 0
            while j < len(plain):  # gather after gather, as the writer does
                got = views.gather(rows[j:])
                for k, da in enumerate(plain[j : j + got.fits]):
                    runs = got.runs_of(k)
                    db = {g: streams_module.join_runs(runs, da.length, g) for g in ("fill", "omit")}
                    assert db["fill"] == da.bytes("fill")
                    assert db["omit"] == da.bytes("omit")
                j += max(got.fits, 1)


def test_sessions_are_numbered_once_per_run(generated: dict[str, Any], monkeypatch: Any) -> None:
    """Step 2 numbers each partition's sessions and keeps them; the tasks of step 3 load
    them (``assign`` is not called again) and see the same flows. Under another idle
    timeout the kept numbering is not used."""
    from tcpweave.flows import assign
    from tcpweave.run import Run, Settings
    from tcpweave.run import partition as partition_module

    with Run([generated["path"]], Settings(), whole=False, rows_per_partition=4000) as run:
        run.ranks()
        assert run.n_parts > 2
        layout, settings = run.state.layout, run.settings
        fresh = [assign(partition_module.load(layout, p, settings).packets)
                 for p in range(run.n_parts)]  # fmt: skip

        def no_numbering(*args: Any) -> Any:
            raise AssertionError("sessions numbered again")

        monkeypatch.setattr(partition_module, "assign", no_numbering)
        for p, want in enumerate(fresh):
            again = partition_module.load(layout, p, settings)
            for name in ("stream", "direction", "first_row", "client_side", "session",
                         "tuple_index"):  # fmt: skip
                assert np.array_equal(getattr(again.flows, name), getattr(want, name))
        monkeypatch.setattr(partition_module, "assign", assign)
        other = Settings(idle_timeout_ns=10**9)
        rows = run.state.rows[0]
        assert partition_module._saved_flows(layout, 0, settings, rows) is not None
        assert partition_module._saved_flows(layout, 0, other, rows) is None
