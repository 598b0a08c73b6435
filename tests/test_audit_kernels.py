"""The audit kernels against their plain-Python references (tcpweave/audit/_reference.py).

Inputs are generated: flag sequences over a few 4-tuples, sequence numbers near
the 2^32 wrap, sorted segment lists with holes and overlaps, and streams over a
two-letter alphabet (so that payloads repeat, overlap and straddle gaps).
``EXERCISED`` tells tests/test_kernels.py which registered kernels are covered here.
"""

from __future__ import annotations

import importlib
import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba.typed import List as TypedList

from tcpweave.audit import _kernels as k

EXERCISED = {
    ("tcpweave.audit", "count_flag_sessions"),
    ("tcpweave.audit", "place_packets"),
    ("tcpweave.audit", "check_continuity"),
    ("tcpweave.audit", "count_occurrences"),
}

ref = importlib.import_module("tcpweave.audit._reference")
QUICK = settings(max_examples=10, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
FULL = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def _both(name: str, *args: Any) -> tuple[Any, Any, list[Any], list[Any]]:
    a = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    b = [x.copy() if isinstance(x, np.ndarray) else x for x in args]
    with np.errstate(over="ignore"):
        return getattr(k, name)(*a), getattr(ref, name)(*b), a, b


def _assert_same(name: str, *args: Any) -> None:
    got, want, a, b = _both(name, *args)
    assert int(got) == int(want)
    for x, y in zip(a, b, strict=True):
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)


# ------------------------------------------------------------------ count_flag_sessions

FLAG_CHOICES = (0x002, 0x012, 0x010, 0x011, 0x014, 0x004, 0x018, 0x003)


@st.composite
def flag_walks(draw: Any) -> tuple[np.ndarray, ...]:
    n = draw(st.integers(0, 60))
    tuples = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), np.int64)
    flags = np.array(draw(st.lists(st.sampled_from(FLAG_CHOICES), min_size=n, max_size=n)),
                     np.uint16)  # fmt: skip
    order = np.argsort(tuples, kind="stable")
    return order, tuples, flags, np.full(n, 7, np.uint8)


@pytest.mark.quick
@QUICK
@given(flag_walks())
def test_count_flag_sessions_quick(args: tuple[np.ndarray, ...]) -> None:
    _assert_same("count_flag_sessions", *args)


@FULL
@given(flag_walks())
def test_count_flag_sessions_matches_reference(args: tuple[np.ndarray, ...]) -> None:
    _assert_same("count_flag_sessions", *args)


# ------------------------------------------------------------------ place_packets


@st.composite
def placements(draw: Any) -> tuple[Any, ...]:
    n_dirs = draw(st.integers(1, 4))
    sizes = draw(st.lists(st.integers(0, 12), min_size=n_dirs, max_size=n_dirs))
    n = sum(sizes)
    dir_start = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    base = np.array(draw(st.lists(st.sampled_from([0, 1, 2**32 - 1, 2**32 - 11, 7_000_000]),
                                  min_size=n_dirs, max_size=n_dirs)), np.int64)  # fmt: skip
    seq = np.empty(n, np.uint32)
    plan_offset = np.full(n, k.NOT_PLACED, np.int64)
    for d in range(n_dirs):
        off = 0
        for j in range(dir_start[d], dir_start[d + 1]):
            off += draw(st.integers(-3000, 3_000_000_000))
            seq[j] = (int(base[d]) + off) % 2**32
            if draw(st.booleans()):
                plan_offset[j] = off
    order = np.arange(n, dtype=np.int64)
    return order, dir_start, base, seq, plan_offset, np.zeros(n, np.int64)


@pytest.mark.quick
@QUICK
@given(placements())
def test_place_packets_quick(args: tuple[Any, ...]) -> None:
    _assert_same("place_packets", *args)


@FULL
@given(placements())
def test_place_packets_matches_reference(args: tuple[Any, ...]) -> None:
    _assert_same("place_packets", *args)


# ------------------------------------------------------------------ check_continuity


@st.composite
def segment_lists(draw: Any) -> tuple[Any, ...]:
    n_dirs = draw(st.integers(1, 3))
    offs: list[int] = []
    lens: list[int] = []
    bounds = [0]
    for _ in range(n_dirs):
        segs = sorted(draw(st.lists(st.tuples(st.integers(-2, 60), st.integers(0, 12)),
                                    max_size=15)))  # fmt: skip
        offs += [s for s, _ in segs]
        lens += [n for _, n in segs]
        bounds.append(len(offs))
    cap = draw(st.integers(0, 20))
    return (np.array(bounds, np.int64), np.array(offs, np.int64), np.array(lens, np.int64),
            np.zeros((4, cap), np.int64))  # fmt: skip


@pytest.mark.quick
@QUICK
@given(segment_lists())
def test_check_continuity_quick(args: tuple[Any, ...]) -> None:
    _assert_same("check_continuity", *args)


@FULL
@given(segment_lists())
def test_check_continuity_matches_reference(args: tuple[Any, ...]) -> None:
    _assert_same("check_continuity", *args)


# ------------------------------------------------------------------ count_occurrences


@st.composite
def occurrence_cases(draw: Any) -> tuple[Any, ...]:
    """One or two directions: a stream over {a, b} cut into kept rows (some gaps), and
    packets whose payloads are slices of it, plus some that are not."""
    buf = bytearray()
    kept: list[tuple[int, int, int, int]] = []  # offset, start, file, len
    pk_bounds, kept_bounds = [0], [0]
    pk_rows: list[int] = []
    pk_offset: list[int] = []
    pay_off: list[int] = []
    pay_len: list[int] = []
    for _ in range(draw(st.integers(1, 2))):
        text = draw(
            st.binary(min_size=1, max_size=80).map(lambda b: bytes(97 + (x & 1) for x in b))
        )
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(text) - 1)), max_size=5))))
        holes = set(draw(st.lists(st.integers(0, len(cuts)), max_size=2)))
        edges = [0, *cuts, len(text)]
        for r, (lo, hi) in enumerate(itertools.pairwise(edges)):
            if r in holes or hi <= lo:
                continue
            kept.append((lo, len(buf), 0, hi - lo))
            buf += text[lo:hi]
        kept_bounds.append(len(kept))
        for _ in range(draw(st.integers(0, 8))):
            lo = draw(st.integers(0, len(text) - 1))
            hi = draw(st.integers(lo + 1, min(len(text), lo + 20)))
            data = text[lo:hi] if draw(st.booleans()) else draw(st.binary(min_size=1, max_size=9))
            pk_rows.append(len(pay_off))
            pk_offset.append(lo)
            pay_off.append(len(buf))
            pay_len.append(len(data))
            buf += data
        pk_bounds.append(len(pk_rows))
    arr = np.frombuffer(bytes(buf) + b"\0", np.uint8)
    kk = np.array(kept, np.int64).reshape(-1, 4)
    n = len(pk_rows)
    return (
        TypedList([arr]), np.array(kept_bounds, np.int64), kk[:, 0].copy(), kk[:, 1].copy(),
        kk[:, 2].astype(np.int32), kk[:, 3].copy(), np.array(pk_bounds, np.int64),
        np.array(pk_rows, np.int64), np.array(pk_offset, np.int64), np.array(pay_off, np.int64),
        np.array(pay_len, np.int64), np.zeros(n, np.int32), draw(st.sampled_from([10**9, 30, 7])),
        draw(st.sampled_from([1000, 2])), np.zeros(n, np.int64),
    )  # fmt: skip


@pytest.mark.quick
@QUICK
@given(occurrence_cases())
def test_count_occurrences_quick(args: tuple[Any, ...]) -> None:
    _assert_same("count_occurrences", *args)


@FULL
@given(occurrence_cases())
def test_count_occurrences_matches_reference(args: tuple[Any, ...]) -> None:
    _assert_same("count_occurrences", *args)


@pytest.mark.quick
def test_count_occurrences_known_case() -> None:
    """Kept bytes "abab" at [0, 4) and "bab" at [5, 8), a hole at 4 between them."""
    stream = b"abababab"
    buf = np.frombuffer(stream + b"abab" + b"ba", np.uint8)
    args = (
        TypedList([buf]), np.array([0, 2], np.int64), np.array([0, 5], np.int64),
        np.array([0, 5], np.int64), np.zeros(2, np.int32), np.array([4, 3], np.int64),
        np.array([0, 2], np.int64), np.array([0, 1], np.int64), np.array([0, 3], np.int64),
        np.array([8, 12], np.int64), np.array([4, 2], np.int64), np.zeros(2, np.int32),
        10**9, 1000, np.zeros(2, np.int64),
    )  # fmt: skip
    # "abab" occurs once (at 0; never across the hole); "ba" twice (at 1 and at 5)
    _got, _want, a, b = _both("count_occurrences", *args)
    assert a[-1].tolist() == [1, 2] == b[-1].tolist()
