"""Kernels that decode frames into packet-table rows.

One pass per record: link header -> IPv4/IPv6 (with extension headers) -> TCP,
verifying the IPv4 header checksum and the TCP checksum on the way. An IP packet
that is not TCP but a tunnel (IP-in-IP, GRE, a UDP tunnel port) is opened and the
walk starts again from the inner header, at most MAX_TUNNEL_DEPTH times; the
innermost tunnel goes to the row's tunnel columns (rules: docs/encapsulations.md).
Untunnelled TCP never enters that loop a second time. IP
fragments are not decoded here: their header fields are written to the
fragment columns for ``fragments.reassemble``, and the rebuilt datagrams come
back through the same kernel as raw-IP records.

The Internet checksum (RFC 1071) is a ones' complement sum of 16-bit words and
does not depend on byte order (§2(B)): the kernel sums the aligned middle of a
range as native 64-bit words and corrects for the byte swap at the end, which
runs at memory speed.
"""

from __future__ import annotations

import numpy as np

from tcpweave._bytes import u16be, u32be, u32le
from tcpweave._jit import callee, helper, kernel, prefetch

# record status (one per record; tcpweave.decode.RecordStatus names them)
S_TCP = 1
S_NON_IP = 2
S_NON_TCP = 3
S_FRAGMENT = 4
S_UNKNOWN_LINK = 5
S_MALFORMED = 6
S_TRUNCATED_HEADER = 7

# link types (LINKTYPE_*, tcpdump.org/linktypes.html)
LT_NULL = 0
LT_ETHERNET = 1
LT_RAW = 101
LT_LOOP = 108
LT_LINUX_SLL = 113
LT_IPV4 = 228
LT_IPV6 = 229
LT_LINUX_SLL2 = 276
LT_IPOIB = 242  # IP over InfiniBand (RFC 4391): 20-byte dst and src addresses, type, reserved
LT_PPP = 9
LT_FDDI = 10
LT_PPP_HDLC = 50
LT_ATM_RFC1483 = 100
LT_C_HDLC = 104

# encapsulations (tcpweave.enums.Encapsulation; the rules: docs/encapsulations.md). The IP
# tunnels (E_IPIP..E_ERSPAN) fill the packet table's tunnel columns; the link-layer ones
# are only counted. counters[C_ENCAP + kind] counts the frames that passed through each.
E_NONE = 0
E_IPIP = 1
E_GRE = 2
E_VXLAN = 3
E_GENEVE = 4
E_GTPU = 5
E_TEREDO = 6
E_AYIYA = 7
E_ERSPAN = 8
E_PBB = 9
E_FABRICPATH = 10
E_VNTAG = 11
E_ETAG = 12
E_EOMPLS = 13
E_LLC_SNAP = 14
N_ENCAP = 16
# nested encapsulations opened per frame at most (a bound on hostile input)
MAX_TUNNEL_DEPTH = 8

# pseudo-EtherType: "a whole Ethernet frame follows" (RFC 1701's transparent bridging)
ETH_TEB = 0x6558

# checksum states (tcpweave.enums.Checksum)
CK_UNKNOWN = 0
CK_OK = 1
CK_BAD = 2
CK_NONE = 3

# how far ahead of the record being decoded the decoder asks for every cache line (frames
# are read whole for the TCP checksum; records come in file order)
PREFETCH_BYTES = 4096
CACHE_LINE = 64

# counters
C_IP_LEN_BEYOND_FRAME = 0  # IP claims more bytes than the frame carried on the wire
C_ENCAP = 4  # counters[C_ENCAP + E_*]: frames that went through that encapsulation
N_COUNTERS = C_ENCAP + N_ENCAP

_U64_LOW32 = np.uint64(0xFFFFFFFF)
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


@helper
def fold(s):  # type: ignore[no-untyped-def]
    """Fold a wide ones' complement sum to 16 bits."""
    s = np.uint64(s)
    while s >> np.uint64(16):
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return s


@helper
def _swap16(x):  # type: ignore[no-untyped-def]
    return ((x & np.uint64(0xFF)) << np.uint64(8)) | (x >> np.uint64(8))


@helper
def _sum_bytes(buf, start, end, origin):  # type: ignore[no-untyped-def]
    """Big-endian word sum of buf[start:end], word boundaries counted from ``origin``."""
    s = np.uint64(0)
    for i in range(start, end):
        if (i - origin) & 1:
            s += np.uint64(buf[i])
        else:
            s += np.uint64(buf[i]) << np.uint64(8)
    return s


@helper
def ocsum(buf, buf64, start, length):  # type: ignore[no-untyped-def]
    """Unfolded ones' complement sum of ``length`` bytes at ``start`` (RFC 1071).

    Whole aligned 64-bit words are summed as two 32-bit halves; the words
    holding the first and last bytes are masked rather than walked byte by
    byte. Summing little-endian words yields the byte-swapped big-endian sum
    (RFC 1071 §2(B)) when ``start`` is even, and the sum itself when it is odd.
    """
    if length <= 0:
        return np.uint64(0)
    end = start + length
    first = start >> 3
    last = (end - 1) >> 3
    if last >= buf64.size:  # the file's last partial word is not in buf64
        return _sum_bytes(buf, start, end, start)
    head_mask = _ALL_ONES << np.uint64(8 * (start & 7))
    tail_bytes = ((end - 1) & 7) + 1
    tail_mask = _ALL_ONES >> np.uint64(64 - 8 * tail_bytes)
    if first == last:
        w = buf64[first] & head_mask & tail_mask
        m = (w & _U64_LOW32) + (w >> np.uint64(32))
    else:
        w = buf64[first] & head_mask
        m = (w & _U64_LOW32) + (w >> np.uint64(32))
        for j in range(first + 1, last):
            w = buf64[j]
            m += (w & _U64_LOW32) + (w >> np.uint64(32))
        w = buf64[last] & tail_mask
        m += (w & _U64_LOW32) + (w >> np.uint64(32))
    m = fold(m)
    return m if start & 1 else _swap16(m)


@callee
def _ethertype_to_l3(buf, pos, end, ethertype):  # type: ignore[no-untyped-def]
    """Follow link-layer headers from ``ethertype`` at ``pos`` to IP.

    Returns (ip version, offset of the IP header, link encapsulations met as a bit mask of
    1 << E_*); version 0 means not IP, -1 a header cut short. Each step moves ``pos`` on, so
    the walk ends. The rules and their sources: docs/encapsulations.md.
    """
    seen = 0
    while True:
        if ethertype == 0x0800:
            return 4, pos, seen
        if ethertype == 0x86DD:
            return 6, pos, seen
        if ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100 or ethertype == 0x9200:
            if pos + 4 > end:  # 802.1Q / 802.1ad tag: TCI then the inner type
                return -1, pos, seen
            ethertype = u16be(buf, pos + 2)
            pos += 4
        elif ethertype == ETH_TEB:  # a whole Ethernet frame: DA, SA, type
            if pos + 14 > end:
                return -1, pos, seen
            ethertype = u16be(buf, pos + 12)
            pos += 14
        elif ethertype == 0x8847 or ethertype == 0x8848:
            while True:  # MPLS label stack (RFC 3032) until the bottom-of-stack bit
                if pos + 4 > end:
                    return -1, pos, seen
                bottom = buf[pos + 2] & 1
                pos += 4
                if bottom:
                    break
            if pos >= end:
                return -1, pos, seen
            nibble = buf[pos] >> 4  # no type field after MPLS: guess from the first nibble
            if nibble == 4 or nibble == 6:
                return nibble, pos, seen
            if nibble != 0:
                return 0, pos, seen
            seen |= 1 << E_EOMPLS  # RFC 4448 §4.6 control word (first nibble 0), then Ethernet
            ethertype = ETH_TEB
            pos += 4
        elif ethertype == 0x8864:
            if pos + 8 > end:  # PPPoE session (RFC 2516) carrying PPP
                return -1, pos, seen
            proto = u16be(buf, pos + 6)
            pos += 8
            if proto == 0x0021:
                return 4, pos, seen
            if proto == 0x0057:
                return 6, pos, seen
            return 0, pos, seen
        elif ethertype < 0x0600:  # an 802.3 length: IEEE 802.2 LLC follows
            if pos + 8 > end:
                return -1, pos, seen
            if buf[pos] != 0xAA or buf[pos + 1] != 0xAA or buf[pos + 2] != 0x03:
                return 0, pos, seen
            if (
                buf[pos + 3] != 0
                or buf[pos + 4] != 0
                or (buf[pos + 5] != 0 and buf[pos + 5] != 0xF8)
            ):
                return 0, pos, seen  # SNAP with OUI 0 (RFC 1042) or 00-00-F8 (802.1H) only
            seen |= 1 << E_LLC_SNAP
            ethertype = u16be(buf, pos + 6)
            pos += 8
        elif ethertype == 0x88E7:  # 802.1ah I-TAG: flags and I-SID (4), C-DA, C-SA, type
            if pos + 18 > end:
                return -1, pos, seen
            seen |= 1 << E_PBB
            ethertype = u16be(buf, pos + 16)
            pos += 18
        elif ethertype == 0x8926:  # VN-Tag: 4 bytes, then the type
            if pos + 6 > end:
                return -1, pos, seen
            seen |= 1 << E_VNTAG
            ethertype = u16be(buf, pos + 4)
            pos += 6
        elif ethertype == 0x893F:  # 802.1BR E-TAG: 6 bytes, then the type
            if pos + 8 > end:
                return -1, pos, seen
            seen |= 1 << E_ETAG
            ethertype = u16be(buf, pos + 6)
            pos += 8
        elif ethertype == 0x8903:  # FabricPath tag (FTag, TTL), then the classical frame
            if pos + 16 > end:
                return -1, pos, seen
            seen |= 1 << E_FABRICPATH
            ethertype = u16be(buf, pos + 14)
            pos += 16
        else:
            return 0, pos, seen


@helper
def _null_family_to_version(family):  # type: ignore[no-untyped-def]
    # AF_INET is 2 everywhere; AF_INET6 is 24 (NetBSD, OpenBSD, BSD/OS), 28 (FreeBSD,
    # DragonFly) or 30 (Darwin) -- tcpdump.org/linktypes/LINKTYPE_NULL.html. Linux's 10 is not
    # among them (Linux never writes this link type), and tcpdump and Wireshark reject it too.
    if family == 2:
        return 4
    if family == 24 or family == 28 or family == 30:
        return 6
    return 0


@helper
def link_to_l3(buf, off, caplen, linktype):  # type: ignore[no-untyped-def]
    """(ip version, IP header offset, link encapsulations met as 1 << E_* bits).

    Version 0 means not IP, -1 a link header cut short, -2 an unknown link type.
    """
    end = off + caplen
    if linktype == LT_ETHERNET:
        if caplen < 14:
            return -1, off, 0
        return _ethertype_to_l3(buf, off + 14, end, u16be(buf, off + 12))
    if linktype == LT_RAW or linktype == 12 or linktype == 14:
        if caplen < 1:
            return -1, off, 0
        v = buf[off] >> 4
        return (v, off, 0) if v == 4 or v == 6 else (0, off, 0)
    if linktype == LT_IPV4:
        return 4, off, 0
    if linktype == LT_IPV6:
        return 6, off, 0
    if linktype == LT_LINUX_SLL:
        if caplen < 16:
            return -1, off, 0
        return _ethertype_to_l3(buf, off + 16, end, u16be(buf, off + 14))
    if linktype == LT_LINUX_SLL2:
        if caplen < 20:
            return -1, off, 0
        return _ethertype_to_l3(buf, off + 20, end, u16be(buf, off))
    if linktype == LT_IPOIB:
        if caplen < 44:
            return -1, off, 0
        return _ethertype_to_l3(buf, off + 44, end, u16be(buf, off + 40))
    if linktype == LT_NULL or linktype == LT_LOOP:
        if caplen < 4:
            return -1, off, 0
        family = u32be(buf, off)
        if linktype == LT_NULL and family & 0xFFFF0000:
            family = u32le(buf, off)  # DLT_NULL is in the capturing host's byte order
        return _null_family_to_version(family), off + 4, 0
    return _other_link_to_l3(buf, off, end, linktype)


@callee
def _other_link_to_l3(buf, off, end, linktype):  # type: ignore[no-untyped-def]
    """The rarer link types: FDDI, LLC/SNAP over ATM, PPP, Cisco HDLC (docs/encapsulations.md)."""
    if linktype == LT_FDDI:  # frame control, destination, source (13 bytes), then LLC
        if off + 13 > end:
            return -1, off, 0
        return _ethertype_to_l3(buf, off + 13, end, 0)  # type 0: "802.2 LLC follows"
    if linktype == LT_ATM_RFC1483:  # RFC 2684 LLC encapsulation
        return _ethertype_to_l3(buf, off, end, 0)
    if linktype == LT_C_HDLC:  # address, control, then an EtherType
        if off + 4 > end:
            return -1, off, 0
        return _ethertype_to_l3(buf, off + 4, end, u16be(buf, off + 2))
    if linktype == LT_PPP or linktype == LT_PPP_HDLC:
        p = off
        if p + 2 <= end and buf[p] == 0xFF and buf[p + 1] == 0x03:
            p += 2  # RFC 1662 §3.1 address and control fields
        if p + 2 > end:
            return -1, off, 0
        proto = u16be(buf, p)  # RFC 1661 §2: 0x0021 IPv4, 0x0057 IPv6
        if proto == 0x0021:
            return 4, p + 2, 0
        if proto == 0x0057:
            return 6, p + 2, 0
        return 0, p + 2, 0
    return -2, off, 0


@helper
def _put_address(col, row, buf, pos, version):  # type: ignore[no-untyped-def]
    """Write an address as 16 bytes; IPv4 as IPv4-mapped IPv6 (RFC 4291 §2.5.5.2)."""
    if version == 4:
        for i in range(10):
            col[row, i] = 0
        col[row, 10] = 0xFF
        col[row, 11] = 0xFF
        for i in range(4):
            col[row, 12 + i] = buf[pos + i]
    else:
        for i in range(16):
            col[row, i] = buf[pos + i]


@helper
def _count_links(counters, seen):  # type: ignore[no-untyped-def]
    """Count each link-layer encapsulation whose bit (1 << E_*) is set in ``seen``."""
    for kind in range(N_ENCAP):
        if seen >> kind & 1:
            counters[C_ENCAP + kind] += 1


@helper
def _parse_tcp_options(buf, pos, end):  # type: ignore[no-untyped-def]
    """(mss, wscale, sack_permitted, ts_present, ts_val, ts_ecr) from the options in [pos, end).

    MSS (kind 2), window scale (3), SACK permitted (4), timestamps (8): RFC 9293 §3.2,
    RFC 7323, RFC 2018. A malformed option ends the walk, keeping what was read.
    """
    mss = np.int64(0)
    wscale = np.int64(-1)
    sack = False
    ts_present = False
    ts_val = np.int64(0)
    ts_ecr = np.int64(0)
    while pos < end:
        kind = buf[pos]
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= end:
            break
        length = np.int64(buf[pos + 1])
        if length < 2 or pos + length > end:
            break
        if kind == 2 and length == 4:
            mss = u16be(buf, pos + 2)
        elif kind == 3 and length == 3:
            wscale = min(np.int64(buf[pos + 2]), 127)
        elif kind == 4 and length == 2:
            sack = True
        elif kind == 8 and length == 10:
            ts_present = True
            ts_val = u32be(buf, pos + 2)
            ts_ecr = u32be(buf, pos + 6)
        pos += length
    return mss, wscale, sack, ts_present, ts_val, ts_ecr


@helper
def _tcp_checksum(buf, buf64, l4, l4_cap, l4_len, pseudo):  # type: ignore[no-untyped-def]
    """Verify the TCP checksum when the whole segment was captured (RFC 9293 §3.1)."""
    if l4_cap < l4_len:
        return CK_UNKNOWN
    return CK_OK if fold(pseudo + ocsum(buf, buf64, l4, l4_len)) == 0xFFFF else CK_BAD


@callee
def _v6_final_destination(buf, p, nh_len):  # type: ignore[no-untyped-def]
    """Offset of the final destination named by a routing header, or -1 (RFC 8200 §8.1)."""
    rtype = buf[p + 2]
    segments_left = buf[p + 3]
    if segments_left == 0:
        return -1
    if rtype == 0 or rtype == 2:  # addresses follow 8 bytes in; the final one is last
        n_addr = (nh_len - 8) // 16
        return p + 8 + (n_addr - 1) * 16 if n_addr > 0 else -1
    if rtype == 4 and nh_len >= 24:  # segment routing header: Segment List[0] is the final one
        return p + 8
    return -1


@helper
def _parse_ipv4(buf, buf64, l3, cap_end, wire_end):  # type: ignore[no-untyped-def]
    """IPv4 header (RFC 791 §3.1).

    Returns (status, l4, l4_cap, l4_len, pseudo-header sum, header checksum state,
    fragment offset, more-fragments, protocol, length-beyond-frame flag). Status
    S_TCP means "carries TCP, decode on".
    """
    bad = (S_MALFORMED, l3, 0, 0, np.uint64(0), CK_UNKNOWN, 0, False, 0, False)
    if l3 + 20 > cap_end:
        return (S_TRUNCATED_HEADER, *bad[1:])
    ihl = np.int64(buf[l3] & 0x0F) * 4
    if buf[l3] >> 4 != 4 or ihl < 20:
        return bad
    if l3 + ihl > cap_end:
        return (S_TRUNCATED_HEADER, *bad[1:])
    total = u16be(buf, l3 + 2)
    if total == 0:  # TSO: the NIC fills the length in after capture (Wireshark reads it so)
        total = wire_end - l3
    if total < ihl:
        return bad
    beyond = l3 + total > wire_end
    if beyond:
        total = wire_end - l3
    ip_ck = CK_OK if fold(ocsum(buf, buf64, l3, ihl)) == 0xFFFF else CK_BAD
    flags_offset = u16be(buf, l3 + 6)
    more = (flags_offset & 0x2000) != 0
    frag_offset = np.int64(flags_offset & 0x1FFF) * 8
    proto = np.int64(buf[l3 + 9])
    l4 = l3 + ihl
    l4_len = total - ihl
    l4_cap = max(np.int64(0), min(cap_end - l4, l4_len))
    # RFC 9293 §3.1 pseudo-header: source, destination, zero, PTCL, TCP length
    pseudo = ocsum(buf, buf64, l3 + 12, 8) + np.uint64(6) + np.uint64(l4_len)
    if more or frag_offset:
        status = S_FRAGMENT
    elif proto != 6:
        status = S_NON_TCP
    else:
        status = S_TCP
    return status, l4, l4_cap, l4_len, pseudo, ip_ck, frag_offset, more, proto, beyond


@callee
def _ipv6_jumbo_length(buf, p, end):  # type: ignore[no-untyped-def]
    """Jumbo payload length from a hop-by-hop header spanning [p, end), or 0 (RFC 2675)."""
    q = p + 2
    while q + 2 <= end:
        opt = buf[q]
        if opt == 0:  # Pad1
            q += 1
            continue
        olen = np.int64(buf[q + 1])
        if opt == 0xC2 and olen == 4 and q + 6 <= end:
            return u32be(buf, q + 2)
        q += 2 + olen
    return np.int64(0)


@helper
def _parse_ipv6(buf, buf64, l3, cap_end, wire_end):  # type: ignore[no-untyped-def]
    """IPv6 header and extension headers (RFC 8200 §4).

    Returns (status, l4, l4_cap, l4_len, pseudo-header sum, offset of the final
    destination, fragment offset, more-fragments, next header, identification,
    length-beyond-frame flag).
    """
    bad = (S_MALFORMED, l3, 0, 0, np.uint64(0), l3 + 24, 0, False, 0, 0, False)
    if l3 + 40 > cap_end:
        return (S_TRUNCATED_HEADER, *bad[1:])
    if buf[l3] >> 4 != 6:
        return bad
    plen = u16be(buf, l3 + 4)
    nh = np.int64(buf[l3 + 6])
    p = l3 + 40
    pseudo_dst = l3 + 24
    jumbo = np.int64(0)
    frag = False
    more = False
    frag_offset = np.int64(0)
    ident = np.int64(0)
    # hop-by-hop 0, routing 43, fragment 44, AH 51, destination options 60, mobility 135,
    # HIP 139, shim6 140
    while nh in (0, 43, 44, 51, 60, 135, 139, 140):
        if p + 8 > cap_end:
            return (S_TRUNCATED_HEADER, *bad[1:])
        if nh == 44:
            fo = u16be(buf, p + 2)
            nh = np.int64(buf[p])
            p += 8
            if fo & 0xFFF9:  # an atomic fragment (RFC 6946) is processed as a whole packet
                frag = True
                frag_offset = np.int64(fo & 0xFFF8)
                more = (fo & 1) != 0
                ident = u32be(buf, p - 4)
                break
            continue
        hlen = (np.int64(buf[p + 1]) + 2) * 4 if nh == 51 else (np.int64(buf[p + 1]) + 1) * 8
        if p + hlen > cap_end:
            return (S_TRUNCATED_HEADER, *bad[1:])
        if nh == 0:
            jumbo = _ipv6_jumbo_length(buf, p, p + hlen)
        elif nh == 43:
            final = _v6_final_destination(buf, p, hlen)
            if final >= 0:
                pseudo_dst = final
        nh = np.int64(buf[p])
        p += hlen
    if plen == 0:
        plen = jumbo if jumbo > 0 else wire_end - l3 - 40
    end = l3 + 40 + plen
    beyond = end > wire_end
    if beyond:
        end = wire_end
    if p > end:
        return bad
    l4_len = end - p
    l4_cap = max(np.int64(0), min(cap_end - p, l4_len))
    # RFC 8200 §8.1: source, final destination, upper-layer length (32 bits), next header
    pseudo = (
        ocsum(buf, buf64, l3 + 8, 16)
        + ocsum(buf, buf64, pseudo_dst, 16)
        + np.uint64(l4_len >> 16)
        + np.uint64(l4_len & 0xFFFF)
        + np.uint64(6)
    )
    if frag:
        status = S_FRAGMENT
    elif nh != 6:
        status = S_NON_TCP
    else:
        status = S_TCP
    return status, p, l4_cap, l4_len, pseudo, pseudo_dst, frag_offset, more, nh, ident, beyond


@callee
def _store_fragment(  # type: ignore[no-untyped-def]
    frags,
    buf,
    frame,
    ts_ns,
    l3,
    version,
    l4,
    l4_cap,
    l4_len,
    frag_offset,
    more,
    proto,
    ident,
    ip_ck,
    pseudo_dst,
):
    """Keep a fragment's header fields and byte range for the reassembler (rare path)."""
    k = frags.count[0]
    frags.count[1] += 1  # fragments seen; more than the columns hold -> the caller retries
    if k >= frags.frame.size:
        return
    src, dst = (l3 + 12, l3 + 16) if version == 4 else (l3 + 8, l3 + 24)
    frags.frame[k] = frame
    frags.ts_ns[k] = ts_ns
    frags.version[k] = version
    _put_address(frags.src, k, buf, src, version)
    _put_address(frags.dst, k, buf, dst, version)
    frags.ident[k] = ident
    frags.proto[k] = proto
    frags.frag_offset[k] = frag_offset
    frags.more[k] = more
    frags.header_offset[k] = l3
    frags.header_len[k] = l4 - l3
    frags.data_offset[k] = l4
    frags.data_len[k] = l4_len
    frags.data_caplen[k] = l4_cap
    frags.ttl[k] = buf[l3 + 8] if version == 4 else buf[l3 + 7]
    frags.ip_checksum[k] = ip_ck
    frags.pseudo_dst[k] = pseudo_dst
    frags.count[0] = k + 1


@helper
def _parse_ip(buf, buf64, version, l3, cap_end, wire_end):  # type: ignore[no-untyped-def]
    """Either IP version as one tuple: (status, l4, l4_cap, l4_len, pseudo, ip checksum,
    fragment offset, more, protocol, identification, final destination, beyond)."""
    if version == 4:
        st, l4, l4_cap, l4_len, pseudo, ip_ck, fo, more, proto, beyond = _parse_ipv4(
            buf, buf64, l3, cap_end, wire_end
        )
        ident = u16be(buf, l3 + 4) if st != S_TRUNCATED_HEADER else 0
        return st, l4, l4_cap, l4_len, pseudo, ip_ck, fo, more, proto, ident, l3 + 16, beyond
    st, l4, l4_cap, l4_len, pseudo, pdst, fo, more, nh, ident, beyond = _parse_ipv6(
        buf, buf64, l3, cap_end, wire_end
    )
    return st, l4, l4_cap, l4_len, pseudo, CK_NONE, fo, more, nh, ident, pdst, beyond


@callee
def _gre(buf, pos, end):  # type: ignore[no-untyped-def]
    """GRE (RFC 2784 §2, RFC 2890 §2) and the ERSPAN it may carry: (kind, id, type, offset).

    Type -1: cut short; kind 0: not one tcpweave opens (RFC 1701 routing, version > 1).
    """
    if pos + 4 > end:
        return E_GRE, 0, -1, pos
    flags = u16be(buf, pos)
    proto = u16be(buf, pos + 2)
    if flags & 0x4000 or flags & 0x0007 > 1:
        return E_NONE, 0, 0, pos
    if flags & 0x0007 == 1:
        return _pptp_gre(buf, pos, end, flags, proto)
    p = pos + 4
    if flags & 0x8000:  # checksum and reserved1
        p += 4
    key = 0
    if flags & 0x2000:  # RFC 2890 §2.1 key
        if p + 4 > end:
            return E_GRE, 0, -1, pos
        key = u32be(buf, p)
        p += 4
    if flags & 0x1000:  # RFC 2890 §2.2 sequence number
        p += 4
    if p > end:
        return E_GRE, key, -1, pos
    if proto == 0x88BE:  # ERSPAN: type II has a sequence number and an 8-byte header
        if not flags & 0x1000:
            return E_ERSPAN, 0, ETH_TEB, p  # type I: the mirrored frame at once
        if p + 8 > end:
            return E_ERSPAN, 0, -1, p
        return E_ERSPAN, u16be(buf, p + 2) & 0x3FF, ETH_TEB, p + 8
    if proto == 0x22EB:  # ERSPAN type III: 12 bytes, 8 more when O (platform subheader)
        if p + 12 > end:
            return E_ERSPAN, 0, -1, p
        hlen = 20 if buf[p + 11] & 1 else 12
        return E_ERSPAN, u16be(buf, p + 2) & 0x3FF, ETH_TEB, p + hlen
    return E_GRE, key, proto, p


@callee
def _pptp_gre(buf, pos, end, flags, proto):  # type: ignore[no-untyped-def]
    """PPTP's enhanced GRE (RFC 2637 §4.1): key (payload length, call id), sequence number
    if S, acknowledgment number if A, then a PPP frame; (kind, call id, type, offset)."""
    if proto != 0x880B or not flags & 0x2000:
        return E_NONE, 0, 0, pos
    p = pos + 8 + (4 if flags & 0x1000 else 0) + (4 if flags & 0x0080 else 0)
    if p > end:
        return E_GRE, 0, -1, pos
    call_id = u16be(buf, pos + 6)
    if u16be(buf, pos + 4) == 0:  # payload length 0: an acknowledgment alone
        return E_GRE, call_id, 0, p
    etype, q = _ppp(buf, p, end)
    return E_GRE, call_id, etype, q


@callee
def _ppp(buf, p, end):  # type: ignore[no-untyped-def]
    """(EtherType of what a PPP frame at ``p`` carries, its offset): address and control
    0xFF 0x03 if present (RFC 1662 §3.1), then the protocol, one byte when compressed
    (RFC 1661 §6.5: an odd first byte). Type 0: not IP; -1: cut short."""
    if p + 2 <= end and buf[p] == 0xFF and buf[p + 1] == 0x03:
        p += 2
    if p >= end:
        return -1, p
    if buf[p] & 1:
        proto = np.int64(buf[p])
        p += 1
    else:
        if p + 2 > end:
            return -1, p
        proto = u16be(buf, p)
        p += 2
    return (0x0800 if proto == 0x21 else (0x86DD if proto == 0x57 else 0)), p


@helper
def _nibble_type(buf, pos, end):  # type: ignore[no-untyped-def]
    """The EtherType of an IP packet at ``pos`` told by its version nibble (0: not IP)."""
    if pos >= end:
        return -1
    v = buf[pos] >> 4
    return 0x0800 if v == 4 else (0x86DD if v == 6 else 0)


@callee
def _udp_tunnel(buf, pos, end, port):  # type: ignore[no-untyped-def]
    """A tunnel on UDP ``port`` whose header starts at ``pos``: (kind, id, type, offset)."""
    if port == 4789:  # VXLAN, RFC 7348 §5: flags, reserved, VNI (24 bits), reserved
        if pos + 8 > end:
            return E_VXLAN, 0, -1, pos
        return E_VXLAN, u32be(buf, pos + 4) >> 8, ETH_TEB, pos + 8
    if port == 4790:  # VXLAN-GPE (draft-ietf-nvo3-vxlan-gpe): Next Protocol at byte 3
        if pos + 8 > end:
            return E_VXLAN, 0, -1, pos
        return E_VXLAN, u32be(buf, pos + 4) >> 8, _gpe_type(buf[pos + 3]), pos + 8
    if port == 6081:  # Geneve, RFC 8926 §3.4: Ver, Opt Len (4-byte units), Protocol Type, VNI
        if pos + 8 > end:
            return E_GENEVE, 0, -1, pos
        return (
            E_GENEVE,
            u32be(buf, pos + 4) >> 8,
            u16be(buf, pos + 2),
            pos + 8 + (buf[pos] & 0x3F) * 4,
        )
    if port == 2152:  # GTP-U, 3GPP TS 29.281 §5.1
        return _gtpu(buf, pos, end)
    if port == 3544:  # Teredo, RFC 4380 §5.1.1: authentication, then origin indication
        p = pos
        if p + 4 <= end and u16be(buf, p) == 1:
            p += 13 + buf[p + 2] + buf[p + 3]  # 4 + ID-len + AU-len + nonce 8 + confirmation 1
        if p + 2 <= end and u16be(buf, p) == 0:
            p += 8
        return E_TEREDO, 0, _nibble_type(buf, p, end), p
    if port == 5072:  # AYIYA: 8 bytes, identity (2^IdLen), signature (4 * SigLen)
        if pos + 8 > end:
            return E_AYIYA, 0, -1, pos
        if buf[pos + 2] & 0x0F != 1:  # opcode 1 "forward" carries a packet
            return E_AYIYA, 0, 0, pos
        nh = buf[pos + 3]
        p = pos + 8 + (1 << (buf[pos] >> 4)) + (buf[pos + 1] >> 4) * 4
        return E_AYIYA, 0, 0x0800 if nh == 4 else (0x86DD if nh == 41 else 0), p
    return E_NONE, 0, 0, pos


@helper
def _gpe_type(next_protocol):  # type: ignore[no-untyped-def]
    """VXLAN-GPE Next Protocol as an EtherType: 1 IPv4, 2 IPv6, 3 Ethernet, 5 MPLS."""
    if next_protocol == 1:
        return 0x0800
    if next_protocol == 2:
        return 0x86DD
    if next_protocol == 3:
        return ETH_TEB
    if next_protocol == 5:
        return 0x8847
    return 0


@callee
def _gtpu(buf, pos, end):  # type: ignore[no-untyped-def]
    """GTP-U (3GPP TS 29.281 §5.1-5.2): a G-PDU's T-PDU; (kind, TEID, type, offset)."""
    if pos + 8 > end:
        return E_GTPU, 0, -1, pos
    flags = buf[pos]
    teid = u32be(buf, pos + 4)
    if flags >> 5 != 1 or not flags & 0x10 or buf[pos + 1] != 0xFF:
        return E_GTPU, teid, 0, pos  # not version 1 GTP, or not a G-PDU (message type 255)
    p = pos + 8
    if flags & 0x07:  # E, S or PN: sequence number, N-PDU number, next extension type
        if p + 4 > end:
            return E_GTPU, teid, -1, pos
        nxt = buf[p + 3] if flags & 0x04 else 0
        p += 4
        while nxt != 0:  # §5.2: Length in 4-octet units, ..., Next Extension Header Type
            if p >= end or buf[p] == 0:
                return E_GTPU, teid, -1, pos
            p += buf[p] * 4
            if p > end:
                return E_GTPU, teid, -1, pos
            nxt = buf[p - 1]
    return E_GTPU, teid, _nibble_type(buf, p, end), p


@callee
def _decap(buf, proto, pos, end):  # type: ignore[no-untyped-def]
    """What a non-TCP IP payload at ``pos`` carries: (kind, id, EtherType, offset).

    Kind 0: no tunnel; type -1: its header was cut short; type 0: not an IP packet.
    """
    if proto == 4:  # IPv4 in IP (RFC 2003)
        return E_IPIP, 0, 0x0800, pos
    if proto == 41:  # IPv6 in IP (RFC 4213 §3, RFC 2473)
        return E_IPIP, 0, 0x86DD, pos
    if proto == 47:
        return _gre(buf, pos, end)
    if proto == 17 and pos + 8 <= end:
        # Wireshark tries the lower port's dissector first, then the higher's (packet-udp.c)
        sport = u16be(buf, pos)
        dport = u16be(buf, pos + 2)
        low = min(sport, dport)
        kind, ident, etype, p = _udp_tunnel(buf, pos + 8, end, low)
        if kind == E_NONE:
            kind, ident, etype, p = _udp_tunnel(buf, pos + 8, end, max(sport, dport))
        return kind, ident, etype, p
    return E_NONE, 0, 0, pos


@kernel
def decode_records(buf, buf64, rec, file_index, frame_base, out, row0, status, frags, counters):  # type: ignore[no-untyped-def]
    """Decode records of one source: TCP rows into ``out`` from ``row0``, fragments to ``frags``.

    ``status[i]`` receives the record's S_* code. Returns the row after the last one written
    (``out`` must have room for one row per record). ``tunnel_id``, ``tunnel_src`` and
    ``tunnel_dst`` are written for tunnelled rows only: the caller hands them zeroed
    (``empty_packets`` zeroes them, a reused table re-zeroes what it used), which spares
    every untunnelled row 36 bytes of stores.
    (Helpers return tuples and only this body touches ``out``: handing a tuple of
    thirty arrays to a helper per packet costs a reference count per array.)
    """
    row = row0
    n = rec.offset.size
    ahead = rec.offset[0] if n else 0  # the next cache line not asked for yet
    for i in range(n):
        off = rec.offset[i]
        if ahead < off:  # a gap in the file (a skipped region, or a filtered record)
            ahead = off
        stop = min(off + PREFETCH_BYTES, buf.size)
        while ahead < stop:  # records come in file order: ask for what is ahead, once
            prefetch(buf, ahead)
            ahead += CACHE_LINE
        version, l3, seen = link_to_l3(buf, off, rec.caplen[i], rec.linktype[i])
        if seen:
            _count_links(counters, seen)
        if version <= 0:
            status[i] = (
                S_UNKNOWN_LINK
                if version == -2
                else (S_TRUNCATED_HEADER if version == -1 else S_NON_IP)
            )
            continue
        cap_end = off + rec.caplen[i]
        wire_end = off + rec.wirelen[i]
        # the innermost IP tunnel met: kind, id, version and offset of its outer IP header
        t_kind = E_NONE
        t_id = np.int64(0)
        t_version = 0
        t_l3 = l3
        for _depth in range(MAX_TUNNEL_DEPTH):
            st, l4, l4_cap, l4_len, pseudo, ip_ck, fo, more, proto, ident, pdst, beyond = _parse_ip(
                buf, buf64, version, l3, cap_end, wire_end
            )
            counters[C_IP_LEN_BEYOND_FRAME] += beyond
            if st != S_NON_TCP:
                break
            kind, t_ident, etype, pos = _decap(buf, proto, l4, l4 + l4_cap)
            if kind == E_NONE:
                break
            counters[C_ENCAP + kind] += 1
            t_kind, t_id, t_version, t_l3 = kind, t_ident, version, l3
            # the inner packet ends where the outer payload does
            cap_end = l4 + l4_cap
            wire_end = l4 + l4_len
            if etype <= 0:
                st = S_TRUNCATED_HEADER if etype < 0 else S_NON_TCP
                break
            version, l3, seen = _ethertype_to_l3(buf, pos, cap_end, etype)
            if seen:
                _count_links(counters, seen)
            if version <= 0:
                st = S_TRUNCATED_HEADER if version < 0 else S_NON_TCP
                break
        if st == S_FRAGMENT:
            _store_fragment(
                frags,
                buf,
                frame_base + i + 1,
                rec.ts_ns[i],
                l3,
                version,
                l4,
                l4_cap,
                l4_len,
                fo,
                more,
                proto,
                ident,
                ip_ck,
                pdst,
            )
        if st == S_TCP:
            if l4_cap < 20:
                st = S_TRUNCATED_HEADER
            elif buf[l4 + 12] >> 4 < 5 or np.int64(buf[l4 + 12] >> 4) * 4 > l4_len:
                st = S_MALFORMED
        status[i] = st
        if st != S_TCP:
            continue
        hlen = np.int64(buf[l4 + 12] >> 4) * 4
        out.frame[row] = frame_base + i + 1
        out.file[row] = file_index
        out.offset[row] = off
        out.ts_ns[row] = rec.ts_ns[i]
        out.caplen[row] = rec.caplen[i]
        out.wirelen[row] = rec.wirelen[i]
        out.ip_version[row] = version
        _put_address(out.src, row, buf, l3 + 12 if version == 4 else l3 + 8, version)
        _put_address(out.dst, row, buf, l3 + 16 if version == 4 else l3 + 24, version)
        out.ttl[row] = buf[l3 + 8] if version == 4 else buf[l3 + 7]
        out.ip_id[row] = ident if version == 4 else 0
        out.ip_checksum[row] = ip_ck
        out.fragmented[row] = False  # rows of rebuilt datagrams are marked by the caller
        out.sport[row] = u16be(buf, l4)
        out.dport[row] = u16be(buf, l4 + 2)
        out.seq[row] = u32be(buf, l4 + 4)
        out.ack[row] = u32be(buf, l4 + 8)
        out.flags[row] = u16be(buf, l4 + 12) & 0x0FFF
        out.window[row] = u16be(buf, l4 + 14)
        out.urgent[row] = u16be(buf, l4 + 18)
        out.tcp_header_len[row] = hlen
        out.payload_offset[row] = l4 + hlen
        out.payload_len[row] = l4_len - hlen
        out.payload_caplen[row] = max(np.int64(0), l4_cap - hlen)
        out.tcp_checksum[row] = _tcp_checksum(buf, buf64, l4, l4_cap, l4_len, pseudo)
        mss, ws, sack, tsp, tsv, tse = _parse_tcp_options(buf, l4 + 20, l4 + min(hlen, l4_cap))
        out.mss[row] = mss
        out.wscale[row] = ws
        out.sack_permitted[row] = sack
        out.ts_present[row] = tsp
        out.ts_val[row] = tsv
        out.ts_ecr[row] = tse
        out.tunnel[row] = t_kind
        if t_kind != E_NONE:  # the other tunnel columns come zeroed (see the docstring)
            out.tunnel_id[row] = t_id
            src_at = t_l3 + 12 if t_version == 4 else t_l3 + 8
            dst_at = t_l3 + 16 if t_version == 4 else t_l3 + 24
            _put_address(out.tunnel_src, row, buf, src_at, t_version)
            _put_address(out.tunnel_dst, row, buf, dst_at, t_version)
        row += 1
    return row
