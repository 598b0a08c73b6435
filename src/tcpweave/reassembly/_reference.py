"""Plain-Python references for the plan kernels: same names, arguments and outputs.

``plan_directions`` is the obviously-correct per-byte model of the rules of docs/design.md,
docs/overlap-policies.md and docs/reassembly-rules.md, written from those rules rather than from
``_kernels``: per direction, unwrap the sequence numbers, choose offset 0, find the window limit
and the FIN, then walk the segments in arrival order and decide every captured byte on its own
(taken, same as held, or differing -- and then kept or dropped by the policy table, in conflict
records that are exact for a segment's first EXACT_CONFLICTS). Only at the end are the per-byte
fates cut into plan rows: maximal runs of one segment's bytes with one fate.

The kernel keeps byte ranges in tiles and pieces, so its rows may be cut differently. The two
are therefore compared NORMALISED, not array for array: per direction, the fate of every
(segment, byte), the owner and source of every kept byte, every byte of every conflict record
with its kept and dropped segment, and the per-direction facts (``dirs``), which must be equal.
The row and conflict counts (``counts``, return value) are this model's own.
``direction_extents`` gives each direction's offset 0 and furthest end (exactly as the
kernel), ``receiver_windows`` what each direction's receiver showed (exactly as the kernel).
``list_gaps`` lists the holes in the kept bytes; its rows are compared after merging touching
holes of one reason (the kernel may cut a truncated hole where two claims meet). Nothing but
the tests calls them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the layout shared with reassembly/__init__.py (plan, conflict and direction columns)
P_FRAME, P_ROW, P_DIR, P_OFFSET, P_START, P_FILE, P_LEN, P_FATE = range(8)
C_DIR, C_OFFSET, C_LEN, C_KEPT, C_DROPPED = range(5)
D_BASE, D_SYN, D_FIN_END, D_RST, D_PACKETS, D_OOO, D_HIGH, D_FIRST_TS, D_LAST_TS = range(9)
K_PLAN, K_CONFLICTS = range(2)
RCV_ACK, RCV_WND = range(2)

# tcpweave.enums.Fate
NEW, RETRANSMISSION, OVERLAP_SAME, CONFLICT_KEPT, CONFLICT_DROPPED = 0, 1, 2, 3, 4
OUTSIDE_WINDOW, BAD_CHECKSUM, AFTER_CLOSE, RST_DATA, KEEPALIVE, TRUNCATED = 5, 6, 7, 8, 9, 10
BEFORE_START, AFTER_FIN = 11, 12

FIN, SYN, RST, ACK = 0x001, 0x002, 0x004, 0x010
CHECKSUM_BAD = 2
MOD, HALF = 2**32, 2**31
WINDOW = 2**30  # receiver unseen: a segment 1 GiB past the furthest end is not placed
SLACK = 2**20  # beyond the receiver's largest window (updates the capture did not show)
MAX_SHIFT = 14  # RFC 7323 §2.3
EXACT_CONFLICTS = 8  # docs/reassembly-rules.md: exact conflict records per segment
BEFORE, SAME, AFTER = 0, 1, 2  # geometry cases of reassembly._policy


@dataclass
class _Segment:
    """One packet of a direction, as the plan sees it."""

    row: int
    frame: int
    flags: int
    seq: int
    wire_len: int  # payload length the headers claim
    cap_len: int  # payload bytes captured
    file: int
    start: int  # where the captured payload begins in its file's buffer
    bad_checksum: bool
    ts_ns: int
    seq64: int = 0
    offset: int = 0  # stream offset of the first payload byte
    end: int = 0  # end of the bytes placed (captured, and not beyond the FIN)

    def byte(self, bufs, x: int) -> int:  # type: ignore[no-untyped-def]
        return int(bufs[self.file][self.start + x - self.offset])


@dataclass
class _Record:
    """A conflict record while it grows: [start, end) against ``held``, won or not."""

    start: int
    end: int
    held: int  # packet row of the held copy at ``start``
    won: bool
    cell: int


def _nearest(value32: int, ref: int) -> int:
    """The number congruent to ``value32`` mod 2^32 in [ref - 2^31, ref + 2^31)."""
    at_or_below = ref - (ref - value32) % MOD
    return at_or_below if at_or_below >= ref - HALF else at_or_below + MOD


def _unwrap(seqs: list[int]) -> list[int]:
    """64-bit sequence numbers, each the 32-bit value's nearest neighbour of the highest so far.

    RFC 9293 §3.4: "the sequence number space ranges from 0 to 2**32 - 1 ... all arithmetic
    dealing with sequence numbers must be performed modulo 2**32". A value is taken within
    [highest - 2^31, highest + 2^31). The first is lifted by 2^32 so that nothing goes negative.
    """
    highest = seqs[0] + MOD
    out = []
    for s in seqs:
        value = _nearest(s, highest)
        out.append(value)
        highest = max(highest, value)
    return out


def _offset_zero(segs: list[_Segment]) -> tuple[int, bool]:
    """The seq64 of stream offset 0, and whether it came from a captured SYN.

    docs/design.md: "Offsets are relative sequence numbers": ISN + 1 when the SYN
    was captured, else the lowest sequence number near (within 1 GiB of) the first data segment.
    """
    syns = [s for s in segs if s.flags & SYN]
    if syns:
        return syns[0].seq64 + 1, True
    data = [s for s in segs if s.wire_len > 0]
    if not data:
        return segs[0].seq64, False
    first = data[0].seq64
    return min(s.seq64 for s in data if abs(s.seq64 - first) <= WINDOW), False


def _case(a: int, b: int) -> int:
    return BEFORE if a < b else (SAME if a == b else AFTER)


class _Direction:
    """The per-byte state of one direction while its segments are placed in arrival order."""

    def __init__(self, bufs, policy: int, new_wins) -> None:  # type: ignore[no-untyped-def]
        self.bufs, self.policy, self.new_wins = bufs, policy, new_wins
        self.owner: dict[int, _Segment] = {}  # stream offset -> segment whose byte is kept
        self.fate: dict[tuple[int, int], int] = {}  # (row, stream offset) -> fate
        self.placed: list[_Segment] = []  # earlier segments that supplied bytes
        self.conflicts: list[tuple[int, int, int, int]] = []  # (offset, length, kept, dropped)
        self.high_end = 0  # end (wire length) of the furthest segment placed
        self.out_of_order = 0

    def new_wins_at(self, seg: _Segment, x: int) -> bool:
        """docs/overlap-policies.md: "A byte takes the new value only if every earlier segment
        that covers it says N", each pair judged on the segments' own extents."""
        return all(
            self.new_wins[self.policy, _case(seg.offset, o.offset), _case(seg.end, o.end)]
            for o in self.placed
            if o.offset <= x < o.end
        )

    def records(self, seg: _Segment) -> list[_Record]:
        """docs/reassembly-rules.md: a record is a maximal run of the segment's bytes that differ
        from the bytes held, against one held copy, resolved one way; after EXACT_CONFLICTS
        records, differing bytes join the current record while they are in its cell (a run of
        held bytes with one verdict, ended by a byte not held)."""
        out: list[_Record] = []
        cell, verdict = 0, None
        for x in range(seg.offset, seg.end):
            old = self.owner.get(x)
            if old is None:
                verdict = None
                continue
            v = self.new_wins_at(seg, x)
            if v != verdict:
                cell, verdict = cell + 1, v
            if old.byte(self.bufs, x) == seg.byte(self.bufs, x):
                continue
            last = out[-1] if out else None
            exact = last is not None and (last.end, last.held, last.won) == (x, old.row, v)
            if last is not None and (exact or (len(out) >= EXACT_CONFLICTS and last.cell == cell)):
                last.end = x + 1
            else:
                out.append(_Record(x, x + 1, old.row, v, cell))
        return out

    def place(self, seg: _Segment) -> None:
        fates = {}
        records = self.records(seg)
        recorded = {x: r for r in records for x in range(r.start, r.end)}
        for r in records:  # "Overlaps whose bytes differ are ALWAYS reported"
            kept, dropped = (seg.row, r.held) if r.won else (r.held, seg.row)
            self.conflicts.append((r.start, r.end - r.start, kept, dropped))
        for x in range(seg.offset, seg.end):
            old = self.owner.get(x)
            if old is None:  # bytes not held yet are taken
                fates[x] = NEW
                self.owner[x] = seg
            elif x not in recorded:
                fates[x] = OVERLAP_SAME  # "Identical retransmissions are never conflicts"
            elif recorded[x].won:
                fates[x] = CONFLICT_KEPT
                self.fate[old.row, x] = CONFLICT_DROPPED
                self.owner[x] = seg
            else:
                fates[x] = CONFLICT_DROPPED
        if fates and all(f == OVERLAP_SAME for f in fates.values()):
            fates = dict.fromkeys(fates, RETRANSMISSION)  # the whole segment was held already
        if NEW in fates.values() and seg.offset < self.high_end:
            self.out_of_order += 1
        for x, f in fates.items():
            self.fate[seg.row, x] = f
        self.placed.append(seg)


def direction_extents(order, dir_start, seq, flags, plen, base, high, seq64):  # type: ignore[no-untyped-def]
    """Per direction: seq of offset 0 (32-bit) and the furthest segment end seen (wire length).

    An end counts only within 1 GiB of the furthest so far (the plan's window). Returns the
    number of directions; ``seq64`` is the kernel's scratch space, unused here.
    """
    for di in range(len(dir_start) - 1):
        segs = _segments(order, dir_start, di, seq, flags, plen)
        zero, _ = _offset_zero(segs)
        furthest = 0
        for s in segs:
            end = s.seq64 - zero + (1 if s.flags & SYN else 0) + s.wire_len
            if abs(end - furthest) <= WINDOW:
                furthest = max(furthest, end)
        base[di], high[di] = zero % MOD, furthest
    return len(dir_start) - 1


def _segments(order, dir_start, di, seq, flags, plen) -> list[_Segment]:  # type: ignore[no-untyped-def]
    """Direction di's packets with what ``direction_extents`` needs, unwrapped."""
    rows = [int(i) for i in order[dir_start[di] : dir_start[di + 1]]]
    segs = [
        _Segment(i, 0, int(flags[i]), int(seq[i]), int(plen[i]), 0, 0, 0, False, 0) for i in rows
    ]
    for s, s64 in zip(segs, _unwrap([s.seq for s in segs]), strict=True):
        s.seq64 = s64
    return segs


def receiver_windows(order, dir_start, peer, base, ack, flags, window, wscale, out):  # type: ignore[no-untyped-def]
    """Per direction d, what its receiver (direction ``peer[d]``) showed: the highest ACK it
    sent as an offset of d, the first unwrapped near offset 0 and each next near the highest so
    far (0 without any), and its largest window, scaled as RFC 7323 §2.2-2.3 say (both SYNs
    must carry the option; a SYN's own window is never scaled; a SYN not captured gets the
    benefit of the doubt: the receiver's own shift, or 14 if its SYN is missing too); window -1
    when the receiver has no packet.
    """
    for d in range(len(dir_start) - 1):
        out[RCV_ACK, d], out[RCV_WND, d] = 0, -1
        p = int(peer[d])
        if p < 0:
            continue
        mine = [int(i) for i in order[dir_start[d] : dir_start[d + 1]]]
        theirs = [int(i) for i in order[dir_start[p] : dir_start[p + 1]]]
        own, their = (_syn_shift(rows, flags, wscale) for rows in (mine, theirs))
        if own is None or their is None:
            shift = 0  # a SYN captured without the option: no scaling
        elif their == "missing":
            shift = MAX_SHIFT
        else:
            shift = min(int(their), MAX_SHIFT)
        highest = None
        for i in theirs:
            if flags[i] & ACK:
                ref = int(base[d]) + MOD if highest is None else highest
                value = _nearest(int(ack[i]), ref)
                highest = value if highest is None else max(highest, value)
        out[RCV_ACK, d] = 0 if highest is None else highest - (int(base[d]) + MOD)
        out[RCV_WND, d] = max(
            int(window[i]) if flags[i] & SYN else int(window[i]) << shift for i in theirs
        )
    return len(dir_start) - 1


def _syn_shift(rows: list[int], flags, wscale) -> int | str | None:  # type: ignore[no-untyped-def]
    """The Window Scale shift of the first SYN among ``rows``; None: no option; "missing"."""
    for i in rows:
        if flags[i] & SYN:
            return int(wscale[i]) if wscale[i] >= 0 else None
    return "missing"


def _may_carry_stream(seg: _Segment, close_frame: int, drop_bad: bool) -> bool:
    """Not a reset, not after the session's reset, not a bad checksum that is dropped."""
    return not seg.flags & RST and seg.frame <= close_frame and not (drop_bad and seg.bad_checksum)


def _window_limit(segs, receiver, close_frame, drop_bad) -> int | None:  # type: ignore[no-untyped-def]
    """docs/reassembly-rules.md: a segment starting at or beyond this offset is outside the
    window (RFC 9293 §3.10.7.4). RCV.NXT is at least the receiver's highest ACK and at least
    the end of the sender's bytes the capture shows without a hole from offset 0; RCV.WND at
    most the largest window the receiver advertised, plus SLACK. None: receiver unseen."""
    ack, wnd = receiver
    if wnd < 0:
        return None
    spans = sorted(
        (s.offset, s.offset + s.wire_len)
        for s in segs
        if s.wire_len > 0 and s.offset >= 0 and _may_carry_stream(s, close_frame, drop_bad)
    )
    reach = 0
    for start, end in spans:
        if start > reach:
            break
        reach = max(reach, end)
    return max(ack, reach) + wnd + SLACK


def _fin_position(segs, limit, close_frame, drop_bad) -> int | None:  # type: ignore[no-untyped-def]
    """RFC 9293 §3.10.7.4 (check the FIN bit): the FIN sits after its segment's data; the
    lowest of the FINs that could have been accepted (as a data segment would, and within the
    window: below ``limit``, or with the receiver unseen within 1 GiB of the furthest end
    seen before it)."""
    fin, furthest = None, 0
    for s in segs:
        if s.flags & FIN and s.offset >= 0 and _may_carry_stream(s, close_frame, drop_bad):
            ok = abs(s.offset - furthest) <= WINDOW if limit is None else s.offset < limit
            if ok:
                at = s.offset + s.wire_len
                fin = at if fin is None else min(fin, at)
        end = s.offset + s.wire_len
        if abs(end - furthest) <= WINDOW:
            furthest = max(furthest, end)
    return fin


def _unplaced_fate(  # type: ignore[no-untyped-def]
    seg: _Segment, d: _Direction, close_frame: int, drop_bad: bool, limit, fin
) -> int | None:
    """Why a data segment is not placed, or None when it is (checked in this order)."""
    if seg.flags & RST:
        return RST_DATA  # RFC 9293 §3.5.3: data on a reset is diagnostic text, not stream
    if seg.frame > close_frame:
        return AFTER_CLOSE
    if drop_bad and seg.bad_checksum:
        return BAD_CHECKSUM
    if seg.offset < 0:
        return BEFORE_START
    if seg.offset > d.high_end + WINDOW if limit is None else seg.offset >= limit:
        return OUTSIDE_WINDOW
    if fin is not None and seg.offset >= fin:
        return AFTER_FIN
    # RFC 9293 §3.8.4: a keep-alive carries SEG.SEQ = SND.NXT - 1 and at most one garbage octet;
    # it is only taken for one once every byte before it is held (else that byte fills a hole)
    probe = seg.wire_len <= 1 and not seg.flags & (SYN | FIN)
    all_through = 0 < len(d.owner) == d.high_end
    if probe and all_through and seg.offset == d.high_end - 1:
        return KEEPALIVE
    return None


def _runs(d: _Direction, seg: _Segment) -> list[tuple[int, int, int]]:
    """(offset, length, fate): maximal runs of one fate among the segment's placed bytes."""
    runs: list[tuple[int, int, int]] = []
    for x in range(seg.offset, seg.end):
        f = d.fate[seg.row, x]
        if runs and runs[-1][2] == f:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, f)
        else:
            runs.append((x, 1, f))
    return runs


def _plan_direction(di, segs, close_frame, drop_bad, receiver, policy, new_wins, bufs, dirs):  # type: ignore[no-untyped-def]
    """Rows (plan columns) and conflicts (conflict columns) of one direction; fills dirs[:, di]."""
    for s, s64 in zip(segs, _unwrap([s.seq for s in segs]), strict=True):
        s.seq64 = s64
    base, syn = _offset_zero(segs)
    for s in segs:
        s.offset = s.seq64 - base + (1 if s.flags & SYN else 0)  # a SYN occupies its own seq
    limit = _window_limit(segs, receiver, close_frame, drop_bad)
    fin = _fin_position(segs, limit, close_frame, drop_bad)
    d = _Direction(bufs, policy, new_wins)
    rows = []
    placed: list[_Segment] = []
    rst = 0
    for s in segs:
        rst |= 1 if s.flags & RST else 0
        if s.wire_len == 0:
            continue  # "Keep-alives, zero-window probes and pure ACKs add no bytes"
        fate = _unplaced_fate(s, d, close_frame, drop_bad, limit, fin)
        if fate is not None:
            rows.append((s.frame, s.row, di, s.offset, s.start, s.file, s.cap_len, fate))
            continue
        s.end = s.offset + s.cap_len
        wire_end = s.offset + s.wire_len
        if fin is not None:  # "a receiver discards bytes ... beyond the sender's FIN"
            s.end, wire_end = min(s.end, fin), min(wire_end, fin)
        if s.end > s.offset:
            d.place(s)
            placed.append(s)
        if s.offset + s.cap_len > s.end:
            beyond = (s.end, s.start + s.end - s.offset, s.offset + s.cap_len - s.end, AFTER_FIN)
            rows.append((s.frame, s.row, di, beyond[0], beyond[1], s.file, *beyond[2:]))
        if s.end < wire_end:  # "the rest is a truncated gap"
            rows.append((s.frame, s.row, di, s.end, -1, s.file, wire_end - s.end, TRUNCATED))
        d.high_end = max(d.high_end, wire_end)
    for s in placed:
        for x, n, f in _runs(d, s):
            rows.append((s.frame, s.row, di, x, s.start + x - s.offset, s.file, n, f))
    conflicts = [(di, *c) for c in d.conflicts]
    facts = {
        D_BASE: base % MOD,
        D_SYN: int(syn),
        D_FIN_END: -1 if fin is None else fin,
        D_RST: rst,
        D_PACKETS: len(segs),
        D_OOO: d.out_of_order,
        D_HIGH: d.high_end,
        D_FIRST_TS: segs[0].ts_ns,
        D_LAST_TS: segs[-1].ts_ns,
    }
    for column, value in facts.items():
        dirs[column, di] = value
    return rows, conflicts


def plan_directions(  # type: ignore[no-untyped-def]
    order,
    dir_start,
    seq,
    flags,
    plen,
    pcap,
    poff,
    pfile,
    frame,
    ts_ns,
    tcp_ck,
    drop_bad,
    close_frame,
    receivers,
    policy,
    new_wins,
    bufs,
    plan,
    conflicts,
    dirs,
    counts,
    tiles,
    pieces,
    segtab,
    runs,
    seq64,
    section,
):
    """Build the plan of every direction; ``order[dir_start[d]:dir_start[d+1]]`` are d's rows.

    Returns the arrays of plan rows and conflict records (``plan`` and ``conflicts`` when they
    are large enough, else new ones); ``counts[K_PLAN]`` and ``counts[K_CONFLICTS]`` say how
    many there are. ``tiles``, ``pieces``, ``segtab``, ``runs`` and ``seq64`` are the kernel's
    scratch space, and ``section`` how many segments it places at a time: unused here (a
    direction is one whole here, and its conflict records are in arrival order).
    """
    all_rows, all_conflicts = [], []
    for di in range(len(dir_start) - 1):
        rows_of_d = [int(i) for i in order[dir_start[di] : dir_start[di + 1]]]
        direction = [
            _Segment(
                i,
                int(frame[i]),
                int(flags[i]),
                int(seq[i]),
                int(plen[i]),
                int(pcap[i]),
                int(pfile[i]),
                int(poff[i]),
                int(tcp_ck[i]) == CHECKSUM_BAD,
                int(ts_ns[i]),
            )
            for i in rows_of_d
        ]
        receiver = (int(receivers[RCV_ACK, di]), int(receivers[RCV_WND, di]))
        rows, confl = _plan_direction(
            di,
            direction,
            int(close_frame[di]),
            bool(drop_bad[di]),
            receiver,
            policy,
            new_wins,
            bufs,
            dirs,
        )
        all_rows += rows
        all_conflicts += confl
    if len(all_rows) > plan.shape[1]:
        plan = np.empty((plan.shape[0], len(all_rows)), plan.dtype)
    if len(all_conflicts) > conflicts.shape[1]:
        conflicts = np.empty((conflicts.shape[0], len(all_conflicts)), conflicts.dtype)
    for n, row in enumerate(all_rows):
        plan[:, n] = row
    for n, conflict in enumerate(all_conflicts):
        conflicts[:, n] = conflict
    counts[K_PLAN], counts[K_CONFLICTS] = len(all_rows), len(all_conflicts)
    return plan, conflicts


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of half-open ranges, as sorted disjoint ranges that do not touch."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _minus(outer: tuple[int, int], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``outer`` that no range of the disjoint, sorted ``spans`` covers."""
    out, cursor = [], outer[0]
    for start, end in spans:
        if start > cursor:
            out.append((cursor, min(start, outer[1])))
        cursor = max(cursor, end)
    if cursor < outer[1]:
        out.append((cursor, outer[1]))
    return [s for s in out if s[0] < s[1]]


def list_gaps(kd, koff, kend, length, td, toff, tend, out):  # type: ignore[no-untyped-def]
    """Holes in each direction's kept ranges up to its length, with their reason.

    docs/design.md: "Missing bytes are gaps with a reason", ``not-captured`` (0), or
    ``truncated`` (1) where a segment captured short carried the bytes (its captured part is
    used, the rest is the gap). Writes rows (direction, offset, length, reason) into ``out``
    while they fit; returns how many there are.
    """
    rows = []
    for d in range(len(length)):
        kept = _union([(int(a), int(b)) for x, a, b in zip(kd, koff, kend, strict=True) if x == d])
        claimed = _union(
            [(int(a), int(b)) for x, a, b in zip(td, toff, tend, strict=True) if x == d]
        )
        for hole in _minus((0, int(length[d])), kept):
            cut_off = [(max(a, hole[0]), min(b, hole[1])) for a, b in claimed]
            cut_off = [s for s in cut_off if s[0] < s[1]]
            pieces = [(a, b, 1) for a, b in cut_off] + [(a, b, 0) for a, b in _minus(hole, cut_off)]
            rows += [(d, a, b - a, reason) for a, b, reason in sorted(pieces)]
    for n, row in enumerate(rows[: out.shape[1]]):
        out[:, n] = row
    return len(rows)
