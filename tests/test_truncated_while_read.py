"""A capture truncated by another process while tcpweave reads it: one clear error line, a
non-zero exit status, and for ``extract`` an unfinished output directory -- never SIGBUS.

The truncation is injected deterministically: the fault point ``read`` (passed after each
chunk of 4096 records is indexed) with the action ``truncate`` cuts the file to 0 bytes
there, as ``truncate -s 0`` from another process would. The capture has 12,000 records
(three chunks), so the cut lands while the run still has records and payloads to read.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numba
import pytest

import tcpweave
from test_pcap_damage import _sessions, _write

EXE = str(Path(sys.executable).parent / "tcpweave")

pytestmark = pytest.mark.skipif(
    numba.config.DISABLE_JIT or not sys.platform.startswith("linux"),
    reason="the SIGBUS guard is a compiled handler, installed on Linux with the JIT on",
)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("orig") / "capture.pcap"
    _write(path, _sessions(3000))
    return path


def _run(*args: str, fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TCPWEAVE_FAULT"}
    if fault:
        env["TCPWEAVE_FAULT"] = fault
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)


def _one_error_line(done: subprocess.CompletedProcess[str], path: Path) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert done.returncode != 128 + signal.SIGBUS
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0] and "truncated while being read" in lines[0]
    return lines[0]


@pytest.mark.parametrize("size", ["whole", "spilled"])
def test_extract_of_a_capture_truncated_meanwhile_is_left_unfinished(
    original: Path, tmp_path: Path, size: str
) -> None:
    path = tmp_path / "capture.pcap"
    shutil.copy(original, path)
    out = tmp_path / "out"
    more = [] if size == "whole" else ["--partition-rows", "2000", "--jobs", "2"]
    done = _run("extract", str(path), "-o", str(out), *more, fault="read@2=truncate")
    _one_error_line(done, path)
    assert os.path.getsize(path) == 0  # the fault did fire
    assert not (out / "manifest.json").exists()
    marker = json.loads((out / "INCOMPLETE.json").read_text())
    assert marker["state"] == "failed" and "truncated while being read" in marker["reason"]


@pytest.mark.parametrize(
    "cmd",
    [
        ["streams"],
        ["info"],
        ["packets", "--format", "csv"],
        ["audit"],
        ["pdus", "--framer", "http"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_ends_with_one_error_line(
    original: Path, tmp_path: Path, cmd: list[str]
) -> None:
    path = tmp_path / "capture.pcap"
    shutil.copy(original, path)
    done = _run(cmd[0], str(path), *cmd[1:], fault="read@2=truncate")
    _one_error_line(done, path)


def test_without_truncation_the_same_run_finishes(original: Path) -> None:
    done = _run("info", str(original), fault=None)
    assert done.returncode == 0, done.stderr


def test_the_library_raises_a_capture_error(original: Path, tmp_path: Path) -> None:
    """In process: the file shrinks between two chunks of the walk."""
    path = tmp_path / "capture.pcap"
    shutil.copy(original, path)
    src = tcpweave.capture.open_source(str(path))
    try:
        chunks = src.record_chunks()
        first = next(chunks)
        payload_end = int(first.offset[-1] + first.caplen[-1])
        os.truncate(path, 0)
        assert int(src.buffer[:payload_end].sum()) == 0  # zeros, not SIGBUS
        with pytest.raises(tcpweave.CaptureError, match="truncated while being read"):
            next(chunks)
    finally:
        src.close()
    assert [str(path) in str(e) for e in tcpweave.capture.truncated_inputs()] == [True]
    assert tcpweave.capture.truncated_inputs() == []  # reported once


def test_a_fault_in_a_mapping_not_watched_still_ends_the_process(tmp_path: Path) -> None:
    """The handler only covers capture mappings: any other SIGBUS gets the default action
    back, as if no handler were there (the process dies of SIGBUS)."""
    watched, other = tmp_path / "watched.bin", tmp_path / "other.bin"
    for f in (watched, other):
        f.write_bytes(b"\x01" * (1 << 16))
    script = f"""
import mmap, os, numpy as np
from tcpweave.capture import _mapguard
f = open({str(watched)!r}, "rb")
buf = np.frombuffer(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ), np.uint8)
slot = _mapguard.register(buf, {str(watched)!r}, f.fileno())
assert slot >= 0
os.truncate({str(watched)!r}, 0)
assert int(buf.sum()) == 0 and _mapguard.faults(slot) > 0
g = open({str(other)!r}, "rb")
other = np.frombuffer(mmap.mmap(g.fileno(), 0, prot=mmap.PROT_READ), np.uint8)
os.truncate({str(other)!r}, 0)
print("read", int(other.sum()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stderr)
    assert "read" not in done.stdout
