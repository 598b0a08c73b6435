"""Plain-Python references for the audit kernels: same names, arguments and outputs.

Each is the readable statement of the rule its kernel implements, written from
the rule (quoted above the loop), not from the kernel. Nothing but the tests
calls them (tests/test_audit_kernels.py checks kernel == reference).
"""

from __future__ import annotations

FIN, SYN, RST = 0x001, 0x002, 0x004
MOD, HALF = 2**32, 2**31
GAP, OVERLAP = 0, 1
NOT_COUNTED = -1


def count_flag_sessions(order, tuple_id, flags, opens):  # type: ignore[no-untyped-def]
    """Sessions per 4-tuple from TCP flags alone; ``opens[i]`` = 1 where packet i opens one.

    Published pseudo-code (forensic reassembly accuracy model, see audit/figures.py):
    per 4-tuple, a session starts at a SYN when none is open or the previous one
    ended with FIN or RST. Its line "if sessions = 1 then sessions <- 1" is read
    for its evident intent: the first SYN of a 4-tuple opens its first session.
    ``order`` lists packet rows grouped by 4-tuple, each group in capture order.
    Returns the total (E).
    """
    total = 0
    is_open: dict[int, bool] = {}
    for i in order:
        t = int(tuple_id[i])
        opens[i] = 0
        if flags[i] & SYN and not is_open.get(t, False):
            opens[i] = 1
            total += 1
            is_open[t] = True
        if flags[i] & (FIN | RST):
            is_open[t] = False
    return total


def place_packets(order, dir_start, dir_base, seq, plan_offset, out_offset):  # type: ignore[no-untyped-def]
    """Stream offset of every packet, walking each direction in capture order.

    A packet the plan placed keeps the plan's offset; any other is its sequence
    number minus the direction's offset-0 sequence, taken modulo 2^32 to the value
    nearest the previous packet's offset (RFC 9293 §3.4: sequence space wraps at 2^32).
    ``plan_offset[i]`` is the plan's offset of row i, or ``NOT_PLACED`` (the minimum
    int64). Returns the number of packets placed.
    """
    placed = 0
    for d in range(len(dir_start) - 1):
        ref = 0
        for j in range(int(dir_start[d]), int(dir_start[d + 1])):
            i = int(order[j])
            if plan_offset[i] != _NOT_PLACED:
                off = int(plan_offset[i])
            else:
                delta = (int(seq[i]) - int(dir_base[d]) - ref) % MOD
                off = ref + (delta - MOD if delta >= HALF else delta)
            out_offset[i] = off
            ref = off
            placed += 1
    return placed


_NOT_PLACED = -(2**63)


def check_continuity(dir_start, offset, length, out):  # type: ignore[no-untyped-def]
    """Every break of the no-hole relation s'_i = s'_{i-1} + lambda_{i-1}, per direction.

    Segments are sorted by stream offset. The relation is checked against the
    furthest end reached so far (without overlaps that is the previous segment's
    end, as published; with overlaps a short retransmission must not hide the
    hole after a longer segment). From offset 0: s'_i beyond the end is a gap
    (offset = end, length = s'_i - end), short of it an overlap (offset = s'_i,
    length = overlapped bytes). ``out`` rows: kind, index, offset, length;
    violations past its capacity are counted, not written. Returns the count.
    """
    n = 0
    for d in range(len(dir_start) - 1):
        end = 0
        for j in range(int(dir_start[d]), int(dir_start[d + 1])):
            s, lam = int(offset[j]), int(length[j])
            row = None
            if s > end:
                row = (GAP, j, end, s - end)
            elif s < end and lam > 0:
                row = (OVERLAP, j, s, min(end, s + lam) - s)
            if row is not None:
                if n < out.shape[1]:
                    for c in range(4):
                        out[c, n] = row[c]
                n += 1
            end = max(end, s + lam)
    return n


def count_occurrences(  # type: ignore[no-untyped-def]
    bufs,
    kept_bounds,
    kept_offset,
    kept_start,
    kept_file,
    kept_len,
    pkt_bounds,
    pkt_row,
    pkt_offset,
    payload_offset,
    payload_caplen,
    file,
    max_scan,
    max_count,
    counts,
):
    """How often each packet's captured payload occurs in its direction's reassembled stream.

    The stream is the direction's kept bytes (``kept_*``, sorted by offset); an
    occurrence is any start offset, overlapping ones included, where all of the
    payload's bytes equal kept bytes (never across a gap). Only windows ending at
    or before stream offset ``max_scan`` are searched; a packet placed (``pkt_offset``)
    beyond that gets ``NOT_COUNTED``. Counts stop at ``max_count``. Direction d's
    kept rows are ``kept_bounds[d]:kept_bounds[d+1]``, its packets likewise in
    ``pkt_bounds``. Returns the number of packets counted.
    """
    done = 0
    for d in range(len(kept_bounds) - 1):
        runs = _runs(bufs, kept_bounds, kept_offset, kept_start, kept_file, kept_len, d)
        for j in range(int(pkt_bounds[d]), int(pkt_bounds[d + 1])):
            i = int(pkt_row[j])
            n = int(payload_caplen[i])
            start = int(payload_offset[i])
            needle = bytes(bufs[int(file[i])][start : start + n])
            if int(pkt_offset[j]) + n > max_scan:
                counts[j] = NOT_COUNTED
                continue
            c = 0
            for run_offset, data in runs:
                limit = min(len(data), max_scan - run_offset)
                at = data.find(needle, 0, max(limit, 0))
                while at >= 0 and c < max_count:
                    c += 1
                    at = data.find(needle, at + 1, max(limit, 0))
            counts[j] = min(c, max_count)
            done += 1
    return done


def _runs(bufs, bounds, offset, start, file, length, d):  # type: ignore[no-untyped-def]
    """(stream offset, bytes) of each maximal run of contiguous kept rows of direction d."""
    runs: list[tuple[int, bytearray]] = []
    end = None
    for k in range(int(bounds[d]), int(bounds[d + 1])):
        o, s, n = int(offset[k]), int(start[k]), int(length[k])
        piece = bytes(bufs[int(file[k])][s : s + n])
        if end is not None and o == end:
            runs[-1][1].extend(piece)
        else:
            runs.append((o, bytearray(piece)))
        end = o + n
    return runs
