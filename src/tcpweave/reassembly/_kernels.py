"""Kernels that build the reassembly plan, one direction at a time.

Theory of operation. A direction's packets are walked twice in capture order.
The first walk unwraps 32-bit sequence numbers to 64 bits (each one is placed
within ±2^31 of the highest seen so far, RFC 9293 §3.4 arithmetic) and fixes
offset 0: ISN + 1 when the SYN was captured, else the lowest sequence number
near the first data segment. The second walk places each segment's captured
bytes. Bytes not held yet are taken; where bytes are already held, the
"do they differ?" check is separate from the keep rule (as in Zeek's
Reassem.cc): equal bytes are a retransmission, different bytes are always
reported as a conflict, and the overlap policy table (``_policy.NEW_WINS``,
applied against every earlier segment covering a byte) decides which copy is
kept. Held bytes are kept as disjoint pieces sorted by offset, each the whole
range of one plan row; when a piece loses bytes its row is retired (length 0)
and re-issued as the parts that survived and the part that was dropped.

Everything is int64 and column-major 2-D arrays, so that helpers receive a
handful of arrays rather than a tuple of columns (numba counts references to
every array handed to a function).
"""

from __future__ import annotations

import numpy as np

from tcpweave._jit import helper, kernel

# plan columns (rows of the 2-D ``plan`` array)
P_FRAME, P_ROW, P_DIR, P_OFFSET, P_START, P_FILE, P_LEN, P_FATE = range(8)
N_PLAN_COLS = 8
# conflict columns
C_DIR, C_OFFSET, C_LEN, C_KEPT, C_DROPPED = range(5)
N_CONFLICT_COLS = 5
# per-direction facts
D_BASE, D_SYN, D_FIN_END, D_RST, D_PACKETS, D_OOO, D_HIGH, D_FIRST_TS, D_LAST_TS = range(9)
N_DIR_COLS = 9
# counters / status
K_PLAN, K_CONFLICTS, K_FULL = range(3)

# fates (tcpweave.enums.Fate)
F_NEW, F_RETRANS, F_SAME, F_KEPT, F_DROPPED = 0, 1, 2, 3, 4
F_WINDOW, F_BADSUM, F_AFTER_CLOSE, F_RST_DATA, F_KEEPALIVE, F_TRUNCATED, F_BEFORE = range(5, 12)
F_RETIRED = -1

FIN, SYN, RST = 0x001, 0x002, 0x004
CK_BAD = 2
WINDOW = np.int64(1) << 30  # a segment further than 1 GiB from what was seen is not placed
HALF = np.int64(1) << 31
MOD = np.int64(1) << 32

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
def _emit(plan, counts, frame, row, d, offset, start, file, length, fate):  # type: ignore[no-untyped-def]
    """Append a plan row, or extend the previous one when it continues it exactly."""
    n = counts[K_PLAN]
    if n > 0:
        q = n - 1
        if (
            plan[P_ROW, q] == row
            and plan[P_FATE, q] == fate
            and plan[P_OFFSET, q] + plan[P_LEN, q] == offset
            and (start < 0 or plan[P_START, q] + plan[P_LEN, q] == start)
            and fate != F_NEW
            and fate != F_KEPT
        ):
            plan[P_LEN, q] += length
            return q
    if n >= plan.shape[1]:
        counts[K_FULL] = 1
        return -1
    plan[P_FRAME, n] = frame
    plan[P_ROW, n] = row
    plan[P_DIR, n] = d
    plan[P_OFFSET, n] = offset
    plan[P_START, n] = start
    plan[P_FILE, n] = file
    plan[P_LEN, n] = length
    plan[P_FATE, n] = fate
    counts[K_PLAN] = n + 1
    return n


@helper
def _same_bytes(bufs, file_a, start_a, file_b, start_b, n):  # type: ignore[no-untyped-def]
    a = bufs[file_a]
    b = bufs[file_b]
    for i in range(n):
        if a[start_a + i] != b[start_b + i]:
            return False
    return True


@helper
def _equality_run(bufs, file_a, start_a, file_b, start_b, n):  # type: ignore[no-untyped-def]
    """Length of the leading run of bytes that all agree (or all differ), and whether they agree.

    A conflict covers only the bytes that differ: identical bytes are never conflicts.
    """
    a = bufs[file_a]
    b = bufs[file_b]
    same = a[start_a] == b[start_b]
    i = 1
    while i < n and (a[start_a + i] == b[start_b + i]) == same:
        i += 1
    return i, same


@helper
def _case(a, b):  # type: ignore[no-untyped-def]
    return BEFORE if a < b else (SAME if a == b else AFTER)


@helper
def _policy_mask(mask, ns, ne, segs, n_segs, max_len, policy, new_wins):  # type: ignore[no-untyped-def]
    """mask[i] = 1 where the new segment's byte ns+i wins against every earlier covering segment."""
    for i in range(ne - ns):
        mask[i] = 1
    hi = np.searchsorted(segs[0, :n_segs], ne)  # earlier segments starting before ne
    j = hi - 1
    while j >= 0 and segs[0, j] + max_len > ns:
        os_, oe = segs[0, j], segs[1, j]
        if oe > ns and not new_wins[policy, _case(ns, os_), _case(ne, oe)]:
            for x in range(max(os_, ns), min(oe, ne)):
                mask[x - ns] = 0
        j -= 1


@helper
def _remember_segment(segs, n_segs, ns, ne):  # type: ignore[no-untyped-def]
    """Insert [ns, ne) into the start-sorted segment list unless that extent is already there."""
    pos = np.searchsorted(segs[0, :n_segs], ns)
    k = pos
    while k < n_segs and segs[0, k] == ns:
        if segs[1, k] == ne:
            return n_segs
        k += 1
    if n_segs >= segs.shape[1]:
        return n_segs
    for m in range(n_segs, pos, -1):
        segs[0, m] = segs[0, m - 1]
        segs[1, m] = segs[1, m - 1]
    segs[0, pos] = ns
    segs[1, pos] = ne
    return n_segs + 1


@helper
def _push(tmp, n_tmp, start, end, row, counts):  # type: ignore[no-untyped-def]
    if n_tmp >= tmp.shape[1]:
        counts[K_FULL] = 1
        return n_tmp
    tmp[0, n_tmp] = start
    tmp[1, n_tmp] = end
    tmp[2, n_tmp] = row
    return n_tmp + 1


@helper
def _run_end(mask, const, c, b, ns):  # type: ignore[no-untyped-def]
    """End of the run of equal policy verdicts starting at c (and its verdict)."""
    if const >= 0:
        return b, const
    m = mask[c - ns]
    e = c + 1
    while e < b and mask[e - ns] == m:
        e += 1
    return e, m


@helper
def _conflict(conflicts, counts, d, offset, length, kept_row, dropped_row):  # type: ignore[no-untyped-def]
    n = counts[K_CONFLICTS]
    if n >= conflicts.shape[1]:
        counts[K_FULL] = 1
        return
    conflicts[C_DIR, n] = d
    conflicts[C_OFFSET, n] = offset
    conflicts[C_LEN, n] = length
    conflicts[C_KEPT, n] = kept_row
    conflicts[C_DROPPED, n] = dropped_row
    counts[K_CONFLICTS] = n + 1


@helper
def _loses_bytes(plan, bufs, mask, const, prow, ps, a, b, ns, file, pstart):  # type: ignore[no-untyped-def]
    """Does the held piece lose any byte in [a, b) to the new segment?"""
    c = a
    while c < b:
        e, m = _run_end(mask, const, c, b, ns)
        if m and not _same_bytes(
            bufs, file, pstart + (c - ns), plan[P_FILE, prow], plan[P_START, prow] + (c - ps), e - c
        ):
            return True
        c = e
    return False


@helper
def _overlap_piece(  # type: ignore[no-untyped-def]
    plan,
    counts,
    conflicts,
    tmp,
    n_tmp,
    bufs,
    mask,
    const,
    frame,
    row,
    d,
    file,
    pstart,
    ns,
    ps,
    pe,
    prow,
    a,
    b,
):
    """Resolve the new segment against one held piece over [a, b); returns the new n_tmp."""
    p_frame, p_row, p_file = plan[P_FRAME, prow], plan[P_ROW, prow], plan[P_FILE, prow]
    p_start, p_fate = plan[P_START, prow], plan[P_FATE, prow]
    replace = _loses_bytes(plan, bufs, mask, const, prow, ps, a, b, ns, file, pstart)
    if replace:  # the piece's row is re-issued as the parts that survive and the part dropped
        plan[P_LEN, prow] = 0
        plan[P_FATE, prow] = F_RETIRED
        if ps < a:
            r = _emit(plan, counts, p_frame, p_row, d, ps, p_start, p_file, a - ps, p_fate)
            n_tmp = _push(tmp, n_tmp, ps, a, r, counts)
    else:
        n_tmp = _push(tmp, n_tmp, ps, pe, prow, counts)
    c = a
    while c < b:
        e, m = _run_end(mask, const, c, b, ns)
        new_at = pstart + (c - ns)
        old_at = p_start + (c - ps)
        run, same = _equality_run(bufs, file, new_at, p_file, old_at, e - c)
        e = c + run
        if same:
            _emit(plan, counts, frame, row, d, c, new_at, file, e - c, F_SAME)
            if replace:
                r = _emit(plan, counts, p_frame, p_row, d, c, old_at, p_file, e - c, p_fate)
                n_tmp = _push(tmp, n_tmp, c, e, r, counts)
        elif m:
            _conflict(conflicts, counts, d, c, e - c, row, p_row)
            _emit(plan, counts, p_frame, p_row, d, c, old_at, p_file, e - c, F_DROPPED)
            r = _emit(plan, counts, frame, row, d, c, new_at, file, e - c, F_KEPT)
            n_tmp = _push(tmp, n_tmp, c, e, r, counts)
        else:
            _conflict(conflicts, counts, d, c, e - c, p_row, row)
            _emit(plan, counts, frame, row, d, c, new_at, file, e - c, F_DROPPED)
            if replace:
                r = _emit(plan, counts, p_frame, p_row, d, c, old_at, p_file, e - c, p_fate)
                n_tmp = _push(tmp, n_tmp, c, e, r, counts)
        c = e
    if replace and b < pe:
        r = _emit(plan, counts, p_frame, p_row, d, b, p_start + (b - ps), p_file, pe - b, p_fate)
        n_tmp = _push(tmp, n_tmp, b, pe, r, counts)
    return n_tmp


@helper
def _place(  # type: ignore[no-untyped-def]
    plan,
    counts,
    conflicts,
    pieces,
    n_pieces,
    tmp,
    mask,
    const,
    bufs,
    frame,
    row,
    d,
    file,
    pstart,
    ns,
    ne,
):
    """Place the captured bytes [ns, ne) of one segment; returns (pieces held, new bytes)."""
    if n_pieces == 0 or ns >= pieces[1, n_pieces - 1]:  # beyond everything held: append
        if n_pieces >= pieces.shape[1]:
            counts[K_FULL] = 1
            return n_pieces, 0
        r = _emit(plan, counts, frame, row, d, ns, pstart, file, ne - ns, F_NEW)
        pieces[0, n_pieces] = ns
        pieces[1, n_pieces] = ne
        pieces[2, n_pieces] = r
        return n_pieces + 1, ne - ns
    first_plan_row = counts[K_PLAN]
    p0 = np.searchsorted(pieces[1, :n_pieces], ns, side="right")  # first piece ending after ns
    p = p0
    n_tmp = 0
    added = 0
    x = ns
    while p < n_pieces and pieces[0, p] < ne:
        ps, pe, prow = pieces[0, p], pieces[1, p], pieces[2, p]
        if ps > x:  # a hole before this piece: new bytes
            r = _emit(plan, counts, frame, row, d, x, pstart + (x - ns), file, ps - x, F_NEW)
            n_tmp = _push(tmp, n_tmp, x, ps, r, counts)
            added += ps - x
        a = max(ps, ns)
        b = min(pe, ne)
        n_tmp = _overlap_piece(
            plan,
            counts,
            conflicts,
            tmp,
            n_tmp,
            bufs,
            mask,
            const,
            frame,
            row,
            d,
            file,
            pstart,
            ns,
            ps,
            pe,
            prow,
            a,
            b,
        )
        x = b
        p += 1
    if x < ne:
        r = _emit(plan, counts, frame, row, d, x, pstart + (x - ns), file, ne - x, F_NEW)
        n_tmp = _push(tmp, n_tmp, x, ne, r, counts)
        added += ne - x
    n_new = n_pieces - (p - p0) + n_tmp
    if n_new > pieces.shape[1] or counts[K_FULL]:
        counts[K_FULL] = 1
        return n_pieces, added
    _splice(pieces, n_pieces, p0, p, tmp, n_tmp)
    if (
        added == 0
        and counts[K_PLAN] == first_plan_row + 1
        and plan[P_FATE, first_plan_row] == F_SAME
        and plan[P_LEN, first_plan_row] == ne - ns
    ):
        plan[P_FATE, first_plan_row] = F_RETRANS  # the whole segment was already held, same bytes
    return n_new, added


@helper
def _splice(pieces, n_pieces, p0, p1, tmp, n_tmp):  # type: ignore[no-untyped-def]
    """Replace pieces[p0:p1] by tmp[:n_tmp], shifting the tail."""
    shift = n_tmp - (p1 - p0)
    if shift > 0:
        for m in range(n_pieces - 1, p1 - 1, -1):
            for c in range(3):
                pieces[c, m + shift] = pieces[c, m]
    elif shift < 0:
        for m in range(p1, n_pieces):
            for c in range(3):
                pieces[c, m + shift] = pieces[c, m]
    for t in range(n_tmp):
        for c in range(3):
            pieces[c, p0 + t] = tmp[c, t]


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


@helper
def _unplaced_fate(f, frame, close_frame, bad, ns, high_end, plen, held):  # type: ignore[no-untyped-def]
    """Why a data segment is not placed, or -1 when it is."""
    if f & RST:
        return F_RST_DATA
    if frame > close_frame:
        return F_AFTER_CLOSE
    if bad:
        return F_BADSUM
    if ns < 0:
        return F_BEFORE
    if ns > high_end + WINDOW:
        return F_WINDOW
    if plen <= 1 and not f & (SYN | FIN) and held > 0 and held == high_end and ns == high_end - 1:
        # RFC 9293 §3.8.4: a probe repeats the byte before SND.NXT, once all data is through
        # (with a hole before it, a 1-byte segment there is data, not a probe)
        return F_KEEPALIVE
    return -1


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
    policy,
    new_wins,
    bufs,
    plan,
    conflicts,
    dirs,
    counts,
    pieces,
    tmp,
    segs,
    mask,
    seq64,
):
    """Build the plan of every direction; ``order[dir_start[d]:dir_start[d+1]]`` are d's rows.

    Sets ``counts[K_FULL]`` (and stops) when an output is full: the caller
    retries with larger arrays. Returns the number of plan rows.
    """
    const = 0 if policy == 0 else (1 if policy == 1 else -1)  # FIRST never, LAST always
    for d in range(dir_start.size - 1):
        lo, hi = dir_start[d], dir_start[d + 1]
        base, syn = _direction_base(order, lo, hi, seq, flags, plen, seq64)
        dirs[D_BASE, d] = base & (MOD - 1)
        dirs[D_SYN, d] = syn
        dirs[D_FIN_END, d] = -1
        dirs[D_PACKETS, d] = hi - lo
        dirs[D_FIRST_TS, d] = ts_ns[order[lo]]
        dirs[D_LAST_TS, d] = ts_ns[order[hi - 1]]
        n_pieces = 0
        n_segs = 0
        max_len = np.int64(0)
        high_end = np.int64(0)
        held = np.int64(0)  # bytes held so far (their ranges never shrink)
        ooo = 0
        for j in range(lo, hi):
            i = order[j]
            f = flags[i]
            ns = seq64[j] - base + (1 if f & SYN else 0)
            if f & RST:
                dirs[D_RST, d] = 1
            if f & FIN and abs(ns - high_end) <= WINDOW:
                dirs[D_FIN_END, d] = max(dirs[D_FIN_END, d], ns + plen[i])
            if plen[i] == 0:
                continue
            ne = ns + pcap[i]
            ne_wire = ns + plen[i]
            bad = drop_bad[d] and tcp_ck[i] == CK_BAD
            fate = _unplaced_fate(f, frame[i], close_frame[d], bad, ns, high_end, plen[i], held)
            if fate >= 0:
                _emit(plan, counts, frame[i], i, d, ns, poff[i], pfile[i], pcap[i], fate)
            elif ne > ns:
                if const < 0:
                    _policy_mask(mask, ns, ne, segs, n_segs, max_len, policy, new_wins)
                    n_segs = _remember_segment(segs, n_segs, ns, ne)
                    max_len = max(max_len, ne - ns)
                n_pieces, added = _place(
                    plan,
                    counts,
                    conflicts,
                    pieces,
                    n_pieces,
                    tmp,
                    mask,
                    const,
                    bufs,
                    frame[i],
                    i,
                    d,
                    pfile[i],
                    poff[i],
                    ns,
                    ne,
                )
                held += added
                if added > 0 and ns < high_end:
                    ooo += 1
            if fate < 0 and ne < ne_wire:
                _emit(plan, counts, frame[i], i, d, ne, -1, pfile[i], ne_wire - ne, F_TRUNCATED)
            if fate < 0:
                high_end = max(high_end, ne_wire)
            if counts[K_FULL]:
                return counts[K_PLAN]
        dirs[D_OOO, d] = ooo
        dirs[D_HIGH, d] = high_end
    return counts[K_PLAN]


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
