"""A long direction is placed a section at a time, and the plan does not depend on it.

``plan_directions`` cuts a direction into sections of whole islands (segments linked by
overlaps, in offset order) of at most ``section`` segments and places each with arrays of
its size (issue 12: one direction of 3 M tiny segments was planned whole, ~300 bytes a
segment). These tests hold that (a) the plan is the same, array for array, whatever the
section size, down to one segment; (b) the sections of a long direction are bounded, and
the placement arrays the wrapper hands the kernel are a section's, not the direction's.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given

from tcpweave.decode.table import ACK, SYN
from tcpweave.enums import Checksum, ChecksumMode, Policy
from tcpweave.flows import assign
from tcpweave.reassembly import SECTION_SEGMENTS, Plan, plan
from tcpweave.reassembly import _kernels as k
from test_plan_properties import FULL, QUICK, Seg, Session, build, sessions


def _plan(session: Session, section: int) -> Plan:
    packets, sources = build(session)
    with np.errstate(over="ignore"):
        flows = assign(packets)
        return plan(packets, flows, sources, session.policy, session.checksums, section=section)


def assert_identical(got: Plan, want: Plan) -> None:
    """Every table, column for column, in the same order (not merely the same bytes)."""
    for table in ("rows", "directions", "gaps", "conflicts"):
        a, b = getattr(got, table), getattr(want, table)
        assert a.keys() == b.keys(), table
        for name in b:
            assert a[name].dtype == b[name].dtype, (table, name)
            assert np.array_equal(a[name], b[name]), (table, name, a[name], b[name])


def _check_sections(session: Session) -> None:
    whole = _plan(session, SECTION_SEGMENTS)
    for section in (1, 2, 3, 5):
        assert_identical(_plan(session, section), whole)


@pytest.mark.quick
@QUICK
@given(sessions())
def test_sections_do_not_change_the_plan_quick(session: Session) -> None:
    _check_sections(session)


@FULL
@given(sessions())
def test_sections_do_not_change_the_plan(session: Session) -> None:
    _check_sections(session)


# ------------------------------------------------------------------ a crafted long direction

N_LONG = 3000


def _long_direction(policy: Policy = Policy.FIRST) -> Session:
    """SYN, then N_LONG one-byte segments: mostly in order, every 7th held back and sent
    after the next 3, every 11th retransmitted with other bytes, late differing copies sent
    backwards, and a keep-alive-like repeat: small islands all along the direction."""
    rng = np.random.default_rng(12)
    segs = [Seg(0, 0, b"", 0, SYN, Checksum.OK, 0)]
    late: list[Seg] = []
    for x in range(N_LONG):
        byte = bytes([int(rng.integers(0, 256))])
        seg = Seg(0, 1 + x, byte, 1, ACK, Checksum.OK, 0)
        if x % 7 == 3:
            late.append(seg)
            continue
        segs.append(seg)
        if x % 11 == 5:
            segs.append(Seg(0, 1 + x, bytes([byte[0] ^ 0xFF]), 1, ACK, Checksum.OK, 0))
        if x % 4 == 0 and late:
            segs.append(late.pop(0))
    segs += late
    for x in range(N_LONG - 1, 0, -97):  # late differing copies, backwards across sections
        segs.append(Seg(0, 1 + x, b"\x01\x02", 2, ACK, Checksum.OK, 0))
    segs.append(Seg(0, 1 + N_LONG - 1, b"\x00", 1, ACK, Checksum.OK, 0))  # probe-like repeat
    return Session((2**32 - 11, 7), segs, (40000, 80), policy, ChecksumMode.IGNORE)


@pytest.mark.quick
@pytest.mark.parametrize("policy", [Policy.FIRST, Policy.LAST, Policy.BSD])
def test_long_direction_same_plan_in_sections(policy: Policy) -> None:
    session = _long_direction(policy)
    whole = _plan(session, SECTION_SEGMENTS)
    assert len(whole.conflicts["offset"]) > 50  # the crafted overlaps are there
    for section in (1, 64, 1000):
        assert_identical(_plan(session, section), whole)


def _sections_of(session: Session, section: int) -> np.ndarray:
    """The section bounds ``_sections`` gives the session's only direction."""
    packets, _ = build(session)
    n = len(packets)
    seq = packets.seq.astype(np.int64)
    offsets = (seq - (session.isn[0] + 1)) % 2**32
    order = np.arange(n, dtype=np.int64)
    _members, bounds = k._sections(order, 0, n, offsets, packets.payload_caplen, -1, section)
    return np.asarray(bounds)


def test_long_direction_is_cut_into_bounded_sections() -> None:
    """The placement never works on the whole direction: a section is closed at the first
    island that starts once it holds ``section`` segments, so it holds fewer than ``section``
    + the largest island (two segments here: a byte and its retransmission)."""
    bounds = _sections_of(_long_direction(), 64)
    sizes = np.diff(bounds)
    n_segments = int(bounds[-1])
    assert n_segments > N_LONG
    assert sizes.max() < 64 + 2
    assert len(sizes) >= n_segments // (64 + 2)


def test_an_island_is_never_cut() -> None:
    """Segments linked by overlaps stay in one section, larger than ``section`` if need be:
    a chain of 2-byte segments each overlapping the next is one island."""
    segs = [Seg(0, 0, b"", 0, SYN, Checksum.OK, 0)]
    segs += [Seg(0, 1 + x, b"ab", 2, ACK, Checksum.OK, 0) for x in range(200)]
    session = Session((5, 7), segs, (40000, 80), Policy.FIRST, ChecksumMode.IGNORE)
    assert np.diff(_sections_of(session, 16)).tolist() == [200]
    assert_identical(_plan(session, 16), _plan(session, SECTION_SEGMENTS))


def test_placement_arrays_are_a_sections_size() -> None:
    """The wrapper hands the kernel tiles, pieces, segment and run arrays of one section's
    size, however long the direction (planned whole, they would be the direction's)."""
    session = _long_direction()
    seen: dict[str, tuple[int, ...]] = {}
    real = k.plan_directions

    def spy(*args):  # type: ignore[no-untyped-def]
        for name, arr in zip(("tiles", "pieces", "segtab", "runs"), args[21:25], strict=True):
            seen[name] = arr.shape
        return real(*args)

    with mock.patch.object(k, "plan_directions", spy):
        _plan(session, 64)
    assert seen["tiles"][1] <= 2 * 64 + 2
    assert seen["segtab"][1] <= 64
    assert max(seen["pieces"][1], seen["runs"][1]) <= 64 + 16
