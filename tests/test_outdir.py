"""The output directory protocol (output/outdir.py) and how runs end (cli/guard.py).

tcpweave never deletes, overwrites or truncates what it did not create; a run that did
not finish says so in its output directory, whatever stopped it and in whichever phase;
its exit status says how it ended. Faults are injected at named points
(tcpweave/_faults.py), so that no test depends on timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import tcpweave
from conftest import ROOT, stream_tree
from tcpweave import _faults
from tcpweave.output.outdir import OutputDir, RunIdentity

EXE = str(Path(sys.executable).parent / "tcpweave")
PHASES = ["decode", "sessions", "rank", "write", "merge", "finish"]
ROWS = 2000  # packets per partition


@pytest.fixture(scope="module")
def captures(tmp_path_factory: Any) -> dict[str, Any]:
    """Two generated captures and the fresh extraction of each, as the reference trees.
    ``a`` has enough packets (64k) that --jobs 2 forks a worker, and 32 partitions."""
    sys.path.insert(0, str(ROOT / "bench"))
    bench: Any = pytest.importorskip("extract")
    base = tmp_path_factory.mktemp("captures")
    out: dict[str, Any] = {}
    for name, size, sessions, seed in (("a", 3 << 20, 5000, 5), ("b", 1 << 20, 300, 6)):
        params = bench.GenParams(size=size, sessions=sessions, seed=seed)
        path = bench.ensure_capture(params, base / f"{name}.pcap")["path"]
        fresh = base / f"fresh-{name}"
        tcpweave.extract(path, fresh, partition_rows=ROWS, jobs=1)
        out[name] = path
        out[f"fresh_{name}"] = fresh
        out[f"tree_{name}"] = stream_tree(fresh)
    return out


def _run(*args: str, fault: str | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("TCPWEAVE_FAULT", None)
    if fault:
        env["TCPWEAVE_FAULT"] = fault
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300, **kw)


def _extract(cap: str, out: Path, *more: str, fault: str | None = None) -> Any:
    return _run("extract", cap, "-o", str(out), "--jobs", "2", "--partition-rows", str(ROWS),
                *more, fault=fault)  # fmt: skip


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _marker(out: Path) -> dict[str, Any]:
    return json.loads((out / "INCOMPLETE.json").read_text())  # type: ignore[no-any-return]


# -- never destroy what tcpweave did not create ----------------------------------------------


def test_workdir_holding_files_keeps_them_whatever_happens(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    """--workdir names a place for tcpweave's own directory: success, failure and
    interruption all leave what was there."""
    work = tmp_path / "mine"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("evidence")
    (work / "sub" / "more.bin").write_bytes(b"\x00\x01")
    before = _snapshot(work)
    ok = _extract(captures["a"], tmp_path / "ok", "--workdir", str(work))
    assert ok.returncode == 0, ok.stderr
    assert _snapshot(work) == before and sorted(os.listdir(work)) == ["notes.txt", "sub"]
    failed = _extract(captures["a"], tmp_path / "failed", "--workdir", str(work),
                      fault="write=enospc")  # fmt: skip
    assert failed.returncode == 1
    assert _snapshot(work) == before and sorted(os.listdir(work)) == ["notes.txt", "sub"]
    stopped = _extract(captures["a"], tmp_path / "stopped", "--workdir", str(work),
                       fault="write@2=driver:sigterm")  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr
    kept = _marker(tmp_path / "stopped")["work"]
    assert Path(kept["path"]).parent == work and kept["bytes"] > 0  # reported, for --resume
    assert {k: v for k, v in _snapshot(work).items() if not k.startswith("tcpweave-work-")} == (
        before
    )
    resumed = _extract(captures["a"], tmp_path / "stopped", "--workdir", str(work), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(os.listdir(work)) == ["notes.txt", "sub"]
    assert stream_tree(tmp_path / "stopped") == captures["tree_a"]


def test_a_directory_holding_other_files_is_refused_untouched(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "case"
    out.mkdir()
    (out / "streams.jsonl").write_text("the analyst's own notes\n")
    (out / "000000").mkdir()
    before = _snapshot(out)
    for flags in ((), ("--force",), ("--resume",)):
        done = _extract(captures["a"], out, *flags)
        assert done.returncode == 2, (flags, done.stderr)
        assert "not empty" in _one_line_error(done.stderr)
        assert _snapshot(out) == before and sorted(os.listdir(out)) == ["000000", "streams.jsonl"]


def test_a_file_path_as_output_is_refused(captures: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("keep")
    done = _extract(captures["a"], target)
    assert done.returncode == 2 and "not a directory" in _one_line_error(done.stderr)
    assert target.read_text() == "keep"


def test_another_capture_into_a_finished_run_needs_force_and_replaces_it_whole(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _extract(captures["a"], out).returncode == 0
    before = _snapshot(out)
    refused = _extract(captures["b"], out)
    assert refused.returncode == 2 and "--force" in _one_line_error(refused.stderr)
    assert _snapshot(out) == before
    replaced = _extract(captures["b"], out, "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert stream_tree(out) == captures["tree_b"]  # nothing of the first run is left
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0][0] == os.path.abspath(captures["b"])
    assert not (out / "INCOMPLETE.json").exists()


def test_force_never_removes_a_file_the_run_did_not_write(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _extract(captures["a"], out).returncode == 0
    (out / "000000" / "analyst.txt").write_text("mine")
    before = _snapshot(out)
    done = _extract(captures["b"], out, "--force")
    assert done.returncode == 2
    assert "000000/analyst.txt" in _one_line_error(done.stderr)
    assert _snapshot(out) == before


def test_the_same_run_again_rewrites_its_own_output(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _extract(captures["a"], out).returncode == 0
    again = _extract(captures["a"], out)
    assert again.returncode == 0, again.stderr
    assert stream_tree(out) == captures["tree_a"]


def test_resume_continues_only_the_same_run(captures: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    stopped = _extract(captures["a"], out, fault="write@2=driver:sigint")
    assert stopped.returncode == 130, stopped.stderr
    before = _snapshot(out)
    other = _extract(captures["b"], out, "--resume")
    assert other.returncode == 2 and "capture files" in _one_line_error(other.stderr)
    options = _extract(captures["a"], out, "--resume", "--gaps", "omit")
    assert options.returncode == 2 and "options" in _one_line_error(options.stderr)
    assert _snapshot(out) == before
    same = _extract(captures["a"], out, "--resume")
    assert same.returncode == 0, same.stderr
    assert stream_tree(out) == captures["tree_a"]


def test_a_second_run_into_a_locked_directory_is_refused(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    """While a run holds DIR (here: this process holds the claim), another is refused
    and touches nothing."""
    out = tmp_path / "out"
    identity = RunIdentity("extract", (), ())
    held = OutputDir.claim(out, identity)
    try:
        before = _snapshot(out)
        for flags in ((), ("--force",), ("--resume",)):
            done = _extract(captures["a"], out, *flags)
            assert done.returncode == 2
            assert f"pid {os.getpid()}" in _one_line_error(done.stderr)
            assert _snapshot(out) == before
    finally:
        held.release()


def test_the_same_capture_twice_is_refused(captures: dict[str, Any], tmp_path: Path) -> None:
    link = tmp_path / "alias.pcap"
    os.link(captures["a"], link)
    for second in (captures["a"], str(link)):
        done = _run("extract", captures["a"], second, "-o", str(tmp_path / "out"))
        assert done.returncode == 2 and "read once" in _one_line_error(done.stderr)
        assert not (tmp_path / "out").exists() or not os.listdir(tmp_path / "out")
    for cmd in ("streams", "audit"):
        done = _run(cmd, captures["a"], captures["a"])
        assert done.returncode == 2 and "read once" in _one_line_error(done.stderr)
    with pytest.raises(tcpweave.UsageError, match="read once"):
        tcpweave.open([captures["a"], str(link)])


# -- a run that did not finish says so ---------------------------------------------------------


@pytest.mark.parametrize("signame", ["sigint", "sigterm"])
@pytest.mark.parametrize("phase", PHASES)
def test_a_signal_in_any_phase_leaves_a_marked_directory_that_resume_finishes(
    captures: dict[str, Any], tmp_path: Path, phase: str, signame: str
) -> None:
    out = tmp_path / "out"
    # an earlier, finished run of another capture is replaced: its complete-looking
    # streams.jsonl must not survive the stop
    shutil.copytree(captures["fresh_b"], out)
    done = _extract(captures["a"], out, "--force", fault=f"{phase}=driver:{signame}")
    signum = int(getattr(signal, signame.upper()))
    assert done.returncode == 128 + signum, done.stderr
    _one_line_error(done.stderr)
    assert not (out / "manifest.json").exists()
    marker = _marker(out)
    assert marker["state"] == "interrupted" and marker["work"]["bytes"] >= 0
    if (out / "streams.jsonl").exists():  # only streams of this run, complete ones
        listed = [json.loads(x) for x in (out / "streams.jsonl").read_text().splitlines()]
        partial = set(marker.get("partial_streams", []))
        assert not partial & {r["stream"] for r in listed}
        assert {r["path"] for r in listed if r["path"]} <= set(captures["tree_a"])
    resumed = _extract(captures["a"], out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert stream_tree(out) == captures["tree_a"]
    assert not (out / "INCOMPLETE.json").exists() and (out / "manifest.json").exists()
    assert not (out / ".tcpweave" / "work").exists()


@pytest.mark.parametrize("phase", ["decode", "write", "merge"])
def test_a_full_disk_fails_in_one_line_and_removes_the_spill(
    captures: dict[str, Any], tmp_path: Path, phase: str
) -> None:
    out = tmp_path / "out"
    done = _extract(captures["a"], out, fault=f"{phase}=enospc")
    assert done.returncode == 1
    assert "No space left on device" in _one_line_error(done.stderr)
    marker = _marker(out)
    assert marker["state"] == "failed" and "No space left" in marker["reason"]
    assert "work" not in marker and not (out / ".tcpweave" / "work").exists()
    assert not (out / "manifest.json").exists()
    again = _extract(captures["a"], out)  # the same run, from the start
    assert again.returncode == 0 and stream_tree(out) == captures["tree_a"]


def test_a_killed_worker_fails_the_run(captures: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _extract(captures["a"], out, fault="worker=child:sigkill")
    assert done.returncode == 1
    assert "worker process" in _one_line_error(done.stderr)
    assert _marker(out)["state"] == "failed"


def test_an_unexpected_error_is_one_line_and_marks_the_run_failed(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    done = _extract(captures["a"], out, fault="rank=raise")
    assert done.returncode == 1
    assert "injected fault at rank" in _one_line_error(done.stderr)
    assert _marker(out)["state"] == "failed"


def _processes_naming(text: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(pid))
    return found


def test_workers_die_with_a_killed_driver(captures: dict[str, Any], tmp_path: Path) -> None:
    """SIGKILL of the driver while its forked workers write: they are killed with it (not
    left writing), the directory stays marked unfinished, and --resume completes it."""
    out = tmp_path / "out-killed"
    done = _extract(captures["a"], out, fault="write@2=driver:sigkill")
    assert done.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30  # the kernel delivers the workers' signal at once
    while _processes_naming(str(out)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_naming(str(out)) == []
    assert _marker(out)["state"] == "running"  # the driver could not say more
    resumed = _extract(captures["a"], out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert stream_tree(out) == captures["tree_a"]


def test_in_process_interrupt_marks_the_directory(
    captures: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python API keeps the same protocol: Ctrl-C while ranking leaves a marker."""
    monkeypatch.setattr(_faults, "_PLAN", {"rank": (1, "sigint")})
    out = tmp_path / "out"
    from tcpweave.errors import Interrupted

    with pytest.raises(Interrupted):
        tcpweave.extract(captures["a"], out, partition_rows=ROWS, jobs=1)
    assert _marker(out)["state"] == "interrupted"
    monkeypatch.setattr(_faults, "_PLAN", {})
    tcpweave.extract(captures["a"], out, partition_rows=ROWS, jobs=1, resume=True)
    assert stream_tree(out) == captures["tree_a"]


def test_parquet_extraction_claims_the_directory_too(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    done = _run("extract", captures["a"], "-o", str(out), "--parquet")
    assert done.returncode == 2 and (out / "keep.txt").read_text() == "x"
    shutil.rmtree(out)
    done = _run("extract", captures["a"], "-o", str(out), "--parquet")
    assert done.returncode == 0, done.stderr
    assert (out / "manifest.json").exists() and (out / "plan.parquet").exists()
    again = _run("extract", captures["b"], "-o", str(out), "--parquet", "--force")
    assert again.returncode == 0, again.stderr
    assert stream_tree(out).keys() - {"packets.parquet", "plan.parquet"} == set(captures["tree_b"])


# -- input damage: finished, but the exit status and the manifest say what was skipped ------


def _damaged_copy(src: str, dst: Path, record: int) -> int:
    """Copy a little-endian pcap with record ``record``'s capture length made absurd;
    returns that record header's offset."""
    data = bytearray(Path(src).read_bytes())
    at = 24
    for _ in range(record):
        at += 16 + int.from_bytes(data[at + 8 : at + 12], "little")
    data[at + 8 : at + 12] = (0xFFFFFFFF).to_bytes(4, "little")
    dst.write_bytes(bytes(data))
    return at


def test_damaged_input_finishes_with_status_3_and_says_where(
    captures: dict[str, Any], tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.pcap"
    at = _damaged_copy(captures["b"], damaged, 50)
    out = tmp_path / "out"
    done = _run("extract", str(damaged), "-o", str(out))
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and f"byte {at}" in done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["input_damage"]["records"] >= 1
    assert manifest["input_damage"]["regions"][0]["offset"] == at
    assert not (out / "INCOMPLETE.json").exists()  # finished: the damage is reported, not fatal
    for cmd in (["streams", "--format", "jsonl"], ["info"], ["audit", "--json"]):
        other = _run(cmd[0], str(damaged), *cmd[1:])
        assert other.returncode == 3, (cmd, other.stderr)
        assert other.stdout  # the command's output is complete
    clean = _run("info", captures["b"])
    assert clean.returncode == 0
