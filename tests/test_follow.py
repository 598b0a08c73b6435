"""Differential test: ``tcpweave follow`` against ``tshark -q -z follow,tcp,<mode>,<stream>``.

The follow view must print exactly what TShark prints (docs/wireshark-follow-tcp.md):
for every corpus capture, on every stream of small captures and on 20 evenly spread
streams of larger ones, plus one stream index past the last, in the four modes.
TShark runs twice per capture (all text-mode taps in one run, all yaml taps in
another) and its output is split per tap. A crafted capture (named edge cases plus
150 seeded random connections) is compared the same way. The stored outputs in tests/data/follow
(TShark 4.0.17) are checked without tshark. A disagreement is a failure unless
``EXPECTED_DIFFERENCES`` names it with its reason; it is then checked to be
exactly that disagreement.
"""

from __future__ import annotations

import hashlib
import random
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
from craft import ACK, FIN, LINKTYPE_ETHERNET, PSH, RST, SYN, Tcp, ethernet, ipv4, write_pcap
from tcpweave.cli.app import app
from tcpweave.output.follow import FollowMode, follow, render_follow

TSHARK = shutil.which("tshark")
DATA = ROOT / "tests" / "data" / "follow"
MODES = tuple(FollowMode)
MAX_STREAMS = 20

_OPENFLOW = (
    "OpenFlow packet-in/packet-out messages carry whole IP packets; tshark dissects them and the "
    "follow tap then sees the *inner* source address (192.168.1.x) in place of the TCP "
    "endpoint's, so it prints those controller-to-switch chunks as node 1 and tracks their "
    "sequence numbers on the wrong side. tcpweave does not dissect application payloads"
)
_FRAGMENTS = (
    "overlapping IPv4 fragments with conflicting bytes: tshark takes the overlap from the "
    "fragment with the lower offset, tcpweave keeps the bytes that arrived first (see "
    "test_tshark_diff), so the followed request differs in those bytes"
)

#: (capture relative to the corpus, mode, stream) -> (sha256[:16] of tcpweave's output,
#: sha256[:16] of tshark's output, reason). Checked to be exactly this pair of outputs.
EXPECTED_DIFFERENCES: dict[tuple[str, str, int], tuple[str, str, str]] = {
    ("tcpdump/of13_ericsson.pcapng", "ascii", 9): (
        "76db2b8a9485ce19",
        "91500b0441a6e6ba",
        _OPENFLOW,
    ),
    ("tcpdump/of13_ericsson.pcapng", "hex", 9): ("468e85d9288ef5e1", "a867c509766557d2", _OPENFLOW),
    ("tcpdump/of13_ericsson.pcapng", "raw", 9): ("b20209e69e38af46", "a8c9bcbc758e5818", _OPENFLOW),
    ("tcpdump/of13_ericsson.pcapng", "yaml", 9): (
        "657c2e07556d8f36",
        "fea83eb2f722b10a",
        _OPENFLOW,
    ),
    ("zeek/ipv4/fragmented-4.pcap", "ascii", 1): (
        "8a5c949fb71fd357",
        "84a5f0ad49a2e73a",
        _FRAGMENTS,
    ),
    ("zeek/ipv4/fragmented-4.pcap", "hex", 1): ("2bbf55139df64a06", "146c8dffadad9ff9", _FRAGMENTS),
    ("zeek/ipv4/fragmented-4.pcap", "raw", 1): ("9164cd99b440820c", "afc7c0e7e4e7b879", _FRAGMENTS),
    ("zeek/ipv4/fragmented-4.pcap", "yaml", 1): (
        "4eebfaebac4299f9",
        "a4de67362b4831db",
        _FRAGMENTS,
    ),
}

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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def _first_diff(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    ours, theirs = a[i - 40 : i + 80], b[i - 40 : i + 80]
    return f"first difference at char {i}: ours {ours!r}\n theirs {theirs!r}"


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
                    assert (_digest(ours), _digest(their)) == expected[:2], expected[2]
                elif ours != their:
                    failures.append(f"stream {stream} {mode}: {_first_diff(ours, their)}")
    assert not failures, "\n".join(failures)


# One crafted capture, one connection per client port: named edge cases first, then
# seeded random ones (wrapping ISNs, holes, overlaps, acks past holes, FIN/RST anywhere).
Seg = tuple[bool, int, int, int, bytes]  # from client?, seq, ack, flags, payload


def _named_cases() -> list[list[Seg]]:
    hs = [
        (True, 1000, 0, SYN, b""),
        (False, 5000, 1001, SYN | ACK, b""),
        (True, 1001, 5001, ACK, b""),
    ]
    return [
        # the server's first frame has relative seq 0 (base from the client's ack): the
        # follow tap treats its direction as uninitialised and restarts at the next frame
        [
            (True, 1001, 5001, ACK, b"AAAAA"),
            (False, 5000, 1006, ACK, b""),
            (False, 5006, 1006, ACK, b"BBBBB"),
            (False, 5001, 1006, ACK, b"CCCCC"),
        ],
        # a partly new held segment keeps its own frame and time (yaml)
        [
            *hs,
            (True, 1003, 5001, ACK, b"XXX"),
            (True, 1002, 5001, ACK, b"YYYYYYYY"),
            (True, 1001, 5001, ACK, b"AA"),
        ],
        # a SYN-ACK with a new ISN resets the relative base of its direction
        [
            *hs,
            (True, 1001, 5001, ACK, b"AAAAA"),
            (False, 5001, 1006, ACK, b"srv1"),
            (False, 7000, 1006, SYN | ACK, b""),
            (False, 7001, 1006, ACK, b"new1"),
            (False, 5005, 1006, ACK, b"old2"),
            (True, 1006, 7005, ACK, b"x"),
        ],
        # first frame from the server, pure ACK: it is node 0
        [
            (False, 5001, 1001, ACK, b""),
            (True, 1001, 5001, ACK, b"req"),
            (False, 5001, 1004, ACK, b"resp"),
        ],
    ]


def _random_case(rng: random.Random) -> list[Seg]:
    cisn = rng.choice([1000, 2**32 - 7, rng.randrange(2**32)])
    sisn = rng.choice([5000, 2**32 - 3, rng.randrange(2**32)])
    segs: list[Seg] = []
    if rng.random() < 0.6:
        segs += [(True, cisn, 0, SYN, b""), (False, sisn, cisn + 1, SYN | ACK, b"")]
    for _ in range(rng.randrange(1, 14)):
        client = rng.random() < 0.55
        own, peer = (cisn, sisn) if client else (sisn, cisn)
        seq = (own + 1 + rng.randrange(-2, 30)) % 2**32
        ack = (peer + 1 + rng.randrange(-1, 30)) % 2**32
        data = bytes(rng.choice(b"ABCXYZ\x00\t\r\n") for _ in range(rng.choice([0, 1, 3, 5, 12])))
        flags = rng.choice([PSH | ACK] * 6 + [ACK, FIN | ACK, RST | ACK, RST, PSH])
        segs.append((client, seq, ack, flags, data))
    return segs


def _write_crafted(path: Path, n_random: int, seed: int) -> int:
    rng = random.Random(seed)
    cases = _named_cases() + [_random_case(rng) for _ in range(n_random)]
    frames = []
    for port, segs in enumerate(cases, start=20000):
        for client, seq, ack, flags, data in segs:
            ports = (port, 80) if client else (80, port)
            hosts = ("10.0.0.1", "10.0.0.2") if client else ("10.0.0.2", "10.0.0.1")
            tcp = Tcp(*ports, seq % 2**32, ack % 2**32, flags, payload=data)
            ts_ns = 1_700_000_000_000_000_000 + len(frames) * 1_000_000
            frames.append((ts_ns, ethernet(ipv4(*hosts, tcp)), None))
    write_pcap(path, frames, LINKTYPE_ETHERNET)
    return len(cases)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed: no oracle to compare with")
def test_crafted_follow_matches_tshark(tmp_path: Path) -> None:
    path = tmp_path / "crafted.pcap"
    n = _write_crafted(path, n_random=150, seed=20240501)
    theirs = _tshark_follow(path, tuple(range(n + 1)))
    with tcpweave.open(path) as cap:
        assert cap.flows.n_streams == n
        failures = [
            f"stream {stream} {mode}: {_first_diff(ours, theirs[mode, stream])}"
            for stream in range(n + 1)
            for mode in MODES
            if (ours := _ours(cap, stream, mode)) != theirs[mode, stream]
        ]
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
    result = CliRunner().invoke(app, ["follow", str(DATA / "gap.pcap"), "0", "--format", str(mode)])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (DATA / f"gap.{mode}.0.txt").read_bytes()


def test_cli_follow_default_is_ascii() -> None:
    result = CliRunner().invoke(app, ["follow", str(DATA / "in_order.pcap"), "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (DATA / "in_order.ascii.0.txt").read_bytes()
