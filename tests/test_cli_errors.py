"""How commands end (cli/guard.py): one `error:` line, documented exit status, no traceback.

Exit status: 0 finished, 1 runtime failure, 2 usage, 3 finished with damaged input,
128+N stopped by signal N. Commands with --json also print the error as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

EXE = str(Path(sys.executable).parent / "tcpweave")
SAMPLE = str(ROOT / "examples" / "sample-http.pcap")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300)


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_version() -> None:
    done = _run("--version")
    assert done.returncode == 0 and done.stdout.startswith("tcpweave ")


@pytest.mark.parametrize(
    "args",
    [
        ["streams", "/nonexistent.pcap"],
        ["audit", "/nonexistent.pcap"],
        ["packets", "/nonexistent.pcap"],
        ["info", "/nonexistent.pcap"],
        ["follow", "/nonexistent.pcap", "0"],
        ["pdus", "/nonexistent.pcap", "--framer", "http"],
    ],
)
def test_a_missing_capture_is_a_runtime_error_in_one_line(args: list[str]) -> None:
    done = _run(*args)
    assert done.returncode == 1
    assert "/nonexistent.pcap" in _error_line(done.stderr)


def test_an_output_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("x")
    done = _run("extract", SAMPLE, "-o", str(target))
    assert done.returncode == 2 and "not a directory" in _error_line(done.stderr)


def test_following_a_stream_the_capture_does_not_have_is_an_error() -> None:
    done = _run("follow", SAMPLE, "99")
    assert done.returncode == 2 and "no stream 99" in _error_line(done.stderr)
    assert done.stdout == ""


def test_pdus_without_a_framer_is_a_usage_error() -> None:
    done = _run("pdus", SAMPLE)
    assert done.returncode == 2 and "--framer" in _error_line(done.stderr)


def test_json_commands_report_errors_as_json() -> None:
    done = _run("audit", "/nonexistent.pcap", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["exit_status"] == 1 and "/nonexistent.pcap" in report["error"]


def test_quiet_prints_nothing_but_errors(tmp_path: Path) -> None:
    done = _run("extract", SAMPLE, "-o", str(tmp_path / "out"), "-q")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    info = _run("info", SAMPLE, "--quiet")  # what a command is asked for is still printed
    assert info.returncode == 0 and "TCP packets" in info.stdout and info.stderr == ""


def test_verbose_adds_the_traceback_of_an_unexpected_error(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "TCPWEAVE_FAULT": "rank=raise"}
    cmd = [EXE, "extract", SAMPLE, "-o", str(tmp_path / "out")]
    plain = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert plain.returncode == 1 and "injected fault" in _error_line(plain.stderr)
    loud = subprocess.run([*cmd, "--force", "-v"], capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_a_capture_piped_on_standard_input(tmp_path: Path) -> None:
    """`tcpdump -w - | tcpweave extract - -o DIR` (and every other command) reads the pipe:
    the same output as from the file."""
    data = Path(SAMPLE).read_bytes()
    for cmd in (
        ["streams", "--format", "jsonl"],
        ["audit", "--json"],
        ["follow", "--format", "raw"],
    ):
        args = [cmd[0], "-", *(["1"] if cmd[0] == "follow" else []), *cmd[1:]]
        piped = subprocess.run([EXE, *args], input=data, capture_output=True, timeout=300)
        plain = subprocess.run([EXE, *[a if a != "-" else SAMPLE for a in args]],
                               capture_output=True, timeout=300)  # fmt: skip
        assert piped.returncode == plain.returncode == 0, piped.stderr
        if cmd[0] != "audit":  # the audit names its input file
            assert piped.stdout == plain.stdout
    out = tmp_path / "out"
    piped = subprocess.run([EXE, "extract", "-", "-o", str(out), "-q"], input=data,
                           capture_output=True, timeout=300)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert (out / "streams.jsonl").read_text().count("\n") == 8
    refused = subprocess.run([EXE, "extract", "-", "-o", str(out), "--resume"], input=data,
                             capture_output=True, timeout=300)  # fmt: skip
    assert refused.returncode == 2
    assert "standard input" in _error_line(refused.stderr.decode())
