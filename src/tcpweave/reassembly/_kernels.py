"""Kernels that build the reassembly plan, one direction at a time.

Theory of operation. A direction's packets are walked in capture order. The first
walk unwraps 32-bit sequence numbers to 64 bits (each one is placed within ±2^31 of
the highest seen so far, RFC 9293 §3.4 arithmetic) and fixes offset 0: ISN + 1 when
the SYN was captured, else the lowest sequence number near the first data segment.
Two facts are then taken from the whole capture before any byte is placed (placement
never waits on ACKs): the window limit (``receiver_windows`` and ``_window_limit``:
a segment starting at or beyond it could not have been accepted) and the FIN
position (``_fin_position``: bytes from there on are not stream data).

The second walk (``_classify``) decides, in arrival order, which data segments are
placed and writes the rows of the others (reset, after close, bad checksum, before
offset 0, outside the window, after the FIN, keep-alive) and of bytes cut off or past
the FIN. The keep-alive rule is the only one that looks at the placement so far (is
every byte below the highest end held?): that is the reach of the union of the placed
ranges, kept with a heap of those beyond it, so no placement is needed yet.

Placement then goes a *section* at a time (``_sections``): whole *islands* (segments
linked by overlaps) in offset order, up to ``section`` segments. No byte is shared by
two islands, so each section is placed on its own with arrays of its size: a long
direction (issue 12: 3 M one-byte segments) is never placed whole, and the plan is the
same whatever the section size (tests/test_plan_sections.py). An island larger than a
section is placed whole. Within a section, the stream is cut
into *tiles* at every segment boundary (known up front), so that the set of
segments covering a byte is the same all across a tile. A tile holds a short list of
*pieces* (byte ranges and the segment that owns them) and a summary of the segments
that covered it (the two extreme extents the policy table needs, see ``_verdict``).
A segment visits the tiles it spans twice: once to compare its bytes with the bytes
held (the "do they differ?" check, separate from the keep rule as in Zeek's
Reassem.cc) and write its conflict records, once more to take the holes and the runs
it won and to note what it found (its *arrival runs*: new, same, kept, dropped).
The work of a segment is O(log n + tiles and pieces it spans + bytes compared); there
is nothing per (segment x earlier segment) and nothing is rebuilt.

A conflict record is a maximal run of one segment's bytes that differ from the bytes
held, against one held frame, resolved one way; a segment's first EXACT_CONFLICTS
records are exact, after that its differing bytes within one *cell* (a run of held
bytes with one policy verdict, ended by a hole) join the cell's current record, equal
bytes between them included (the winner of that record takes them all). So records,
pieces and rows stay O(packets) whatever the overlaps.

Plan rows are written at the end of the direction: a row is a maximal run of one
segment's bytes with one fate, from its arrival runs and the pieces it still owns
(a byte it took and later lost to a differing copy is dropped).

Everything is int64 and column-major 2-D arrays, so that helpers receive a handful of
arrays rather than a tuple of columns (numba counts references to every array handed
to a function).
"""

from __future__ import annotations

import numpy as np

from tcpweave._jit import callee, helper, kernel

# plan columns (rows of the 2-D ``plan`` array)
P_FRAME, P_ROW, P_DIR, P_OFFSET, P_START, P_FILE, P_LEN, P_FATE = range(8)
N_PLAN_COLS = 8
# conflict columns
C_DIR, C_OFFSET, C_LEN, C_KEPT, C_DROPPED = range(5)
N_CONFLICT_COLS = 5
# per-direction facts
D_BASE, D_SYN, D_FIN_END, D_RST, D_PACKETS, D_OOO, D_HIGH, D_FIRST_TS, D_LAST_TS = range(9)
N_DIR_COLS = 9
# counters: rows and records written; pieces and arrival runs of the current direction
K_PLAN, K_CONFLICTS, K_PIECES, K_RUNS = range(4)
N_COUNTS = 4
# what the capture shows of a direction's receiver (``receiver_windows``)
RCV_ACK, RCV_WND = range(2)
N_RCV_COLS = 2
# tiles: start offset, first piece, the two extreme covering extents (``_verdict``)
T_START, T_FIRST, T_W1S, T_W1E, T_W2S, T_W2E = range(6)
N_TILE_COLS = 6
# pieces: byte range, owner (placed segment), next piece of the tile, owner-sorted list
N_START, N_END, N_OWNER, N_NEXT, N_SORT = range(5)
N_PIECE_COLS = 5
# placed segments: packet row, offset, arrival runs, pieces kept at the end
S_ROW, S_NS, S_RUN_LO, S_RUN_HI, S_KEPT_LO, S_KEPT_HI = range(6)
N_SEG_COLS = 6
# arrival runs: byte range and what the segment found there
A_START, A_END, A_FATE = range(3)
N_RUN_COLS = 3

# fates (tcpweave.enums.Fate)
F_NEW, F_RETRANS, F_SAME, F_KEPT, F_DROPPED = 0, 1, 2, 3, 4
F_WINDOW, F_BADSUM, F_AFTER_CLOSE, F_RST_DATA, F_KEEPALIVE, F_TRUNCATED, F_BEFORE = range(5, 12)
F_AFTER_FIN = 12
# what the first walk found of a data segment (``_classify``)
KL_SKIP, KL_PLACE, KL_BEHIND = 0, 1, 2  # KL_BEHIND is added to KL_PLACE

FIN, SYN, RST, ACK = 0x001, 0x002, 0x004, 0x010
CK_BAD = 2
WINDOW = np.int64(1) << 30  # receiver unseen: a segment 1 GiB past the furthest end is not placed
SLACK = np.int64(1) << 20  # beyond what the receiver showed (window updates not captured)
MAX_SHIFT = 14  # RFC 7323 §2.3: a larger shift.cnt is used as 14
EXACT_CONFLICTS = 8  # exact conflict records per segment before its overlaps are summarised
HALF = np.int64(1) << 31
MOD = np.int64(1) << 32
NIL = -1
FAR = np.int64(1) << 62  # "no extent yet" in a tile summary

# geometry cases (reassembly._policy)
BEFORE, SAME, AFTER = 0, 1, 2


@helper
def _unwrap(seq32, high):  # type: ignore[no-untyped-def]
    """The 64-bit value of ``seq32`` nearest to ``high`` (RFC 9293 §3.4 modular arithmetic)."""
    delta = (np.int64(seq32) - (high & (MOD - 1))) & (MOD - 1)
    if delta >= HALF:
        delta -= MOD
    return high + delta


@helper
def _room(a, need):  # type: ignore[no-untyped-def]
    """``a``, or a larger copy (at least doubled) when it has fewer than ``need`` columns.

    The plan's size is not known before its bytes are placed (overlaps can add rows,
    records and pieces), so the kernel grows its arrays where a segment needs more.
    """
    if need <= a.shape[1]:
        return a
    out = np.empty((a.shape[0], max(need, 2 * a.shape[1])), a.dtype)
    out[:, : a.shape[1]] = a
    return out


@helper
def _emit(plan, counts, frame, row, d, offset, start, file, length, fate):  # type: ignore[no-untyped-def]
    """Append a plan row (``plan`` has room), or extend the previous one when it continues
    it exactly."""
    n = counts[K_PLAN]
    if n > 0:
        q = n - 1
        if (
            plan[P_ROW, q] == row
            and plan[P_FATE, q] == fate
            and plan[P_OFFSET, q] + plan[P_LEN, q] == offset
            and (start < 0 or plan[P_START, q] + plan[P_LEN, q] == start)
        ):
            plan[P_LEN, q] += length
            return
    plan[P_FRAME, n] = frame
    plan[P_ROW, n] = row
    plan[P_DIR, n] = d
    plan[P_OFFSET, n] = offset
    plan[P_START, n] = start
    plan[P_FILE, n] = file
    plan[P_LEN, n] = length
    plan[P_FATE, n] = fate
    counts[K_PLAN] = n + 1


@helper
def _conflict(conflicts, counts, d, offset, length, kept_row, dropped_row):  # type: ignore[no-untyped-def]
    """Append a conflict record (``conflicts`` has room); returns its index."""
    n = counts[K_CONFLICTS]
    conflicts[C_DIR, n] = d
    conflicts[C_OFFSET, n] = offset
    conflicts[C_LEN, n] = length
    conflicts[C_KEPT, n] = kept_row
    conflicts[C_DROPPED, n] = dropped_row
    counts[K_CONFLICTS] = n + 1
    return n


@helper
def _case(a, b):  # type: ignore[no-untyped-def]
    return BEFORE if a < b else (SAME if a == b else AFTER)


@helper
def _verdict(tiles, e, ns, ne, policy, new_wins):  # type: ignore[no-untyped-def]
    """1 when the new segment [ns, ne) wins tile e against every earlier segment covering it.

    docs/overlap-policies.md: "A byte takes the new value only if every earlier segment that
    covers it says N". The tile keeps two of those segments: the one starting first (of
    those, the one ending last) and the one ending last (of those, the one starting first).
    For every policy of the table, the verdict of all covering segments is the verdict of
    these two (tests/test_plan_properties.py checks it exhaustively on small extents).
    """
    w1 = new_wins[policy, _case(ns, tiles[T_W1S, e]), _case(ne, tiles[T_W1E, e])]
    w2 = new_wins[policy, _case(ns, tiles[T_W2S, e]), _case(ne, tiles[T_W2E, e])]
    return 1 if w1 and w2 else 0


@helper
def _cover(tiles, e, ns, ne):  # type: ignore[no-untyped-def]
    """Note that the segment [ns, ne) now covers tile e (its summary of covering extents)."""
    if ns < tiles[T_W1S, e] or (ns == tiles[T_W1S, e] and ne > tiles[T_W1E, e]):
        tiles[T_W1S, e] = ns
        tiles[T_W1E, e] = ne
    if ne > tiles[T_W2E, e] or (ne == tiles[T_W2E, e] and ns < tiles[T_W2S, e]):
        tiles[T_W2S, e] = ns
        tiles[T_W2E, e] = ne


@helper
def _direction_base(order, lo, hi, seq, flags, plen, seq64):  # type: ignore[no-untyped-def]
    """Unwrap the direction's sequence numbers into seq64[lo:hi]; return the seq64 of offset 0."""
    high = MOD + np.int64(seq[order[lo]])
    syn64 = np.int64(-1)
    first_data = np.int64(-1)
    for j in range(lo, hi):
        i = order[j]
        s64 = _unwrap(seq[i], high)
        seq64[j] = s64
        high = max(high, s64)
        if flags[i] & SYN and syn64 < 0:
            syn64 = s64
        if plen[i] > 0 and first_data < 0:
            first_data = s64
    if syn64 >= 0:
        return syn64 + 1, True
    if first_data < 0:
        return seq64[lo], False
    base = first_data
    for j in range(lo, hi):  # mid-stream: the lowest data sequence near the first data segment
        if plen[order[j]] > 0 and abs(seq64[j] - first_data) <= WINDOW:
            base = min(base, seq64[j])
    return base, False


@kernel
def direction_extents(order, dir_start, seq, flags, plen, base, high, seq64):  # type: ignore[no-untyped-def]
    """Per direction: sequence number of offset 0 (``base``, 32-bit) and highest offset seen."""
    for d in range(dir_start.size - 1):
        lo, hi = dir_start[d], dir_start[d + 1]
        b, _syn = _direction_base(order, lo, hi, seq, flags, plen, seq64)
        base[d] = b & (MOD - 1)
        top = np.int64(0)
        for j in range(lo, hi):
            i = order[j]
            end = seq64[j] - b + (1 if flags[i] & SYN else 0) + plen[i]
            if abs(end - top) <= WINDOW:
                top = max(top, end)
        high[d] = top
    return dir_start.size - 1


# ------------------------------------------------------------------------------ receivers


@helper
def _syn_shift(order, lo, hi, flags, wscale):  # type: ignore[no-untyped-def]
    """Window scale shift of the first SYN of rows order[lo:hi]: -2 no SYN, -1 no option."""
    for j in range(lo, hi):
        i = order[j]
        if flags[i] & SYN:
            return np.int64(wscale[i]) if wscale[i] >= 0 else np.int64(-1)
    return np.int64(-2)


@helper
def _window_shift(sender, receiver):  # type: ignore[no-untyped-def]
    """The shift of the receiver's window field, from the two SYNs' Window Scale options.

    RFC 7323 §2.2: scaling is in force only when both SYNs carried the option (a captured
    SYN without it: 0). A SYN not captured is given the benefit of the doubt: the
    receiver's own shift when its SYN was seen, else the largest allowed (§2.3).
    """
    if sender == -1 or receiver == -1:
        return 0
    if receiver == -2:
        return MAX_SHIFT
    return min(receiver, MAX_SHIFT)


@kernel
def receiver_windows(order, dir_start, peer, base, ack, flags, window, wscale, out):  # type: ignore[no-untyped-def]
    """Per direction d: what the capture shows of its receiver (the direction ``peer[d]``).

    ``out[RCV_ACK, d]``: the highest acknowledgement number the receiver sent, as an offset
    of d (unwrapped: the first near d's offset 0, each next near the highest so far; 0 when
    it sent none). ``out[RCV_WND, d]``: the largest window it advertised, scaled (RFC 7323
    §2.3; never the window field of a SYN); -1 when the receiver has no packet at all.
    """
    for d in range(dir_start.size - 1):
        out[RCV_ACK, d] = 0
        out[RCV_WND, d] = -1
        p = peer[d]
        if p < 0:
            continue
        lo, hi = dir_start[p], dir_start[p + 1]
        own = _syn_shift(order, dir_start[d], dir_start[d + 1], flags, wscale)
        shift = _window_shift(own, _syn_shift(order, lo, hi, flags, wscale))
        anchor = MOD + np.int64(base[d])
        top = np.int64(-1)
        wnd = np.int64(0)
        for j in range(lo, hi):
            i = order[j]
            if flags[i] & ACK:
                top = max(top, _unwrap(ack[i], anchor if top < 0 else top))
            w = np.int64(window[i])
            wnd = max(wnd, w if flags[i] & SYN else w << shift)
        out[RCV_ACK, d] = top - anchor if top >= 0 else 0
        out[RCV_WND, d] = wnd
    return dir_start.size - 1


# -------------------------------------------------------------------- before placement


@helper
def _counts_for_stream(f, frame, close, bad):  # type: ignore[no-untyped-def]
    """May this segment carry stream bytes at all (not a reset, not after it, not a bad sum)?"""
    return not f & RST and frame <= close and not bad


@helper
def _window_limit(
    order, lo, hi, offsets, flags, plen, frame, tcp_ck, drop, close, rcv_ack, rcv_wnd
):  # type: ignore[no-untyped-def]
    """The offset from which a segment of this direction is outside the window; -1: unknown.

    RFC 9293 §3.10.7.4: a segment is acceptable when it starts within RCV.NXT ..
    RCV.NXT + RCV.WND. RCV.NXT is at least the highest acknowledgement the receiver sent
    (in the whole capture), and at least the end of the sender's bytes the capture shows
    without a hole from offset 0 (a receiver whose ACKs were not captured got them too);
    RCV.WND is at most the largest window it advertised, plus SLACK for updates not seen.
    A receiver with no packet in the capture (``rcv_wnd`` -1) gives no limit.
    """
    if rcv_wnd < 0:
        return np.int64(-1)
    furthest = np.int64(-1)  # the furthest start of a data segment or FIN
    for j in range(lo, hi):
        i = order[j]
        if plen[i] > 0 or flags[i] & FIN:
            furthest = max(furthest, offsets[j])
    if furthest < max(rcv_ack, 0) + rcv_wnd + SLACK:
        return max(rcv_ack, 0) + rcv_wnd + SLACK  # everything is inside: no need for the rest
    # the (rare) direction reaching beyond: its data segments' starts and ends, sorted
    scratch = np.empty((2, hi - lo), np.int64)
    k = 0
    for j in range(lo, hi):
        i = order[j]
        ns = offsets[j]
        bad = drop and tcp_ck[i] == CK_BAD
        if plen[i] > 0 and ns >= 0 and _counts_for_stream(flags[i], frame[i], close, bad):
            scratch[0, k] = ns
            scratch[1, k] = ns + plen[i]
            k += 1
    scratch[0, :k].sort()
    scratch[1, :k].sort()
    # the hole-free prefix: sweep starts and ends in offset order (a start before an end at
    # the same offset: touching segments leave no hole); it ends where nothing covers
    reach = np.int64(0)
    cover, a, b = 0, 0, 0
    while b < k:
        if a < k and scratch[0, a] <= scratch[1, b]:
            if cover == 0 and scratch[0, a] > reach:
                break
            cover += 1
            a += 1
        else:
            cover -= 1
            reach = scratch[1, b]
            b += 1
    return max(rcv_ack, reach) + rcv_wnd + SLACK


@helper
def _fin_position(order, lo, hi, offsets, flags, plen, frame, tcp_ck, drop, close, limit):  # type: ignore[no-untyped-def]
    """Offset of the sender's FIN (the lowest of its acceptable FINs), or -1.

    RFC 9293 §3.10.7.4 (eighth, check the FIN bit): the FIN takes the sequence number after
    its data; nothing beyond it is stream. A FIN counts where a data segment would (not on a
    reset, not after it, not with a bad checksum that is dropped), within the window: below
    ``limit``, or, with the receiver unseen, within 1 GiB of the furthest end so far.
    """
    fin = np.int64(-1)
    top = np.int64(0)
    for j in range(lo, hi):
        i = order[j]
        ns = offsets[j]
        bad = drop and tcp_ck[i] == CK_BAD
        if flags[i] & FIN and ns >= 0 and _counts_for_stream(flags[i], frame[i], close, bad):
            ok = ns < limit if limit >= 0 else abs(ns - top) <= WINDOW
            if ok and (fin < 0 or ns + plen[i] < fin):
                fin = ns + plen[i]
        end = ns + plen[i]
        if abs(end - top) <= WINDOW:
            top = max(top, end)
    return fin


@helper
def _tile_end(ns, pcap, fin):  # type: ignore[no-untyped-def]
    """End of the captured bytes of a segment at ``ns`` that can be stream (before the FIN)."""
    end = ns + pcap
    return min(end, fin) if fin >= 0 else end


@helper
def _cut_tiles(members, a, b, order, offsets, pcap, fin, tiles):  # type: ignore[no-untyped-def]
    """Cut the offsets of the segments ``members[a:b]`` into tiles at every boundary of theirs;
    returns the number of boundaries (tile e is [tiles[T_START, e], tiles[T_START, e + 1]))."""
    k = 0
    for t in range(a, b):
        j = members[t]
        ns = offsets[j]
        end = _tile_end(ns, pcap[order[j]], fin)
        if end > ns:
            tiles[T_START, k] = ns
            tiles[T_START, k + 1] = end
            k += 2
    tiles[T_START, :k].sort()
    nb = 0
    for t in range(k):
        if nb == 0 or tiles[T_START, t] != tiles[T_START, nb - 1]:
            tiles[T_START, nb] = tiles[T_START, t]
            nb += 1
    for e in range(nb):
        tiles[T_FIRST, e] = NIL
        tiles[T_W1S, e] = FAR
        tiles[T_W1E, e] = -FAR
        tiles[T_W2S, e] = FAR
        tiles[T_W2E, e] = -FAR
    return nb


@helper
def _unplaced_fate(f, frame, close_frame, bad, ns, high_end, plen, all_held, limit, fin):  # type: ignore[no-untyped-def]
    """Why a data segment is not placed, or -1 when it is (``all_held``: every byte before
    ``high_end`` is held)."""
    if f & RST:
        return F_RST_DATA
    if frame > close_frame:
        return F_AFTER_CLOSE
    if bad:
        return F_BADSUM
    if ns < 0:
        return F_BEFORE
    if (ns >= limit) if limit >= 0 else (ns > high_end + WINDOW):
        return F_WINDOW
    if 0 <= fin <= ns:
        return F_AFTER_FIN
    if plen <= 1 and not f & (SYN | FIN) and all_held and ns == high_end - 1:
        # RFC 9293 §3.8.4: a probe repeats the byte before SND.NXT, once all data is through
        # (with a hole before it, a 1-byte segment there is data, not a probe)
        return F_KEEPALIVE
    return -1


@helper
def _heap_push(heap, n, start, end):  # type: ignore[no-untyped-def]
    """Add [start, end) to the min-heap (by start) of n ranges; returns the heap (grown)."""
    heap = _room(heap, n + 1)
    x = n
    while x > 0:
        up = (x - 1) // 2
        if heap[0, up] <= start:
            break
        heap[0, x] = heap[0, up]
        heap[1, x] = heap[1, up]
        x = up
    heap[0, x] = start
    heap[1, x] = end
    return heap


@helper
def _heap_pop(heap, n):  # type: ignore[no-untyped-def]
    """Remove the first range of the min-heap of n > 0 ranges; returns n - 1."""
    n -= 1
    start, end = heap[0, n], heap[1, n]
    x = 0
    while 2 * x + 1 < n:
        c = 2 * x + 1
        if c + 1 < n and heap[0, c + 1] < heap[0, c]:
            c += 1
        if heap[0, c] >= start:
            break
        heap[0, x] = heap[0, c]
        heap[1, x] = heap[1, c]
        x = c
    heap[0, x] = start
    heap[1, x] = end
    return n


@helper
def _extend_reach(heap, n, reach, start, end):  # type: ignore[no-untyped-def]
    """Add [start, end) to ranges whose union from offset 0 is hole-free up to ``reach``, the
    others waiting in the heap of n; returns (heap, n, reach)."""
    if start > reach:
        return _heap_push(heap, n, start, end), n + 1, reach
    reach = max(reach, end)
    while n > 0 and heap[0, 0] <= reach:
        reach = max(reach, heap[1, 0])
        n = _heap_pop(heap, n)
    return heap, n, reach


@callee
def _classify(  # type: ignore[no-untyped-def]
    order, lo, hi, offsets, flags, plen, pcap, poff, pfile, frame, tcp_ck, drop, close, limit,
    fin, d, plan, counts, dirs, klass,
):  # fmt: skip
    """First walk, in arrival order: which data segments are placed (``klass``: KL_PLACE, plus
    KL_BEHIND when it starts below the highest end so far), and the plan rows of the rest
    (unplaced segments, bytes after the FIN, bytes not captured). A segment's verdict needs
    one fact of the placement before it (the keep-alive rule: is every byte below the highest
    end held?); it is the reach of the hole-free union of the placed ranges, kept with a heap
    of the ranges beyond it. Returns (plan, highest end)."""
    high_end, reach = np.int64(0), np.int64(0)
    heap = np.empty((2, 16), np.int64)
    n_heap = 0
    for j in range(lo, hi):
        i = order[j]
        f = flags[i]
        ns = offsets[j]
        klass[j - lo] = KL_SKIP
        if f & RST:
            dirs[D_RST, d] = 1
        if plen[i] == 0:
            continue
        plan = _room(plan, counts[K_PLAN] + 2)
        bad = drop and tcp_ck[i] == CK_BAD
        all_held = high_end > 0 and reach >= high_end
        fate = _unplaced_fate(f, frame[i], close, bad, ns, high_end, plen[i], all_held, limit, fin)
        if fate >= 0:
            _emit(plan, counts, frame[i], i, d, ns, poff[i], pfile[i], pcap[i], fate)
            continue
        cap_end, wire_end = ns + pcap[i], ns + plen[i]
        if fin >= 0:
            cap_end, wire_end = min(cap_end, fin), min(wire_end, fin)
        if cap_end > ns:
            klass[j - lo] = KL_PLACE + (KL_BEHIND if ns < high_end else 0)
            heap, n_heap, reach = _extend_reach(heap, n_heap, reach, ns, cap_end)
        beyond = ns + pcap[i] - cap_end  # captured bytes beyond the FIN
        if beyond > 0:
            at = poff[i] + cap_end - ns
            _emit(plan, counts, frame[i], i, d, cap_end, at, pfile[i], beyond, F_AFTER_FIN)
        if cap_end < wire_end:
            cut = wire_end - cap_end
            _emit(plan, counts, frame[i], i, d, cap_end, -1, pfile[i], cut, F_TRUNCATED)
        high_end = max(high_end, wire_end)
    return plan, high_end


@helper
def _sections(order, lo, hi, offsets, pcap, fin, section):  # type: ignore[no-untyped-def]
    """The direction's segments with bytes to place (tiles are cut at their boundaries),
    grouped in sections: ``members[bounds[s] : bounds[s + 1]]`` are section s's, in arrival
    order. A section is a run of whole islands (segments linked by overlaps) in offset
    order, closed once it holds ``section`` segments: no segment shares a byte with another
    section's, so each section is placed on its own, with tiles, pieces and segment arrays
    of its size. Returns (members, bounds)."""
    n_t = 0
    ordered = True  # the segments arrived in offset order (the common case: no sort needed)
    prev = -FAR
    for j in range(lo, hi):
        ns = offsets[j]
        if _tile_end(ns, pcap[order[j]], fin) > ns:
            n_t += 1
            ordered = ordered and ns >= prev
            prev = ns
    members = np.empty(n_t, np.int64)
    t = 0
    for j in range(lo, hi):
        if _tile_end(offsets[j], pcap[order[j]], fin) > offsets[j]:
            members[t] = j
            t += 1
    if n_t <= section:
        bounds = np.zeros(2, np.int64)
        bounds[1] = n_t
        return members, bounds
    by_start = np.arange(n_t)
    if not ordered:
        starts = np.empty(n_t, np.int64)
        for t in range(n_t):
            starts[t] = offsets[members[t]]
        by_start = np.argsort(starts)
    sec = np.empty(n_t, np.int64)  # section of each member
    n_sec, size, top = 0, 0, -FAR
    for u in range(n_t):
        t = by_start[u]
        j = members[t]
        ns = offsets[j]
        if n_sec == 0 or (ns >= top and size >= section):  # an island starts at ns
            n_sec += 1
            size = 0
        top = max(top, _tile_end(ns, pcap[order[j]], fin))
        size += 1
        sec[t] = n_sec - 1
    bounds = np.zeros(n_sec + 1, np.int64)
    for t in range(n_t):
        bounds[sec[t] + 1] += 1
    for s in range(n_sec):
        bounds[s + 1] += bounds[s]
    fill = bounds[:-1].copy()
    out = np.empty(n_t, np.int64)
    for t in range(n_t):  # in arrival order within each section
        out[fill[sec[t]]] = members[t]
        fill[sec[t]] += 1
    return out, bounds


# ----------------------------------------------------------------------------- placement


@helper
def _resolve(  # type: ignore[no-untyped-def]
    tiles,
    pieces,
    segtab,
    conflicts,
    counts,
    bufs,
    poff,
    pfile,
    policy,
    new_wins,
    d,
    row,
    e0,
    e1,
    ns,
    ne,
):
    """First visit: compare the segment's bytes [ns, ne) (tiles e0..e1-1) with the bytes held
    and append its conflict records (at most EXACT_CONFLICTS + e1 - e0 of them: past the
    exact ones, one per cell). Returns (holes, records won)."""
    a = bufs[pfile[row]]
    a_at = poff[row] - ns  # where stream offset x of the segment is in its buffer
    b, b_file = a, pfile[row]  # the held copy's buffer (looked up when its file changes)
    holes, won, cell, prev_v = 0, 0, 0, -1
    rec, n_rec, rec_cell, rec_held, rec_v, rec_end = -1, 0, -1, -1, -1, np.int64(-1)
    for e in range(e0, e1):
        k = tiles[T_FIRST, e]
        if k == NIL:
            holes += 1
            cell += 1
            prev_v = -1
            continue
        v = _verdict(tiles, e, ns, ne, policy, new_wins)
        if v != prev_v:
            cell += 1
            prev_v = v
        while k != NIL:
            o = pieces[N_OWNER, k]
            held = segtab[S_ROW, o]
            if pfile[held] != b_file:
                b, b_file = bufs[pfile[held]], pfile[held]
            b_at = poff[held] - segtab[S_NS, o]
            x, end = pieces[N_START, k], pieces[N_END, k]
            while x < end:
                while x < end and a[a_at + x] == b[b_at + x]:
                    x += 1
                if x == end:
                    break
                y = x + 1
                while y < end and a[a_at + y] != b[b_at + y]:
                    y += 1
                exact = rec_end == x and rec_held == held and rec_v == v
                if rec >= 0 and (exact or (n_rec >= EXACT_CONFLICTS and rec_cell == cell)):
                    conflicts[C_LEN, rec] = y - conflicts[C_OFFSET, rec]
                else:
                    kept, dropped = (row, held) if v else (held, row)
                    rec = _conflict(conflicts, counts, d, x, y - x, kept, dropped)
                    n_rec += 1
                    won += v
                    rec_cell, rec_held, rec_v = cell, held, v
                rec_end = y
                x = y
            k = pieces[N_NEXT, k]
    return holes, won


@helper
def _arrive(runs, counts, lo, start, end, fate):  # type: ignore[no-untyped-def]
    """Append an arrival run of the segment whose runs begin at ``lo`` (joining a touching one)."""
    n = counts[K_RUNS]
    if n > lo and runs[A_FATE, n - 1] == fate and runs[A_END, n - 1] == start:
        runs[A_END, n - 1] = end
        return
    runs[A_START, n] = start
    runs[A_END, n] = end
    runs[A_FATE, n] = fate
    counts[K_RUNS] = n + 1


@helper
def _arrive_held(runs, counts, lo, conflicts, r, r1, row, start, end):  # type: ignore[no-untyped-def]
    """Arrival runs over held bytes [start, end): kept or dropped inside a record, else same.
    ``r`` is the cursor into the segment's records r..r1-1; returns it."""
    pos = start
    while pos < end:
        while r < r1 and conflicts[C_OFFSET, r] + conflicts[C_LEN, r] <= pos:
            r += 1
        if r < r1 and conflicts[C_OFFSET, r] <= pos:
            stop = min(conflicts[C_OFFSET, r] + conflicts[C_LEN, r], end)
            fate = F_KEPT if conflicts[C_KEPT, r] == row else F_DROPPED
        else:
            stop = end if r >= r1 else min(conflicts[C_OFFSET, r], end)
            fate = F_SAME
        _arrive(runs, counts, lo, pos, stop, fate)
        pos = stop
    return r


@helper
def _take_won(pieces, counts, conflicts, r, r1, row, j, k):  # type: ignore[no-untyped-def]
    """Give segment j the parts of piece k that its won records cover (splitting the piece).
    ``r`` is the cursor into the segment's records r..r1-1; returns it."""
    end, owner, after = pieces[N_END, k], pieces[N_OWNER, k], pieces[N_NEXT, k]
    pos = pieces[N_START, k]
    cur = NIL
    while pos < end:
        while r < r1 and (
            conflicts[C_KEPT, r] != row or conflicts[C_OFFSET, r] + conflicts[C_LEN, r] <= pos
        ):
            r += 1
        if r < r1 and conflicts[C_OFFSET, r] <= pos:
            stop, who = min(conflicts[C_OFFSET, r] + conflicts[C_LEN, r], end), j
        else:
            stop, who = (end if r >= r1 else min(conflicts[C_OFFSET, r], end)), owner
        if cur == NIL:
            cur = k
        elif pieces[N_OWNER, cur] != who:
            n = counts[K_PIECES]
            counts[K_PIECES] = n + 1
            pieces[N_START, n] = pos
            pieces[N_NEXT, n] = after
            pieces[N_NEXT, cur] = n
            cur = n
        pieces[N_END, cur] = stop
        pieces[N_OWNER, cur] = who
        pos = stop
    return r


@helper
def _settle(tiles, pieces, runs, counts, conflicts, r0, r1, j, row, e0, e1, ns, ne):  # type: ignore[no-untyped-def]
    """Second visit: take the holes and the runs won, write the arrival runs, note the
    segment's extent in every tile it spans. Returns the bytes newly held."""
    added = np.int64(0)
    lo = counts[K_RUNS]
    r_won = r0
    r_any = r0
    for e in range(e0, e1):
        k = tiles[T_FIRST, e]
        if k == NIL:  # bytes not held yet are taken
            start, end = tiles[T_START, e], tiles[T_START, e + 1]
            k = counts[K_PIECES]
            counts[K_PIECES] = k + 1
            pieces[N_START, k] = start
            pieces[N_END, k] = end
            pieces[N_OWNER, k] = j
            pieces[N_NEXT, k] = NIL
            tiles[T_FIRST, e] = k
            _arrive(runs, counts, lo, start, end, F_NEW)
            added += end - start
        else:
            while k != NIL:
                nxt = pieces[N_NEXT, k]
                r_any = _arrive_held(
                    runs,
                    counts,
                    lo,
                    conflicts,
                    r_any,
                    r1,
                    row,
                    pieces[N_START, k],
                    pieces[N_END, k],
                )
                if r_won < r1:
                    r_won = _take_won(pieces, counts, conflicts, r_won, r1, row, j, k)
                k = nxt
        _cover(tiles, e, ns, ne)
    return added


@helper
def _place(tiles, pieces, segtab, runs, conflicts, counts, r0, m, row, e0, e1, ns, ne):  # type: ignore[no-untyped-def]
    """Settle packet ``row``'s bytes [ns, ne) as placed segment m, its records being r0.. (the
    arrays have room); returns the bytes newly held."""
    segtab[S_ROW, m] = row
    segtab[S_NS, m] = ns
    lo = counts[K_RUNS]
    segtab[S_RUN_LO, m] = lo
    r1 = counts[K_CONFLICTS]
    added = _settle(tiles, pieces, runs, counts, conflicts, r0, r1, m, row, e0, e1, ns, ne)
    segtab[S_RUN_HI, m] = counts[K_RUNS]
    if counts[K_RUNS] == lo + 1 and runs[A_FATE, lo] == F_SAME:
        runs[A_FATE, lo] = F_RETRANS  # the whole segment was already held, same bytes
    return added


# ---------------------------------------------------------------------------- plan rows


@helper
def _sort_pieces(tiles, nb, pieces, segtab, m):  # type: ignore[no-untyped-def]
    """List every piece in pieces[N_SORT] by owner, then offset; S_KEPT_LO/HI bound each
    placed segment's share."""
    for j in range(m):
        segtab[S_KEPT_HI, j] = 0
    for e in range(nb - 1):
        k = tiles[T_FIRST, e]
        while k != NIL:
            segtab[S_KEPT_HI, pieces[N_OWNER, k]] += 1
            k = pieces[N_NEXT, k]
    total = 0
    for j in range(m):
        segtab[S_KEPT_LO, j] = total
        total += segtab[S_KEPT_HI, j]
        segtab[S_KEPT_HI, j] = segtab[S_KEPT_LO, j]
    for e in range(nb - 1):
        k = tiles[T_FIRST, e]
        while k != NIL:
            o = pieces[N_OWNER, k]
            pieces[N_SORT, segtab[S_KEPT_HI, o]] = k
            segtab[S_KEPT_HI, o] += 1
            k = pieces[N_NEXT, k]


@helper
def _emit_segment(plan, counts, pieces, segtab, runs, j, d, frame, poff, pfile):  # type: ignore[no-untyped-def]
    """The plan rows of placed segment j: its arrival runs, where a byte it took (new, kept)
    but no longer owns is dropped (a later, differing copy won it)."""
    i = segtab[S_ROW, j]
    at = poff[i] - segtab[S_NS, j]
    q, q_end = segtab[S_KEPT_LO, j], segtab[S_KEPT_HI, j]
    for r in range(segtab[S_RUN_LO, j], segtab[S_RUN_HI, j]):
        start, end, fate = runs[A_START, r], runs[A_END, r], runs[A_FATE, r]
        if fate != F_NEW and fate != F_KEPT:
            _emit(plan, counts, frame[i], i, d, start, at + start, pfile[i], end - start, fate)
            continue
        pos = start
        while pos < end:
            while q < q_end and pieces[N_END, pieces[N_SORT, q]] <= pos:
                q += 1
            k = pieces[N_SORT, q] if q < q_end else NIL
            if k != NIL and pieces[N_START, k] <= pos:
                stop, f = min(pieces[N_END, k], end), fate
            else:
                stop, f = (end if k == NIL else min(pieces[N_START, k], end)), F_DROPPED
            _emit(plan, counts, frame[i], i, d, pos, at + pos, pfile[i], stop - pos, f)
            pos = stop


@callee
def _place_section(  # type: ignore[no-untyped-def]
    members, a, b, order, lo, offsets, pcap, poff, pfile, frame, fin, klass, policy, new_wins,
    bufs, d, plan, conflicts, counts, tiles, pieces, segtab, runs,
):  # fmt: skip
    """Place the segments ``members[a:b]`` (one section, in arrival order) and write their
    plan rows. Returns the arrays (grown where they were too small) and the number of
    segments that filled a hole below the highest end (out of order)."""
    tiles = _room(tiles, 2 * (b - a) + 2)
    segtab = _room(segtab, b - a)
    nb = _cut_tiles(members, a, b, order, offsets, pcap, fin, tiles)
    starts = tiles[T_START, :nb]
    counts[K_PIECES] = 0
    counts[K_RUNS] = 0
    m, ooo = 0, 0
    for t in range(a, b):
        j = members[t]
        c = klass[j - lo]
        if c == KL_SKIP:
            continue
        i = order[j]
        ns = offsets[j]
        cap_end = _tile_end(ns, pcap[i], fin)
        e0, e1 = np.searchsorted(starts, ns), np.searchsorted(starts, cap_end)
        conflicts = _room(conflicts, counts[K_CONFLICTS] + EXACT_CONFLICTS + e1 - e0)
        r0 = counts[K_CONFLICTS]
        holes, won = _resolve(
            tiles, pieces, segtab, conflicts, counts, bufs, poff, pfile, policy, new_wins,
            d, i, e0, e1, ns, cap_end,
        )  # fmt: skip
        pieces = _room(pieces, counts[K_PIECES] + holes + 2 * won)
        runs = _room(runs, counts[K_RUNS] + 2 * (holes + counts[K_CONFLICTS] - r0) + 1)
        added = _place(
            tiles, pieces, segtab, runs, conflicts, counts, r0, m, i, e0, e1, ns, cap_end
        )
        m += 1
        if added > 0 and c & KL_BEHIND:
            ooo += 1
    _sort_pieces(tiles, nb, pieces, segtab, m)
    plan = _room(plan, counts[K_PLAN] + counts[K_RUNS] + 2 * counts[K_PIECES])
    for q in range(m):
        _emit_segment(plan, counts, pieces, segtab, runs, q, d, frame, poff, pfile)
    return plan, conflicts, tiles, pieces, segtab, runs, ooo


@kernel
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

    Returns the arrays of plan rows and conflict records (``plan`` and ``conflicts``, or
    larger copies where they were too small; as ``tiles``, ``pieces``, ``segtab`` and
    ``runs``, they grow here); ``counts[K_PLAN]`` and ``counts[K_CONFLICTS]`` say how much of
    them is filled. A direction is placed a section at a time (``_sections``: at most
    ``section`` segments, unless one island of overlapping segments is larger), so the
    placement arrays are bounded by the section, not by the direction. Conflict records come
    out grouped by section: sorted by direction and arriving row they are in arrival order.
    """
    for d in range(dir_start.size - 1):
        lo, hi = dir_start[d], dir_start[d + 1]
        base, syn = _direction_base(order, lo, hi, seq, flags, plen, seq64)
        dirs[D_BASE, d] = base & (MOD - 1)
        dirs[D_SYN, d] = syn
        dirs[D_PACKETS, d] = hi - lo
        dirs[D_FIRST_TS, d] = ts_ns[order[lo]]
        dirs[D_LAST_TS, d] = ts_ns[order[hi - 1]]
        for j in range(lo, hi):  # from here on: the stream offset of each first payload byte
            seq64[j] -= base - (1 if flags[order[j]] & SYN else 0)
        drop, close = drop_bad[d], close_frame[d]
        rcv_ack, rcv_wnd = receivers[RCV_ACK, d], receivers[RCV_WND, d]
        limit = _window_limit(
            order, lo, hi, seq64, flags, plen, frame, tcp_ck, drop, close, rcv_ack, rcv_wnd
        )
        fin = _fin_position(order, lo, hi, seq64, flags, plen, frame, tcp_ck, drop, close, limit)
        dirs[D_FIN_END, d] = fin
        klass = np.empty(hi - lo, np.int8)
        plan, high_end = _classify(
            order, lo, hi, seq64, flags, plen, pcap, poff, pfile, frame, tcp_ck, drop, close,
            limit, fin, d, plan, counts, dirs, klass,
        )  # fmt: skip
        members, bounds = _sections(order, lo, hi, seq64, pcap, fin, section)
        ooo = 0
        for s in range(bounds.size - 1):
            plan, conflicts, tiles, pieces, segtab, runs, n_ooo = _place_section(
                members, bounds[s], bounds[s + 1], order, lo, seq64, pcap, poff, pfile, frame,
                fin, klass, policy, new_wins, bufs, d, plan, conflicts, counts, tiles, pieces,
                segtab, runs,
            )  # fmt: skip
            ooo += n_ooo
        dirs[D_OOO, d] = ooo
        dirs[D_HIGH, d] = high_end
    return plan, conflicts


@helper
def _add_gap(out, n, d, start, end, reason):  # type: ignore[no-untyped-def]
    if 0 < n <= out.shape[1]:  # touching holes of one reason are one gap
        q = n - 1
        if out[0, q] == d and out[3, q] == reason and out[1, q] + out[2, q] == start:
            out[2, q] += end - start
            return n
    if n < out.shape[1]:
        out[0, n] = d
        out[1, n] = start
        out[2, n] = end - start
        out[3, n] = reason
    return n + 1


@helper
def _hole(out, n, d, start, end, td, toff, tend, t):  # type: ignore[no-untyped-def]
    """Record the hole [start, end) of direction d, split where truncated claims cover it."""
    while t < td.size and (td[t] < d or (td[t] == d and tend[t] <= start)):
        t += 1
    c = start
    u = t
    while u < td.size and td[u] == d and toff[u] < end:
        lo, hi = max(toff[u], c), min(tend[u], end)
        if lo < hi:
            if lo > c:
                n = _add_gap(out, n, d, c, lo, 0)
            n = _add_gap(out, n, d, lo, hi, 1)
            c = hi
        u += 1
    if c < end:
        n = _add_gap(out, n, d, c, end, 0)
    return n, t


@kernel
def list_gaps(kd, koff, kend, length, td, toff, tend, out):  # type: ignore[no-untyped-def]
    """Holes in each direction's kept ranges up to its length, with their reason.

    Kept ranges (kd, koff, kend) and truncated claims (td, toff, tend) are
    sorted by direction then offset. A hole is ``truncated`` (1) where a segment
    captured short claimed the bytes, else ``not-captured`` (0). Writes rows
    (direction, offset, length, reason) into ``out``; returns how many there
    are (more than ``out`` holds means: call again with a larger one).
    """
    n = 0
    k = 0
    t = 0
    for d in range(length.size):
        cursor = np.int64(0)
        while k < kd.size and kd[k] == d:
            if koff[k] > cursor:
                n, t = _hole(out, n, d, cursor, koff[k], td, toff, tend, t)
            cursor = max(cursor, kend[k])
            k += 1
        if length[d] > cursor:
            n, t = _hole(out, n, d, cursor, length[d], td, toff, tend, t)
    return n
