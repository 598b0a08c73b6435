"""Kernels that walk capture files and write the record index.

A pcap file is a 24-byte header then records ``[ts_sec, ts_frac, caplen,
wirelen, data]``; a pcapng file is a chain of blocks ``[type, length, body,
length]`` (draft-ietf-opsawg-pcapng). Both kernels fill preallocated columns,
stop when those are full or at the end of the buffer, and keep their position
in ``state`` so the wrapper can resume with fresh columns. Damage is written to
the error columns and never raised.
"""

from __future__ import annotations

import numpy as np

from tcpweave._bytes import u16, u32
from tcpweave._jit import callee, helper, kernel, prefetch

# state slots shared with the wrapper
ST_POS = 0  # byte offset of the next record or block
ST_SWAPPED = 1  # 1 when the (current section of the) file is big-endian
ST_DONE = 2  # 1 once the end of the buffer was reached
ST_LAST_SEC = 3  # seconds of the last good pcap record (resync sanity check)
ST_IFACE_BASE = 4  # pcapng: global index of the current section's interface 0
ST_IFACE_COUNT = 5  # pcapng: interfaces defined in the current section
ST_ERRORS = 6  # errors seen (may exceed the error columns' capacity)
ST_HAVE_SECTION = 7  # pcapng: a section header block was read
ST_SKIPPED = 8  # bytes not used because of damage (sum of the errors' skipped bytes)

# error codes (tcpweave.capture.ERROR_REASONS has their text)
E_CORRUPT_RECORD = 1
E_TRUNCATED_RECORD = 2
E_OVERSIZED_RECORD = 3
E_BAD_BLOCK = 4
E_UNKNOWN_INTERFACE = 5
E_TOO_MANY_INTERFACES = 6
E_PACKET_BEYOND_BLOCK = 7
E_TRAILING_BYTES = 8

# the pcap walk follows a chain of lengths, so each step waits on memory unless the bytes
# some records ahead were requested early: every cache line up to this far ahead is asked
# for, so the headers the chain will read, and the frames the decoder reads after the walk,
# are in cache by then (the file is read from memory once)
PREFETCH_BYTES = 4096
CACHE_LINE = 64

# pcap resync: a candidate record must be within this many seconds of the last good one
RESYNC_MAX_SKEW_SEC = 7 * 86400


@callee
def _note_error(errs, state, pos, code, arg, skipped):  # type: ignore[no-untyped-def]
    """Store an error (while the columns have room) and count it; ``skipped`` is how many
    bytes from ``pos`` on were not used (0 when the record was still read)."""
    err_offset, err_code, err_arg, err_skipped = errs
    k = state[ST_ERRORS]
    if k < err_code.size:
        err_offset[k] = pos
        err_code[k] = code
        err_arg[k] = arg
        err_skipped[k] = skipped
    state[ST_ERRORS] = k + 1
    state[ST_SKIPPED] += skipped


@helper
def _pcap_plausible(buf, pos, swapped, frac_limit, max_caplen, last_sec):  # type: ignore[no-untyped-def]
    """Strict check used only while resynchronising after damage."""
    if pos + 16 > buf.size:
        return False
    sec = u32(buf, pos, swapped)
    frac = u32(buf, pos + 4, swapped)
    caplen = u32(buf, pos + 8, swapped)
    wirelen = u32(buf, pos + 12, swapped)
    if frac >= frac_limit or caplen > max_caplen or wirelen < caplen or wirelen > 0x1000000:
        return False
    if last_sec >= 0 and abs(sec - last_sec) > RESYNC_MAX_SKEW_SEC:
        return False
    return pos + 16 + caplen <= buf.size


@callee
def _pcap_resync(buf, start, swapped, frac_limit, max_caplen, last_sec):  # type: ignore[no-untyped-def]
    """First offset >= start where two chained record headers look sane (or one ends the file)."""
    for cand in range(start, buf.size - 15):
        if not _pcap_plausible(buf, cand, swapped, frac_limit, max_caplen, last_sec):
            continue
        nxt = cand + 16 + u32(buf, cand + 8, swapped)
        if nxt == buf.size or _pcap_plausible(buf, nxt, swapped, frac_limit, max_caplen, last_sec):
            return cand
    return buf.size


@helper
def _pcap_damaged(buf, pos, caplen, wirelen, snaplen, frac_limit, max_caplen, last_sec, swapped):  # type: ignore[no-untyped-def]
    """Is the header at ``pos`` damaged? Beyond any writer's bounds, it is; merely odd (a
    capture length above the snaplen or the wire length, or running past the end), it is
    believed only when the header it points to is plausible too (or it ends the file)."""
    if caplen > max_caplen:
        return True
    nxt = pos + 16 + caplen
    suspect = (snaplen > 0 and caplen > snaplen) or wirelen < caplen or nxt > buf.size
    if not suspect or nxt == buf.size:
        return False
    return not _pcap_plausible(buf, nxt, swapped, frac_limit, max_caplen, last_sec)


@kernel
def scan_pcap_records(  # type: ignore[no-untyped-def]
    buf,
    ts_scale,
    frac_limit,
    snaplen,
    max_caplen,
    state,
    rec,
    err_offset,
    err_code,
    err_arg,
    err_skipped,
):
    """Index pcap records from ``state[ST_POS]`` into ``rec`` (offset, caplen, wirelen, ts_ns).

    Returns the number of records written. A damaged header (``_pcap_damaged``) is
    skipped up to the next plausible record chain; a record cut short by the end of the
    file with no plausible record after it is reported and dropped.
    """
    errs = (err_offset, err_code, err_arg, err_skipped)
    pos = state[ST_POS]
    swapped = state[ST_SWAPPED] != 0
    n = 0
    end = buf.size
    ahead = pos  # the next cache line not asked for yet
    while n < rec.offset.size:
        if pos >= end:
            state[ST_DONE] = 1
            break
        stop = min(pos + PREFETCH_BYTES, end)
        while ahead < stop:  # records are read in file order
            prefetch(buf, ahead)
            ahead += CACHE_LINE
        if pos + 16 > end:
            _note_error(errs, state, pos, E_TRUNCATED_RECORD, end - pos, end - pos)
            pos = end
            continue
        caplen = np.int64(u32(buf, pos + 8, swapped))
        wirelen = np.int64(u32(buf, pos + 12, swapped))
        nxt = pos + 16 + caplen
        last_sec = state[ST_LAST_SEC]
        if _pcap_damaged(
            buf, pos, caplen, wirelen, snaplen, frac_limit, max_caplen, last_sec, swapped
        ):
            cand = _pcap_resync(buf, pos + 1, swapped, frac_limit, max_caplen, last_sec)
            if cand == end and nxt > end and caplen <= max_caplen:
                _note_error(errs, state, pos, E_TRUNCATED_RECORD, nxt - end, end - pos)
            else:
                _note_error(errs, state, pos, E_CORRUPT_RECORD, cand - pos, cand - pos)
            pos = cand
            continue
        sec = u32(buf, pos, swapped)
        kept = caplen
        if snaplen > 0 and caplen > snaplen:
            # libpcap reads such a record whole but hands out only snaplen bytes
            _note_error(errs, state, pos, E_OVERSIZED_RECORD, caplen, 0)
            kept = snaplen
        rec.offset[n] = pos + 16
        rec.caplen[n] = kept
        rec.wirelen[n] = max(wirelen, kept)
        rec.ts_ns[n] = sec * 1_000_000_000 + u32(buf, pos + 4, swapped) * ts_scale
        state[ST_LAST_SEC] = sec
        n += 1
        pos = nxt
    state[ST_POS] = pos
    return n


@helper
def _pow10(k):  # type: ignore[no-untyped-def]
    r = np.int64(1)
    for _ in range(k):
        r *= 10
    return r


@helper
def _ticks_to_ns(ticks, binary, exponent):  # type: ignore[no-untyped-def]
    """Convert pcapng timestamp ticks to ns; if_tsresol is 10^-e (binary=0) or 2^-e."""
    if not binary:
        if exponent <= 9:
            return np.int64(ticks) * _pow10(9 - exponent)
        return np.int64(ticks // np.uint64(_pow10(min(exponent - 9, 18))))
    if exponent >= 64:
        return np.int64(0)
    sec = np.int64(ticks >> np.uint64(exponent))
    frac = ticks & ((np.uint64(1) << np.uint64(exponent)) - np.uint64(1))
    if exponent > 30:  # keep frac * 1e9 inside 64 bits
        drop = np.uint64(exponent - 30)
        frac = frac >> drop
        return sec * 1_000_000_000 + np.int64((frac * np.uint64(1_000_000_000)) >> np.uint64(30))
    return sec * 1_000_000_000 + np.int64((frac * np.uint64(1_000_000_000)) >> np.uint64(exponent))


@callee
def _read_idb(buf, pos, blen, swapped, slot, ifaces):  # type: ignore[no-untyped-def]
    """Interface Description Block: link type, snaplen and the options if_tsresol / if_tsoffset."""
    ifaces.linktype[slot] = u16(buf, pos + 8, swapped)
    ifaces.snaplen[slot] = u32(buf, pos + 12, swapped)
    ifaces.ts_binary[slot] = 0
    ifaces.ts_exponent[slot] = 6  # default resolution: microseconds
    ifaces.ts_offset_sec[slot] = 0
    opt = pos + 16
    opt_end = pos + blen - 4
    while opt + 4 <= opt_end:
        code = u16(buf, opt, swapped)
        length = u16(buf, opt + 2, swapped)
        if code == 0 or opt + 4 + length > opt_end:
            break
        if code == 9 and length >= 1:  # if_tsresol
            v = buf[opt + 4]
            ifaces.ts_binary[slot] = v >> 7
            ifaces.ts_exponent[slot] = v & 0x7F
        elif code == 14 and length >= 8:  # if_tsoffset: seconds, signed 64-bit
            hi = u32(buf, opt + 8, swapped) if not swapped else u32(buf, opt + 4, swapped)
            lo = u32(buf, opt + 4, swapped) if not swapped else u32(buf, opt + 8, swapped)
            ifaces.ts_offset_sec[slot] = np.int64((np.uint64(hi) << np.uint64(32)) | np.uint64(lo))
        opt += 4 + ((length + 3) & ~3)


@helper
def _block_ok(buf, pos, swapped):  # type: ignore[no-untyped-def]
    """A block is sane when its length is a multiple of 4, fits, and is repeated at its end."""
    if pos + 12 > buf.size:
        return False
    blen = u32(buf, pos + 4, swapped)
    if blen < 12 or blen & 3 or pos + blen > buf.size:
        return False
    return u32(buf, pos + blen - 4, swapped) == blen


@helper
def _min_block_len(btype):  # type: ignore[no-untyped-def]
    """Bytes a block needs for its fixed fields: IDB 20, EPB and OPB 32, SPB 16 (pcapng §4)."""
    if btype == 1:
        return 20
    if btype == 2 or btype == 6:
        return 32
    if btype == 3:
        return 16
    return 12


@callee
def _pcapng_resync(buf, start, swapped):  # type: ignore[no-untyped-def]
    """Next offset (4-byte steps, as blocks are 32-bit aligned) holding a sane known block."""
    cand = start
    while cand + 12 <= buf.size:
        btype = u32(buf, cand, swapped)
        if (btype in (1, 2, 3, 5, 6) or btype == 0x0A0D0D0A) and _block_ok(buf, cand, swapped):
            return cand
        cand += 4
    return buf.size


@kernel
def scan_pcapng_blocks(  # type: ignore[no-untyped-def]
    buf, state, ifaces, rec, err_offset, err_code, err_arg, err_skipped
):
    """Index the packets of a pcapng buffer (EPB, SPB, OPB) into ``rec``.

    Section header blocks set the byte order and start a new interface
    numbering; interface description blocks fill ``ifaces`` (global slots);
    unknown blocks are skipped. Returns the number of records written.
    """
    errs = (err_offset, err_code, err_arg, err_skipped)
    pos = state[ST_POS]
    swapped = state[ST_SWAPPED] != 0
    n = 0
    end = buf.size
    while n < rec.offset.size:
        if pos >= end:
            state[ST_DONE] = 1
            break
        if pos + 12 > end:
            _note_error(errs, state, pos, E_TRAILING_BYTES, end - pos, end - pos)
            pos = end
            continue
        btype = u32(buf, pos, swapped)
        if btype == 0x0A0D0D0A:  # section header: its byte-order magic decides the order
            magic = u32(buf, pos + 8, False)
            if magic == 0x1A2B3C4D:
                swapped = False
            elif magic == 0x4D3C2B1A:
                swapped = True
            state[ST_IFACE_BASE] += state[ST_IFACE_COUNT]
            state[ST_IFACE_COUNT] = 0
            state[ST_HAVE_SECTION] = 1
        if not _block_ok(buf, pos, swapped):
            nxt = _pcapng_resync(buf, pos + 4, swapped)
            _note_error(errs, state, pos, E_BAD_BLOCK, nxt - pos, nxt - pos)
            pos = nxt
            continue
        blen = u32(buf, pos + 4, swapped)
        if blen < _min_block_len(btype):  # its fields would be read past the block (or the file)
            _note_error(errs, state, pos, E_BAD_BLOCK, blen, blen)
        elif btype == 1:
            slot = state[ST_IFACE_BASE] + state[ST_IFACE_COUNT]
            if slot < ifaces.linktype.size:
                _read_idb(buf, pos, blen, swapped, slot, ifaces)
                state[ST_IFACE_COUNT] += 1
            else:
                _note_error(errs, state, pos, E_TOO_MANY_INTERFACES, slot, blen)
        elif btype == 6 or btype == 2 or btype == 3:
            if btype == 3:  # simple packet block: interface 0, no timestamp
                local = 0
                data = pos + 12
                wirelen = u32(buf, pos + 8, swapped)
                caplen = min(wirelen, blen - 16)
                ticks = np.uint64(0)
            else:
                local = u32(buf, pos + 8, swapped) if btype == 6 else u16(buf, pos + 8, swapped)
                data = pos + 28
                caplen = u32(buf, pos + 20, swapped)
                wirelen = u32(buf, pos + 24, swapped)
                ticks = (np.uint64(u32(buf, pos + 12, swapped)) << np.uint64(32)) | np.uint64(
                    u32(buf, pos + 16, swapped)
                )
            slot = state[ST_IFACE_BASE] + local
            if local >= state[ST_IFACE_COUNT]:
                _note_error(errs, state, pos, E_UNKNOWN_INTERFACE, local, blen)
            elif data + caplen > pos + blen - 4:
                _note_error(errs, state, pos, E_PACKET_BEYOND_BLOCK, caplen, blen)
            else:
                snap = ifaces.snaplen[slot]
                if btype == 3 and snap > 0:
                    caplen = min(caplen, snap)
                rec.offset[n] = data
                rec.caplen[n] = caplen
                rec.wirelen[n] = max(wirelen, caplen)
                rec.interface[n] = slot
                if btype == 3:
                    rec.ts_ns[n] = 0
                else:
                    rec.ts_ns[n] = (
                        _ticks_to_ns(ticks, ifaces.ts_binary[slot], ifaces.ts_exponent[slot])
                        + ifaces.ts_offset_sec[slot] * 1_000_000_000
                    )
                rec.linktype[n] = ifaces.linktype[slot]
                n += 1
        pos += blen
    state[ST_POS] = pos
    state[ST_SWAPPED] = 1 if swapped else 0
    return n


# -- classic BPF (filters compiled by libpcap, run over records: tcpweave.capture.bpf) --------
# Opcode fields as <pcap/bpf.h> defines them; the semantics are libpcap's userland
# interpreter (pcap_filter / bpf_filter.c): a load beyond the captured bytes rejects the
# packet, so does a division by zero; LEN is the packet's length on the wire.
BPF_MEMWORDS = 16


@helper
def _bpf_load(buf, start, caplen, at, size):  # type: ignore[no-untyped-def]
    """``size`` big-endian bytes at ``at`` of the packet, or -1 when beyond the captured bytes."""
    if at < 0 or at + size > caplen:
        return -1
    v = 0
    for i in range(size):
        v = (v << 8) | buf[start + at + i]
    return v


@kernel
def bpf_match(code, jt, jf, k, buf, offset, caplen, wirelen, rows, out):  # type: ignore[no-untyped-def]
    """Run the program (``code``, ``jt``, ``jf``, ``k``) on records ``rows``; ``out[i]`` is
    True when record ``rows[i]`` is accepted (the program returns non-zero)."""
    n = code.size
    mem = np.zeros(BPF_MEMWORDS, np.int64)
    m32 = 0xFFFFFFFF
    for i in range(rows.size):
        r = rows[i]
        start, clen = offset[r], caplen[r]
        a = 0
        x = 0
        mem[:] = 0
        pc = 0
        result = 0
        while pc < n:
            c = code[pc]
            kk = k[pc]
            cls = c & 0x07
            if cls == 0x00 or cls == 0x01:  # LD, LDX
                mode = c & 0xE0
                size = 4 if (c & 0x18) == 0x00 else 2 if (c & 0x18) == 0x08 else 1
                if mode == 0x00:
                    v = kk
                elif mode == 0x20 or mode == 0x40:  # ABS, IND
                    v = _bpf_load(buf, start, clen, kk + (x if mode == 0x40 else 0), size)
                    if v < 0:
                        break
                elif mode == 0x60:
                    if kk >= BPF_MEMWORDS:
                        break
                    v = mem[kk]
                elif mode == 0x80:
                    v = wirelen[r] & m32
                elif mode == 0xA0 and cls == 0x01:  # LDX MSH: 4 * (P[k] & 0xf)
                    v = _bpf_load(buf, start, clen, kk, 1)
                    if v < 0:
                        break
                    v = (v & 0x0F) << 2
                else:
                    break
                if cls == 0x00:
                    a = v
                else:
                    x = v
            elif cls == 0x02 or cls == 0x03:  # ST, STX
                if kk >= BPF_MEMWORDS:
                    break
                mem[kk] = a if cls == 0x02 else x
            elif cls == 0x04:  # ALU
                op = c & 0xF0
                v = x if (c & 0x08) else kk
                if op == 0x00:
                    a = (a + v) & m32
                elif op == 0x10:
                    a = (a - v) & m32
                elif op == 0x20:
                    a = (a * v) & m32
                elif op == 0x30 or op == 0x90:
                    if v == 0:
                        break
                    a = a // v if op == 0x30 else a % v
                elif op == 0x40:
                    a = a | v
                elif op == 0x50:
                    a = a & v
                elif op == 0x60:
                    a = (a << v) & m32 if v < 32 else 0
                elif op == 0x70:
                    a = a >> v if v < 32 else 0
                elif op == 0x80:
                    a = (-a) & m32
                elif op == 0xA0:
                    a = a ^ v
                else:
                    break
            elif cls == 0x05:  # JMP (forward only: a valid program ends)
                op = c & 0xF0
                v = x if (c & 0x08) else kk
                if op == 0x00:
                    pc += kk
                elif op == 0x10:
                    pc += jt[pc] if a == v else jf[pc]
                elif op == 0x20:
                    pc += jt[pc] if a > v else jf[pc]
                elif op == 0x30:
                    pc += jt[pc] if a >= v else jf[pc]
                elif op == 0x40:
                    pc += jt[pc] if (a & v) != 0 else jf[pc]
                else:
                    break
            elif cls == 0x06:  # RET K or RET A (libpcap has no RET X)
                rv = c & 0x18
                result = a if rv == 0x10 else kk if rv == 0x00 else 0
                break
            else:  # MISC
                if (c & 0xF8) == 0x00:
                    x = a
                elif (c & 0xF8) == 0x80:
                    a = x
                else:
                    break
            pc += 1
        out[i] = result != 0
