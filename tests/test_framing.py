"""Framers and the framing engine on crafted sessions whose PDUs are known by construction.

Framers are fed each message whole, byte by byte (every prefix must answer "need
more"), and with trailing bytes (the length must not change), as h11's tests do.
The engine is run on captures built with tests/sessions.py, where the test
chose which segment carries which stream bytes, so the expected PDUs, their
frames and states follow from the script, never from reading tcpweave back.
"""

from __future__ import annotations

import itertools
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tcpweave
from sessions import Session
from tcpweave.cli import app
from tcpweave.framing import (
    Delimited,
    Dns,
    FixedSize,
    Framer,
    Http,
    LengthPrefixed,
    Modbus,
    Need,
    PduState,
    Skip,
    Tls,
    VarintLength,
)
from tcpweave.framing.spec import parse_framer

pytestmark = pytest.mark.quick


def _is_need(answer: object) -> bool:
    return answer is None or isinstance(answer, Need)


def _whole_bytewise_trailing(framer: Framer, message: bytes, direction: int = 0) -> None:
    assert framer.frame(message, direction, False) == len(message)
    assert framer.frame(message + b"\x00trailing", direction, False) == len(message)
    for n in range(len(message)):
        answer = framer.frame(message[:n], direction, False)
        # a length known early is the same length (the driver then waits for it)
        assert _is_need(answer) or answer == len(message), (n, answer)


def _lp(body: bytes) -> bytes:
    return struct.pack("!H", len(body)) + body


MESSAGES = [
    (LengthPrefixed(size=2, adjust=2), _lp(b"hello")),
    (LengthPrefixed(offset=1, size=3, endian="little", adjust=4), b"\x07\x03\x00\x00abc"),
    (LengthPrefixed(size=8, adjust=8), struct.pack("!Q", 3) + b"xyz"),
    (LengthPrefixed(size=1, magic=b"MG", magic_offset=1, adjust=3), b"\x02MGab"),
    (FixedSize(6, magic=b"\xfe"), b"\xfeabcde"),
    (Delimited(b"\r\n"), b"PING a b\r\n"),
    (VarintLength(), bytes([0xAC, 0x02]) + bytes(300)),
    (Dns(), _lp(bytes(12) + b"\x03www\x00")),
    (Modbus(), b"\x00\x01\x00\x00\x00\x06\x11\x03\x00\x6b\x00\x03"),
    (Tls(), b"\x16\x03\x01\x00\x04abcd"),
]


@pytest.mark.parametrize(("framer", "message"), MESSAGES, ids=lambda v: getattr(v, "name", ""))
def test_framer_whole_bytewise_and_with_trailing_bytes(framer: Framer, message: bytes) -> None:
    _whole_bytewise_trailing(framer, message)


@pytest.mark.parametrize(
    ("framer", "junk"),
    [
        (LengthPrefixed(size=1, magic=b"MG", magic_offset=1), b"\x02MX"),
        (LengthPrefixed(size=2, max_len=100), b"\x01\x00"),  # 256 > max
        (Modbus(), b"\x00\x01\x00\x01"),  # protocol id 1
        (Tls(), b"\x17\x02"),  # version 2.x
        (Tls(), b"\x30"),  # content type 48
        (Dns(), b"\x00\x05"),  # shorter than a DNS header
    ],
)
def test_framer_says_not_mine(framer: Framer, junk: bytes) -> None:
    assert framer.frame(junk, 0, False) == Skip(1)


REQUESTS = [
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"HEAD /h HTTP/1.0\n\n",
]
RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\n\r\n",
]


@pytest.mark.parametrize("message", REQUESTS)
def test_http_requests(message: bytes) -> None:
    _whole_bytewise_trailing(Http(), message, 0)


@pytest.mark.parametrize("message", RESPONSES)
def test_http_responses(message: bytes) -> None:
    _whole_bytewise_trailing(Http(), message, 1)


def test_http_head_response_has_no_body_and_until_close_needs_eof() -> None:
    http = Http().session()
    head = b"HEAD / HTTP/1.1\r\n\r\n"
    get = b"GET / HTTP/1.1\r\n\r\n"
    assert http.frame(head + get, 0, False) == len(head)
    assert http.frame(get, 0, False) == len(get)
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"
    assert http.frame(response + b"x" * 10, 1, False) == len(response)  # answers the HEAD
    close = b"HTTP/1.0 200 OK\r\n\r\nbody until close"
    assert http.frame(close, 1, False) is None
    assert http.frame(close, 1, True) == len(close)


def test_http_resynchronises_to_the_next_start_line() -> None:
    assert Http().frame(b"tail of a body\r\nGET / HTTP/1.1\r\n", 0, False) == Skip(16)
    assert Http().frame(b"xyz", 1, False) == Skip(3)
    assert Http().frame(b"HTTP/1", 1, False) is None


def test_spec_strings() -> None:
    f = parse_framer("length:offset=4,size=2,endian=big,adjust=6,max=260,magic=0x0000")
    assert f == LengthPrefixed(4, 2, "big", 6, 260, 0, b"\x00\x00", 0)
    assert parse_framer("line:delim=\\n,max=80") == Delimited(b"\n", 80)
    assert isinstance(parse_framer("http"), Http)
    assert parse_framer("tcpweave.framing.protocols:Tls") == Tls()
    for bad in ("length:size=5", "nosuch", "length:foo=1", "magic:size=2", "fixed"):
        with pytest.raises(tcpweave.UsageError):
            parse_framer(bad)


# ------------------------------------------------------------------ the engine on sessions


def _session_pcap(
    path: Path, stream: bytes, cuts: list[int], *, skip: frozenset[int] = frozenset()
) -> Path:
    """One session: the client sends ``stream`` cut at ``cuts``; pieces in ``skip`` lost."""
    s = Session(sport=7777)
    s.handshake()
    bounds = [0, *cuts, len(stream)]
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        if i not in skip:
            s.c(a, stream[a:b])
    s.ack_s()
    s.close()
    return s.write(path)


BODIES = [b"first", b"x" * 3000, b"ab", b"", b"last!"]


def test_pdus_span_share_and_start_mid_segment(tmp_path: Path) -> None:
    pdus = [_lp(b) for b in BODIES]
    stream = b"".join(pdus)
    # piece 1 ends inside PDU 1's header; pieces 2-3 carry PDU 2 over two segments; piece 4
    # ends PDU 2, carries PDUs 3 and 4 whole and starts PDU 5 (so it starts mid-segment)
    path = _session_pcap(tmp_path / "s.pcap", stream, [1, 9, 1500, 3018])
    with tcpweave.open(path) as cap:
        found = cap.pdus(LengthPrefixed(size=2, adjust=2))
    assert [p.data for p in found] == pdus
    # frames: 1-3 handshake, pieces are frames 4..8
    assert [(p.first_frame, p.last_frame, p.frames) for p in found] == [
        (4, 5, 2), (5, 7, 3), (7, 7, 1), (7, 7, 1), (7, 8, 2)
    ]  # fmt: skip
    assert all(p.state is PduState.OK for p in found)
    assert found.skipped_bytes == 0
    table = found.to_arrow()
    assert table.column("data").to_pylist() == pdus
    assert table.column("state").to_pylist() == ["ok"] * 5


class _PlainLength(Framer):
    """The 2-byte length framer as a user would write it (runs through the Python driver)."""

    def frame(self, data: bytes, direction: int, eof: bool) -> int | Need | None:
        if len(data) < 2:
            return None
        return 2 + int.from_bytes(data[:2], "big")


def test_gap_inside_a_body_keeps_framing_in_step(tmp_path: Path) -> None:
    pdus = [_lp(b) for b in BODIES]
    stream = b"".join(pdus)
    path = _session_pcap(tmp_path / "g.pcap", stream, [1, 9, 1500, 3018], skip={2})
    with tcpweave.open(path) as cap:
        for framer in (LengthPrefixed(size=2, adjust=2), _PlainLength()):
            found = cap.pdus(framer)
            got = [(p.stream_offset, p.length, p.state) for p in found]
            offsets = [sum(map(len, pdus[:i])) for i in range(len(pdus))]
            want = [(o, len(p), PduState.OK) for o, p in zip(offsets, pdus, strict=True)]
            want[1] = (want[1][0], want[1][1], PduState.GAP)
            assert got == want
            assert found[1].data == pdus[1][: 9 - 7] + bytes(1491) + pdus[1][1500 - 7 :]


def test_lost_header_resynchronises_on_magic(tmp_path: Path) -> None:
    framer = LengthPrefixed(size=2, adjust=4, magic=b"MG", magic_offset=2)
    pdus = [struct.pack("!H", len(b)) + b"MG" + b for b in BODIES]
    stream = b"".join(pdus)
    starts = [sum(map(len, pdus[:i])) for i in range(len(pdus))]
    # lose [starts[2] - 1, starts[3] + 1): the end of PDU 2, PDU 3 and PDU 4's first byte
    path = _session_pcap(tmp_path / "m.pcap", stream, [starts[2] - 1, starts[3] + 1], skip={1})
    with tcpweave.open(path) as cap:
        found = cap.pdus(framer)
    ok = [p.data for p in found if p.state is PduState.OK]
    assert ok == [pdus[0], pdus[4]]
    damaged = [(p.stream_offset, p.length) for p in found if p.damaged]
    assert damaged == [(starts[1], len(pdus[1]))]
    assert found.skipped_bytes == starts[4] - (starts[3] + 1)


def test_incomplete_last_pdu_and_mid_stream_start(tmp_path: Path) -> None:
    pdus = [_lp(b) for b in BODIES]
    stream = b"".join(pdus)[:-3]
    path = _session_pcap(tmp_path / "i.pcap", stream, [3, 100])
    with tcpweave.open(path) as cap:
        found = cap.pdus("length:size=2,adjust=2")
    assert [p.state for p in found][-1] is PduState.INCOMPLETE
    assert found[-1].length == len(pdus[-1]) - 3
    assert [p.data for p in found][:-1] == pdus[:-1]


def test_streams_argument_and_python_framer_match_kernel(tmp_path: Path) -> None:
    pdus = [_lp(b) for b in BODIES]
    path = _session_pcap(tmp_path / "k.pcap", b"".join(pdus), [5, 2000])
    with tcpweave.open(path) as cap:
        kernel = cap.pdus(LengthPrefixed(size=2, adjust=2), streams=0)
        python = cap.pdus(_PlainLength(), streams=[0])
        assert len(cap.pdus(_PlainLength(), streams=[])) == 0
        with pytest.raises(tcpweave.UsageError):
            cap.pdus(_PlainLength(), streams=[5])
    for name in kernel.columns:
        assert kernel.columns[name].tolist() == python.columns[name].tolist(), name
    assert kernel.data.tobytes() == python.data.tobytes()


def test_cli_pdus_table_and_jsonl(tmp_path: Path) -> None:
    pdus = [_lp(b) for b in BODIES]
    path = _session_pcap(tmp_path / "c.pcap", b"".join(pdus), [1, 9, 1500, 3018])
    runner = CliRunner()
    result = runner.invoke(
        app, ["pdus", str(path), "--framer", "length:size=2,adjust=2"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("5 PDUs (length), 0 damaged, 0 bytes skipped")
    assert "│      0 │ c2s │      7 │   3002 │ 5-7 (3) │" in result.stdout
    result = runner.invoke(
        app,
        ["pdus", str(path), "--framer", "length:size=2,adjust=2", "--format", "jsonl", "--data"],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [bytes.fromhex(r["data"]) for r in records] == pdus
    assert [r["last_frame"] for r in records] == [5, 7, 7, 7, 8]
    result = runner.invoke(app, ["pdus", str(path), "--framer", "nosuch"])
    assert result.exit_code == 2
