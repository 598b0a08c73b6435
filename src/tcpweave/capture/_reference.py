"""Plain-Python references for the capture kernels: same names, arguments, outputs and return.

These are the readable statement of what ``_kernels`` must do, written from the
formats rather than from the kernels: pcap-savefile(5) for pcap and
draft-ietf-opsawg-pcapng for pcapng. They take the same preallocated columns
and ``state`` array, fill them the same way and return the same count, so the
property tests can hold kernel and reference to byte-identical results. They
are slow; nothing but the tests calls them.
"""

from __future__ import annotations

import struct

# state slots and error codes (the layout the wrappers in source.py share with the kernels)
ST_POS, ST_SWAPPED, ST_DONE, ST_LAST_SEC = 0, 1, 2, 3
ST_IFACE_BASE, ST_IFACE_COUNT, ST_ERRORS, ST_HAVE_SECTION, ST_SKIPPED = 4, 5, 6, 7, 8
E_CORRUPT_RECORD, E_TRUNCATED_RECORD, E_OVERSIZED_RECORD, E_BAD_BLOCK = 1, 2, 3, 4
E_UNKNOWN_INTERFACE, E_TOO_MANY_INTERFACES, E_PACKET_BEYOND_BLOCK, E_TRAILING_BYTES = 5, 6, 7, 8

RESYNC_MAX_SKEW_SEC = 7 * 86400
SHB_TYPE = 0x0A0D0D0A
BYTE_ORDER_MAGIC = 0x1A2B3C4D
KNOWN_BLOCK_TYPES = (1, 2, 3, 5, 6, SHB_TYPE)  # IDB, OPB, SPB, ISB, EPB, SHB
#: §4.2-4.4 and appendix A: type, length, fixed fields, trailing length
MIN_BLOCK_LEN = {1: 20, 2: 32, 3: 16, 6: 32}


def _wrap64(x: int) -> int:
    """``x`` as a signed 64-bit integer (the kernels compute timestamps in int64)."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >> 63 else x


class _Errors:
    """The error columns: the first ``capacity`` errors are stored, all are counted. Each
    error is where it was found, what (code, arg), and how many bytes from there on were
    not used (``skipped``: 0 when the record was still read)."""

    def __init__(self, state, err_offset, err_code, err_arg, err_skipped):  # type: ignore[no-untyped-def]
        self.state, self.offset, self.code = state, err_offset, err_code
        self.arg, self.skipped = err_arg, err_skipped

    def note(self, pos: int, code: int, arg: int, skipped: int) -> None:
        k = int(self.state[ST_ERRORS])
        if k < len(self.code):
            self.offset[k], self.code[k], self.arg[k], self.skipped[k] = pos, code, arg, skipped
        self.state[ST_ERRORS] = k + 1
        self.state[ST_SKIPPED] += skipped


# ----------------------------------------------------------------------------------- pcap


def _pcap_header(buf, pos: int, order: str) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    # pcap-savefile(5): "Each packet in the file begins with a 16-byte header": time stamp
    # seconds, microseconds (or nanoseconds), captured packet length, original packet length.
    return struct.unpack_from(order + "IIII", buf, pos)  # type: ignore[return-value]


def _pcap_plausible(buf, pos, order, frac_limit, max_caplen, last_sec) -> bool:  # type: ignore[no-untyped-def]
    """The strict check used only when looking for the next record after damage."""
    if pos + 16 > len(buf):
        return False
    sec, frac, caplen, wirelen = _pcap_header(buf, pos, order)
    if frac >= frac_limit or caplen > max_caplen or caplen > wirelen or wirelen > 0x1000000:
        return False
    if last_sec >= 0 and abs(sec - last_sec) > RESYNC_MAX_SKEW_SEC:
        return False
    return pos + 16 + caplen <= len(buf)


def _pcap_resync(buf, start, order, frac_limit, max_caplen, last_sec) -> int:  # type: ignore[no-untyped-def]
    # pcap records carry no marker, so a record counts as found when its header is plausible
    # and so is the header right after it (or the record ends the file exactly).
    for cand in range(start, len(buf) - 15):
        if not _pcap_plausible(buf, cand, order, frac_limit, max_caplen, last_sec):
            continue
        nxt = cand + 16 + _pcap_header(buf, cand, order)[2]
        if nxt == len(buf) or _pcap_plausible(buf, nxt, order, frac_limit, max_caplen, last_sec):
            return cand
    return len(buf)


def _pcap_suspect(caplen: int, wirelen: int, snaplen: int, nxt: int, end: int) -> bool:
    """A header no sane writer makes, though libpcap would still read it: a capture length
    above the snaplen or above the wire length, or a record running past the end."""
    return (0 < snaplen < caplen) or wirelen < caplen or nxt > end


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
    """Index pcap records from ``state[ST_POS]`` into ``rec``; return how many were written."""
    errors = _Errors(state, err_offset, err_code, err_arg, err_skipped)
    order = ">" if state[ST_SWAPPED] else "<"
    pos, end, n = int(state[ST_POS]), len(buf), 0
    while n < len(rec.offset):
        if pos >= end:
            state[ST_DONE] = 1
            break
        if pos + 16 > end:
            errors.note(pos, E_TRUNCATED_RECORD, end - pos, end - pos)
            pos = end
            continue
        sec, frac, caplen, wirelen = _pcap_header(buf, pos, order)
        nxt = pos + 16 + caplen
        last_sec = int(state[ST_LAST_SEC])
        # A header beyond any writer's bounds is damaged; one that is merely odd is believed
        # only when the header it points to is plausible too (or it ends the file exactly).
        damaged = caplen > max_caplen or (
            _pcap_suspect(caplen, wirelen, snaplen, nxt, end)
            and nxt != end
            and not _pcap_plausible(buf, nxt, order, frac_limit, max_caplen, last_sec)
        )
        if damaged:
            cand = _pcap_resync(buf, pos + 1, order, frac_limit, max_caplen, last_sec)
            if cand == end and nxt > end and caplen <= max_caplen:
                # nothing plausible follows: the file was cut inside its last record
                errors.note(pos, E_TRUNCATED_RECORD, nxt - end, end - pos)
            else:
                errors.note(pos, E_CORRUPT_RECORD, cand - pos, cand - pos)
            pos = cand
            continue
        kept = caplen
        if 0 < snaplen < caplen:
            # pcap-savefile(5): caplen "should never become larger than" the snapshot length;
            # libpcap (sf-pcap.c, pcap_next_packet) reads such a record but returns only
            # snaplen bytes of it, and refuses one above its per-link-type maximum.
            errors.note(pos, E_OVERSIZED_RECORD, caplen, 0)
            kept = snaplen
        rec.offset[n] = pos + 16
        rec.caplen[n] = kept
        rec.wirelen[n] = max(wirelen, kept)
        rec.ts_ns[n] = sec * 1_000_000_000 + frac * ts_scale
        state[ST_LAST_SEC] = sec
        n += 1
        pos = nxt
    state[ST_POS] = pos
    return n


# --------------------------------------------------------------------------------- pcapng


def _ticks_to_ns(ticks: int, binary: int, exponent: int) -> int:
    # pcapng if_tsresol: "If the Most Significant Bit is equal to zero, the remaining bits
    # indicates the resolution of the timestamp as a negative power of 10 ... If the Most
    # Significant Bit is equal to one, the remaining bits indicates the resolution as negative
    # power of 2". Results wrap at 64 bits, as the kernel's int64 arithmetic does.
    if not binary:
        if exponent <= 9:
            return _wrap64(_wrap64(ticks) * 10 ** (9 - exponent))
        return _wrap64(ticks // 10 ** min(exponent - 9, 18))
    if exponent >= 64:
        return 0
    sec = _wrap64(ticks >> exponent)
    frac = ticks & ((1 << exponent) - 1)
    if exponent > 30:  # the kernel first drops the bits below 2^-30 s to stay inside 64 bits
        frac >>= exponent - 30
        exponent = 30
    return _wrap64(sec * 1_000_000_000 + ((frac * 1_000_000_000) >> exponent))


def _block_ok(buf, pos: int, order: str) -> bool:  # type: ignore[no-untyped-def]
    # pcapng §3.1: Block Total Length "MUST be a multiple of 4" and is repeated at the end
    # of the block; the smallest block is type + two lengths (12 bytes).
    if pos + 12 > len(buf):
        return False
    (blen,) = struct.unpack_from(order + "I", buf, pos + 4)
    if blen < 12 or blen % 4 or pos + blen > len(buf):
        return False
    return struct.unpack_from(order + "I", buf, pos + blen - 4)[0] == blen


def _pcapng_resync(buf, start: int, order: str) -> int:  # type: ignore[no-untyped-def]
    # blocks are 32-bit aligned: try every 4th offset for a known block whose lengths agree
    cand = start
    while cand + 12 <= len(buf):
        (btype,) = struct.unpack_from(order + "I", buf, cand)
        if btype in KNOWN_BLOCK_TYPES and _block_ok(buf, cand, order):
            return cand
        cand += 4
    return len(buf)


def _read_idb(buf, pos: int, blen: int, order: str, slot: int, ifaces) -> None:  # type: ignore[no-untyped-def]
    # pcapng §4.2 Interface Description Block: LinkType (16 bits), Reserved (16), SnapLen (32),
    # then options; if_tsresol (code 9) defaults to 6 (microseconds), if_tsoffset (14) to 0.
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
    ifaces.linktype[slot], ifaces.snaplen[slot] = linktype, snaplen
    ifaces.ts_binary[slot], ifaces.ts_exponent[slot], ifaces.ts_offset_sec[slot] = 0, 6, 0
    opt, opt_end = pos + 16, pos + blen - 4
    # §3.5: each option is code (16), length (16), value padded to 32 bits; opt_endofopt is 0
    while opt + 4 <= opt_end:
        code, length = struct.unpack_from(order + "HH", buf, opt)
        if code == 0 or opt + 4 + length > opt_end:
            break
        if code == 9 and length >= 1:
            resol = int(buf[opt + 4])
            ifaces.ts_binary[slot], ifaces.ts_exponent[slot] = resol >> 7, resol & 0x7F
        elif code == 14 and length >= 8:
            ifaces.ts_offset_sec[slot] = struct.unpack_from(order + "q", buf, opt + 4)[0]
        opt += 4 + (length + 3) // 4 * 4


def _packet_block(buf, pos: int, blen: int, btype: int, order: str):  # type: ignore[no-untyped-def]
    """(interface, data offset, caplen, wirelen, ticks) of an EPB, OPB or SPB."""
    if btype == 3:
        # §4.4 Simple Packet Block: Original Packet Length, then data; interface 0, no time.
        # "the Captured Packet Length ... is the minimum value among the Original Packet
        # Length and the SnapLen" -- here bounded by the block body.
        (wirelen,) = struct.unpack_from(order + "I", buf, pos + 8)
        return 0, pos + 12, min(wirelen, blen - 16), wirelen, 0
    # §4.3 Enhanced Packet Block: Interface ID (32), Timestamp (high 32, low 32), Captured
    # Packet Length, Original Packet Length, data. The obsolete Packet Block (type 2, appendix
    # A) is the same with a 16-bit interface and a 16-bit drops count.
    iface_fmt = "I" if btype == 6 else "H"
    (local,) = struct.unpack_from(order + iface_fmt, buf, pos + 8)
    hi, lo, caplen, wirelen = struct.unpack_from(order + "IIII", buf, pos + 12)
    return local, pos + 28, caplen, wirelen, (hi << 32) | lo


def scan_pcapng_blocks(  # type: ignore[no-untyped-def]
    buf, state, ifaces, rec, err_offset, err_code, err_arg, err_skipped
):
    """Index the packets of a pcapng buffer (EPB, SPB, OPB) into ``rec``; return the count."""
    errors = _Errors(state, err_offset, err_code, err_arg, err_skipped)
    order = ">" if state[ST_SWAPPED] else "<"
    pos, end, n = int(state[ST_POS]), len(buf), 0
    while n < len(rec.offset):
        if pos >= end:
            state[ST_DONE] = 1
            break
        if pos + 12 > end:
            errors.note(pos, E_TRAILING_BYTES, end - pos, end - pos)
            pos = end
            continue
        (btype,) = struct.unpack_from(order + "I", buf, pos)
        if btype == SHB_TYPE:
            # §4.1: the Byte-Order Magic 0x1A2B3C4D, read in the writer's order, fixes the
            # order of the whole section; each section numbers its interfaces from 0.
            (magic,) = struct.unpack_from("<I", buf, pos + 8)
            if magic == BYTE_ORDER_MAGIC:
                order = "<"
            elif magic == struct.unpack(">I", struct.pack("<I", BYTE_ORDER_MAGIC))[0]:
                order = ">"
            state[ST_IFACE_BASE] += state[ST_IFACE_COUNT]
            state[ST_IFACE_COUNT] = 0
            state[ST_HAVE_SECTION] = 1
        if not _block_ok(buf, pos, order):
            nxt = _pcapng_resync(buf, pos + 4, order)
            errors.note(pos, E_BAD_BLOCK, nxt - pos, nxt - pos)  # at least 12 bytes remain here
            pos = nxt
            continue
        (blen,) = struct.unpack_from(order + "I", buf, pos + 4)
        if blen < MIN_BLOCK_LEN.get(btype, 12):
            # too short for the fields its type puts before the trailing length: damaged
            errors.note(pos, E_BAD_BLOCK, blen, blen)
        elif btype == 1:
            slot = int(state[ST_IFACE_BASE] + state[ST_IFACE_COUNT])
            if slot < len(ifaces.linktype):
                _read_idb(buf, pos, blen, order, slot, ifaces)
                state[ST_IFACE_COUNT] += 1
            else:
                errors.note(pos, E_TOO_MANY_INTERFACES, slot, blen)
        elif btype in (2, 3, 6):
            local, data, caplen, wirelen, ticks = _packet_block(buf, pos, blen, btype, order)
            slot = int(state[ST_IFACE_BASE]) + local
            if local >= state[ST_IFACE_COUNT]:
                # §4.3: "The interface ID MUST be valid, which means that an matching interface
                # description block MUST exist."
                errors.note(pos, E_UNKNOWN_INTERFACE, local, blen)
            elif data + caplen > pos + blen - 4:
                errors.note(pos, E_PACKET_BEYOND_BLOCK, caplen, blen)
            else:
                if btype == 3 and ifaces.snaplen[slot] > 0:
                    caplen = min(caplen, int(ifaces.snaplen[slot]))
                rec.offset[n], rec.caplen[n] = data, caplen
                rec.wirelen[n], rec.interface[n] = max(wirelen, caplen), slot
                if btype == 3:
                    rec.ts_ns[n] = 0
                else:
                    since = _ticks_to_ns(
                        ticks, int(ifaces.ts_binary[slot]), int(ifaces.ts_exponent[slot])
                    )
                    # if_tsoffset: seconds to add to every timestamp of the interface
                    rec.ts_ns[n] = _wrap64(since + int(ifaces.ts_offset_sec[slot]) * 10**9)
                rec.linktype[n] = ifaces.linktype[slot]
                n += 1
        pos += blen
    state[ST_POS] = pos
    state[ST_SWAPPED] = 1 if order == ">" else 0
    return n


# -- classic BPF ---------------------------------------------------------------------------
# The instruction set of <pcap/bpf.h> (McCanne & Jacobson, "The BSD Packet Filter", 1993) as
# libpcap's userland interpreter runs it: a load past the captured bytes, a division by
# zero or an unknown instruction rejects the packet.


def _alu(op: int, a: int, v: int) -> int | None:
    """The ALU operation ``op`` on the accumulator (32 bits); None for an unknown one."""
    mask = 0xFFFFFFFF
    if op == 0x00:
        return (a + v) & mask
    if op == 0x10:
        return (a - v) & mask
    if op == 0x20:
        return (a * v) & mask
    if op == 0x30:
        return a // v
    if op == 0x90:
        return a % v
    if op == 0x40:
        return a | v
    if op == 0x50:
        return a & v
    if op == 0x60:
        return (a << v) & mask if v < 32 else 0
    if op == 0x70:
        return a >> v if v < 32 else 0
    if op == 0x80:
        return -a & mask
    if op == 0xA0:
        return a ^ v
    return None


def _bpf_run(prog, data: bytes, wirelen: int) -> int:  # type: ignore[no-untyped-def]
    code, jt, jf, k = prog
    a = x = 0
    mem = [0] * 16
    pc = 0
    mask = 0xFFFFFFFF

    def load(at: int, size: int) -> int | None:
        if at < 0 or at + size > len(data):
            return None
        return int.from_bytes(data[at : at + size], "big")

    while pc < len(code):
        c, kk = int(code[pc]), int(k[pc])
        cls = c & 7
        if cls in (0, 1):
            mode, size = c & 0xE0, {0x00: 4, 0x08: 2, 0x10: 1}.get(c & 0x18, 0)
            if mode == 0x00:
                v = kk
            elif mode in (0x20, 0x40):
                got = load(kk + (x if mode == 0x40 else 0), size)
                if got is None or size == 0:
                    return 0
                v = got
            elif mode == 0x60:
                if kk >= 16:
                    return 0
                v = mem[kk]
            elif mode == 0x80:
                v = wirelen & mask
            elif mode == 0xA0 and cls == 1:
                got = load(kk, 1)
                if got is None:
                    return 0
                v = (got & 0xF) * 4
            else:
                return 0
            if cls == 0:
                a = v
            else:
                x = v
        elif cls in (2, 3):
            if kk >= 16:
                return 0
            mem[kk] = a if cls == 2 else x
        elif cls == 4:
            op, v = c & 0xF0, x if c & 8 else kk
            if op in (0x30, 0x90) and v == 0:
                return 0
            got = _alu(op, a, v)
            if got is None:
                return 0
            a = got
        elif cls == 5:
            op, v = c & 0xF0, x if c & 8 else kk
            if op == 0x00:
                pc += kk
            else:
                tests = {0x10: a == v, 0x20: a > v, 0x30: a >= v, 0x40: (a & v) != 0}
                if op not in tests:
                    return 0
                pc += int(jt[pc]) if tests[op] else int(jf[pc])
        elif cls == 6:
            rv = c & 0x18
            return kk if rv == 0x00 else a if rv == 0x10 else 0
        else:
            if c & 0xF8 == 0x00:
                x = a
            elif c & 0xF8 == 0x80:
                a = x
            else:
                return 0
        pc += 1
    return 0


def bpf_match(code, jt, jf, k, buf, offset, caplen, wirelen, rows, out):  # type: ignore[no-untyped-def]
    for i, r in enumerate(rows):
        start = int(offset[r])
        data = bytes(buf[start : start + int(caplen[r])])
        out[i] = _bpf_run((code, jt, jf, k), data, int(wirelen[r])) != 0
