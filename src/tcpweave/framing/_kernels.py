"""Kernels of the framing stage: generic framers over many directions at once, PDU frames, bytes.

``frame_runs`` is the compiled twin of ``driver.walk`` driving a generic framer
(``generic.py``); its answers come from ``_answer``, the compiled twin of the
framers' ``frame`` methods. Positions are stream offsets; a direction's kept
bytes are the concatenation of its runs (gaps omitted) inside ``buf``.
"""

from __future__ import annotations

import numpy as np

from tcpweave._jit import helper, kernel
from tcpweave.framing._spec import (
    A_NEED,
    A_PDU,
    A_SKIP,
    KIND_DELIMITER,
    KIND_FIXED,
    KIND_LENGTH,
    KIND_VARINT,
    S_ADJUST,
    S_BIG,
    S_HEADER,
    S_KIND,
    S_MAGIC_OFFSET,
    S_MAX,
    S_MIN,
    S_OFFSET,
    S_SIZE,
    ST_GAP,
    ST_INCOMPLETE,
    ST_OK,
    VARINT_MAX_BYTES,
)


@helper
def _magic_ok(buf, at, avail, magic, magic_offset):  # type: ignore[no-untyped-def]
    for i in range(magic.size):
        j = magic_offset + i
        if j >= avail:
            return True
        if buf[at + j] != magic[i]:
            return False
    return True


@helper
def _length_answer(buf, at, avail, spec, magic):  # type: ignore[no-untyped-def]
    if not _magic_ok(buf, at, avail, magic, spec[S_MAGIC_OFFSET]):
        return A_SKIP, 1
    header = spec[S_HEADER]
    if avail < header:
        return A_NEED, header - avail
    size = spec[S_SIZE]
    field = at + spec[S_OFFSET]
    value = np.int64(0)
    for i in range(size):
        b = np.int64(buf[field + i]) if spec[S_BIG] else np.int64(buf[field + size - 1 - i])
        value = (value << 8) | b
    adjust = spec[S_ADJUST]
    # an 8-byte value with its top bit set reads negative: far beyond any sane maximum
    if value < 0 or value > spec[S_MAX] - adjust:
        return A_SKIP, 1
    length = value + adjust
    if length < spec[S_MIN]:
        return A_SKIP, 1
    return A_PDU, length


@helper
def _delimiter_answer(buf, at, avail, spec, delim):  # type: ignore[no-untyped-def]
    window = min(avail, spec[S_MAX])
    n = delim.size
    for i in range(window - n + 1):
        hit = True
        for j in range(n):
            if buf[at + i + j] != delim[j]:
                hit = False
                break
        if hit:
            return A_PDU, i + n
    if window >= spec[S_MAX]:
        return A_SKIP, spec[S_MAX] - n + 1
    return A_NEED, 0


@helper
def _varint_answer(buf, at, avail, spec):  # type: ignore[no-untyped-def]
    value = np.int64(0)
    big = False
    for i in range(VARINT_MAX_BYTES):
        j = spec[S_OFFSET] + i
        if j >= avail:
            return A_NEED, 1
        b = np.int64(buf[at + j])
        if i >= 9 and (b & 0x7F) != 0:
            big = True  # 2^63 or more
        else:
            value |= (b & 0x7F) << (7 * i)
        if b < 0x80:
            if big or value > spec[S_MAX] - spec[S_ADJUST] - (j + 1):
                return A_SKIP, 1
            length = j + 1 + value + spec[S_ADJUST]
            if length < spec[S_MIN]:
                return A_SKIP, 1
            return A_PDU, length
    return A_SKIP, 1


@helper
def _answer(buf, at, avail, spec, magic, delim):  # type: ignore[no-untyped-def]
    kind = spec[S_KIND]
    if kind == KIND_LENGTH:
        return _length_answer(buf, at, avail, spec, magic)
    if kind == KIND_FIXED:
        if not _magic_ok(buf, at, avail, magic, spec[S_MAGIC_OFFSET]):
            return A_SKIP, 1
        return A_PDU, spec[S_SIZE]
    if kind == KIND_DELIMITER:
        return _delimiter_answer(buf, at, avail, spec, delim)
    if kind == KIND_VARINT:
        return _varint_answer(buf, at, avail, spec)
    return A_SKIP, avail


@kernel
def frame_runs(
    buf,
    run_buf,
    run_off,
    run_len,
    dir_runs,
    dir_length,
    dir_flags,
    spec,
    magic,
    delim,
    resume,
    out_dir,
    out_offset,
    out_len,
    out_state,
    skipped,
):  # type: ignore[no-untyped-def]
    """Frame directions ``resume[0]`` onwards; stop before a direction whose PDUs do not fit.

    Writes PDUs (direction, stream offset, length, state) and per-direction skipped
    byte counts; sets ``resume[0]`` to the first direction not framed; returns the
    number of PDUs written. Generic framers ignore end of stream, so ``dir_flags`` is
    not read here (``driver.walk`` passes it to Python framers).
    """
    count = 0
    capacity = out_dir.size
    n_dirs = dir_length.size
    d = resume[0]
    while d < n_dirs:
        first_count = count
        r, r_end = dir_runs[d], dir_runs[d + 1]
        length = dir_length[d]
        off = run_off[r] if r < r_end else length
        full = False
        while True:
            while r < r_end and off >= run_off[r] + run_len[r]:
                r += 1
            if r == r_end:
                break
            if off < run_off[r]:  # inside a gap: resume at the next captured byte
                off = run_off[r]
            avail = run_off[r] + run_len[r] - off
            last = r == r_end - 1
            code, value = _answer(buf, run_buf[r] + off - run_off[r], avail, spec, magic, delim)
            if code == A_SKIP:
                skipped[d] += min(value, avail)
                off += value
                continue
            if count == capacity:
                full = True
                break
            state = ST_OK
            if code == A_PDU and value <= avail:
                end = off + value
            elif code == A_PDU:
                end = off + value  # known end beyond this run: a gap or the end follows
                state = ST_INCOMPLETE if end > length else ST_GAP
            elif last:
                end = length
                state = ST_INCOMPLETE
            else:
                end = run_off[r + 1]  # unknown end: damaged up to the next captured byte
                state = ST_GAP
            if end > length:
                end = length
            out_dir[count] = d
            out_offset[count] = off
            out_len[count] = end - off
            out_state[count] = state
            count += 1
            off = end
        if full:
            skipped[d] = 0
            resume[0] = d
            return first_count
        d += 1
    resume[0] = n_dirs
    return count


@kernel
def attribute_pdus(
    pdu_dir,
    pdu_offset,
    pdu_len,
    dir_rows,
    row_offset,
    row_len,
    row_frame,
    row_ts,
    first_frame,
    last_frame,
    frames,
    first_ts,
    last_ts,
):  # type: ignore[no-untyped-def]
    """Frames and timestamps of each PDU from the kept plan rows it overlaps.

    PDUs are sorted by (direction, offset); each direction's rows by offset. ``frames``
    counts the rows' frames, a frame counted again only when another frame's bytes come
    between two of its pieces. Returns the number of PDUs without any row (0 when sound).
    """
    orphans = 0
    cur = -1
    j = 0
    for p in range(pdu_dir.size):
        d = pdu_dir[p]
        if d != cur:
            cur = d
            j = dir_rows[d]
        start = pdu_offset[p]
        end = start + pdu_len[p]
        while j < dir_rows[d + 1] and row_offset[j] + row_len[j] <= start:
            j += 1
        lo_f = np.int64(-1)
        hi_f = np.int64(-1)
        lo_t = np.int64(0)
        hi_t = np.int64(0)
        n = 0
        prev = np.int64(-1)
        k = j
        while k < dir_rows[d + 1] and row_offset[k] < end:
            f = row_frame[k]
            if lo_f < 0 or f < lo_f:
                lo_f = f
            if f > hi_f:
                hi_f = f
            t = row_ts[k]
            if n == 0 or t < lo_t:
                lo_t = t
            if n == 0 or t > hi_t:
                hi_t = t
            if f != prev:
                n += 1
            prev = f
            k += 1
        if n == 0:
            orphans += 1
        first_frame[p] = lo_f
        last_frame[p] = hi_f
        frames[p] = n
        first_ts[p] = lo_t
        last_ts[p] = hi_t
    return orphans


@kernel
def gather_pdus(
    buf, run_buf, run_off, run_len, dir_runs, pdu_dir, pdu_offset, pdu_len, data_start, data
):  # type: ignore[no-untyped-def]
    """Copy each PDU's captured bytes to ``data[data_start[p]:]``; bytes in gaps stay as they
    are (zero when ``data`` was zeroed). Returns the number of bytes copied."""
    copied = 0
    cur = -1
    r = 0
    for p in range(pdu_dir.size):
        d = pdu_dir[p]
        if d != cur:
            cur = d
            r = dir_runs[d]
        start = pdu_offset[p]
        end = start + pdu_len[p]
        while r < dir_runs[d + 1] and run_off[r] + run_len[r] <= start:
            r += 1
        k = r
        while k < dir_runs[d + 1] and run_off[k] < end:
            lo = max(start, run_off[k])
            hi = min(end, run_off[k] + run_len[k])
            src = run_buf[k] + lo - run_off[k]
            dst = data_start[p] + lo - start
            for i in range(hi - lo):
                data[dst + i] = buf[src + i]
            copied += hi - lo
            k += 1
    return copied
