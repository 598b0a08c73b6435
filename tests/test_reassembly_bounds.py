"""Bounded cost for any input, and the window on captures that jump or wrap (issues 12, 13).

Crafted with ``tests/sessions.py`` on the independent builders of ``tests/craft.py``; every
expectation follows from what was put into the capture. Nothing here measures time: the
overlap storm asserts how many plan rows and conflict records the plan holds, which grew
with (segments x pieces overlapped) before, and with the number of packets now.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import tcpweave
from conftest import stream_tree
from craft import WScale
from sessions import ACK, FIN, PSH, Session
from tcpweave import Fate, GapReason
from tcpweave.cli.app import app
from tcpweave.reassembly._kernels import EXACT_CONFLICTS


@contextmanager
def opened(s: Session, path: Path) -> Iterator[tcpweave.Capture]:
    s.write(path)
    with tcpweave.open(path) as cap:
        yield cap


# --------------------------------------------------------------------------- overlap storm


def overlap_storm(n: int, covers: str) -> tuple[Session, bytes]:
    """n one-byte segments at offsets 0, 2, 4, ..., then n segments each covering all of them
    ([0, 2n)). ``covers``: "same" (every cover carries the true bytes), "own" (each cover
    bytes of its own: it differs almost everywhere), "alternating" (every cover differs from
    the one-byte segments, equals the first cover elsewhere). Returns the truth too."""
    rnd = random.Random(n)
    truth = bytes(rnd.randrange(256) for _ in range(2 * n))
    s = Session()
    s.handshake()
    for k in range(n):
        s.c(2 * k, truth[2 * k : 2 * k + 1])
    flipped = bytes(b ^ 0xFF if k % 2 == 0 else b for k, b in enumerate(truth))
    for _ in range(n):
        if covers == "same":
            data = truth
        elif covers == "own":
            data = bytes(rnd.randrange(256) for _ in range(2 * n))
        else:
            data = flipped
        s.c(0, data)
    return s, truth


@pytest.mark.parametrize("policy", ["first", "last", "linux", "solaris"])
@pytest.mark.parametrize("covers", ["same", "own", "alternating"])
def test_overlap_storm_plan_grows_with_segments_not_overlaps(
    tmp_path: Path, covers: str, policy: str
) -> None:
    """The 2,000 x 2,000 case of issue 12 at n = 300. A segment adds at most
    EXACT_CONFLICTS + 1 conflict records per cell it crosses (here one) and about two rows
    per record, so rows + records stay under 3 (EXACT_CONFLICTS + 2) per packet: 18,090
    here, where the quadratic plan held 180,300 rows and 90,000 records ("alternating",
    first) or 179,063 records ("own", first). Stream bytes follow the policy and every
    differing byte is reported."""
    n = 300
    s, truth = overlap_storm(n, covers)
    with opened(s, tmp_path / "storm.pcap") as cap:
        p = cap.plan(policy=policy)
        rows, records = len(p.rows["frame"]), len(p.conflicts["offset"])
        bound = 3 * (EXACT_CONFLICTS + 2) * len(cap.packets)
        assert rows + records <= bound, (rows, records, bound)
        st = cap.streams(policy=policy)[0]
        got = st.c2s.bytes()
        if policy == "first":  # the one-byte segments, then the first cover's odd bytes
            assert got[0::2] == truth[0::2]
            assert covers == "own" or got[1::2] == truth[1::2]
        reported = {x for c in st.c2s.conflicts for x in range(c.offset, c.offset + c.length)}
        assert (covers == "same") == (not reported)
        if covers == "alternating":
            assert set(range(0, 2 * n, 2)) <= reported


# --------------------------------------------------------------------------- sequence jumps


JUMP = 900_000_000


def jumps(count: int, cisn: int = 1000, wscale: int | None = None) -> tuple[Session, list[Any]]:
    """A handshake (the server seen, with or without Window Scale), "hello", then ``count``
    data segments each JUMP bytes ahead of the last: the 2 kB capture of issue 12."""
    s = Session(cisn=cisn)
    opts = () if wscale is None else (WScale(wscale),)
    s.syn(options=opts)
    s.synack(options=opts)
    s.ack_c()
    s.c(0, b"hello")
    s.ack_s()
    sent = [s.c(5 + k * JUMP, b"junk %02d" % k, PSH | ACK) for k in range(1, count + 1)]
    return s, sent


@pytest.mark.parametrize("cisn", [1000, 2**32 - 11])
@pytest.mark.parametrize("wscale", [None, 7, 14])
def test_sequence_jumps_are_outside_the_window(
    tmp_path: Path, cisn: int, wscale: int | None
) -> None:
    """30 segments each 900 MB ahead of the last: the server acknowledged "hello" only and
    advertised at most 65535 << wscale, so none of them could have been accepted (even a
    1 GiB window does not reach 900 MB past its last ACK plus the jump before). The stream is
    "hello"; extracting it writes 5 bytes, not a 27 GB sparse file."""
    s, sent = jumps(30, cisn, wscale)
    path = tmp_path / "jumps.pcap"
    with opened(s, path) as cap:
        st = cap.streams()[0]
        if wscale == 14:
            assert st.c2s.length == 5 + JUMP + 7  # the first jump is within 1 GiB of "hello"
        else:
            assert st.c2s.length == 5 and st.c2s.bytes() == b"hello"
        rows = cap.plan().rows
        by_frame = dict(zip(rows["frame"].tolist(), rows["fate"].tolist(), strict=True))
        outside = [by_frame[f.frame] == Fate.OUTSIDE_WINDOW for f in sent]
        # a 1 GiB window (scale 14) may take the first jump; never a second one
        assert all(outside[1:]) and (outside[0] or wscale == 14)
    if wscale is None:
        out = tmp_path / "out"
        result = CliRunner().invoke(app, ["extract", str(path), "-o", str(out)])
        assert result.exit_code == 0, result.output
        files = [out / rel for rel in stream_tree(out) if rel != "streams.jsonl"]
        assert sorted(f.stat().st_size for f in files) == [5]


# ------------------------------------------------------------------ a sparse > 4 GiB transfer


TRANSFER = 5_416_666_670  # as Zeek (resp_bytes) and tshark count such an FTP data transfer
EVERY = 150_000_000
SEGMENT = 1448


def sparse_transfer() -> tuple[Session, list[tuple[int, bytes]]]:
    """An FTP data connection: the server (port 20) sends TRANSFER bytes to the client; only
    one 1448-byte segment in every 150 MB was captured (and the last one, which carries the
    FIN), each followed by the client's ACK of it; the sequence numbers wrap twice past
    2^32 (server ISN 2^32 - 1000). Returns the session and the captured (offset, bytes)."""
    s = Session(cport=40001, sport=20, cisn=77, sisn=2**32 - 1000)
    s.syn(options=(WScale(7),))
    s.synack(options=(WScale(7),))
    s.ack_c()
    captured = []
    offsets = [*range(0, TRANSFER - SEGMENT, EVERY), TRANSFER - SEGMENT]
    for k, off in enumerate(offsets):
        data = (b"%012d|" % off * (SEGMENT // 13 + 1))[:SEGMENT]
        last = k == len(offsets) - 1
        s.s(off, data, PSH | ACK | (FIN if last else 0))
        s.ack_c()  # acknowledges the segment (and the FIN: TRANSFER + 1)
        captured.append((off, data))
    s.fin_c()
    s.ack_s()
    return s, captured


def test_sparse_transfer_beyond_4_gib(tmp_path: Path) -> None:
    """Issue 13 item 2: the exact stream length, a gap wherever a packet is missing, close by
    FIN; read through the plan and stream API (no 5 GB of bytes materialised)."""
    s, captured = sparse_transfer()
    with opened(s, tmp_path / "sparse.pcap") as cap:
        st = cap.streams()[0]
        d = st.s2c
        assert (st.server, d.length, d.close) == (("10.0.0.2", 20), TRANSFER, "fin")
        assert d.kept_bytes == sum(len(b) for _, b in captured)
        ends = [0] + [o + len(b) for o, b in captured]
        holes = [(e, o - e) for e, (o, _) in zip(ends, captured, strict=False) if o > e]
        assert [(g.offset, g.length, g.reason) for g in d.gaps] == [
            (o, n, GapReason.NOT_CAPTURED) for o, n in holes
        ]
        assert [(c.offset, c.data) for c in d.chunks()] == captured
        fates = cap.plan().rows["fate"]
        assert not np.isin(fates, [Fate.OUTSIDE_WINDOW, Fate.AFTER_FIN]).any()
        assert (st.c2s.length, st.c2s.close) == (0, "fin")
