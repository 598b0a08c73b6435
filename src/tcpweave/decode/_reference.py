"""Plain-Python reference for the decode kernel: same name, arguments, outputs and return.

It is the readable statement of the decoder, written from the RFCs rather than
from ``_kernels``: link header (tcpdump.org/linktypes.html) -> IPv4 (RFC 791) or
IPv6 with its extension headers (RFC 8200) -> TCP (RFC 9293), checksums as the
plain big-endian 16-bit word sum of RFC 1071. It fills the same packet,
status, fragment and counter columns as the kernel and returns the same row
count, so the property tests can compare them exactly. Nothing but the tests
calls it.
"""

from __future__ import annotations

import ipaddress
import struct

# record status, checksum states and counters: the layout shared with decode/__init__.py
S_TCP, S_NON_IP, S_NON_TCP, S_FRAGMENT = 1, 2, 3, 4
S_UNKNOWN_LINK, S_MALFORMED, S_TRUNCATED_HEADER = 5, 6, 7
CK_UNKNOWN, CK_OK, CK_BAD, CK_NONE = 0, 1, 2, 3
C_IP_LEN_BEYOND_FRAME = 0  # the one counter: IP claims more bytes than the frame had

# what _link_to_l3 says besides an IP version
NOT_IP, CUT_SHORT, UNKNOWN_LINK = 0, -1, -2

ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_PPPOE = 0x0800, 0x86DD, 0x8864
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100, 0x9200)  # 802.1Q, 802.1ad and the older QinQ types
MPLS_TYPES = (0x8847, 0x8848)
# tcpdump.org/linktypes/LINKTYPE_NULL.html: AF_INET6 "can be 24, 28, or 30" (NetBSD, OpenBSD
# and BSD/OS; FreeBSD and DragonFly; Darwin). Linux's 10 is not listed: Linux never writes it.
AF_INET6_VALUES = (24, 28, 30)
# RFC 8200 §4 and the IANA list of IPv6 extension headers: hop-by-hop 0, routing 43,
# fragment 44, AH 51, destination options 60, mobility 135, HIP 139, shim6 140
V6_EXTENSION_HEADERS = (0, 43, 44, 51, 60, 135, 139, 140)


def _u8(buf, i: int) -> int:  # type: ignore[no-untyped-def]
    return int(buf[i])


def _u16(buf, i: int) -> int:  # type: ignore[no-untyped-def]
    return struct.unpack_from(">H", buf, i)[0]  # type: ignore[no-any-return]


def _u32(buf, i: int) -> int:  # type: ignore[no-untyped-def]
    return struct.unpack_from(">I", buf, i)[0]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- checksums


def _word_sum(data: bytes) -> int:
    # RFC 1071 §1: "Adjacent octets to be checksummed are paired to form 16-bit integers ...
    # If a segment contains an odd number of octets ... the last octet is padded on the right
    # with zeros to form a 16-bit word for checksum purposes."
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f">{len(data) // 2}H", data))


def _verifies(total: int) -> bool:
    # RFC 1071 §1: "To check a checksum, the 1's complement sum is computed over the same set
    # of octets, including the checksum field. If the result is all 1 bits (-0 in 1's
    # complement arithmetic), the check succeeds."
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


# ---------------------------------------------------------------------------- link layer


def _after_ethertype(buf, pos: int, end: int, ethertype: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Follow VLAN tags, MPLS labels and PPPoE to (IP version or NOT_IP/CUT_SHORT, IP offset)."""
    while ethertype in VLAN_TPIDS:
        # IEEE 802.1Q: a 4-byte tag (TCI, then the encapsulated EtherType)
        if pos + 4 > end:
            return CUT_SHORT, pos
        ethertype = _u16(buf, pos + 2)
        pos += 4
    if ethertype == ETHERTYPE_IPV4:
        return 4, pos
    if ethertype == ETHERTYPE_IPV6:
        return 6, pos
    if ethertype in MPLS_TYPES:
        # RFC 3032 §2.1: 4-byte label stack entries; "S: Bottom of Stack" is bit 8 of byte 2.
        # Nothing names the payload, so the IP version nibble decides.
        while True:
            if pos + 4 > end:
                return CUT_SHORT, pos
            bottom = _u8(buf, pos + 2) & 1
            pos += 4
            if bottom:
                break
        if pos >= end:
            return CUT_SHORT, pos
        nibble = _u8(buf, pos) >> 4
        return (nibble, pos) if nibble in (4, 6) else (NOT_IP, pos)
    if ethertype == ETHERTYPE_PPPOE:
        # RFC 2516 §4: ver/type, code, session id, length (6 bytes), then the PPP protocol
        # (RFC 1661): 0x0021 IPv4, 0x0057 IPv6
        if pos + 8 > end:
            return CUT_SHORT, pos
        proto = _u16(buf, pos + 6)
        return {0x0021: 4, 0x0057: 6}.get(proto, NOT_IP), pos + 8
    return NOT_IP, pos


def _link_to_l3(buf, off: int, caplen: int, linktype: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(IP version or NOT_IP / CUT_SHORT / UNKNOWN_LINK, offset of the IP header)."""
    end = off + caplen
    # LINKTYPE_ETHERNET (1): destination, source, EtherType at byte 12
    # LINKTYPE_LINUX_SLL (113): 16-byte header, protocol type at byte 14
    # LINKTYPE_LINUX_SLL2 (276): 20-byte header, protocol type first
    # LINKTYPE_IPOIB (242, RFC 4391): 20-byte destination and source, type at byte 40
    ethertype_at = {1: (14, 12), 113: (16, 14), 276: (20, 0), 242: (44, 40)}
    if linktype in ethertype_at:
        header_len, type_at = ethertype_at[linktype]
        if caplen < header_len:
            return CUT_SHORT, off
        return _after_ethertype(buf, off + header_len, end, _u16(buf, off + type_at))
    # LINKTYPE_RAW (101) and the DLT_RAW values 12 and 14: IP at once, version in the nibble
    if linktype in (101, 12, 14):
        if caplen < 1:
            return CUT_SHORT, off
        version = _u8(buf, off) >> 4
        return (version, off) if version in (4, 6) else (NOT_IP, off)
    # LINKTYPE_IPV4 (228) and LINKTYPE_IPV6 (229): the version is the link type
    if linktype in (228, 229):
        return (4 if linktype == 228 else 6), off
    # LINKTYPE_NULL (0, host byte order) and LINKTYPE_LOOP (108, network byte order):
    # a 4-byte address family, AF_INET being 2 everywhere
    if linktype in (0, 108):
        if caplen < 4:
            return CUT_SHORT, off
        family = _u32(buf, off)
        if linktype == 0 and family > 0xFFFF:  # written little-endian by the capturing host
            family = struct.unpack_from("<I", buf, off)[0]
        version = 4 if family == 2 else 6 if family in AF_INET6_VALUES else NOT_IP
        return version, off + 4
    return UNKNOWN_LINK, off


# ---------------------------------------------------------------------------------- TCP


def _tcp_options(buf, pos: int, end: int, out, row: int) -> None:  # type: ignore[no-untyped-def]
    # RFC 9293 §3.1: "Options may occupy space at the end of the TCP header ... Case 1: A
    # single octet of option-kind. Case 2: An octet of option-kind, an octet of option-length,
    # and the actual option-data octets." Kind 0 ends the list, kind 1 is a NOP.
    out.mss[row], out.wscale[row], out.sack_permitted[row] = 0, -1, False
    out.ts_present[row], out.ts_val[row], out.ts_ecr[row] = False, 0, 0
    while pos < end:
        kind = _u8(buf, pos)
        if kind == 0:
            break
        if kind == 1:
            pos += 1
            continue
        if pos + 1 >= end:
            break
        length = _u8(buf, pos + 1)
        if length < 2 or pos + length > end:
            break
        if (kind, length) == (2, 4):  # MSS, RFC 9293 §3.2
            out.mss[row] = _u16(buf, pos + 2)
        elif (kind, length) == (3, 3):  # window scale, RFC 7323 §2.2
            out.wscale[row] = min(_u8(buf, pos + 2), 127)
        elif (kind, length) == (4, 2):  # SACK permitted, RFC 2018 §2
            out.sack_permitted[row] = True
        elif (kind, length) == (8, 10):  # timestamps, RFC 7323 §3.2
            out.ts_present[row] = True
            out.ts_val[row], out.ts_ecr[row] = _u32(buf, pos + 2), _u32(buf, pos + 6)
        pos += length


def _tcp(buf, l4: int, l4_cap: int, l4_len: int, pseudo_sum: int, out, row: int) -> int:  # type: ignore[no-untyped-def]
    """Write the TCP columns of ``row``; return a record status."""
    if l4_cap < 20:
        return S_TRUNCATED_HEADER
    # RFC 9293 §3.1: "Data Offset: 4 bits. The number of 32-bit words in the TCP header."
    hlen = (_u8(buf, l4 + 12) >> 4) * 4
    if hlen < 20 or hlen > l4_len:
        return S_MALFORMED
    sport, dport, seq, ack, offset_flags, window, _checksum, urgent = struct.unpack_from(
        ">HHIIHHHH", buf, l4
    )
    out.sport[row], out.dport[row], out.seq[row], out.ack[row] = sport, dport, seq, ack
    out.flags[row] = offset_flags & 0x0FFF  # reserved bits and the 8 control bits (+ AE)
    out.window[row], out.urgent[row], out.tcp_header_len[row] = window, urgent, hlen
    _tcp_options(buf, l4 + 20, l4 + min(hlen, l4_cap), out, row)
    out.payload_offset[row] = l4 + hlen
    out.payload_len[row] = l4_len - hlen
    out.payload_caplen[row] = max(0, min(l4_cap, l4_len) - hlen)
    if l4_cap >= l4_len:
        # RFC 9293 §3.1: "The checksum field is the 16-bit ones' complement of the ones'
        # complement sum of all 16-bit words in the header and text", pseudo-header included
        total = pseudo_sum + _word_sum(bytes(buf[l4 : l4 + l4_len]))
        out.tcp_checksum[row] = CK_OK if _verifies(total) else CK_BAD
    else:
        out.tcp_checksum[row] = CK_UNKNOWN  # not all of the segment was captured
    return S_TCP


# ---------------------------------------------------------------------------------- IP


def _mapped(v4: ipaddress.IPv4Address) -> bytes:
    # RFC 4291 §2.5.5.2: IPv4-mapped IPv6 address ::ffff:a.b.c.d
    return ipaddress.IPv6Address(f"::ffff:{v4}").packed


def _v4_address(buf, i: int) -> bytes:  # type: ignore[no-untyped-def]
    return _mapped(ipaddress.IPv4Address(bytes(buf[i : i + 4])))


def _v6_address(buf, i: int) -> bytes:  # type: ignore[no-untyped-def]
    return ipaddress.IPv6Address(bytes(buf[i : i + 16])).packed


def _put_fragment(frags, fields: dict) -> None:  # type: ignore[no-untyped-def]
    """Append one row to the fragment columns; count it even when they are full."""
    k = int(frags.count[0])
    frags.count[1] += 1
    if k < len(frags.frame):
        for name, value in fields.items():
            getattr(frags, name)[k] = list(value) if isinstance(value, bytes) else value
        frags.count[0] = k + 1


def _ipv4(buf, l3, cap_end, wire_end, out, row, frags, counters, frame, ts_ns) -> int:  # type: ignore[no-untyped-def]
    if l3 + 20 > cap_end:
        return S_TRUNCATED_HEADER
    # RFC 791 §3.1: Version (4 bits), IHL "the length of the internet header in 32 bit words
    # ... the minimum value for a correct header is 5"
    version, ihl = _u8(buf, l3) >> 4, (_u8(buf, l3) & 0x0F) * 4
    if version != 4 or ihl < 20:
        return S_MALFORMED
    if l3 + ihl > cap_end:
        return S_TRUNCATED_HEADER
    _vihl, _tos, total, ident, flags_offset, ttl, proto = struct.unpack_from(">BBHHHBB", buf, l3)
    if total == 0:  # segmentation offload: the NIC fills the length in after capture
        total = wire_end - l3
    if total < ihl:
        return S_MALFORMED
    if l3 + total > wire_end:
        counters[C_IP_LEN_BEYOND_FRAME] += 1
        total = wire_end - l3
    # RFC 791 §3.1: "The checksum field is the 16 bit one's complement of the one's complement
    # sum of all 16 bit words in the header."
    ip_ck = CK_OK if _verifies(_word_sum(bytes(buf[l3 : l3 + ihl]))) else CK_BAD
    # Flags: bit 2 "MF"; Fragment Offset: 13 bits, "measured in units of 8 octets"
    more = bool(flags_offset & 0x2000)
    frag_offset = (flags_offset & 0x1FFF) * 8
    l4, l4_len = l3 + ihl, total - ihl
    l4_cap = max(0, min(cap_end - l4, l4_len))
    src, dst = _v4_address(buf, l3 + 12), _v4_address(buf, l3 + 16)
    if more or frag_offset:
        # pseudo_dst: where the pseudo-header's destination address is (RFC 9293 §3.1)
        fields = dict(
            frame=frame,
            ts_ns=ts_ns,
            version=4,
            src=src,
            dst=dst,
            ident=ident,
            proto=proto,
            frag_offset=frag_offset,
            more=more,
            header_offset=l3,
            header_len=ihl,
            data_offset=l4,
            data_len=l4_len,
            data_caplen=l4_cap,
            ttl=ttl,
            ip_checksum=ip_ck,
            pseudo_dst=l3 + 16,
        )
        _put_fragment(frags, fields)
        return S_FRAGMENT
    if proto != 6:
        return S_NON_TCP
    # RFC 9293 §3.1 pseudo-header: source address, destination address, zero, PTCL, TCP
    # length. A TSO super-packet's length may exceed 16 bits; both halves are summed.
    pseudo = _word_sum(bytes(buf[l3 + 12 : l3 + 20])) + 6 + (l4_len >> 16) + (l4_len & 0xFFFF)
    st = _tcp(buf, l4, l4_cap, l4_len, pseudo, out, row)
    if st == S_TCP:
        out.ip_version[row], out.ttl[row], out.ip_id[row] = 4, ttl, ident
        out.src[row], out.dst[row] = list(src), list(dst)
        out.fragmented[row], out.ip_checksum[row] = False, ip_ck
    return st


def _routing_final_destination(buf, p: int, hlen: int) -> int:  # type: ignore[no-untyped-def]
    """Offset of the final destination a routing header names, or -1 (RFC 8200 §8.1)."""
    # RFC 8200 §8.1: "If the IPv6 packet contains a Routing header, the Destination Address
    # used in the pseudo-header is that of the final destination."
    _next, _len, routing_type, segments_left = struct.unpack_from(">BBBB", buf, p)
    if segments_left == 0:  # already at the final destination: the packet's own address
        return -1
    if routing_type in (0, 2):  # RFC 2460 type 0, RFC 6275 type 2: addresses from byte 8
        n_addresses = (hlen - 8) // 16
        return p + 8 + (n_addresses - 1) * 16 if n_addresses > 0 else -1
    if routing_type == 4 and hlen >= 24:  # RFC 8754 §2: "Segment List[0] ... last segment"
        return p + 8
    return -1


def _jumbo_length(buf, p: int, hlen: int) -> int:  # type: ignore[no-untyped-def]
    """The first Jumbo Payload option's length in a hop-by-hop header, or 0 (RFC 2675 §2)."""
    # RFC 8200 §4.2 options are type, length, data; Pad1 (type 0) is a single byte.
    # RFC 2675 §2: Jumbo Payload is option type 0xC2, Opt Data Len 4, a 32-bit length.
    q = p + 2
    while q + 2 <= p + hlen:
        opt = _u8(buf, q)
        if opt == 0:
            q += 1
            continue
        olen = _u8(buf, q + 1)
        if opt == 0xC2 and olen == 4 and q + 6 <= p + hlen:
            return _u32(buf, q + 2)
        q += 2 + olen
    return 0


def _ipv6(buf, l3, cap_end, wire_end, out, row, frags, counters, frame, ts_ns) -> int:  # type: ignore[no-untyped-def]
    if l3 + 40 > cap_end:
        return S_TRUNCATED_HEADER
    if _u8(buf, l3) >> 4 != 6:
        return S_MALFORMED
    # RFC 8200 §3: version/class/flow (32), Payload Length (16), Next Header (8), Hop Limit (8),
    # Source Address (128), Destination Address (128)
    _vcf, plen, nh, hop_limit = struct.unpack_from(">IHBB", buf, l3)
    p, pseudo_dst, jumbo = l3 + 40, l3 + 24, 0
    fragment = None
    while nh in V6_EXTENSION_HEADERS:
        if p + 8 > cap_end:
            return S_TRUNCATED_HEADER
        if nh == 44:
            # RFC 8200 §4.5: Next Header, Reserved, Fragment Offset (13 bits, 8-octet units)
            # Res M, Identification (32)
            nxt, _res, offset_m, ident = struct.unpack_from(">BBHI", buf, p)
            nh, p = nxt, p + 8
            if offset_m & 0xFFF8 or offset_m & 1:
                fragment = (offset_m & 0xFFF8, bool(offset_m & 1), ident)
                break
            continue  # RFC 6946: an atomic fragment is processed as a whole packet
        # RFC 8200 §4.3-4.6: "Hdr Ext Len: 8-bit unsigned integer. Length of the ... header
        # in 8-octet units, not including the first 8 octets"; RFC 4302 §2.2: AH's is in
        # 4-octet units minus 2
        hlen = (_u8(buf, p + 1) + 2) * 4 if nh == 51 else (_u8(buf, p + 1) + 1) * 8
        if p + hlen > cap_end:
            return S_TRUNCATED_HEADER
        if nh == 0:
            jumbo = _jumbo_length(buf, p, hlen)  # the last hop-by-hop header decides
        elif nh == 43:
            final = _routing_final_destination(buf, p, hlen)
            if final >= 0:
                pseudo_dst = final
        nh, p = _u8(buf, p), p + hlen
    if plen == 0:
        # RFC 2675 §3: Payload Length 0 with a Jumbo Payload option; otherwise offloaded
        plen = jumbo if jumbo > 0 else wire_end - l3 - 40
    end = min(l3 + 40 + plen, wire_end)
    if p > end:  # the extension headers alone overrun the payload length
        return S_MALFORMED
    counters[C_IP_LEN_BEYOND_FRAME] += l3 + 40 + plen > wire_end
    l4_len = end - p
    l4_cap = max(0, min(cap_end - p, l4_len))
    src, dst = _v6_address(buf, l3 + 8), _v6_address(buf, l3 + 24)
    if fragment is not None:
        frag_offset, more, ident = fragment
        fields = dict(
            frame=frame,
            ts_ns=ts_ns,
            version=6,
            src=src,
            dst=dst,
            ident=ident,
            proto=nh,
            frag_offset=frag_offset,
            more=more,
            header_offset=l3,
            header_len=p - l3,
            data_offset=p,
            data_len=l4_len,
            data_caplen=l4_cap,
            ttl=hop_limit,
            ip_checksum=CK_NONE,
            pseudo_dst=pseudo_dst,
        )
        _put_fragment(frags, fields)
        return S_FRAGMENT
    if nh != 6:
        return S_NON_TCP
    # RFC 8200 §8.1 pseudo-header: Source Address, Destination Address (final), Upper-Layer
    # Packet Length (32 bits), zero (24 bits), Next Header
    pseudo_bytes = bytes(buf[l3 + 8 : l3 + 24]) + bytes(buf[pseudo_dst : pseudo_dst + 16])
    pseudo = _word_sum(pseudo_bytes + struct.pack(">IxxxB", l4_len, 6))
    st = _tcp(buf, p, l4_cap, l4_len, pseudo, out, row)
    if st == S_TCP:
        out.ip_version[row], out.ttl[row], out.ip_id[row] = 6, hop_limit, 0
        out.src[row], out.dst[row] = list(src), list(dst)
        out.fragmented[row], out.ip_checksum[row] = False, CK_NONE  # IPv6 has no header checksum
    return st


def decode_records(buf, buf64, rec, file_index, frame_base, out, row0, status, frags, counters):  # type: ignore[no-untyped-def]
    """Decode every record; TCP rows go to ``out`` from ``row0``, fragments to ``frags``.

    Returns the row after the last one written.

    ``buf64`` (the kernel's fast checksum view) is not needed here.
    """
    row = row0
    for i in range(len(rec.offset)):
        off, caplen, wirelen = int(rec.offset[i]), int(rec.caplen[i]), int(rec.wirelen[i])
        version, l3 = _link_to_l3(buf, off, caplen, int(rec.linktype[i]))
        if version in (UNKNOWN_LINK, CUT_SHORT, NOT_IP):
            status[i] = {UNKNOWN_LINK: S_UNKNOWN_LINK, CUT_SHORT: S_TRUNCATED_HEADER}.get(
                version, S_NON_IP
            )
            continue
        decode_ip = _ipv4 if version == 4 else _ipv6
        frame = frame_base + i + 1  # frames are numbered from 1, as Wireshark does
        st = decode_ip(
            buf, l3, off + caplen, off + wirelen, out, row, frags, counters, frame, rec.ts_ns[i]
        )
        status[i] = st
        if st != S_TCP:
            continue
        out.frame[row], out.file[row], out.offset[row] = frame, file_index, off
        out.ts_ns[row], out.caplen[row], out.wirelen[row] = rec.ts_ns[i], caplen, wirelen
        row += 1
    return row
