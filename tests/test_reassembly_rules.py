"""Golden crafted sessions for every rule of reassembly (docs/design.md, issue 4).

Each capture is built with ``tests/sessions.py`` (on the independent builders of
``tests/craft.py``); every expected stream, gap, conflict and fate follows from
what was put into the capture, never from running tcpweave. Test ids name the
arrival order, e.g. ``SYN 2 1 3 dup-2 FIN``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tcpweave
from craft import WScale
from sessions import ACK, FIN, PSH, SYN, Session, Trace, script_name
from tcpweave import Fate, GapReason
from tcpweave.cli.app import app
from tcpweave.run import Run, Settings

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "data" / "overlap_vectors.json").read_text())
POLICIES = (
    "first",
    "last",
    "bsd",
    "linux",
    "windows",
    "solaris",
    "hpux10",
    "hpux11",
    "irix",
    "macos",
    "vista",
    "old-linux",
)
WRAP_ISNS = (0, 1, 2**32 - 1, 2**32 - 11)

PIECES = (b"GET /index", b".html HTTP/1.0\r\n", b"Host: example\r\n\r\n")
WHOLE = b"".join(PIECES)
L1, L2, L3 = (len(p) for p in PIECES)


@contextmanager
def opened(trace: Trace | Session, path: Path) -> Iterator[tcpweave.Capture]:
    trace.write(path)
    with tcpweave.open(path) as cap:
        yield cap


def only(streams: list[Any]) -> Any:
    assert len(streams) == 1, [(s.index, s.client, s.server) for s in streams]
    return streams[0]


def fates_of(cap: tcpweave.Capture, frame: int, **kw: Any) -> list[tuple[int, int, Fate]]:
    """(stream_offset, length, fate) of every plan row of ``frame``, by offset."""
    rows = cap.plan(**kw).rows
    out = [
        (int(o), int(n), Fate(int(f)))
        for fr, o, n, f in zip(
            rows["frame"], rows["stream_offset"], rows["length"], rows["fate"], strict=True
        )
        if int(fr) == frame
    ]
    return sorted(out)


def row_bytes(path: Path, rows: dict[str, Any], i: int) -> bytes:
    """The bytes plan row ``i`` points at, read from the capture file itself."""
    assert int(rows["file"][i]) == 0
    start, n = int(rows["payload_start"][i]), int(rows["length"][i])
    return path.read_bytes()[start : start + n]


# --------------------------------------------------------------------------- ordering


ORDER_SCRIPTS = (
    "SYN 1 2 3 FIN",
    "SYN 2 1 3 FIN",
    "SYN 3 2 1 FIN",
    "SYN 2 1 3 dup-2 FIN",
    "SYN 1 dup-1 2 3 dup-3 dup-1 FIN",
    "SYN 3 reply FIN 1 2",  # ACK-before-data: the capture point saw the FIN first
    "SYN 1 2 3",  # no close
)


@pytest.mark.parametrize("script", ORDER_SCRIPTS, ids=script_name)
def test_order_and_duplicates(tmp_path: Path, script: str) -> None:
    s = Session().play(script, PIECES, reply=b"HTTP/1.0 200 OK\r\n\r\n")
    with opened(s, tmp_path / "c.pcap") as cap:
        st = only(cap.streams())
        assert (st.index, st.session) == (0, 0)
        assert st.client == ("10.0.0.1", 40000)
        assert st.server == ("10.0.0.2", 80)
        assert st.c2s.bytes() == WHOLE
        assert st.c2s.bytes(gaps="omit") == WHOLE
        assert st.c2s.length == len(WHOLE) and st.c2s.kept_bytes == len(WHOLE)
        assert st.c2s.gaps == [] and st.c2s.conflicts == []
        assert st.s2c.bytes() == (b"HTTP/1.0 200 OK\r\n\r\n" if "reply" in script else b"")
        assert st.c2s.close == ("fin" if "FIN" in script else "open")
        assert st.c2s.packets == len(s.sent_by(True))
        assert st.s2c.packets == len(s.sent_by(False))
        # chunks: kept ranges in stream order, each from the frame that first carried it
        chunks = st.c2s.chunks()
        assert b"".join(c.data for c in chunks) == WHOLE
        assert [c.offset for c in chunks] == sorted(c.offset for c in chunks)
        for f in s.frames:
            if f.label.startswith("dup-"):
                assert {fate for _, _, fate in fates_of(cap, f.frame)} == {Fate.RETRANSMISSION}, (
                    f.label
                )
            elif f.label.isdigit():
                assert fates_of(cap, f.frame) == [(f.offset, len(f.payload), Fate.NEW)], f.label
                chunk = next(c for c in chunks if c.frame == f.frame)
                assert chunk.ts_ns == f.ts_ns


def test_interleaved_directions_and_sessions(tmp_path: Path) -> None:
    """Two connections interleaved frame by frame keep their bytes apart."""
    t = Trace()
    a = t.session(cport=40001)
    b = t.session(cport=40002)
    a.syn()
    b.syn()
    a.synack()
    b.synack()
    a.ack_c()
    b.ack_c()
    b.c(5, b"world")
    a.c(0, b"alpha")
    a.s(0, b"ALPHA")
    b.c(0, b"hello")
    b.s(0, b"HELLO")
    a.c(5, b"-beta")
    with opened(t, tmp_path / "i.pcap") as cap:
        s0, s1 = cap.streams()
        assert (s0.client[1], s1.client[1]) == (40001, 40002)
        assert (s0.c2s.bytes(), s0.s2c.bytes()) == (b"alpha-beta", b"ALPHA")
        assert (s1.c2s.bytes(), s1.s2c.bytes()) == (b"helloworld", b"HELLO")


# --------------------------------------------------------------------------- overlaps


def test_partial_overlaps_with_same_bytes_are_not_conflicts(tmp_path: Path) -> None:
    data = bytes(range(65, 65 + 40))
    s = Session()
    s.handshake()
    f1 = s.c(0, data[0:10])
    f2 = s.c(5, data[5:15])  # partial overlap, same bytes
    f3 = s.c(3, data[3:8])  # inside f1
    f4 = s.c(12, data[12:40])  # overlaps the tail of f2
    f5 = s.c(0, data[0:40])  # covers everything
    with opened(s, tmp_path / "same.pcap") as cap:
        for policy in POLICIES:
            st = only(cap.streams(policy=policy))
            assert st.c2s.bytes() == data, policy
            assert st.c2s.conflicts == [], policy
            assert st.c2s.gaps == [], policy
        assert fates_of(cap, f1.frame) == [(0, 10, Fate.NEW)]
        assert fates_of(cap, f2.frame) == [(5, 5, Fate.OVERLAP_SAME), (10, 5, Fate.NEW)]
        assert fates_of(cap, f3.frame) == [(3, 5, Fate.RETRANSMISSION)]
        assert fates_of(cap, f4.frame) == [(12, 3, Fate.OVERLAP_SAME), (15, 25, Fate.NEW)]
        assert fates_of(cap, f5.frame) == [(0, 40, Fate.RETRANSMISSION)]


#: policy -> stream for "AAAA"@0 then "BBBB"@2 (new starts after the old one and ends after)
PARTIAL = {p: "AAAABB" for p in POLICIES} | {"last": "AABBBB", "solaris": "AABBBB"}
PARTIAL["hpux11"] = "AABBBB"


@pytest.mark.parametrize("policy", POLICIES)
def test_conflicting_overlap_is_always_reported(tmp_path: Path, policy: str) -> None:
    """Different bytes: the policy picks the copy; the conflict is reported whatever it picks,
    and the dropped bytes stay reachable through plan rows of fate overlap-conflict-dropped."""
    s = Session()
    s.handshake()
    fa = s.c(0, b"AAAA")
    fb = s.c(2, b"BBBB")
    path = tmp_path / "conflict.pcap"
    with opened(s, path) as cap:
        st = only(cap.streams(policy=policy))
        got = st.c2s.bytes()
        assert got == PARTIAL[policy].encode(), policy
        assert len(st.c2s.conflicts) == 1
        c = st.c2s.conflicts[0]
        assert (c.offset, c.length) == (2, 2)
        new_wins = got[2:4] == b"BB"
        kept, dropped = (fb, fa) if new_wins else (fa, fb)
        assert (c.kept_frame, c.dropped_frame) == (kept.frame, dropped.frame)
        rows = cap.plan(policy=policy).rows
        dropped_rows = [
            i for i in range(len(rows["frame"])) if rows["fate"][i] == Fate.OVERLAP_CONFLICT_DROPPED
        ]
        assert dropped_rows, "no plan row holds the dropped version"
        recovered = {
            (int(rows["frame"][i]), int(rows["stream_offset"][i])): row_bytes(path, rows, i)
            for i in dropped_rows
        }
        want = b"AA" if new_wins else b"BB"
        assert recovered == {(dropped.frame, 2): want}


EXACT = {p: "GOOD" for p in POLICIES} | {"last": "EVIL", "old-linux": "EVIL", "solaris": "EVIL"}
EXACT["hpux11"] = "EVIL"


@pytest.mark.parametrize("policy", POLICIES)
def test_exact_overlap_good_then_evil(tmp_path: Path, policy: str) -> None:
    """Same start, same end, different bytes (the eve-overlap-payload-01 geometry).

    Per docs/overlap-policies.md: new data wins a same-start, same-end overlap for
    ``last``, ``old-linux`` and the solaris column (``solaris``/``hpux11``, Suricata's
    OverlapSOLARISSame); every other policy keeps the first copy."""
    s = Session()
    s.handshake()
    good = s.c(0, b"GOOD")
    evil = s.c(0, b"EVIL")
    s.c(4, b"DATA")
    with opened(s, tmp_path / "exact.pcap") as cap:
        st = only(cap.streams(policy=policy))
        assert st.c2s.bytes() == EXACT[policy].encode() + b"DATA"
        frames = {(c.kept_frame, c.dropped_frame) for c in st.c2s.conflicts}
        assert [(c.offset, c.length) for c in st.c2s.conflicts] == [(0, 4)]
        assert frames <= {(good.frame, evil.frame), (evil.frame, good.frame)}


# --------------------------------------------------------------------------- gaps


GAP_CASES = {
    # script: (fill, omit, gaps)
    "SYN 1 3 FIN": (
        PIECES[0] + bytes(L2) + PIECES[2],
        PIECES[0] + PIECES[2],
        [(L1, L2)],
    ),
    "SYN 2 3 FIN": (bytes(L1) + PIECES[1] + PIECES[2], PIECES[1] + PIECES[2], [(0, L1)]),
    "SYN 1 FIN": (PIECES[0] + bytes(L2 + L3), PIECES[0], [(L1, L2 + L3)]),
    "SYN 3 1 FIN": (
        PIECES[0] + bytes(L2) + PIECES[2],
        PIECES[0] + PIECES[2],
        [(L1, L2)],
    ),
    "SYN 1 3": (PIECES[0] + bytes(L2) + PIECES[2], PIECES[0] + PIECES[2], [(L1, L2)]),
}


@pytest.mark.parametrize("script", GAP_CASES, ids=script_name)
def test_gaps_keep_offsets(tmp_path: Path, script: str) -> None:
    fill, omit, gaps = GAP_CASES[script]
    s = Session().play(script, PIECES)
    with opened(s, tmp_path / "gap.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == fill
        assert st.c2s.bytes(gaps="omit") == omit
        assert [(g.offset, g.length, g.reason) for g in st.c2s.gaps] == [
            (o, n, GapReason.NOT_CAPTURED) for o, n in gaps
        ]
        assert st.c2s.length == len(fill)
        assert st.c2s.kept_bytes == len(omit)
        for c in st.c2s.chunks():  # offsets are relative sequence numbers, gaps or not
            assert fill[c.offset : c.offset + c.length] == c.data


def test_truncated_packet_leaves_truncated_gap(tmp_path: Path) -> None:
    data = bytes((i * 7) % 251 for i in range(300))
    s = Session()
    s.handshake()
    s.c(0, data[:100])
    # 14 Ethernet + 20 IPv4 + 20 TCP + 30 payload bytes captured of 100
    cut = s.c(100, data[100:200], snap=14 + 20 + 20 + 30)
    s.c(200, data[200:])
    s.close()
    with opened(s, tmp_path / "trunc.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.length == 300
        assert st.c2s.bytes() == data[:130] + bytes(70) + data[200:]
        assert st.c2s.bytes(gaps="omit") == data[:130] + data[200:]
        assert [(g.offset, g.length, g.reason) for g in st.c2s.gaps] == [
            (130, 70, GapReason.TRUNCATED)
        ]
        assert fates_of(cap, cut.frame) == [(100, 30, Fate.NEW), (130, 70, Fate.TRUNCATED)]


def test_truncated_packet_filled_by_full_retransmission(tmp_path: Path) -> None:
    data = bytes((i * 11) % 253 for i in range(200))
    s = Session()
    s.handshake()
    s.c(0, data[:100], snap=14 + 20 + 20 + 10)
    s.c(100, data[100:])
    s.c(0, data[:100])  # the whole segment again, captured in full
    with opened(s, tmp_path / "trunc2.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == data
        assert st.c2s.gaps == []


def test_truncated_gap_then_missing_gap(tmp_path: Path) -> None:
    """A truncated tail followed by bytes never captured: two gaps, two reasons."""
    s = Session()
    s.handshake()
    s.c(0, b"x" * 50, snap=14 + 20 + 20 + 20)
    s.c(80, b"y" * 10)
    with opened(s, tmp_path / "trunc3.pcap") as cap:
        st = only(cap.streams())
        assert [(g.offset, g.length, g.reason) for g in st.c2s.gaps] == [
            (20, 30, GapReason.TRUNCATED),
            (50, 30, GapReason.NOT_CAPTURED),
        ]
        assert st.c2s.bytes() == b"x" * 20 + bytes(60) + b"y" * 10


# --------------------------------------------------------------------------- sequence space


@pytest.mark.parametrize("cisn", WRAP_ISNS)
@pytest.mark.parametrize("sisn", WRAP_ISNS)
def test_sequence_wraparound(tmp_path: Path, cisn: int, sisn: int) -> None:
    pieces = (b"0123456789", b"abcdefghij", b"KLMNOPQRST")
    s = Session(cisn=cisn, sisn=sisn)
    s.play("SYN 2 3 1", pieces)
    s.s(12, b"-second-half")
    s.s(0, b"first-half..")
    s.close()
    with opened(s, tmp_path / "wrap.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"".join(pieces)
        assert st.s2c.bytes() == b"first-half..-second-half"
        assert st.c2s.gaps == st.s2c.gaps == []
        assert (st.c2s.close, st.s2c.close) == ("fin", "fin")


@pytest.mark.parametrize("isn", WRAP_ISNS)
def test_segment_beyond_window_is_not_placed(tmp_path: Path, isn: int) -> None:
    s = Session(cisn=isn)
    s.handshake()
    s.c(0, b"hello")
    far = s.c(5 + (1 << 30) + 1000, b"far far away")
    s.c(5, b" world")
    with opened(s, tmp_path / "far.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"hello world"
        assert st.c2s.length == 11
        assert st.c2s.gaps == []
        assert fates_of(cap, far.frame) == [(5 + (1 << 30) + 1000, 12, Fate.OUTSIDE_WINDOW)]


# The receiver's window (docs/reassembly-rules.md): a client segment is outside when it
# starts at or beyond max(highest server ACK, end of the client's hole-free bytes) + the
# largest window the server advertised (scaled when both SYNs carried Window Scale, RFC 7323
# §2.2-2.3; never the window of the SYN-ACK itself) + SLACK.
SLACK = 1 << 20


def _windowed(client_ws: int | None, server_ws: int | None) -> tuple[Session, int]:
    """Handshake with the given Window Scale options, "hello" acknowledged by a server that
    advertises 1024 (its SYN-ACK says 65535); returns the session and the window in bytes
    that the rule must use (1024 << shift, or the SYN-ACK's 65535 unscaled)."""
    s = Session()
    s.syn(options=() if client_ws is None else (WScale(client_ws),))
    s.synack(options=() if server_ws is None else (WScale(server_ws),))
    s.ack_c()
    s.c(0, b"hello")
    s.ack_s(window=1024)
    shift = server_ws if client_ws is not None and server_ws is not None else 0
    return s, max(65535, 1024 << min(shift or 0, 14))


@pytest.mark.parametrize(
    ("client_ws", "server_ws"),
    [(7, 7), (None, 7), (7, None), (0, 0), (14, 14), (7, 15)],
    ids=["both-7", "client-none", "server-none", "both-0", "both-14", "15-means-14"],
)
def test_window_from_the_receivers_scaled_window(
    tmp_path: Path, client_ws: int | None, server_ws: int | None
) -> None:
    """A segment starting one byte before the limit is placed (a gap before it); one starting
    at the limit is outside the window. Scaling applies only when both SYNs carried the option,
    and a shift above 14 counts as 14 (RFC 7323 §2.3)."""
    s, window = _windowed(client_ws, server_ws)
    limit = 5 + window + SLACK
    inside = s.c(limit - 1, b"in")
    outside = s.c(limit, b"out")
    with opened(s, tmp_path / "wnd.pcap") as cap:
        st = only(cap.streams())
        assert fates_of(cap, inside.frame) == [(limit - 1, 2, Fate.NEW)]
        assert fates_of(cap, outside.frame) == [(limit, 3, Fate.OUTSIDE_WINDOW)]
        assert st.c2s.length == limit + 1
        assert [(g.offset, g.length) for g in st.c2s.gaps] == [(5, limit - 6)]


def test_syn_window_is_never_scaled(tmp_path: Path) -> None:
    """Both SYNs carry Window Scale 7; the SYN-ACK's window field (65535) is not scaled
    (RFC 7323 §2.2), so the server's largest window is 1024 << 7 = 131072, not 65535 << 7."""
    s, window = _windowed(7, 7)
    assert window == 131072
    beyond = s.c(5 + 4 * window + SLACK, b"beyond")  # inside, were the SYN-ACK scaled
    with opened(s, tmp_path / "synwnd.pcap") as cap:
        assert [f for _, _, f in fates_of(cap, beyond.frame)] == [Fate.OUTSIDE_WINDOW]
        assert only(cap.streams()).c2s.length == 5


def test_acknowledged_segment_is_never_outside(tmp_path: Path) -> None:
    """A sparse capture: a client segment 300 MB ahead, far beyond the server's window, but
    the server acknowledged it (so it was accepted); the bytes between are a gap."""
    s, _ = _windowed(None, None)
    far = s.c(300_000_000, b"far ahead")
    s.ack_s()  # acknowledges 300_000_009
    with opened(s, tmp_path / "acked.pcap") as cap:
        st = only(cap.streams())
        assert fates_of(cap, far.frame) == [(300_000_000, 9, Fate.NEW)]
        assert st.c2s.length == 300_000_009
        assert [(g.offset, g.length) for g in st.c2s.gaps] == [(5, 300_000_000 - 5)]


def test_hole_free_bytes_move_the_window(tmp_path: Path) -> None:
    """The server is seen at the handshake only (its ACKs were not captured): the client's
    bytes without a hole from offset 0 show how far it must have received (RCV.NXT), so a
    long contiguous transfer is placed, and a segment a window and SLACK past its end is not."""
    s = Session()
    s.handshake()
    step = 60_000
    for k in range(40):  # 2.4 MB, each segment captured short (8 bytes of 60,000)
        s.c(k * step, b"%08d" % k + bytes(step - 8), snap=14 + 20 + 20 + 8)
    end = 40 * step
    near = s.c(end + 65535 + SLACK - 1, b"near")
    beyond = s.c(end + 2 * (65535 + SLACK), b"beyond")
    with opened(s, tmp_path / "contiguous.pcap") as cap:
        assert [f for _, _, f in fates_of(cap, near.frame)] == [Fate.NEW]
        assert [f for _, _, f in fates_of(cap, beyond.frame)] == [Fate.OUTSIDE_WINDOW]
        assert only(cap.streams()).c2s.length == end + 65535 + SLACK + 3


def test_receiver_unseen_falls_back_to_1_gib(tmp_path: Path) -> None:
    """Only the client's packets were captured: nothing shows the server's window, so a
    segment is outside only more than 1 GiB past the furthest end placed."""
    t = Trace()
    s = t.session()
    s.c(0, b"hello")
    near = s.c(5 + (1 << 30) - 10, b"near")
    far = s.c(5 + (1 << 30) - 6 + (1 << 30) + 1000, b"far")
    with opened(t, tmp_path / "oneway.pcap") as cap:
        assert [f for _, _, f in fates_of(cap, near.frame)] == [Fate.NEW]
        assert [f for _, _, f in fates_of(cap, far.frame)] == [Fate.OUTSIDE_WINDOW]


# --------------------------------------------------------------------------- probes


@pytest.mark.parametrize("probe", [b"", b"\x00", b"o"], ids=["empty", "garbage", "repeat"])
def test_keepalive_adds_no_bytes(tmp_path: Path, probe: bytes) -> None:
    """Keep-alive: seq = SND.NXT - 1 with 0 or 1 byte (RFC 9293 §3.8.4)."""
    s = Session()
    s.handshake()
    s.c(0, b"hello")
    s.ack_s()
    ka = s.c(4, probe, ACK)
    s.ack_s()
    ka2 = s.c(4, probe, ACK)
    s.c(5, b" world")
    with opened(s, tmp_path / "ka.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"hello world"
        assert st.c2s.conflicts == []
        assert st.c2s.gaps == []
        if probe:
            for f in (ka, ka2):
                assert fates_of(cap, f.frame) == [(4, 1, Fate.KEEPALIVE)]


@pytest.mark.parametrize("policy", ["first", "last"])
def test_one_byte_rewrite_of_last_byte_is_not_a_keepalive(tmp_path: Path, policy: str) -> None:
    """A 1-byte segment at the highest offset seen minus one, with another byte, while the
    stream still has a hole before it (so the peer cannot have acknowledged up to there): an
    overlap with a different byte, not a keep-alive. It must be reported as a conflict, and
    ``last`` must take it (the starts-after vector of docs/overlap-policies.md, reduced)."""
    s = Session()
    s.handshake()
    s.c(0, b"AAAA")
    s.c(10, b"GG")  # hole 4..10; highest end 12
    o = s.c(11, b"O")
    with opened(s, tmp_path / "ka-or-overlap.pcap") as cap:
        st = only(cap.streams(policy=policy))
        assert [(c.offset, c.length) for c in st.c2s.conflicts] == [(11, 1)]
        assert st.c2s.bytes()[10:12] == (b"GO" if policy == "last" else b"GG")
        assert Fate.KEEPALIVE not in {f for _, _, f in fates_of(cap, o.frame, policy=policy)}


def test_pure_acks_add_nothing(tmp_path: Path) -> None:
    s = Session()
    s.handshake()
    for _ in range(5):
        s.ack_c()
        s.ack_s()
    with opened(s, tmp_path / "acks.pcap") as cap:
        st = only(cap.streams())
        assert (st.c2s.bytes(), st.s2c.bytes()) == (b"", b"")
        assert (st.c2s.length, st.s2c.length) == (0, 0)
        assert st.c2s.gaps == st.s2c.gaps == []
        assert len(cap.plan().rows["frame"]) == 0


def test_zero_window_probe_byte_kept_once(tmp_path: Path) -> None:
    s = Session()
    s.handshake()
    s.c(0, b"abcde")
    s.ack_s(window=0)
    first = s.c(5, b"f")  # zero-window probe: the next byte
    s.s(0, b"", ACK, ack=s.seq_of(True, 5), window=0)  # not accepted
    again = s.c(5, b"f")
    s.s(0, b"", ACK, ack=s.seq_of(True, 5), window=0)
    rest = s.c(5, b"fghij")  # window open: the probe byte is sent again with the rest
    with opened(s, tmp_path / "zwp.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"abcdefghij"
        assert st.c2s.conflicts == [] and st.c2s.gaps == []
        assert fates_of(cap, first.frame) == [(5, 1, Fate.NEW)]
        # The repeated probe sits at the capture's SND.NXT - 1 with an identical byte: a
        # retransmission, or a keep-alive by the RFC 9293 §3.8.4 shape (Wireshark's rule
        # too). Either way it adds nothing.
        ((off, n, fate),) = fates_of(cap, again.frame)
        assert (off, n) == (5, 1) and fate in (Fate.RETRANSMISSION, Fate.KEEPALIVE)
        assert fates_of(cap, rest.frame) == [(5, 1, Fate.OVERLAP_SAME), (6, 4, Fate.NEW)]


# --------------------------------------------------------------------------- SYN, FIN, RST


def test_syn_data_tcp_fast_open(tmp_path: Path) -> None:
    s = Session()
    syn = s.syn(b"GET / HTTP/1.1\r\n")
    s.synack()  # acks ISN + 1 + 16
    s.ack_c()
    s.c(16, b"Host: a\r\n\r\n")
    s.s(0, b"HTTP/1.1 200 OK\r\n")
    s.close()
    with opened(s, tmp_path / "tfo.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        assert st.s2c.bytes() == b"HTTP/1.1 200 OK\r\n"
        assert fates_of(cap, syn.frame) == [(0, 16, Fate.NEW)]
        assert st.c2s.gaps == []


def test_syn_data_retransmitted_without_data(tmp_path: Path) -> None:
    """The TFO server did not accept the SYN data; the client sends it again after the
    handshake (RFC 7413 §4.2.2): offset 0 holds it once."""
    s = Session()
    s.syn(b"hello")
    s.send(False, -1, b"", SYN | ACK, ack=s.seq_of(True, -1) + 1)  # acks the SYN only
    s.c(0, b"hello")
    s.c(5, b" again")
    with opened(s, tmp_path / "tfo2.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"hello again"
        assert st.c2s.conflicts == []


def test_fin_with_data_and_close_states(tmp_path: Path) -> None:
    s = Session()
    s.handshake()
    s.c(0, b"bye", PSH | ACK | FIN)
    s.s(0, b"ok", PSH | ACK | FIN)
    s.ack_c()
    with opened(s, tmp_path / "fin.pcap") as cap:
        st = only(cap.streams())
        assert (st.c2s.bytes(), st.s2c.bytes()) == (b"bye", b"ok")
        assert (st.c2s.length, st.s2c.length) == (3, 2)  # FIN takes no stream byte
        assert (st.c2s.close, st.s2c.close) == ("fin", "fin")
        assert st.c2s.gaps == st.s2c.gaps == []


def test_rst_payload_and_data_after_rst(tmp_path: Path) -> None:
    s = Session()
    s.handshake()
    s.c(0, b"Please Let Me In!")
    rst = s.rst_s(b"Access Denied")
    late = s.c(17, b"more after reset")
    with opened(s, tmp_path / "rst.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"Please Let Me In!"
        assert st.s2c.bytes() == b""
        assert st.s2c.length == 0 and st.s2c.gaps == []
        assert st.s2c.close == "rst"
        assert fates_of(cap, rst.frame) == [(0, 13, Fate.RST_DATA)]
        assert fates_of(cap, late.frame) == [(17, 16, Fate.AFTER_CLOSE)]
        assert st.c2s.length == 17 and st.c2s.gaps == []


def test_data_beyond_fin_is_not_stream(tmp_path: Path) -> None:
    """RFC 9293 §3.10.7.4 (check the FIN bit): bytes beyond the sender's FIN are discarded.
    Arrival: SYN, "hello", FIN at 5, " evil" at 5, then "hello" again (a retransmission of
    bytes before the FIN stays one)."""
    s = Session()
    s.handshake()
    s.c(0, b"hello")
    s.fin_c(5)
    evil = s.c(5, b" evil")
    again = s.c(0, b"hello")
    with opened(s, tmp_path / "afterfin.pcap") as cap:
        st = only(cap.streams())
        assert st.c2s.bytes() == b"hello"
        assert (st.c2s.length, st.c2s.close, st.c2s.gaps) == (5, "fin", [])
        assert fates_of(cap, evil.frame) == [(5, 5, Fate.AFTER_FIN)]
        assert fates_of(cap, again.frame) == [(0, 5, Fate.RETRANSMISSION)]
        assert str(Fate.AFTER_FIN) == "after-fin"
        fates = cap.plan().to_arrow()["fate"].to_pylist()
        assert fates.count("after-fin") == 1


def test_segment_across_the_fin_is_cut_there(tmp_path: Path) -> None:
    """FIN|data "bye" (FIN at 3), then "e, and more" at 2: the part before the FIN (byte 2)
    is a retransmission (as the captured part of a truncated segment is), bytes 3.. are after
    the FIN; one captured short past the FIN leaves no gap."""
    s = Session()
    s.handshake()
    s.c(0, b"bye", PSH | ACK | FIN)
    cross = s.c(2, b"e, and more")
    cut = s.c(1, b"ye and more", snap=14 + 20 + 20 + 4)  # "ye a" captured, FIN at 3
    with opened(s, tmp_path / "cross.pcap") as cap:
        st = only(cap.streams())
        assert (st.c2s.bytes(), st.c2s.length, st.c2s.close) == (b"bye", 3, "fin")
        assert st.c2s.gaps == []
        assert fates_of(cap, cross.frame) == [(2, 1, Fate.RETRANSMISSION), (3, 10, Fate.AFTER_FIN)]
        assert fates_of(cap, cut.frame) == [(1, 2, Fate.RETRANSMISSION), (3, 2, Fate.AFTER_FIN)]


def test_fin_seen_before_the_data_it_follows(tmp_path: Path) -> None:
    """ACK-before-data at the capture point: the FIN at 10 arrives first, then the bytes
    before it (placed), then bytes beyond it (not placed)."""
    s = Session()
    s.handshake()
    s.fin_c(10)
    first = s.c(0, b"0123456789")
    late = s.c(10, b"late")
    with opened(s, tmp_path / "finfirst.pcap") as cap:
        st = only(cap.streams())
        assert (st.c2s.bytes(), st.c2s.close) == (b"0123456789", "fin")
        assert fates_of(cap, first.frame) == [(0, 10, Fate.NEW)]
        assert fates_of(cap, late.frame) == [(10, 4, Fate.AFTER_FIN)]


def test_truncated_bytes_before_the_fin_are_a_truncated_gap(tmp_path: Path) -> None:
    """A segment [0, 10) captured to 3 bytes, FIN at 6: bytes 3..6 are a truncated gap, and
    nothing is claimed beyond the FIN."""
    s = Session()
    s.handshake()
    seg = s.c(0, b"abcdefghij", snap=14 + 20 + 20 + 3)
    s.fin_c(6)
    with opened(s, tmp_path / "truncfin.pcap") as cap:
        st = only(cap.streams())
        assert fates_of(cap, seg.frame) == [(0, 3, Fate.NEW), (3, 3, Fate.TRUNCATED)]
        assert [(g.offset, g.length, g.reason) for g in st.c2s.gaps] == [
            (3, 3, GapReason.TRUNCATED)
        ]
        assert st.c2s.length == 6


# --------------------------------------------------------------------------- checksums


def _checksum_session(
    *, bad: set[int], all_client_bad: bool = False, peer_acks: bool = True
) -> tuple[Session, list[Any]]:
    s = Session()
    ck = "bad" if all_client_bad else "good"
    s.syn(checksum=ck)
    s.synack()
    s.ack_c(checksum=ck)
    sent = []
    for i, piece in enumerate(PIECES):
        off = sum(len(p) for p in PIECES[:i])
        sent.append(s.c(off, piece, checksum="bad" if (i in bad or all_client_bad) else "good"))
        ack = None if peer_acks else s.seq_of(True, 0)
        s.s(0, b"", ACK, ack=ack)
    return s, sent


@pytest.mark.parametrize("mode", ["auto", "strict", "ignore"])
def test_checksum_one_bad_segment(tmp_path: Path, mode: str) -> None:
    s, sent = _checksum_session(bad={1})
    with opened(s, tmp_path / "ck1.pcap") as cap:
        st = only(cap.streams(checksums=mode))
        if mode == "ignore":
            assert st.c2s.bytes() == WHOLE and st.c2s.gaps == []
        else:  # auto: this direction is not all-bad, so the bad segment is dropped
            assert st.c2s.bytes() == PIECES[0] + bytes(L2) + PIECES[2]
            assert [(g.offset, g.length) for g in st.c2s.gaps] == [(L1, L2)]
            assert fates_of(cap, sent[1].frame, checksums=mode) == [(L1, L2, Fate.BAD_CHECKSUM)]


@pytest.mark.parametrize("mode", ["auto", "strict", "ignore"])
def test_checksum_bad_then_good_retransmission(tmp_path: Path, mode: str) -> None:
    s, _ = _checksum_session(bad={1})
    s.c(L1, PIECES[1])  # good copy
    with opened(s, tmp_path / "ck2.pcap") as cap:
        st = only(cap.streams(checksums=mode))
        assert st.c2s.bytes() == WHOLE and st.c2s.gaps == [] and st.c2s.conflicts == []


@pytest.mark.parametrize("mode", ["auto", "strict", "ignore"])
def test_checksum_offload_direction(tmp_path: Path, mode: str) -> None:
    """Every client checksum is bad (the capture was taken on the sender before the NIC
    filled them in) while the server acknowledges the data: auto keeps it."""
    s, _ = _checksum_session(bad=set(), all_client_bad=True, peer_acks=True)
    with opened(s, tmp_path / "offload.pcap") as cap:
        st = only(cap.streams(checksums=mode))
        if mode == "strict":
            assert st.c2s.kept_bytes == 0
        else:
            assert st.c2s.bytes() == WHOLE and st.c2s.gaps == []


def test_checksum_offload_capture_ends_before_the_data_is_acknowledged(tmp_path: Path) -> None:
    """Every client segment is bad and the capture ends before the server acknowledges the
    data (issue 13.4): the server's SYN-ACK answered the (bad) SYN, so the client's
    segments were good on the wire and ``auto`` keeps them, as tshark's follow shows."""
    s, _ = _checksum_session(bad=set(), all_client_bad=True, peer_acks=False)
    with opened(s, tmp_path / "noack.pcap") as cap:
        assert only(cap.streams(checksums="auto")).c2s.bytes() == WHOLE
        assert only(cap.streams(checksums="strict")).c2s.kept_bytes == 0
    out = tmp_path / "x"
    r = CliRunner().invoke(app, ["extract", str(tmp_path / "noack.pcap"), "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    [c2s] = [json.loads(x) for x in (out / "streams.jsonl").read_text().splitlines()
             if json.loads(x)["direction"] == "c2s"]  # fmt: skip
    assert (out / c2s["path"]).read_bytes() == WHOLE
    if shutil.which("tshark"):  # tshark's follow shows the client's bytes too
        assert _tshark_client_bytes(tmp_path / "noack.pcap") == WHOLE


def _tshark_client_bytes(path: Path) -> bytes:
    """The client's bytes of stream 0 as ``tshark -z follow,tcp,raw,0`` prints them (the
    client's chunks unindented, the server's indented by a tab)."""
    text = subprocess.run(
        ["tshark", "-q", "-r", str(path), "-z", "follow,tcp,raw,0"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    body = text.split("Node 1:", 1)[1].split("\n", 1)[1].split("=" * 20, 1)[0]
    return b"".join(bytes.fromhex(x) for x in body.splitlines() if x and not x[0].isspace())


def _unanswered(tmp_path: Path, ip_checksum: str) -> Path:
    """A client picked up mid-stream whose data segments all carry bad TCP checksums and
    that nobody answers (the server's ACKs acknowledge none of it)."""
    s = Session()
    first = s.seq_of(True, 0)
    for i, piece in enumerate(PIECES):
        off = sum(len(p) for p in PIECES[:i])
        s.c(off, piece, checksum="bad", ip_checksum=ip_checksum)
        s.s(0, b"", ACK, ack=first)
    return s.write(tmp_path / f"unanswered-{ip_checksum}.pcap")


def test_checksum_unanswered_bad_segments_are_dropped_in_auto(tmp_path: Path) -> None:
    """Bad TCP checksums that nobody answered, under correct IPv4 headers: nothing shows
    they were good on the wire (corruption or insertion look the same), so auto drops them."""
    with tcpweave.open(_unanswered(tmp_path, "good")) as cap:
        assert only(cap.streams(checksums="auto")).c2s.kept_bytes == 0
        assert only(cap.streams(checksums="ignore")).c2s.bytes() == WHOLE


def test_checksum_offload_of_ipv4_header_too(tmp_path: Path) -> None:
    """A sender whose IPv4 header checksums are unfilled as well (stacks that offload both)
    is offloaded even when nothing answers it."""
    with tcpweave.open(_unanswered(tmp_path, "bad")) as cap:
        assert only(cap.streams(checksums="auto")).c2s.bytes() == WHOLE
        assert only(cap.streams(checksums="strict")).c2s.kept_bytes == 0


def _two_flows_of_one_host(tmp_path: Path, cport: int, offloaded: bool) -> Path:
    """Two flows of host 10.0.0.1. The first: a handshake the server answers, then data
    -- with good checksums, or (``offloaded``) everything bad. The second: only bad
    segments, and nothing of it answered (its server is not in the capture). The host's
    verdict depends on the first flow, the bytes at stake are in the second."""
    trace = Trace()
    ck = "bad" if offloaded else "good"
    first = trace.session(cport=41000)
    first.syn(checksum=ck)
    first.synack()
    first.ack_c(checksum=ck)
    first.c(0, b"first flow data", checksum=ck)
    second = trace.session(cport=cport, server="10.0.0.3")
    for i, piece in enumerate(PIECES):
        off = sum(len(p) for p in PIECES[:i])
        second.c(off, piece, checksum="bad")
    return trace.write(tmp_path / f"two-flows-{cport}-{ck}.pcap")


def _partition_servers(part: Any) -> set[str]:
    return set(part.packets.address_strings("dst")) - {"10.0.0.1"}


ROWS_PER_PARTITION = 2


def _split_flows(tmp_path: Path, offloaded: bool) -> Path:
    """The two flows of ``_two_flows_of_one_host`` with ports that put them in different
    partitions of a spilled run, so that the verdict has to be made across partitions."""
    for cport in range(42000, 42064):
        path = _two_flows_of_one_host(tmp_path, cport, offloaded)
        spilled = Run([str(path)], Settings(), whole=False, rows_per_partition=ROWS_PER_PARTITION)
        with spilled as run:
            if all(len(servers) < 2 for _, servers in run.map(_partition_servers)):
                return path
    raise AssertionError("no client port separates the flows")


@pytest.mark.parametrize("offloaded", [False, True], ids=["host-computes", "host-offloads"])
def test_checksum_offload_is_decided_per_host_over_the_whole_capture(
    tmp_path: Path, offloaded: bool
) -> None:
    """The same verdict whatever the partitioning: extract on one in-memory partition and
    on spilled ones holding one flow each, and the stream API, agree. The second flow's
    bytes are kept exactly when the host is offloaded, which only the first flow shows."""
    path = _split_flows(tmp_path, offloaded)
    outs = []
    for extra in ([], ["--partition-rows", str(ROWS_PER_PARTITION), "--jobs", "1"]):
        out = tmp_path / f"x{len(extra)}"
        r = CliRunner().invoke(app, ["extract", str(path), "-o", str(out), "-q", *extra])
        assert r.exit_code == 0, r.output
        lines = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
        outs.append(sorted((d["dst"], d["bytes"]) for d in lines if d["direction"] == "c2s"))
    second = len(WHOLE) if offloaded else 0
    assert outs[0] == outs[1] == [("10.0.0.2", len(b"first flow data")), ("10.0.0.3", second)]
    with tcpweave.open(path) as cap:
        kept = sorted((s.server[0], s.c2s.kept_bytes) for s in cap.streams())
    assert kept == outs[0]


# --------------------------------------------------------------------------- sessions and roles


def test_midstream_pickup_lower_port_is_server(tmp_path: Path) -> None:
    """No SYN: the server is the endpoint on the lower port; the first packet comes from
    it here. Offset 0 is the lowest sequence number seen."""
    s = Session(cport=51000, sport=8080, cisn=123456, sisn=987654)
    s.s(300, b"response")
    s.c(110, b"second")
    s.c(100, b"first-----")
    s.c(116, b"third")
    with opened(s, tmp_path / "mid.pcap") as cap:
        st = only(cap.streams())
        assert st.client == ("10.0.0.1", 51000)
        assert st.server == ("10.0.0.2", 8080)
        assert st.c2s.bytes() == b"first-----secondthird"
        assert st.c2s.gaps == []
        assert st.s2c.bytes() == b"response"
        assert cap.flows.direction.tolist() == [1, 0, 0, 0]


def test_midstream_pickup_equal_ports_first_sender_is_client(tmp_path: Path) -> None:
    s = Session(client="10.0.0.9", server="10.0.0.3", cport=5000, sport=5000)
    s.c(0, b"from first sender")
    s.s(0, b"reply")
    with opened(s, tmp_path / "eq.pcap") as cap:
        st = only(cap.streams())
        assert st.client == ("10.0.0.9", 5000)
        assert st.c2s.bytes() == b"from first sender"
        assert st.s2c.bytes() == b"reply"


def test_synack_decides_roles_over_ports(tmp_path: Path) -> None:
    """The SYN-ACK's receiver is the client even when it listens on the lower port."""
    s = Session(client="10.0.0.1", server="10.0.0.2", cport=22, sport=50000)
    s.synack()
    s.ack_c()
    s.c(0, b"client bytes")
    with opened(s, tmp_path / "sa.pcap") as cap:
        st = only(cap.streams())
        assert st.client == ("10.0.0.1", 22)
        assert st.c2s.bytes() == b"client bytes"


@pytest.mark.parametrize("closer", ["FIN", "RST"])
def test_port_reuse_new_session(tmp_path: Path, closer: str) -> None:
    t = Trace()
    a = t.session(cisn=1000)
    a.handshake()
    a.c(0, b"first session")
    a.s(0, b"reply one")
    if closer == "FIN":
        a.close()
    else:
        a.rst_c()
    other = t.session(cport=40001, cisn=77)
    other.handshake()
    b = t.session(cisn=3_000_000_000, sisn=9000)  # same 4-tuple, new ISN
    b.handshake()
    b.c(0, b"second session")
    other.c(0, b"other")
    b.s(0, b"reply two")
    b.close()
    with opened(t, tmp_path / "reuse.pcap") as cap:
        s0, s1, s2 = cap.streams()
        assert [(x.index, x.session) for x in (s0, s1, s2)] == [(0, 0), (1, 0), (2, 1)]
        assert s0.client == s2.client == ("10.0.0.1", 40000)
        assert (s0.c2s.bytes(), s0.s2c.bytes()) == (b"first session", b"reply one")
        assert (s2.c2s.bytes(), s2.s2c.bytes()) == (b"second session", b"reply two")
        assert s1.c2s.bytes() == b"other"
        assert s0.c2s.close == ("fin" if closer == "FIN" else "rst")
        assert s2.c2s.close == "fin"
        assert s0.c2s.gaps == s2.c2s.gaps == []


def test_ipv6_session(tmp_path: Path) -> None:
    s = Session(client="2001:db8::1", server="2001:db8::2", cport=5555, sport=443)
    s.play("SYN 3 1 2 reply FIN", PIECES, reply=b"v6 reply")
    with opened(s, tmp_path / "v6.pcap") as cap:
        st = only(cap.streams())
        assert st.client == ("2001:db8::1", 5555)
        assert st.server == ("2001:db8::2", 443)
        assert (st.c2s.bytes(), st.s2c.bytes()) == (WHOLE, b"v6 reply")


# --------------------------------------------------------------------------- policy vectors


def _vector(name: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["name"] == name)


def _vector_session(vector: dict[str, Any], isn: int, upto: int | None = None) -> Session:
    s = Session(cisn=isn)
    s.handshake()
    segs = sorted(vector["segments"], key=lambda g: g["arrival"])
    for g in segs[: None if upto is None else upto + 1]:
        s.c(g["offset"], g["data"].encode("latin-1"), label=f"#{g['arrival']}")
    return s


_VECTOR_FILES: dict[tuple[str, int], Path] = {}


def _vector_capture(tmp_path_factory: pytest.TempPathFactory, name: str, isn: int) -> Path:
    key = (name, isn)
    if key not in _VECTOR_FILES:
        d = tmp_path_factory.mktemp("vectors")
        _VECTOR_FILES[key] = _vector_session(_vector(name), isn).write(d / f"{name}-{isn}.pcap")
    return _VECTOR_FILES[key]


VECTOR_ISNS = (10, 0, 2**32 - 1, 2**32 - 11)


@pytest.mark.parametrize("isn", VECTOR_ISNS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", [v["name"] for v in VECTORS])
def test_overlap_vectors(
    tmp_path_factory: pytest.TempPathFactory, name: str, policy: str, isn: int
) -> None:
    vector = _vector(name)
    expected = vector["expected"][policy].encode("latin-1")  # U+0000 = gap = zero byte
    path = _vector_capture(tmp_path_factory, name, isn)
    with tcpweave.open(path) as cap:
        st = only(cap.streams(policy=policy))
        assert st.c2s.bytes() == expected, (name, policy, isn)
        # gaps sit exactly where no segment supplied a byte
        covered = _coverage(vector)
        holes = [i for i in range(len(expected)) if i not in covered]
        assert sorted(i for g in st.c2s.gaps for i in range(g.offset, g.offset + g.length)) == (
            holes
        )
        _check_plan_accounts_for_every_byte(cap, path, vector, policy)


def _coverage(vector: dict[str, Any]) -> dict[int, set[str]]:
    cov: dict[int, set[str]] = {}
    for g in vector["segments"]:
        for i, ch in enumerate(g["data"]):
            cov.setdefault(g["offset"] + i, set()).add(ch)
    return cov


def _check_plan_accounts_for_every_byte(
    cap: tcpweave.Capture, path: Path, vector: dict[str, Any], policy: str
) -> None:
    """Every byte of every segment has exactly one plan row (whatever its fate); the bytes a
    row points at are that segment's bytes; conflicts cover exactly the offsets where two
    segments disagree, whatever the policy."""
    plan = cap.plan(policy=policy)
    rows = plan.rows
    first_data_frame = 4  # SYN, SYN-ACK, ACK come first
    segs = sorted(vector["segments"], key=lambda g: g["arrival"])
    for k, g in enumerate(segs):
        frame = first_data_frame + k
        mine = sorted(
            (int(rows["stream_offset"][i]), i)
            for i in range(len(rows["frame"]))
            if int(rows["frame"][i]) == frame
        )
        cursor = g["offset"]
        for off, i in mine:
            assert off == cursor, (vector["name"], policy, g, mine)
            n = int(rows["length"][i])
            rel = off - g["offset"]
            assert row_bytes(path, rows, i) == g["data"][rel : rel + n].encode("latin-1")
            cursor += n
        assert cursor == g["offset"] + len(g["data"]), (vector["name"], policy, g)
    disagree = sorted(o for o, chars in _coverage(vector).items() if len(chars) > 1)
    c = plan.conflicts
    reported = sorted(
        {
            i
            for o, n in zip(c["offset"].tolist(), c["length"].tolist(), strict=True)
            for i in range(o, o + n)
        }
    )
    assert reported == disagree, (vector["name"], policy)


def _checkpoint_cases() -> list[tuple[str, str, int]]:
    return [
        (v["name"], policy, k)
        for v in VECTORS
        for policy, snaps in v["checkpoints"].items()
        for k in range(len(snaps))
    ]


@pytest.mark.parametrize(
    ("name", "policy", "k"), _checkpoint_cases(), ids=lambda x: str(x).replace(" ", "")
)
def test_overlap_vector_checkpoints(tmp_path: Path, name: str, policy: str, k: int) -> None:
    """The stream after each arrival, as the Suricata unit tests assert it (ISN 10)."""
    vector = _vector(name)
    want = vector["checkpoints"][policy][k].encode("latin-1")
    s = _vector_session(vector, 10, upto=k)
    with opened(s, tmp_path / "cp.pcap") as cap:
        st = only(cap.streams(policy=policy))
        assert st.c2s.bytes() == want


# --------------------------------------------------------------------------- extract CLI

CONTRACT = (
    "stream",
    "session",
    "direction",
    "src",
    "sport",
    "dst",
    "dport",
    "first_ts",
    "last_ts",
    "packets",
    "bytes",
    "gaps",
    "conflicts",
    "close",
    "path",
    "sha256",
)
WINDOWS_BAD = re.compile(r'[<>:"\\|?*\x00-\x1f]')


def _extract_trace() -> tuple[Trace, dict[tuple[int, str], bytes]]:
    """Port reuse, a gap, a conflict, IPv6, a mid-stream pickup; expected bytes (filled)."""
    t = Trace()
    a = t.session(cisn=1000)
    a.handshake()
    a.c(0, b"first:")
    a.c(10, b"tail")  # gap 6..10
    a.s(0, b"reply-A")
    a.close()
    v6 = t.session(client="2001:db8::1", server="2001:db8::2", cport=5555, sport=443)
    v6.handshake()
    v6.c(0, b"v6 data")
    v6.c(0, b"XY")  # conflict at 0..2 (first policy keeps "v6")
    b = t.session(cisn=500_000)  # 4-tuple of a reused
    b.handshake()
    b.c(0, b"second session")
    b.rst_s()
    m = t.session(client="192.168.1.5", server="192.168.1.9", cport=60000, sport=25)
    m.s(0, b"220 ready\r\n")
    m.c(0, b"EHLO x\r\n")
    expected = {
        (0, "c2s"): b"first:" + bytes(4) + b"tail",
        (0, "s2c"): b"reply-A",
        (1, "c2s"): b"v6 data",
        (1, "s2c"): b"",
        (2, "c2s"): b"second session",
        (2, "s2c"): b"",
        (3, "c2s"): b"EHLO x\r\n",
        (3, "s2c"): b"220 ready\r\n",
    }
    return t, expected


def _run_extract(capture: Path, out: Path, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(app, ["extract", str(capture), "-o", str(out), *args])
    assert result.exit_code == 0, result.output
    lines = (out / "streams.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def extract_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trace, dict]:
    t, expected = _extract_trace()
    path = t.write(tmp_path_factory.mktemp("extract") / "mixed.pcap")
    return path, t, expected


def test_extract_files_and_manifest(tmp_path: Path, extract_capture: Any) -> None:
    path, trace, expected = extract_capture
    out = tmp_path / "out"
    records = _run_extract(path, out)
    assert {(r["stream"], r["direction"]) for r in records} == set(expected)
    by_key = {(r["stream"], r["direction"]): r for r in records}
    for r in records:
        missing = [k for k in CONTRACT if k not in r]
        assert not missing, (r, missing)
        want = expected[(r["stream"], r["direction"])]
        if r["path"] is None:  # an empty direction need not have a file
            assert want == b"" and r["sha256"] == hashlib.sha256(b"").hexdigest()
            continue
        f = out / r["path"]
        assert not Path(r["path"]).is_absolute()
        content = f.read_bytes()
        assert content == want, r
        assert hashlib.sha256(content).hexdigest() == r["sha256"]
        assert r["bytes"] == len(want) - (4 if (r["stream"], r["direction"]) == (0, "c2s") else 0)
    a, a_back = by_key[(0, "c2s")], by_key[(0, "s2c")]
    assert (a["src"], a["sport"], a["dst"], a["dport"]) == ("10.0.0.1", 40000, "10.0.0.2", 80)
    assert (a_back["src"], a_back["sport"]) == ("10.0.0.2", 80)
    assert (a["session"], by_key[(2, "c2s")]["session"]) == (0, 1)
    assert a["bytes"] == 10 and a["gaps"] == 1 and a["conflicts"] == 0
    assert a["close"] == "fin"
    assert by_key[(2, "s2c")]["close"] == "rst"
    v6 = by_key[(1, "c2s")]
    assert (v6["src"], v6["dst"]) == ("2001:db8::1", "2001:db8::2")
    assert v6["conflicts"] == 1 and v6["gaps"] == 0
    assert by_key[(3, "c2s")]["close"] == "open"
    assert (by_key[(3, "c2s")]["src"], by_key[(3, "c2s")]["sport"]) == ("192.168.1.5", 60000)
    # packets and timestamps per direction, from what was written
    for (stream, direction), r in by_key.items():
        sent = [
            f
            for f in trace.frames
            if _stream_of(trace, f) == stream and f.from_client == (direction == "c2s")
        ]
        assert r["packets"] == len(sent), r
        assert r["first_ts"] == pytest.approx(sent[0].ts_ns / 1e9, abs=1e-6)
        assert r["last_ts"] == pytest.approx(sent[-1].ts_ns / 1e9, abs=1e-6)
    _check_names(out, records)


def _stream_of(trace: Trace, frame: Any) -> int:
    order: list[Any] = []
    for f in trace.frames:
        if f.session not in order:
            order.append(f.session)
    return order.index(frame.session)


def _check_names(out: Path, records: list[dict[str, Any]]) -> None:
    paths = [r["path"] for r in records if r["path"] is not None]
    assert len(paths) == len(set(paths))
    assert len({p.lower() for p in paths}) == len(paths)  # case-insensitive filesystems
    for p in paths:
        for part in Path(p).parts:
            assert not WINDOWS_BAD.search(part), p
            assert part not in (".", "..") and not part.endswith((" ", "."))
    for p in [r["path"] for r in records if ":" in r["src"] and r["path"]]:
        assert ":" not in p
    files = sorted(
        str(f.relative_to(out))
        for f in out.rglob("*")
        if f.is_file() and ".tcpweave" not in f.relative_to(out).parts
    )
    assert files == sorted([*paths, "manifest.json", "streams.jsonl"])


def test_extract_gaps_omit(tmp_path: Path, extract_capture: Any) -> None:
    path, _, expected = extract_capture
    out = tmp_path / "omit"
    records = _run_extract(path, out, "--gaps", "omit")
    a = next(r for r in records if (r["stream"], r["direction"]) == (0, "c2s"))
    content = (out / a["path"]).read_bytes()
    assert content == b"first:tail"
    assert hashlib.sha256(content).hexdigest() == a["sha256"]
    assert a["gaps"] == 1
    for r in records:
        if r["path"]:
            want = expected[(r["stream"], r["direction"])]
            if (r["stream"], r["direction"]) != (0, "c2s"):
                assert (out / r["path"]).read_bytes() == want


def test_extract_policy_option(tmp_path: Path, extract_capture: Any) -> None:
    path, _, _ = extract_capture
    out = tmp_path / "last"
    records = _run_extract(path, out, "--policy", "last")
    v6 = next(r for r in records if (r["stream"], r["direction"]) == (1, "c2s"))
    assert (out / v6["path"]).read_bytes() == b"XY data"
    assert v6["conflicts"] == 1


def test_extract_names_never_collide(tmp_path: Path) -> None:
    """Many sessions of one 4-tuple, and 4-tuples whose printed forms are close."""
    t = Trace()
    for k in range(6):
        s = t.session(cisn=1000 + k * 100_000)
        s.handshake()
        s.c(0, f"session {k}".encode())
        s.close()
    for cport, sport in ((1, 23), (12, 3)):  # "10.0.0.1.1-..23" vs "10.0.0.1.12-..3"
        s = t.session(cport=cport, sport=sport)
        s.c(0, b"x")
    s = t.session(client="fe80::1", server="fe80::1:0", cport=1, sport=2)
    s.c(0, b"y")
    path = t.write(tmp_path / "many.pcap")
    for layout in ("tcpweave", "tcpflow"):
        out = tmp_path / layout
        records = _run_extract(path, out, "--layout", layout)
        paths = [r["path"] for r in records if r["path"]]
        assert len(paths) == 9
        assert len(set(paths)) == len(paths), layout
        if layout == "tcpweave":
            _check_names(out, records)
            assert sorted(paths) == paths  # names sort by stream index


def _tcpflow_trace() -> Trace:
    t = Trace()
    for k, isn in enumerate((1000, 900_000, 5_000_000)):
        s = t.session(cisn=isn)
        s.handshake()
        s.c(0, f"client {k}".encode())
        if k < 2:
            s.s(0, f"server {k}".encode())
        s.close()
    v6 = t.session(client="2001:db8::1", server="2001:db8::2", cport=5555, sport=443)
    v6.handshake()
    v6.c(0, b"v6 data")
    v6.s(0, b"v6 reply")
    v6.close()
    return t


TCPFLOW = shutil.which("tcpflow")


def test_extract_tcpflow_layout_names(tmp_path: Path) -> None:
    path = _tcpflow_trace().write(tmp_path / "reuse.pcap")
    out = tmp_path / "tw"
    records = _run_extract(path, out, "--layout", "tcpflow")
    ours = {r["path"] for r in records if r["path"]}
    known = {
        "010.000.000.001.40000-010.000.000.002.00080",
        "010.000.000.002.00080-010.000.000.001.40000",
        "010.000.000.001.40000-010.000.000.002.00080c1",
        "010.000.000.002.00080-010.000.000.001.40000c1",
        "010.000.000.001.40000-010.000.000.002.00080c2",
    }
    assert known <= ours
    if TCPFLOW is None:
        pytest.skip("tcpflow is not installed; checked the IPv4 names only")
    real = tmp_path / "tcpflow"
    real.mkdir()
    subprocess.run(
        [TCPFLOW, "-r", str(path), "-o", str(real)], check=True, capture_output=True, timeout=60
    )
    theirs = {f.name for f in real.iterdir() if f.is_file() and f.name not in ("report.xml",)}
    assert ours == theirs
    for r in records:
        if r["path"]:
            assert (out / r["path"]).read_bytes() == (real / r["path"]).read_bytes()


def test_extract_idle_timeout_splits_a_silent_4_tuple(tmp_path: Path) -> None:
    """Mid-stream traffic on one 4-tuple, 100 s of silence, more traffic: one session by the
    SYN rules; two with --idle-timeout 60 (the second numbered from its own first byte)."""
    t = Trace()
    m = t.session(client="192.168.1.5", server="192.168.1.9", cport=60000, sport=25)
    m.c(0, b"before ")
    m.s(0, b"ok")
    late = m.trace.next_ts() + 100 * 10**9
    m.c(7, b"after", ts_ns=late)
    m.s(2, b"!", ts_ns=late + 10**6)
    path = t.write(tmp_path / "idle.pcap")
    one = _run_extract(path, tmp_path / "plain")
    assert [(r["stream"], r["direction"], r["bytes"]) for r in one] == [
        (0, "c2s", 12), (0, "s2c", 3)
    ]  # fmt: skip
    two = _run_extract(path, tmp_path / "idle", "--idle-timeout", "60")
    assert [(r["stream"], r["session"], r["direction"], r["bytes"]) for r in two] == [
        (0, 0, "c2s", 7), (0, 0, "s2c", 2), (1, 1, "c2s", 5), (1, 1, "s2c", 1)
    ]  # fmt: skip
    files = {r["path"]: r for r in two}
    assert {(tmp_path / "idle" / p).read_bytes() for p in files} == {
        b"before ",
        b"ok",
        b"after",
        b"!",
    }
