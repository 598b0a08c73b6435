"""Audit kernels: flag-only session count, packet placement, continuity, payload occurrences.

Each has a plain-Python reference of the same name in ``_reference.py``.
``count_occurrences`` is the costly one: it reads every kept byte of a
direction once, straight from the mapped capture, holding the last 8 bytes in
a 64-bit rolling window; each window is looked up (one multiply, one probe) in
a small open-addressing table of the direction's payload prefixes, and only a
hit is verified byte by byte. Identical payloads (retransmissions) share one
table entry.
"""

from __future__ import annotations

import numpy as np

from tcpweave._jit import callee, helper, kernel

FIN, SYN, RST = 0x001, 0x002, 0x004
MOD, HALF = np.int64(1 << 32), np.int64(1 << 31)
GAP, OVERLAP = 0, 1
NOT_COUNTED = -1
NOT_PLACED = np.iinfo(np.int64).min
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = np.uint64(0xBF58476D1CE4E5B9)
ONE = np.uint64(1)


@kernel
def count_flag_sessions(order, tuple_id, flags, opens):  # type: ignore[no-untyped-def]
    """Per 4-tuple, a SYN opens a session when none is open (the first SYN opens the
    first one; FIN or RST ends it). ``order`` groups rows by 4-tuple in capture order."""
    total = 0
    current = np.int64(-1)
    is_open = False
    for j in range(order.size):
        i = order[j]
        if tuple_id[i] != current:
            current = tuple_id[i]
            is_open = False
        opens[i] = 0
        if flags[i] & SYN and not is_open:
            opens[i] = 1
            total += 1
            is_open = True
        if flags[i] & (FIN | RST):
            is_open = False
    return total


@kernel
def place_packets(order, dir_start, dir_base, seq, plan_offset, out_offset):  # type: ignore[no-untyped-def]
    """Stream offset per packet: the plan's, else seq - base unwrapped near the previous one."""
    placed = 0
    for d in range(dir_start.size - 1):
        ref = np.int64(0)
        base = np.int64(dir_base[d])
        for j in range(dir_start[d], dir_start[d + 1]):
            i = order[j]
            if plan_offset[i] != NOT_PLACED:
                off = np.int64(plan_offset[i])
            else:
                delta = (np.int64(seq[i]) - base - ref) % MOD
                off = ref + (delta - MOD if delta >= HALF else delta)
            out_offset[i] = off
            ref = off
            placed += 1
    return placed


@kernel
def check_continuity(dir_start, offset, length, out):  # type: ignore[no-untyped-def]
    """Breaks of s'_i = s'_{i-1} + lambda_{i-1} (against the furthest end so far)."""
    n = 0
    cap = out.shape[1]
    for d in range(dir_start.size - 1):
        end = np.int64(0)
        for j in range(dir_start[d], dir_start[d + 1]):
            s = offset[j]
            lam = length[j]
            kind = -1
            if s > end:
                kind, at, size = GAP, end, s - end
            elif s < end and lam > 0:
                kind, at, size = OVERLAP, s, min(end, s + lam) - s
            if kind >= 0:
                if n < cap:
                    out[0, n] = kind
                    out[1, n] = j
                    out[2, n] = at
                    out[3, n] = size
                n += 1
            end = max(end, s + lam)
    return n


@helper
def _hash(key, w):  # type: ignore[no-untyped-def]
    return (key ^ (np.uint64(w) * _MIX)) * _GOLDEN


@helper
def _maybe(bitmap, h):  # type: ignore[no-untyped-def]
    """Is the prefix with hash ``h`` possibly in the table? (a 2^16-bit filter kept in L1)"""
    b = h >> np.uint64(48)
    return (bitmap[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1)


@helper
def _mark(bitmap, h, on):  # type: ignore[no-untyped-def]
    b = h >> np.uint64(48)
    bit = np.uint64(1) << (b & np.uint64(63))
    if on:
        bitmap[b >> np.uint64(6)] |= bit
    else:
        bitmap[b >> np.uint64(6)] &= ~bit


@helper
def _prefix(buf, start, w):  # type: ignore[no-untyped-def]
    key = np.uint64(0)
    for x in range(w):
        key = (key << np.uint64(8)) | np.uint64(buf[start + x])
    return key


@helper
def _same_payload(bufs, file, payload_offset, a, b, n):  # type: ignore[no-untyped-def]
    ba, bb = bufs[file[a]], bufs[file[b]]
    sa, sb = payload_offset[a], payload_offset[b]
    for x in range(n):
        if ba[sa + x] != bb[sb + x]:
            return False
    return True


@helper
def _tail_matches(bufs, kept_offset, kept_start, kept_file, kept_len, k, x, hi, pbuf, ps, r, limit):  # type: ignore[no-untyped-def]
    """Do the next ``r`` stream bytes after (kept row k, index x) equal pbuf[ps:ps+r]?"""
    buf = bufs[kept_file[k]]
    for y in range(r):
        x += 1
        if x >= kept_len[k]:
            if k + 1 >= hi or kept_offset[k + 1] != kept_offset[k] + kept_len[k]:
                return False  # a gap: occurrences never span one
            k += 1
            x = 0
            buf = bufs[kept_file[k]]
        if kept_offset[k] + x >= limit or buf[kept_start[k] + x] != pbuf[ps + y]:
            return False
    return True


@callee  # runs on a filter hit only: a call, not a copy in both scan loops
def _count_hits(
    key,
    w,
    h,
    bits,
    tab_w,
    tab_key,
    tab_head,
    chain,
    plo,
    pkt_row,
    payload_caplen,
    payload_offset,
    file,
    counts,
    max_count,
    bufs,
    kept_offset,
    kept_start,
    kept_file,
    kept_len,
    k,
    x,
    khi,
    max_scan,
):  # type: ignore[no-untyped-def]
    """The window ``key`` (``w`` bytes, hash ``h``) ends at (kept row k, index x): count it
    for every table payload with that prefix whose remaining bytes follow in the stream."""
    size = tab_w.size
    s = np.int64(h >> np.uint64(64 - bits))
    while tab_w[s] != 0 and (tab_w[s] != w or tab_key[s] != key):
        s = (s + 1) & (size - 1)
    if tab_w[s] == 0:
        return
    e = tab_head[s]
    while e >= 0:
        ie = pkt_row[e]
        n = payload_caplen[ie]
        if counts[e] < max_count and (
            n == w
            or _tail_matches(
                bufs, kept_offset, kept_start, kept_file, kept_len, k, x, khi,
                bufs[file[ie]], payload_offset[ie] + w, n - w, max_scan,
            )
        ):  # fmt: skip
            counts[e] += 1
        e = chain[e - plo]


@kernel
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
    """Occurrences of each packet's payload in its direction's kept bytes (see the reference)."""
    done = 0
    bitmap = np.zeros(1024, np.uint64)
    for d in range(kept_bounds.size - 1):
        plo, phi = pkt_bounds[d], pkt_bounds[d + 1]
        if phi == plo:
            continue
        bits = 4
        while (1 << bits) < 2 * (phi - plo):
            bits += 1
        size = 1 << bits
        tab_key = np.zeros(size, np.uint64)
        tab_w = np.zeros(size, np.int64)  # 0: empty slot
        tab_head = np.full(size, -1, np.int64)
        chain = np.full(phi - plo, -1, np.int64)  # next distinct payload with the same prefix
        rep = np.arange(plo, phi)  # the entry counting for an identical payload
        has_w = np.zeros(9, np.bool_)
        for j in range(plo, phi):
            counts[j] = 0
            i = pkt_row[j]
            n = payload_caplen[i]
            if pkt_offset[j] + n > max_scan:
                counts[j] = NOT_COUNTED
                continue
            w = min(n, 8)
            key = _prefix(bufs[file[i]], payload_offset[i], w)
            h = _hash(key, w)
            _mark(bitmap, h, True)
            s = np.int64(h >> np.uint64(64 - bits))
            while tab_w[s] != 0 and (tab_w[s] != w or tab_key[s] != key):
                s = (s + 1) & (size - 1)
            if tab_w[s] == 0:
                tab_w[s], tab_key[s], tab_head[s] = w, key, j
                has_w[w] = True
                continue
            e = tab_head[s]
            last = e
            while e >= 0:
                ie = pkt_row[e]
                if payload_caplen[ie] == n and _same_payload(bufs, file, payload_offset, ie, i, n):
                    rep[j - plo] = e
                    break
                last = e
                e = chain[e - plo]
            if e < 0:
                chain[last - plo] = j
        widths = np.zeros(8, np.int64)
        n_widths = 0
        for w in range(1, 9):
            if has_w[w]:
                widths[n_widths] = w
                n_widths += 1
        klo, khi = kept_bounds[d], kept_bounds[d + 1]
        window = np.uint64(0)
        filled = 0
        run_end = np.int64(-1)
        only8 = n_widths == 1 and widths[0] == 8  # every payload 8 bytes or longer: the usual
        mix8 = np.uint64(8) * _MIX
        for k in range(klo, khi):
            if kept_offset[k] >= max_scan:
                break
            if kept_offset[k] != run_end:
                filled = 0  # a gap: start a new run
            run_end = kept_offset[k] + kept_len[k]
            buf = bufs[kept_file[k]]
            base = kept_start[k]
            stop = min(kept_len[k], max_scan - kept_offset[k])  # windows ending by max_scan
            if only8:  # one width: no loop over widths, the hash's constant folded
                for x in range(stop):
                    window = (window << np.uint64(8)) | np.uint64(buf[base + x])
                    filled += 1
                    if filled < 8:
                        continue
                    h = (window ^ mix8) * _GOLDEN
                    if _maybe(bitmap, h):
                        _count_hits(window, 8, h, bits, tab_w, tab_key, tab_head, chain, plo,
                                    pkt_row, payload_caplen, payload_offset, file, counts,
                                    max_count, bufs, kept_offset, kept_start, kept_file,
                                    kept_len, k, x, khi, max_scan)  # fmt: skip
                continue
            for x in range(stop):
                window = (window << np.uint64(8)) | np.uint64(buf[base + x])
                filled += 1
                for wi in range(n_widths):  # an index loop: iterating an array increfs it
                    w = widths[wi]
                    if w > filled:
                        break
                    key = (
                        window
                        if w == 8
                        else window & ((np.uint64(1) << np.uint64(8 * w)) - np.uint64(1))
                    )
                    h = _hash(key, w)
                    if _maybe(bitmap, h):
                        _count_hits(key, w, h, bits, tab_w, tab_key, tab_head, chain, plo,
                                    pkt_row, payload_caplen, payload_offset, file, counts,
                                    max_count, bufs, kept_offset, kept_start, kept_file,
                                    kept_len, k, x, khi, max_scan)  # fmt: skip
        for s in range(size):
            if tab_w[s] != 0:
                _mark(bitmap, _hash(tab_key[s], tab_w[s]), False)
        for j in range(plo, phi):
            if counts[j] != NOT_COUNTED:
                counts[j] = counts[rep[j - plo]]
                done += 1
    return done
