"""Property tests of framing: random PDUs cut into random segments, reordered, retransmitted.

The sender's PDUs are the truth: a capture is crafted from them (tests/sessions.py)
with random segment boundaries, arrival order, duplicates and re-cut
retransmissions, at random initial sequence numbers; framing it must give back
exactly those PDUs, each attributed to the frames that first delivered its bytes.
With bytes lost, every PDU clear of the loss is still recovered exactly, a PDU
whose header survived is reported damaged at its true place, and damaged reports
never cover a clear PDU's bytes (resynchronisation on magic bytes).

Also here: the framing kernels against their references (``EXERCISED`` is read by
tests/test_kernels.py), on random runs, gaps, framer parameters and tiny output
capacities (so that the resume path is taken).
"""

from __future__ import annotations

import itertools
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpweave
from sessions import Session
from tcpweave.framing import _kernels, _reference
from tcpweave.framing.generic import Delimited, FixedSize, LengthPrefixed, VarintLength

EXERCISED = {
    ("tcpweave.framing", "frame_runs"),
    ("tcpweave.framing", "attribute_pdus"),
    ("tcpweave.framing", "gather_pdus"),
}

QUICK = settings(max_examples=8, deadline=None, database=None)
FULL = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

MAGIC_FRAMER = LengthPrefixed(size=2, adjust=4, magic=b"MG", magic_offset=2)
ISNS = st.sampled_from([0, 1, 1000, 2**32 - 1, 2**32 - 11])


def _pdu(body: bytes) -> bytes:
    return struct.pack("!H", len(body)) + b"MG" + body


# bodies never hold "M", so only a real header has the magic at offset 2
BODY = st.binary(max_size=300).map(lambda b: b.replace(b"M", b"m"))


@st.composite
def deliveries(draw: st.DrawFn, total: int) -> list[tuple[int, int]]:
    """(start, end) stream ranges in arrival order: a random cut, shuffled, some sent again
    whole and some re-cut differently (retransmissions that overlap several originals)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(total - 1, 1)), max_size=12)))
    bounds = [0, *[c for c in cuts if 0 < c < total], total]
    pieces = [(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    order = draw(st.permutations(pieces))
    extra = draw(st.lists(st.sampled_from(pieces), max_size=3)) if pieces else []
    spans = draw(st.lists(st.tuples(st.integers(0, total), st.integers(1, 700)), max_size=2))
    recut = [(a, min(total, a + n)) for a, n in spans if a < total]
    mixed = list(order)
    for piece in extra + recut:
        mixed.insert(draw(st.integers(0, len(mixed))), piece)
    return mixed


def _capture(path: Path, stream: bytes, arrivals: list[tuple[int, int]], cisn: int) -> list[int]:
    """Write the session; return, per stream byte, the frame that first delivered it (0: none)."""
    s = Session(sport=9000, cisn=cisn)
    s.handshake()
    first = [0] * len(stream)
    for a, b in arrivals:
        sent = s.c(a, stream[a:b])
        for i in range(a, b):
            first[i] = first[i] or sent.frame
    s.ack_s()
    s.close()
    s.write(path)
    return first


def _check_recovered(bodies: list[bytes], arrivals: list[tuple[int, int]], cisn: int) -> None:
    pdus = [_pdu(b) for b in bodies]
    stream = b"".join(pdus)
    with tempfile.TemporaryDirectory() as tmp:
        first = _capture(Path(tmp) / "p.pcap", stream, arrivals, cisn)
        with tcpweave.open(Path(tmp) / "p.pcap") as cap:
            found = list(cap.pdus(MAGIC_FRAMER))
    lost = {i for i, f in enumerate(first) if f == 0}
    starts = [sum(map(len, pdus[:i])) for i in range(len(pdus))]
    truth = {(o, len(p)): p for o, p in zip(starts, pdus, strict=True)}
    clear = {key for key in truth if not lost & set(range(key[0], key[0] + key[1]))}
    got_ok = {(p.stream_offset, p.length): p for p in found if not p.damaged}
    assert set(got_ok) == clear
    for key, p in got_ok.items():
        assert p.data == truth[key]
        frames = first[key[0] : key[0] + key[1]]
        assert (p.first_frame, p.last_frame) == (min(frames), max(frames))
    # damaged reports hold only bytes of damaged PDUs and lost bytes, never a clear PDU's
    clear_bytes = {i for off, n in clear for i in range(off, off + n)}
    for p in found:
        if p.damaged:
            assert not clear_bytes & set(range(p.stream_offset, p.stream_offset + p.length)), p
    # a damaged PDU whose header was captured is reported with its true place and length
    for (off, n), _ in truth.items():
        if (off, n) not in clear and not lost & set(range(off, off + 4)):
            assert any(p.damaged and (p.stream_offset, p.length) == (off, n) for p in found)


@given(st.lists(BODY, min_size=1, max_size=12), st.data(), ISNS)
@QUICK
@pytest.mark.quick
def test_random_pdus_are_recovered_quick(
    bodies: list[bytes], data: st.DataObject, isn: int
) -> None:
    total = sum(len(_pdu(b)) for b in bodies)
    _check_recovered(bodies, data.draw(deliveries(total)), isn)


@given(st.lists(BODY, min_size=1, max_size=30), st.data(), ISNS)
@FULL
def test_random_pdus_are_recovered(bodies: list[bytes], data: st.DataObject, isn: int) -> None:
    total = sum(len(_pdu(b)) for b in bodies)
    _check_recovered(bodies, data.draw(deliveries(total)), isn)


@given(st.lists(BODY, min_size=2, max_size=30), st.data(), ISNS)
@FULL
def test_with_a_loss_pdus_outside_it_are_recovered(
    bodies: list[bytes], data: st.DataObject, isn: int
) -> None:
    total = sum(len(_pdu(b)) for b in bodies)
    arrivals = data.draw(deliveries(total))
    lo = data.draw(st.integers(0, total - 1))
    hi = data.draw(st.integers(lo + 1, min(total, lo + 400)))
    # drop the bytes [lo, hi) from every delivery (the parts around it still arrive)
    kept = [(a, min(b, lo)) for a, b in arrivals if a < lo] + [
        (max(a, hi), b) for a, b in arrivals if b > hi
    ]
    kept = [(a, b) for a, b in kept if b > a]
    if not kept or max(b for _, b in kept) < total:
        kept.append((total - 1, total))  # the last byte arrives: the loss is inside
    _check_recovered(bodies, kept, isn)


# ------------------------------------------------------------------ kernels == references


FRAMERS = st.one_of(
    st.builds(
        LengthPrefixed,
        offset=st.integers(0, 3),
        size=st.sampled_from([1, 2, 3, 4, 8]),
        endian=st.sampled_from(["big", "little"]),
        adjust=st.integers(-2, 6),
        max_len=st.sampled_from([1, 40, 300, 1 << 24]),
        min_len=st.integers(0, 5),
        magic=st.sampled_from([b"", b"\x01", b"\x01\x02"]),
        magic_offset=st.integers(0, 3),
    ),
    st.builds(FixedSize, size=st.integers(3, 20), magic=st.sampled_from([b"", b"\x01"])),
    st.builds(
        Delimited,
        delimiter=st.sampled_from([b"\x00", b"\r\n", b"\x01\x02\x03"]),
        max_len=st.integers(4, 64),
    ),
    st.builds(
        VarintLength,
        offset=st.integers(0, 2),
        adjust=st.integers(-1, 3),
        max_len=st.sampled_from([20, 300, 1 << 24]),
        min_len=st.integers(1, 4),
    ),
)


@st.composite
def directions(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """Directions as the driver hands them to the kernel: runs (with gaps) over one buffer."""
    n_dirs = draw(st.integers(1, 4))
    alphabet = st.sampled_from([0, 1, 2, 3, 0x80, 0xFF, 13, 10])
    run_buf, run_off, run_len, dir_runs, lengths = [], [], [], [0], []
    pos = 0
    for _ in range(n_dirs):
        off = draw(st.integers(0, 5))
        for _ in range(draw(st.integers(0, 4))):
            n = draw(st.integers(1, 60))
            run_buf.append(pos)
            run_off.append(off)
            run_len.append(n)
            pos += n
            off += n + draw(st.sampled_from([0, 1, 7]))
        dir_runs.append(len(run_off))
        lengths.append(off + draw(st.integers(0, 3)))
    buf = np.array(draw(st.lists(alphabet, min_size=pos, max_size=pos)), np.uint8)
    as64 = lambda v: np.array(v, np.int64)  # noqa: E731
    return {
        "buf": buf, "run_buf": as64(run_buf), "run_off": as64(run_off), "run_len": as64(run_len),
        "dir_runs": as64(dir_runs), "dir_length": as64(lengths),
        "dir_flags": as64(draw(st.lists(st.integers(0, 1), min_size=n_dirs, max_size=n_dirs))),
    }  # fmt: skip


def _frame_both(d: dict[str, np.ndarray], framer: object, capacity: int) -> None:
    spec = framer.spec()  # type: ignore[attr-defined]
    n_dirs = len(d["dir_length"])
    results = []
    for func in (_kernels.frame_runs, _reference.frame_runs):
        resume = np.zeros(1, np.int64)
        skipped = np.zeros(n_dirs, np.int64)
        calls = []
        for _ in range(50):
            out = [np.zeros(capacity, np.int64) for _ in range(3)] + [np.zeros(capacity, np.uint8)]
            n = func(*d.values(), *spec, resume, *out, skipped)
            calls.append((int(n), int(resume[0]), [o[:n].tolist() for o in out]))
            if resume[0] == n_dirs:
                break
        results.append((calls, skipped.tolist()))
    assert results[0] == results[1]


def _attribute_and_gather(d: dict[str, np.ndarray], framer: object) -> None:
    spec = framer.spec()  # type: ignore[attr-defined]
    cap = 4096
    out = [np.zeros(cap, np.int64) for _ in range(3)] + [np.zeros(cap, np.uint8)]
    n = _kernels.frame_runs(
        *d.values(), *spec, np.zeros(1, np.int64), *out, np.zeros(len(d["dir_length"]), np.int64)
    )
    pdu_dir, pdu_off, pdu_len = (o[:n].copy() for o in out[:3])
    rng = np.random.default_rng(n)
    frames = rng.integers(1, 9, len(d["run_off"]))
    ts = rng.integers(0, 100, len(d["run_off"]))
    got = []
    for func in (_kernels.attribute_pdus, _reference.attribute_pdus):
        cols = [np.zeros(n, np.int64) for _ in range(5)]
        r = func(
            pdu_dir, pdu_off, pdu_len, d["dir_runs"], d["run_off"], d["run_len"], frames, ts, *cols
        )
        got.append((int(r), [c.tolist() for c in cols]))
    assert got[0] == got[1]
    assert got[0][0] == 0  # every PDU starts on a captured byte
    starts = np.concatenate(([0], np.cumsum(pdu_len)))
    gathered = []
    for func in (_kernels.gather_pdus, _reference.gather_pdus):
        data = np.zeros(int(starts[-1]), np.uint8)
        r = func(
            d["buf"],
            d["run_buf"],
            d["run_off"],
            d["run_len"],
            d["dir_runs"],
            pdu_dir,
            pdu_off,
            pdu_len,
            starts[:-1],
            data,
        )
        gathered.append((int(r), data.tobytes()))
    assert gathered[0] == gathered[1]


@given(directions(), FRAMERS, st.integers(1, 6))
@QUICK
@pytest.mark.quick
def test_frame_runs_matches_reference_quick(
    d: dict[str, np.ndarray], framer: object, cap: int
) -> None:
    _frame_both(d, framer, cap)


@given(directions(), FRAMERS, st.integers(1, 40))
@FULL
def test_frame_runs_matches_reference(d: dict[str, np.ndarray], framer: object, cap: int) -> None:
    _frame_both(d, framer, cap)


@given(directions(), FRAMERS)
@FULL
def test_attribute_and_gather_match_references(d: dict[str, np.ndarray], framer: object) -> None:
    _attribute_and_gather(d, framer)
