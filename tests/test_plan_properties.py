"""Flow and plan kernels against their references; invariants and metamorphic checks on plans.

Sessions are built here as packet tables directly (no capture file): per
direction a random "true" stream, segments cut from it in random arrival order
(duplicates, overlaps with the same and with different bytes, gaps, SYN, FIN,
RST, keep-alives, truncated captures, bad checksums, segments outside the
window or before the start), at initial sequence numbers that wrap (0, 1,
2^32-1, 2^32-11, random), under every policy and checksum mode. Payload bytes
live in fake sources (anything with a ``.buffer``).

* kernel == reference: ``flows.assign`` and ``reassembly.plan`` are run once
  with the kernels and once with the ``_reference`` functions patched in (all
  six kernels of the two stages). Flows are compared exactly; plans
  NORMALISED (see ``reassembly/_reference.py``): per byte, fates, kept sources
  and conflicts, plus the directions table (but its conflict and gap record counts) and
  the gaps with touching holes of one reason merged.
* invariants on every kernel plan (STYLE.md, Tests).
* metamorphic: shifting the ISN changes nothing but ``base_seq``; duplicating a
  packet or splitting a segment in two leaves the stream bytes unchanged under
  ``first``.

``list_gaps`` is also checked on its own, on random ranges (outputs compared with
touching holes of one reason merged). ``EXERCISED`` tells tests/test_kernels.py
which registered kernels are covered here.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from types import SimpleNamespace
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcpweave.decode.table import ACK, FIN, PSH, RST, SYN, PacketTable, empty_packets
from tcpweave.enums import Checksum, ChecksumMode, Fate, Policy
from tcpweave.flows import Flows, assign
from tcpweave.flows import _kernels as flow_kernels
from tcpweave.flows import _reference as flow_reference
from tcpweave.reassembly import Plan, plan
from tcpweave.reassembly import _kernels as plan_kernels
from tcpweave.reassembly import _reference as plan_reference
from tcpweave.reassembly._policy import NEW_WINS

EXERCISED = {
    ("tcpweave.flows", "number_tuples"),
    ("tcpweave.flows", "split_sessions"),
    ("tcpweave.flows", "assign_roles"),
    ("tcpweave.reassembly", "plan_directions"),
    ("tcpweave.reassembly", "list_gaps"),
    ("tcpweave.reassembly", "direction_extents"),
    ("tcpweave.reassembly", "receiver_windows"),
}

QUICK = settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
FULL = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

ALL_POLICIES = st.sampled_from(Policy)
ISNS = st.one_of(st.sampled_from([0, 1, 2**32 - 1, 2**32 - 11]), st.integers(0, 2**32 - 1))
STREAM_LEN = 28
FAR = 2**30 + 1000  # beyond the kernel's 1 GiB window, whatever was placed before


# ----------------------------------------------------------------------- building sessions


@dataclasses.dataclass(frozen=True)
class Seg:
    """One packet: ``rel`` is its sequence number relative to the sender's ISN."""

    direction: int  # 0: sent by the lower endpoint (10.0.0.1)
    rel: int
    payload: bytes  # the captured bytes
    wire_len: int
    flags: int
    checksum: int
    ack: int  # relative to the peer's ISN
    window: int = 65535  # the window field
    wscale: int = -1  # the Window Scale option's shift (-1: no option)


@dataclasses.dataclass
class Session:
    isn: tuple[int, int]
    segs: list[Seg]  # arrival (= capture) order
    ports: tuple[int, int]
    policy: Policy
    checksums: ChecksumMode


def _address(last: int) -> np.ndarray:
    return np.array([0] * 10 + [0xFF, 0xFF, 10, 0, 0, last], np.uint8)


def build(session: Session) -> tuple[PacketTable, list[Any]]:
    """The packet table of a session and its two fake sources (payloads alternate files)."""
    n = len(session.segs)
    cols = empty_packets(n)
    files = [bytearray(b"\xee" * 3), bytearray(b"\xee" * 5)]
    for i, s in enumerate(session.segs):
        f = i % 2
        cols.frame[i], cols.file[i], cols.ts_ns[i] = i + 1, f, 1_000 * (i + 1)
        cols.ip_version[i] = 4
        ends = (_address(1), _address(2))
        cols.src[i], cols.dst[i] = ends[s.direction], ends[1 - s.direction]
        cols.sport[i] = session.ports[s.direction]
        cols.dport[i] = session.ports[1 - s.direction]
        cols.seq[i] = (session.isn[s.direction] + s.rel) % 2**32
        cols.ack[i] = (session.isn[1 - s.direction] + s.ack) % 2**32  # relative to the peer
        cols.flags[i], cols.tcp_checksum[i] = s.flags, s.checksum
        cols.window[i], cols.wscale[i] = s.window, s.wscale
        cols.payload_offset[i] = len(files[f])
        cols.payload_len[i], cols.payload_caplen[i] = s.wire_len, len(s.payload)
        files[f] += s.payload + b"\xee" * 2
    sources = [SimpleNamespace(buffer=np.frombuffer(bytes(b), np.uint8).copy()) for b in files]
    return PacketTable(cols), sources


@st.composite
def direction_segments(draw: st.DrawFn, direction: int, syn_first: bool) -> list[Seg]:
    """One direction's packets in arrival order, cut from a random stream of a few letters."""
    truth = bytes(draw(st.lists(st.sampled_from(b"abc"), min_size=STREAM_LEN, max_size=STREAM_LEN)))
    segs: list[Seg] = []
    furthest = 0

    def checksum() -> int:
        return draw(st.sampled_from([Checksum.OK] * 5 + [Checksum.BAD, Checksum.UNKNOWN]))

    def ack() -> int:
        return draw(st.sampled_from([0, 1, 7, 500]))

    def window() -> dict[str, int]:
        return {"window": draw(st.sampled_from([65535, 0, 1, 100]))}

    def options() -> dict[str, int]:  # a SYN's Window Scale option (RFC 7323)
        return window() | {"wscale": draw(st.sampled_from([-1, 0, 7, 14, 15]))}

    syn = SYN if direction == 0 else SYN | ACK
    if syn_first and draw(st.booleans()):
        data = truth[: draw(st.sampled_from([0, 0, 3]))]
        segs.append(Seg(direction, 0, data, len(data), syn, checksum(), ack(), **options()))
        furthest = len(data)
    for _ in range(draw(st.integers(0, 10))):
        kinds = ["data"] * 8 + ["dup", "keepalive", "far", "syn", "isn", "noisy"]
        kind = draw(st.sampled_from(kinds))
        flags = ACK | draw(st.sampled_from([0] * 10 + [PSH] * 5 + [FIN] + [RST]))
        if kind == "dup" and segs:
            segs.append(draw(st.sampled_from(segs)))
            continue
        if kind in ("syn", "isn") and not syn_first:  # a late SYN, or one with another ISN
            rel = 0 if kind == "syn" else draw(st.sampled_from([-(2**31), -5, 3, 2**31 - 1]))
            segs.append(Seg(direction, rel, b"", 0, syn, checksum(), ack(), **options()))
            continue
        if kind == "keepalive":  # seq = next - 1, zero or one garbage byte
            data = draw(st.sampled_from([b"", b"z"]))
            segs.append(Seg(direction, furthest, data, len(data), ACK, checksum(), ack()))
            continue
        if kind == "noisy":  # two copies of their own: many conflict records (past EXACT_CONFLICTS)
            for _ in range(2):
                start = draw(st.integers(0, 4))
                noise = st.lists(st.sampled_from(b"ab"), min_size=24, max_size=STREAM_LEN + 8)
                data = bytes(draw(noise))
                segs.append(Seg(direction, 1 + start, data, len(data), flags, checksum(), ack()))
            continue
        start = draw(st.integers(-3, STREAM_LEN - 4))
        length = draw(st.integers(0, 12))
        padded = b"q" * 3 + truth + b"a" * 12  # bytes before offset 0 and past the truth
        data = bytearray(padded[start + 3 : start + 3 + length])
        for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):  # different bytes here
            if data:
                data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from(b"xy"))
        captured = draw(st.sampled_from([length] * 5 + [0, length // 2]))
        rel = 1 + start + (FAR if kind == "far" else 0) * draw(st.sampled_from([1, -1]))
        seg = Seg(direction, rel, bytes(data[:captured]), length, flags, checksum(), ack())
        segs.append(dataclasses.replace(seg, **window()))
        furthest = max(furthest, start + length)
    return segs


@st.composite
def sessions(
    draw: st.DrawFn,
    policies: st.SearchStrategy[Policy] = ALL_POLICIES,
    syn_first: bool = False,
) -> Session:
    """A session on one 4-tuple: both directions' packets interleaved at random."""
    parts = [draw(direction_segments(d, syn_first)) for d in (0, 1)]
    merged: list[Seg] = []
    while parts[0] or parts[1]:
        d = draw(st.integers(0, 1)) if parts[0] and parts[1] else (0 if parts[0] else 1)
        merged.append(parts[d].pop(0))
    if not merged:
        merged.append(Seg(0, 1, b"", 0, ACK, Checksum.OK, 0))
    return Session(
        (draw(ISNS), draw(ISNS)),
        merged,
        draw(st.sampled_from([(40000, 80), (80, 40000), (5000, 5000)])),
        draw(policies),
        draw(st.sampled_from(ChecksumMode)),
    )


# ------------------------------------------------------------------------ running and comparing


@contextmanager
def references() -> Iterator[None]:
    """Run the stages with the plain-Python references in place of their kernels."""
    with (
        mock.patch.object(flow_kernels, "number_tuples", flow_reference.number_tuples),
        mock.patch.object(flow_kernels, "split_sessions", flow_reference.split_sessions),
        mock.patch.object(flow_kernels, "assign_roles", flow_reference.assign_roles),
        mock.patch.object(plan_kernels, "plan_directions", plan_reference.plan_directions),
        mock.patch.object(plan_kernels, "list_gaps", plan_reference.list_gaps),
        mock.patch.object(plan_kernels, "direction_extents", plan_reference.direction_extents),
        mock.patch.object(plan_kernels, "receiver_windows", plan_reference.receiver_windows),
    ):
        yield


def run(session: Session, policy: Policy | None = None) -> tuple[Flows, Plan, list[Any]]:
    packets, sources = build(session)
    with np.errstate(over="ignore"):  # JIT off: integer wrap-around as compiled code does
        flows = assign(packets)
        result = plan(packets, flows, sources, policy or session.policy, session.checksums)
    return flows, result, sources


def normalised(p: Plan) -> dict[str, Any]:
    """The plan with its row partition taken out: facts per byte, intervals merged."""
    r = p.rows
    per_byte: dict[tuple[int, int], tuple[int, ...]] = {}
    empty: Counter[tuple[int, ...]] = Counter()
    for i in range(len(r["frame"])):
        row, offset, start, length = (
            int(r[c][i]) for c in ("row", "stream_offset", "payload_start", "length")
        )
        what = (int(r["fate"][i]), int(r["frame"][i]), int(r["stream"][i]), int(r["direction"][i]))
        if length == 0:
            empty[(row, offset, *what)] += 1
        for k in range(length):
            assert (row, offset + k) not in per_byte, f"row {row} byte {offset + k} in two rows"
            source = (int(r["file"][i]), start + k) if start >= 0 else (-1, -1)
            per_byte[row, offset + k] = (*what, *source)
    c = p.conflicts
    conflicts: Counter[tuple[int, ...]] = Counter()
    for i in range(len(c["offset"])):
        for k in range(int(c["length"][i])):
            key = ("stream", "direction", "kept_frame", "dropped_frame")
            conflicts[(int(c["offset"][i]) + k, *(int(c[n][i]) for n in key))] += 1
    gaps: dict[tuple[int, int, int], list[list[int]]] = {}
    g = p.gaps
    for i in range(len(g["offset"])):
        spans = gaps.setdefault(
            (int(g["stream"][i]), int(g["direction"][i]), int(g["reason"][i])), []
        )
        start, end = int(g["offset"][i]), int(g["offset"][i] + g["length"][i])
        if spans and spans[-1][1] == start:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    # the numbers of conflict and gap records depend on how they were cut; their bytes are compared
    cut = ("conflicts", "gaps")
    directions = {name: col.tolist() for name, col in p.directions.items() if name not in cut}
    return {
        "bytes": per_byte,
        "empty": empty,
        "conflicts": conflicts,
        "gaps": gaps,
        "directions": directions,
    }


def assert_same_plan(got: dict[str, Any], want: dict[str, Any]) -> None:
    for part in want:
        if got[part] == want[part]:
            continue
        if isinstance(want[part], dict):
            keys = sorted(set(got[part]) | set(want[part]), key=repr)
            diff = [(k, got[part].get(k), want[part].get(k)) for k in keys]
            diff = [d for d in diff if d[1] != d[2]]
            raise AssertionError(f"{part} differ (key, kernel, reference): {diff[:8]}")
        raise AssertionError(f"{part}: kernel {got[part]} reference {want[part]}")


def check_against_reference(session: Session) -> Plan:
    k_flows, k_plan, _ = run(session)
    with references():
        r_flows, r_plan, _ = run(session)
    for field in dataclasses.fields(Flows):
        got, want = getattr(k_flows, field.name), getattr(r_flows, field.name)
        assert np.array_equal(got, want), f"flows.{field.name}: kernel {got} reference {want}"
    assert_same_plan(normalised(k_plan), normalised(r_plan))
    return k_plan


# ------------------------------------------------------------------------------- invariants


def stream_bytes(p: Plan, sources: list[Any]) -> dict[tuple[int, int], dict[int, int]]:
    """(stream, direction) -> {offset: byte} of every kept byte."""
    out: dict[tuple[int, int], dict[int, int]] = {}
    r = p.rows
    for i in np.flatnonzero([Fate(int(f)).kept for f in r["fate"]]):
        buf = sources[int(r["file"][i])].buffer
        kept = out.setdefault((int(r["stream"][i]), int(r["direction"][i])), {})
        for k in range(int(r["length"][i])):
            kept[int(r["stream_offset"][i]) + k] = int(buf[int(r["payload_start"][i]) + k])
    return out


def check_invariants(p: Plan, packets: PacketTable, sources: list[Any]) -> None:
    r, g = p.rows, p.gaps
    d_keys = p.directions["stream"] * 2 + p.directions["direction"]
    for di, key in enumerate(d_keys.tolist()):
        mine = r["stream"] * 2 + r["direction"] == key
        kept = mine & np.isin(r["fate"], [Fate.NEW, Fate.OVERLAP_CONFLICT_KEPT])
        spans = sorted(
            zip(
                r["stream_offset"][kept].tolist(),
                (r["stream_offset"] + r["length"])[kept].tolist(),
                strict=True,
            )
        )
        for (_, end), (start, _) in pairwise(spans):
            assert end <= start, f"kept ranges overlap in direction {di}: {spans}"
        in_gaps = (g["stream"] * 2 + g["direction"]) == key
        holes = list(
            zip(
                g["offset"][in_gaps].tolist(),
                (g["offset"] + g["length"])[in_gaps].tolist(),
                strict=True,
            )
        )
        tiles = sorted([s for s in spans if s[0] < s[1]] + holes)
        cursor = 0
        for start, end in tiles:
            assert start == cursor, f"direction {di}: kept + gaps do not tile at {cursor}: {tiles}"
            cursor = end
        assert cursor == p.directions["length"][di], f"direction {di} ends at {cursor}: {tiles}"
    # each captured payload byte in exactly one row; what the capture cut off is at most once
    # in a truncated row (segments that are not placed only account for what was captured)
    seen: Counter[tuple[int, int]] = Counter()
    for i in range(len(r["row"])):
        row, start, length = int(r["row"][i]), int(r["payload_start"][i]), int(r["length"][i])
        cut = start < 0
        at = int(packets.payload_caplen[row]) if cut else start - int(packets.payload_offset[row])
        assert not cut or at + length <= packets.payload_len[row], f"truncated row {i}"
        for k in range(length):
            seen[row, at + k] += 1
    rows_of = range(len(packets))
    captured = Counter((i, k) for i in rows_of for k in range(int(packets.payload_caplen[i])))
    assert +(captured - seen) == Counter(), f"bytes in no row: {captured - seen}"
    assert max(seen.values(), default=1) == 1, f"bytes in two rows: {seen.most_common(3)}"
    check_conflicts(p, sources)


PLACED = [Fate.NEW, Fate.RETRANSMISSION, Fate.OVERLAP_SAME, Fate.OVERLAP_CONFLICT_KEPT]
PLACED.append(Fate.OVERLAP_CONFLICT_DROPPED)


def check_conflicts(p: Plan, sources: list[Any]) -> None:
    """Every offset where two placed copies differ lies in a conflict record; every kept or
    dropped byte of a conflict does too; a record starts on bytes that differ, and the first
    EXACT_CONFLICTS - 1 records of a segment hold nothing but differing bytes (the next one
    may gather the rest of its overlap, docs/reassembly-rules.md)."""
    r, c = p.rows, p.conflicts
    values: dict[tuple[int, int], set[int]] = {}
    copies: dict[tuple[int, int], int] = {}  # (frame, offset) -> byte
    in_conflict: dict[tuple[int, int], set[int]] = {}  # (stream, direction) -> offsets
    for i in range(len(c["offset"])):
        key = (int(c["stream"][i]), int(c["direction"][i]))
        start = int(c["offset"][i])
        in_conflict.setdefault(key, set()).update(range(start, start + int(c["length"][i])))
    for i in np.flatnonzero(np.isin(r["fate"], PLACED)):
        key = (int(r["stream"][i]), int(r["direction"][i]))
        buf = sources[int(r["file"][i])].buffer
        for k in range(int(r["length"][i])):
            x = int(r["stream_offset"][i]) + k
            byte = int(buf[int(r["payload_start"][i]) + k])
            values.setdefault((*key, x), set()).add(byte)
            copies[int(r["frame"][i]), x] = byte
            if r["fate"][i] in (Fate.OVERLAP_CONFLICT_KEPT, Fate.OVERLAP_CONFLICT_DROPPED):
                assert x in in_conflict.get(key, ()), f"{Fate(int(r['fate'][i]))} byte at {x}"
    for (stream, direction, x), seen in values.items():
        if len(seen) > 1:
            assert x in in_conflict.get((stream, direction), ()), f"unreported conflict at {x}"
    nth: Counter[int] = Counter()  # records are listed segment by segment, in offset order
    for i in np.argsort(c["offset"], kind="stable"):
        kept, dropped = int(c["kept_frame"][i]), int(c["dropped_frame"][i])
        start, end = int(c["offset"][i]), int(c["offset"][i] + c["length"][i])
        nth[max(kept, dropped)] += 1  # the later frame is the segment whose record it is
        exact = nth[max(kept, dropped)] < plan_kernels.EXACT_CONFLICTS
        for x in range(start, end) if exact else (start,):
            assert copies[kept, x] != copies[dropped, x], f"conflict at {x}: same bytes"


# ------------------------------------------------------------------------------------ tests


@pytest.mark.quick
@QUICK
@given(sessions())
def test_plan_matches_reference_quick(session: Session) -> None:
    check_against_reference(session)


@FULL
@given(sessions())
def test_plan_matches_reference(session: Session) -> None:
    check_against_reference(session)


@FULL
@given(sessions())
def test_plan_invariants(session: Session) -> None:
    packets, _ = build(session)
    _, p, sources = run(session)
    check_invariants(p, packets, sources)
    if session.policy in (Policy.FIRST, Policy.VISTA):  # a held byte is never replaced
        text = stream_bytes(p, sources)
        for i in np.flatnonzero(np.isin(p.rows["fate"], [Fate.RETRANSMISSION, Fate.OVERLAP_SAME])):
            r = p.rows
            key = (int(r["stream"][i]), int(r["direction"][i]))
            for k in range(int(r["length"][i])):
                got = int(sources[int(r["file"][i])].buffer[int(r["payload_start"][i]) + k])
                assert got == text[key][int(r["stream_offset"][i]) + k]


def _shifted(session: Session, delta: tuple[int, int]) -> Session:
    isn = tuple((a + b) % 2**32 for a, b in zip(session.isn, delta, strict=True))
    return dataclasses.replace(session, isn=isn)  # type: ignore[arg-type]


@FULL
@given(sessions(), st.tuples(*[st.sampled_from([1, 10, 2**31, 2**32 - 1, 2**32 - 12])] * 2))
def test_isn_shift_changes_only_base_seq(session: Session, delta: tuple[int, int]) -> None:
    _, before, _ = run(session)
    _, after, _ = run(_shifted(session, delta))
    a, b = normalised(after), normalised(before)
    a["directions"].pop("base_seq")
    b["directions"].pop("base_seq")
    assert_same_plan(a, b)


def _movable(session: Session, p: Plan) -> list[int]:
    """Plain data segments that may be copied or cut: not a probe, nothing before the start."""
    odd = p.rows["row"][np.isin(p.rows["fate"], [Fate.BEFORE_START, Fate.KEEPALIVE])]
    return [
        i
        for i, s in enumerate(session.segs)
        if s.wire_len >= 4
        and len(s.payload) == s.wire_len
        and not s.flags & (SYN | FIN | RST)
        and i not in odd
    ]


FIRST_ONLY = st.just(Policy.FIRST)


@FULL
@given(sessions(FIRST_ONLY, syn_first=True), st.data())
def test_duplicate_and_split_keep_stream_bytes(session: Session, data: st.DataObject) -> None:
    _, p, sources = run(session)
    want = stream_bytes(p, sources)
    movable = _movable(session, p)
    if not movable:
        return
    i = data.draw(st.sampled_from(movable))
    segs, s = session.segs, session.segs[i]
    j = data.draw(st.integers(i + 1, len(segs)))
    dup = dataclasses.replace(session, segs=[*segs[:j], s, *segs[j:]])
    _, p_dup, src_dup = run(dup)
    assert stream_bytes(p_dup, src_dup) == want, f"duplicating packet {i} at {j}"
    m = data.draw(st.integers(2, len(s.payload) - 2))
    halves = [
        dataclasses.replace(s, payload=s.payload[:m], wire_len=m),
        dataclasses.replace(s, rel=s.rel + m, payload=s.payload[m:], wire_len=s.wire_len - m),
    ]
    cut = dataclasses.replace(session, segs=[*segs[:i], *halves, *segs[i + 1 :]])
    _, p_cut, src_cut = run(cut)
    assert stream_bytes(p_cut, src_cut) == want, f"splitting packet {i} at {m}"


# ------------------------------------------------------------------------ flows on many tuples


@st.composite
def flow_tables(draw: st.DrawFn) -> tuple[PacketTable, int]:
    """Packets of a few 4-tuples with reused ports, random SYN/ISN choices and idle gaps."""
    n = draw(st.integers(1, 14))
    cols = empty_packets(n)
    ts = 0
    for i in range(n):
        a, b = draw(st.sampled_from([(1, 2), (2, 1), (1, 3), (3, 3)]))
        pa, pb = draw(st.sampled_from([(40000, 80), (80, 40000), (7, 7), (1, 2)]))
        ts += draw(st.sampled_from([0, 1, 10, 100]))
        cols.frame[i], cols.ts_ns[i], cols.ip_version[i] = i + 1, ts, 4
        cols.src[i], cols.dst[i], cols.sport[i], cols.dport[i] = _address(a), _address(b), pa, pb
        cols.flags[i] = draw(st.sampled_from([SYN, SYN, SYN | ACK, ACK, FIN | ACK, RST, PSH | ACK]))
        cols.seq[i] = draw(st.sampled_from([0, 1, 2, 100, 2**32 - 1]))
    return PacketTable(cols), draw(st.sampled_from([0, 0, 5, 50]))


def check_flows(packets: PacketTable, idle_ns: int) -> None:
    with np.errstate(over="ignore"):  # JIT off: the tuple hash wraps around as compiled
        got = assign(packets, idle_ns)
    with references():
        want = assign(packets, idle_ns)
    for field in dataclasses.fields(Flows):
        g, w = getattr(got, field.name), getattr(want, field.name)
        assert np.array_equal(g, w), f"flows.{field.name}: kernel {g} reference {w}"


@pytest.mark.quick
@QUICK
@given(flow_tables())
def test_flows_match_reference_quick(case: tuple[PacketTable, int]) -> None:
    check_flows(*case)


@FULL
@given(flow_tables())
def test_flows_match_reference(case: tuple[PacketTable, int]) -> None:
    check_flows(*case)


# ---------------------------------------------------------------------------- gaps alone


def _merged(out: np.ndarray, n: int) -> list[list[int]]:
    """Gap rows (direction, offset, length, reason) with touching rows of one reason joined."""
    rows: list[list[int]] = []
    for d, offset, length, reason in out[:, :n].T.tolist():
        last = rows[-1] if rows else None
        if last and last[0] == d and last[3] == reason and last[1] + last[2] == offset:
            last[2] += length
        else:
            rows.append([d, offset, length, reason])
    return rows


@st.composite
def gap_cases(draw: st.DrawFn) -> tuple[np.ndarray, ...]:
    """Kept ranges and truncated claims (overlapping, touching), sorted by direction, offset."""
    n_dirs = draw(st.integers(1, 3))

    def spans() -> np.ndarray:
        raw = draw(
            st.lists(st.tuples(st.integers(0, n_dirs - 1), st.integers(0, 30), st.integers(0, 8)))
        )
        return np.array(sorted((d, a, a + n) for d, a, n in raw), np.int64).reshape(-1, 3).T

    kept, claims = spans(), spans()
    ends = [int(kept[2][kept[0] == d].max(initial=0)) for d in range(n_dirs)]
    length = np.array([e + draw(st.integers(0, 5)) for e in ends], np.int64)
    return (*kept, length, *claims)


@pytest.mark.quick
@QUICK
@given(gap_cases())
def test_list_gaps_quick(args: tuple[np.ndarray, ...]) -> None:
    check_gaps(args)


@FULL
@given(gap_cases())
def test_list_gaps_matches_reference(args: tuple[np.ndarray, ...]) -> None:
    check_gaps(args)


def check_gaps(args: tuple[np.ndarray, ...]) -> None:
    got, want = np.zeros((4, 200), np.int64), np.zeros((4, 200), np.int64)
    n_got = plan_kernels.list_gaps(*args, got)
    n_want = plan_reference.list_gaps(*args, want)
    assert n_got <= 200 and n_want <= 200
    assert _merged(got, n_got) == _merged(want, n_want)
    small = np.zeros((4, 1), np.int64)  # too small: the count still says "call again, bigger"
    # (it may overcount: holes past the end of ``out`` cannot be merged with the previous one)
    needed = plan_kernels.list_gaps(*args, small)
    assert needed >= n_got and (n_got <= 1 or needed > 1)


# ----------------------------------------------------------------------------- fixed cases


def _session(*segs: Seg, policy: Policy = Policy.FIRST, isn: int = 2**32 - 11) -> Session:
    return Session((isn, 7), list(segs), (40000, 80), policy, ChecksumMode.IGNORE)


def _data(rel: int, payload: bytes, flags: int = ACK) -> Seg:
    return Seg(0, rel, payload, len(payload), flags, Checksum.OK, 0)


@pytest.mark.quick
@pytest.mark.parametrize("policy", list(Policy))
def test_wrapping_overlap_conflict(policy: Policy) -> None:
    """SYN, then bytes across the 2^32 wrap, a conflicting overlap and a retransmission."""
    session = _session(
        Seg(0, 0, b"", 0, SYN, Checksum.OK, 0),
        _data(1, b"abcdef"),
        _data(12, b"klmn"),
        _data(4, b"DEFGHIJ"),
        _data(12, b"klmn"),
        policy=policy,
    )
    p = check_against_reference(session)
    packets, sources = build(session)
    check_invariants(p, packets, sources)
    new_wins = policy in (Policy.LAST, Policy.SOLARIS, Policy.HPUX11)  # N after O, ends after
    text = stream_bytes(p, sources)[0, 0]
    assert bytes(text[x] for x in range(10)) == (b"abcDEFGHIJ" if new_wins else b"abcdefGHIJ")
    assert bytes(text[x] for x in range(11, 15)) == b"klmn" and 10 not in text
    assert p.conflicts["offset"].tolist() == [3] and p.conflicts["length"].tolist() == [3]
    assert p.gaps["offset"].tolist() == [10] and p.gaps["length"].tolist() == [1]
    assert Fate.RETRANSMISSION in p.rows["fate"]


@pytest.mark.quick
@pytest.mark.parametrize("policy", [Policy.FIRST, Policy.LAST, Policy.BSD])
def test_conflict_covers_only_differing_bytes(policy: Policy) -> None:
    """``ab`` then ``xb`` at the same offset: byte 0 conflicts, byte 1 is the same."""
    session = _session(_data(1, b"ab"), _data(1, b"xb"), policy=policy)
    p = check_against_reference(session)
    assert p.conflicts["offset"].tolist() == [0] and p.conflicts["length"].tolist() == [1]
    same = p.rows["fate"] == Fate.OVERLAP_SAME
    assert p.rows["stream_offset"][same].tolist() == [1]


# ------------------------------------------------------------------- overlaps at any count


@st.composite
def overlap_storms(draw: st.DrawFn) -> Session:
    """One direction: a SYN, then segments anywhere in [0, 40) with bytes of their own from a
    two-letter alphabet (equal and differing bytes interleaved: many conflict records, past
    EXACT_CONFLICTS), in random order, under a random policy and ISN."""
    segs = [Seg(0, 0, b"", 0, SYN, Checksum.OK, 0)]
    for _ in range(draw(st.integers(1, 12))):
        start = draw(st.integers(0, 36))
        length = draw(st.integers(1, 40 - start))
        data = bytes(draw(st.lists(st.sampled_from(b"ab"), min_size=length, max_size=length)))
        segs.append(_data(1 + start, data))
    return _session(*segs, policy=draw(ALL_POLICIES), isn=draw(ISNS))


@pytest.mark.quick
@QUICK
@given(overlap_storms())
def test_overlap_storm_matches_reference_quick(session: Session) -> None:
    check_against_reference(session)


@FULL
@given(overlap_storms())
def test_overlap_storm_matches_reference(session: Session) -> None:
    p = check_against_reference(session)
    packets, sources = build(session)
    check_invariants(p, packets, sources)


def _verdict_of(policy: Policy, new: tuple[int, int], old: tuple[int, int]) -> bool:
    """docs/overlap-policies.md: the new segment wins against one earlier segment?"""

    def case(a: int, b: int) -> int:
        return 0 if a < b else (1 if a == b else 2)

    return bool(NEW_WINS[policy, case(new[0], old[0]), case(new[1], old[1])])


@pytest.mark.quick
@pytest.mark.parametrize("policy", list(Policy))
def test_two_extents_decide_every_policy(policy: Policy) -> None:
    """The kernel keeps, per tile, two of the earlier segments covering it: the one starting
    first (of those, the one ending last) and the one ending last (of those, the one starting
    first); the verdict against those two must be the verdict against all of them. Checked
    for every set of up to three earlier extents over offsets 0..5 covering byte 2."""
    extents = [(a, b) for a in range(6) for b in range(a + 1, 7) if a <= 2 < b]
    news = [(a, b) for a in range(6) for b in range(a + 1, 7) if a <= 2 < b]
    for n in (1, 2, 3):
        for olds in itertools.combinations(extents, n):
            first = min(olds, key=lambda e: (e[0], -e[1]))
            last = max(olds, key=lambda e: (e[1], -e[0]))
            for new in news:
                every = all(_verdict_of(policy, new, o) for o in olds)
                two = _verdict_of(policy, new, first) and _verdict_of(policy, new, last)
                assert every == two, (policy, new, olds)


@pytest.mark.quick
@pytest.mark.parametrize("policy", [Policy.FIRST, Policy.LAST, Policy.LINUX, Policy.SOLARIS])
def test_conflict_records_past_the_exact_ones(policy: Policy) -> None:
    """A segment that differs from the bytes held at every other byte: its first
    EXACT_CONFLICTS records are exact (one differing byte each); the rest of that overlap is
    one record, from the next differing byte to the last one (equal bytes inside)."""
    held = b"x" * 40
    other = bytes(b"y"[0] if k % 2 == 0 else b"x"[0] for k in range(40))  # differs at even k
    session = _session(Seg(0, 0, b"", 0, SYN, Checksum.OK, 0), _data(1, held), _data(1, other))
    session = dataclasses.replace(session, policy=policy)
    p = check_against_reference(session)
    packets, sources = build(session)
    check_invariants(p, packets, sources)
    exact = plan_kernels.EXACT_CONFLICTS
    spans = list(zip(p.conflicts["offset"].tolist(), p.conflicts["length"].tolist(), strict=True))
    assert spans == [(2 * k, 1) for k in range(exact - 1)] + [(2 * (exact - 1), 40 - 2 * exact + 1)]
    text = stream_bytes(p, sources)[0, 0]
    new_wins = policy in (Policy.LAST, Policy.SOLARIS)  # same start, same end
    assert bytes(text[x] for x in range(40)) == (other if new_wins else held)


SLACK = 1 << 20


@pytest.mark.quick
@pytest.mark.parametrize("client_ws", [None, -1, 0, 7, 14])
@pytest.mark.parametrize("server_ws", [None, -1, 7, 15])
def test_window_limit_matches_reference(client_ws: int | None, server_ws: int | None) -> None:
    """Kernel and reference on both sides of the window limit, for every combination of
    Window Scale options (None: that SYN not captured; -1: captured without the option)."""
    segs = []
    if client_ws is not None:
        segs.append(Seg(0, 0, b"", 0, SYN, Checksum.OK, 0, wscale=client_ws))
    if server_ws is not None:
        segs.append(Seg(1, 0, b"", 0, SYN | ACK, Checksum.OK, 1, wscale=server_ws))
    segs.append(Seg(1, 1, b"", 0, ACK, Checksum.OK, 6, window=1024))  # acks "hello"
    segs.append(_data(1, b"hello"))
    # RFC 7323 §2.2: no scaling when a captured SYN lacks the option; a SYN not captured gets
    # the benefit of the doubt (the server's own shift, or 14 when its SYN is missing)
    shift = 14 if server_ws is None else min(server_ws, 14)
    shift = 0 if -1 in (client_ws, server_ws) else shift
    syn_window = 65535 if server_ws is not None else 0  # a SYN's window is never scaled
    limit = 5 + max(syn_window, 1024 << shift) + SLACK
    segs += [_data(1 + limit - 1, b"i"), _data(1 + limit, b"out")]
    p = check_against_reference(_session(*segs))
    fates = dict(zip(p.rows["stream_offset"].tolist(), p.rows["fate"].tolist(), strict=True))
    assert (fates[limit - 1], fates[limit]) == (Fate.NEW, Fate.OUTSIDE_WINDOW)
