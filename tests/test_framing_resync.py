"""HTTP framing picks up after a gap (issue 15.10).

When a gap hides a response's header (so its body length is unknown), the bytes that
follow are body bytes -- binary, often without a line break -- up to the next message.
The framer must find a start line that begins in the middle of such a "line", as tshark
finds the response that starts a segment after the gap. Oracle: tshark's
``http.response.code`` and the frame it decodes the next response in.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpweave
from sessions import Session
from tcpweave.framing import Http, Skip

REQUESTS = b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n"
BODY = bytes((i * 7 + 3) % 256 for i in range(3000)).replace(b"\n", b"\x00")  # no line break
HEAD1 = b"HTTP/1.0 200 OK\r\nServer: crafted\r\nContent-Length: 3000\r\n\r\n"
RESPONSE2 = b"HTTP/1.0 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!"


def _capture(tmp: Path) -> tuple[Path, int]:
    """Response 1's header is cut by a lost segment; response 2 starts a later segment.
    Returns the capture and the frame that carries response 2."""
    s = Session()
    s.handshake()
    s.c(0, REQUESTS)
    first = HEAD1 + BODY
    cut = 40  # inside the header: its Content-Length is in the lost segment
    s.s(0, first[:cut])
    # first[cut:1000] is never captured
    s.s(1000, first[1000:])
    last = s.s(len(first), RESPONSE2)
    s.fin_s(len(first) + len(RESPONSE2))
    s.fin_c(len(REQUESTS))
    return s.write(tmp / "gap.pcap"), last.frame


def test_next_response_after_a_gap_is_framed(tmp_path: Path) -> None:
    path, frame = _capture(tmp_path)
    with tcpweave.open(path) as cap:
        responses = [p for p in cap.pdus("http") if p.direction == 1]
    whole = [p for p in responses if str(p.state) == "ok"]
    assert [p.data for p in whole] == [RESPONSE2]
    assert whole[0].last_frame == frame
    if shutil.which("tshark"):
        out = subprocess.run(
            ["tshark", "-r", str(path), "-Y", "http.response", "-T", "fields",
             "-e", "frame.number", "-e", "http.response.code"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
        assert (str(frame), "404") in [tuple(line.split("\t")) for line in out.splitlines()]


def test_status_line_in_the_middle_of_a_line() -> None:
    junk = b"\x01\x02binary HTTP/1.1 without a status"
    data = junk + b"HTTP/1.0 200 OK\r\n"
    assert Http().frame(data, 1, False) == Skip(len(junk))
    request = b"\xffxx GET /next HTTP/1.1\r\n"
    assert Http().frame(request, 0, False) == Skip(4)


@settings(max_examples=300, deadline=None)
@given(
    junk=st.binary(max_size=64).map(lambda b: b.replace(b"\n", b"")),
    direction=st.sampled_from([0, 1]),
    cut=st.integers(min_value=0, max_value=200),
)
def test_answers_are_consistent_on_prefixes(junk: bytes, direction: int, cut: int) -> None:
    """What the driver relies on (it asks on growing windows, and an int or a Skip on a
    window is final): a length on some bytes is the same on any longer data starting
    there, and a skip on a prefix never passes the start line the whole data holds."""
    line = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" if direction == 0 else RESPONSE2
    data = junk + line
    prefix = data[: min(cut, len(data))]
    if not prefix:
        return
    early = Http().frame(prefix, direction, False)
    if isinstance(early, Skip):
        assert early.count <= _first_start(data, direction)
    elif isinstance(early, int):
        assert Http().frame(data, direction, False) == early


def _first_start(data: bytes, direction: int) -> int:
    """Where framing, skipping as the framer says, finds its first message in ``data``."""
    at = 0
    while isinstance(answer := Http().frame(data[at:], direction, False), Skip):
        at += answer.count
    return at


@pytest.mark.parametrize("direction", [0, 1])
def test_partial_start_line_at_the_end_is_kept(direction: int) -> None:
    tail = b"GET /pa" if direction == 0 else b"HTTP/1.0 2"
    answer = Http().frame(b"\x00\x01\x02" + tail, direction, False)
    assert answer == Skip(3)
