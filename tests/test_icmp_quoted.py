"""TCP headers quoted in ICMP errors: the exact difference from tshark's ``tcp.stream``.

For tcpweave a TCP header inside an ICMP error (RFC 792 destination unreachable, time
exceeded ...) is not a TCP packet: it carries no stream bytes and opens no session. TShark
4.0.17 dissects the quoted header and looks its 4-tuple up among its conversations
(docs/wireshark-tcp-stream.md §3): a quote of a known conversation gets that
conversation's index and changes nothing; a quote of a 4-tuple with no conversation yet
opens one -- spending an index -- provided at least 16 bytes of the TCP header are quoted
(with fewer, tshark gives the frame no tcp.stream), and a later real packet of that
4-tuple joins it.

So tshark's numbering is "order of first appearance, quotes of >= 16 TCP header bytes
included", tcpweave's is "order of first real TCP packet". These tests build captures
with such quotes (tests/craft.py) and check both statements: tcpweave's numbering against
the model without quotes, and tshark's against the model with them.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import tcpweave
from craft import ACK, LINKTYPE_ETHERNET, SYN, Tcp, ethernet, icmp4_error, ipv4, write_pcap
from sessions import Trace

TSHARK = shutil.which("tshark")
#: quoted TCP header bytes from which tshark 4.0.17 opens a conversation (measured)
TSHARK_MIN_QUOTED_TCP = 16

Key = frozenset[tuple[str, int]]


def _key(a: str, ap: int, b: str, bp: int) -> Key:
    return frozenset({(a, ap), (b, bp)})


def _capture(tmp: Path, quote: tuple[str, int, str, int], tcp_bytes: int, first: bool) -> tuple[
    Path, list[tuple[int, Key, bool]]
]:  # fmt: skip
    """Two real connections and one ICMP port unreachable quoting ``quote`` (src, sport,
    dst, dport) with ``tcp_bytes`` bytes of its TCP header, placed before both
    connections (``first``) or between them. Returns the capture and its events (frame,
    4-tuple, is a quote) in frame order."""
    frames: list[tuple[bytes, Key, bool]] = []
    known: set[Key] = set()

    def connection(cport: int, server: str) -> None:
        t = Trace()
        s = t.session(cport=cport, server=server)
        s.handshake()
        s.c(0, b"data")
        known.add(_key("10.0.0.1", cport, server, 80))
        frames.extend((f.captured, _key("10.0.0.1", cport, server, 80), False) for f in t.frames)

    def icmp() -> None:
        src, sport, dst, dport = quote
        flags = SYN if _key(src, sport, dst, dport) not in known else ACK  # (a SYN with another
        # ISN would open a new conversation in tshark by its port-reuse rule, quoted or not)
        quoted = ipv4(src, dst, Tcp(sport, dport, 12345, 0, flags), ident=5)[: 20 + tcp_bytes]
        frame = ethernet(icmp4_error("10.0.0.254", src, quoted))
        frames.append((frame, _key(src, sport, dst, dport), True))

    if first:
        icmp()
    connection(40000, "10.0.0.2")
    if not first:
        icmp()
    connection(40002, "10.0.0.3")
    t0 = 1_700_000_000 * 10**9
    records = [(t0 + i * 10**6, f, len(f)) for i, (f, _, _) in enumerate(frames)]
    path = write_pcap(tmp / "icmp.pcap", records, LINKTYPE_ETHERNET, nano=True)
    return path, [(i + 1, k, q) for i, (_, k, q) in enumerate(frames)]


def _model(events: list[tuple[int, Key, bool]], with_quotes: bool) -> dict[int, int]:
    """frame -> index in order of first appearance of each 4-tuple (no port reuse here),
    counting quotes as appearances or not; only real TCP frames are returned."""
    index: dict[Key, int] = {}
    for _, key, quoted in events:
        if with_quotes or not quoted:
            index.setdefault(key, len(index))
    return {frame: index[key] for frame, key, quoted in events if not quoted}


def _ours(path: Path) -> dict[int, int]:
    with tcpweave.open(path) as cap:
        return dict(zip(cap.packets.frame.tolist(), cap.flows.stream.tolist(), strict=True))


def _tshark(path: Path) -> dict[int, int]:
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "ip.proto",
         "-e", "tcp.stream"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    rows = [line.split("\t") for line in out.splitlines()]
    # real TCP frames only (an ICMP frame's ip.proto lists 1 first)
    return {int(f): int(s) for f, proto, s in rows if proto == "6"}


CASES = {
    "quote-of-known-flow": (("10.0.0.1", 40000, "10.0.0.2", 80), 20, False),
    "quote-of-new-flow": (("10.0.0.1", 40001, "10.0.0.9", 443), 20, False),
    "quote-first-then-its-flow": (("10.0.0.1", 40002, "10.0.0.3", 80), 20, True),
    "short-quote-of-new-flow": (("10.0.0.1", 40001, "10.0.0.9", 443), 15, False),
    "16-byte-quote-of-new-flow": (("10.0.0.1", 40001, "10.0.0.9", 443), 16, False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_quoted_headers_are_not_packets(tmp_path: Path, case: str) -> None:
    path, events = _capture(tmp_path, *CASES[case])
    assert _ours(path) == _model(events, with_quotes=False)


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed: no oracle to compare with")
@pytest.mark.parametrize("case", sorted(CASES))
def test_tshark_counts_quotes_as_first_appearances(tmp_path: Path, case: str) -> None:
    quote, tcp_bytes, first = CASES[case]
    path, events = _capture(tmp_path, quote, tcp_bytes, first)
    counted = tcp_bytes >= TSHARK_MIN_QUOTED_TCP
    assert _tshark(path) == _model(events, with_quotes=counted)
    if case in ("quote-of-new-flow", "quote-first-then-its-flow"):
        assert _tshark(path) != _ours(path)  # the documented difference is real
