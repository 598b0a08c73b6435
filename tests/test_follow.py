"""Differential test: ``tcpweave follow`` against ``tshark -q -z follow,tcp,<mode>,<stream>``.

The follow view must print exactly what TShark prints (docs/wireshark-follow-tcp.md):
for every corpus capture, on every stream of small captures and on 20 evenly spread
streams of larger ones, plus one stream index past the last, in the four modes.
TShark runs twice per capture (all text-mode taps in one run, all yaml taps in
another) and its output is split per tap. The stored outputs in tests/data/follow
(TShark 4.0.17) are checked without tshark. A disagreement is a failure unless
``EXPECTED_DIFFERENCES`` names it with its reason; it is then checked to be
exactly that disagreement.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tcpweave
from conftest import CORPUS, ROOT, corpus_captures
from tcpweave.cli.app import app
from tcpweave.output.follow import FollowMode, follow, render_follow

TSHARK = shutil.which("tshark")
DATA = ROOT / "tests" / "data" / "follow"
MODES = tuple(FollowMode)
MAX_STREAMS = 20

#: (capture relative to the corpus, mode, stream) -> (tcpweave output, tshark output, reason)
EXPECTED_DIFFERENCES: dict[tuple[str, str, int], tuple[str, str, str]] = {}

_HEADER = re.compile(rb"\n={67}\nFollow: tcp,(ascii|hex|raw)\nFilter: tcp\.stream eq (\d+)\n")


def _ours(cap: tcpweave.Capture, stream: int, mode: FollowMode) -> str:
    return render_follow(follow(cap.packets, cap.flows, cap.sources, stream), mode)


def _run_tshark(path: Path, taps: list[tuple[FollowMode, int]]) -> bytes:
    assert TSHARK is not None
    cmd = [TSHARK, "-q", "-r", str(path)]
    for mode, stream in taps:
        cmd += ["-z", f"follow,tcp,{mode},{stream}"]
    return subprocess.run(cmd, capture_output=True, check=True).stdout


@cache
def _tshark_follow(path: Path, streams: tuple[int, ...]) -> dict[tuple[FollowMode, int], str]:
    """TShark's follow output per (mode, stream); taps print in reverse registration order."""
    out: dict[tuple[FollowMode, int], str] = {}
    text = _run_tshark(path, [(m, s) for s in streams for m in MODES if m is not FollowMode.YAML])
    heads = list(_HEADER.finditer(text))
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        block = text[head.start() : nxt.start() if nxt else len(text)]
        out[FollowMode(head[1].decode()), int(head[2])] = block.decode("ascii")
    yaml = _run_tshark(path, [(FollowMode.YAML, s) for s in streams])
    blocks = re.split(rb"(?m)^(?=peers:\n)", yaml)[1:]
    for stream, block in zip(reversed(streams), blocks, strict=True):
        out[FollowMode.YAML, stream] = block.decode("ascii")
    return out


def _streams_to_check(n_streams: int) -> tuple[int, ...]:
    """All streams of small captures, else MAX_STREAMS spread evenly; plus a missing index."""
    if n_streams <= MAX_STREAMS:
        picked = list(range(n_streams))
    else:
        picked = sorted({int(i) for i in np.linspace(0, n_streams - 1, MAX_STREAMS)})
    return (*picked, n_streams)


def _first_diff(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return f"first difference at char {i}: ours {a[i - 40 : i + 80]!r}\n theirs {b[i - 40 : i + 80]!r}"


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed: no oracle to compare with")
@pytest.mark.parametrize("path", corpus_captures(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_follow_matches_tshark(path: Path) -> None:
    key = str(path.relative_to(CORPUS))
    with tcpweave.open(path) as cap:
        streams = _streams_to_check(cap.flows.n_streams)
        theirs = _tshark_follow(path, streams)
        failures = []
        for stream in streams:
            for mode in MODES:
                ours, their = _ours(cap, stream, mode), theirs[mode, stream]
                expected = EXPECTED_DIFFERENCES.get((key, str(mode), stream))
                if expected is not None:
                    assert (ours, their) == expected[:2], expected[2]
                elif ours != their:
                    failures.append(f"stream {stream} {mode}: {_first_diff(ours, their)}")
    assert not failures, "\n".join(failures)


def _stored_cases() -> list[tuple[str, FollowMode, int]]:
    cases = []
    for txt in sorted(DATA.glob("*.txt")):
        name, mode, stream, _ = txt.name.rsplit(".", 3)
        cases.append((name, FollowMode(mode), int(stream)))
    return cases


@pytest.mark.parametrize(("name", "mode", "stream"), _stored_cases(), ids=str)
def test_stored_follow_output(name: str, mode: FollowMode, stream: int) -> None:
    expected = (DATA / f"{name}.{mode}.{stream}.txt").read_bytes().decode("ascii")
    with tcpweave.open(DATA / f"{name}.pcap") as cap:
        assert _ours(cap, stream, mode) == expected


def test_missing_stream_prints_empty_nodes() -> None:
    with tcpweave.open(DATA / "in_order.pcap") as cap:
        text = _ours(cap, 7, FollowMode.ASCII)
        yaml = _ours(cap, 7, FollowMode.YAML)
    assert text == (
        "\n" + "=" * 67 + "\nFollow: tcp,ascii\nFilter: tcp.stream eq 7\n"
        "Node 0: :0\nNode 1: :0\n" + "=" * 67 + "\n"
    )
    assert yaml == (
        "peers:\n  - peer: 0\n    host: \n    port: 0\n"
        "  - peer: 1\n    host: \n    port: 0\npackets:\n"
    )


@pytest.mark.parametrize("mode", MODES, ids=str)
def test_cli_follow(mode: FollowMode) -> None:
    result = CliRunner().invoke(
        app, ["follow", str(DATA / "gap.pcap"), "0", "--format", str(mode)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (DATA / f"gap.{mode}.0.txt").read_bytes()


def test_cli_follow_default_is_ascii() -> None:
    result = CliRunner().invoke(app, ["follow", str(DATA / "in_order.pcap"), "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (DATA / "in_order.ascii.0.txt").read_bytes()
