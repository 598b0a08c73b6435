"""Every option of every command is honoured at every input size.

One crafted capture holds what each option acts on: conflicting overlaps (--policy), a
segment with a bad checksum that nobody acknowledged (--checksums), a hole (--gaps), a
4-tuple that falls silent for 100 s (--idle-timeout), HTTP exchanges (pdus --framer
http), and enough sessions that ``--partition-rows 8`` cuts it into many partitions.
Each command runs with each option value twice -- one in-memory partition, and many
spilled partitions -- and must print (or write) the same thing both times; and each
option must change what comes out where its effect is present in the capture.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import stream_tree
from sessions import Trace

EXE = str(Path(sys.executable).parent / "tcpweave")
ONE, MANY = "1000000000", "8"


@pytest.fixture(scope="module")
def capture(tmp_path_factory: Any) -> str:
    trace = Trace()
    for k in range(30):  # filler sessions on distinct ports: many partitions
        s = trace.session(cport=41000 + k)
        s.handshake()
        s.c(0, b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % k)
        s.s(0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        s.close()
    over = trace.session(cport=42000)
    over.handshake()
    over.c(0, b"AAAAAAAA")
    over.c(2, b"BBBB")  # conflicting bytes: the policy picks
    over.close()
    bad = trace.session(cport=42001)
    bad.handshake()
    bad.c(0, b"good")
    bad.c(4, b"EVIL", checksum="bad", ack=None)
    bad.close()
    hole = trace.session(cport=42002)
    hole.handshake()
    hole.c(0, b"head")
    hole.c(10, b"tail")  # bytes 4..9 never captured
    hole.close()
    idle = trace.session(cport=42003)
    idle.handshake()
    idle.c(0, b"before")
    later = trace.next_ts() + 100 * 10**9
    idle.c(6, b"after", ts_ns=later)
    idle.c(11, b"again", ts_ns=later + 10**6)
    return str(trace.write(tmp_path_factory.mktemp("opts") / "options.pcap"))


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, (args, done.stderr)
    return done


def _both(*args: str) -> str:
    """stdout of the command on one partition, checked equal on many partitions."""
    one = _run(*args, "--partition-rows", ONE).stdout
    many = _run(*args, "--partition-rows", MANY, "--jobs", "2").stdout
    assert one == many, args
    return one


# ----------------------------------------------------------------------------- streams etc.

VARIANTS = {
    "streams": [
        ["--format", "jsonl"], ["--format", "csv"], ["--format", "table"],
        ["--format", "jsonl", "--policy", "last"], ["--format", "jsonl", "--checksums", "ignore"],
        ["--format", "jsonl", "--checksums", "strict"],
    ],
    "audit": [
        ["--json"], ["--json", "--policy", "last"], ["--json", "--checksums", "ignore"],
        ["--json", "--port-range", "40000-41010"], [],
    ],
    "pdus": [
        ["--framer", "http", "--format", "jsonl"],
        ["--framer", "http", "--format", "jsonl", "--data"],
        ["--framer", "http", "--format", "jsonl", "--stream", "3", "--stream", "30"],
        ["--framer", "http", "--format", "table"],
        ["--framer", "fixed:size=4", "--format", "jsonl", "--data", "--policy", "last"],
        ["--framer", "fixed:size=4", "--format", "jsonl", "--data", "--checksums", "ignore"],
    ],
    "packets": [["--format", "csv"], ["--format", "jsonl", "--limit", "50"], ["--limit", "7"]],
    "info": [[]],
}  # fmt: skip
CASES = [(cmd, v) for cmd, variants in VARIANTS.items() for v in variants]


@pytest.mark.parametrize(
    ("command", "options"), CASES, ids=[f"{c} {' '.join(v)}" for c, v in CASES]
)
def test_same_output_on_one_and_many_partitions(
    capture: str, command: str, options: list[str]
) -> None:
    assert _both(command, capture, *options)


@pytest.mark.parametrize("fmt", ["ascii", "hex", "raw", "yaml"])
def test_follow_every_format_every_size(capture: str, fmt: str) -> None:
    for stream in ("0", "30", "33"):
        assert _both("follow", capture, stream, "--format", fmt)


def _jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_options_change_what_comes_out(capture: str) -> None:
    """Each option acts on the capture: the values differ where its effect is present."""
    first = _jsonl(_both("streams", capture, "--format", "jsonl"))
    fixed = ("pdus", capture, "--framer", "fixed:size=4", "--format", "jsonl", "--data")
    assert _both(*fixed) != _both(*fixed, "--policy", "last")  # the conflicting overlap
    ignore = _jsonl(_both("streams", capture, "--format", "jsonl", "--checksums", "ignore"))
    assert sum(r["bytes_c2s"] for r in ignore) == sum(r["bytes_c2s"] for r in first) + 4
    audit = json.loads(_both("audit", capture, "--json"))
    ranged = json.loads(_both("audit", capture, "--json", "--port-range", "40000-41010"))
    assert audit["port_reuse"] != ranged["port_reuse"]
    three = _jsonl(_both("pdus", capture, "--framer", "http", "--format", "jsonl",
                         "--stream", "3"))  # fmt: skip
    assert {r["stream"] for r in three} == {3} and len(three) == 2
    data = _jsonl(_both("pdus", capture, "--framer", "http", "--format", "jsonl", "--data"))
    assert all("data" in r for r in data)
    limited = _both("packets", capture, "--format", "jsonl", "--limit", "50")
    assert len(limited.splitlines()) == 50


# ----------------------------------------------------------------------------- extract

EXTRACT_VARIANTS = [
    [], ["--policy", "last"], ["--checksums", "ignore"], ["--gaps", "omit"],
    ["--layout", "tcpflow"], ["--idle-timeout", "10"], ["--parquet"],
]  # fmt: skip


def _extract(capture: str, out: Path, rows: str, *options: str) -> dict[str, str]:
    jobs = ["--jobs", "2"] if rows == MANY else ["--jobs", "1"]
    _run("extract", capture, "-o", str(out), "--partition-rows", rows, *jobs, *options)
    tree = stream_tree(out)
    for name in ("packets.parquet", "plan.parquet"):  # compared by content, not bytes
        if name in tree:
            import pyarrow.parquet as pq

            table = pq.read_table(out / name)
            tree[name] = hashlib.sha256(str(table.to_pydict()).encode()).hexdigest()
    return tree


@pytest.mark.parametrize("options", EXTRACT_VARIANTS, ids=lambda v: " ".join(v) or "defaults")
def test_extract_same_tree_on_one_and_many_partitions(
    capture: str, tmp_path: Path, options: list[str]
) -> None:
    one = _extract(capture, tmp_path / "one", ONE, *options)
    many = _extract(capture, tmp_path / "many", MANY, *options)
    assert one == many


def test_extract_options_change_the_tree(capture: str, tmp_path: Path) -> None:
    trees = {
        " ".join(v): _extract(capture, tmp_path / f"v{k}", MANY, *v)
        for k, v in enumerate(EXTRACT_VARIANTS)
    }
    base = trees[""]
    for key, tree in trees.items():
        if key:
            assert tree != base, key

    def sessions(k: int) -> int:
        return len({r["stream"] for r in _jsonl((tmp_path / f"v{k}/streams.jsonl").read_text())})

    # 100 s of silence on one 4-tuple: a session more with a 10 s idle timeout
    assert sessions(EXTRACT_VARIANTS.index(["--idle-timeout", "10"])) == sessions(0) + 1


def test_extract_workdir_resume_force_at_every_size(capture: str, tmp_path: Path) -> None:
    expected = _extract(capture, tmp_path / "plain", ONE)
    work = tmp_path / "work"
    work.mkdir()
    for rows in (ONE, MANY):
        out = tmp_path / f"out-{rows}"
        assert _extract(capture, out, rows, "--workdir", str(work)) == expected
        assert list(work.iterdir()) == []  # its own directory made and removed
        assert _extract(capture, out, rows, "--resume") == expected  # finished: redone
        assert _extract(capture, out, rows, "--force", "--gaps", "omit") != expected
