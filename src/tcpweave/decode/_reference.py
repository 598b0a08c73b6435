"""Plain-Python reference for the decode kernel: same name, arguments, outputs and return.

It is the readable statement of the decoder, written from the RFCs rather than
from ``_kernels``: link header (tcpdump.org/linktypes.html) -> IPv4 (RFC 791) or
IPv6 with its extension headers (RFC 8200) -> TCP (RFC 9293), opening the tunnels
of docs/encapsulations.md on the way (each with its spec), checksums as the
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
C_IP_LEN_BEYOND_FRAME = 0  # IP claims more bytes than the frame had
C_ENCAP = 4  # counters[C_ENCAP + kind]: frames that went through an encapsulation
# encapsulations, numbered as tcpweave.enums.Encapsulation; the rules: docs/encapsulations.md
E_NONE, E_IPIP, E_GRE, E_VXLAN, E_GENEVE, E_GTPU, E_TEREDO, E_AYIYA, E_ERSPAN = range(9)
E_PBB, E_FABRICPATH, E_VNTAG, E_ETAG, E_EOMPLS, E_LLC_SNAP = range(9, 15)
MAX_TUNNEL_DEPTH = 8  # nested encapsulations opened per frame
ETH_TEB = 0x6558  # RFC 1701 "transparent Ethernet bridging": a whole Ethernet frame follows

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


def _after_ethertype(buf, pos: int, end: int, ethertype: int) -> tuple[int, int, set[int]]:  # type: ignore[no-untyped-def]
    """Follow link headers from ``ethertype`` at ``pos``: (IP version or NOT_IP/CUT_SHORT, IP
    offset, the link-layer encapsulations met)."""
    seen: set[int] = set()
    # a header's length and where its next EtherType is, for the tags that only get skipped:
    # IEEE 802.1Q/802.1ad tags (TCI, type); an Ethernet frame (DA, SA, type) as after GRE's
    # transparent bridging (RFC 1701) or VXLAN (RFC 7348 §5); IEEE 802.1ah I-TAG (flags and
    # I-SID, C-DA, C-SA, type); Cisco VN-Tag (4 bytes, type); IEEE 802.1BR E-TAG (6 bytes,
    # type); Cisco FabricPath (FTag and TTL, then the classical DA, SA, type)
    skips = {t: (4, 2) for t in VLAN_TPIDS}
    skips.update({ETH_TEB: (14, 12), 0x88E7: (18, 16), 0x8926: (6, 4), 0x893F: (8, 6)})
    skips[0x8903] = (16, 14)
    counted = {0x88E7: E_PBB, 0x8926: E_VNTAG, 0x893F: E_ETAG, 0x8903: E_FABRICPATH}
    while True:
        if ethertype == ETHERTYPE_IPV4:
            return 4, pos, seen
        if ethertype == ETHERTYPE_IPV6:
            return 6, pos, seen
        if ethertype in skips:
            length, type_at = skips[ethertype]
            if pos + length > end:
                return CUT_SHORT, pos, seen
            if ethertype in counted:
                seen.add(counted[ethertype])
            ethertype, pos = _u16(buf, pos + type_at), pos + length
        elif ethertype in MPLS_TYPES:
            # RFC 3032 §2.1: 4-byte label stack entries; "S: Bottom of Stack" is bit 8 of
            # byte 2. Nothing names the payload: the first nibble decides, 4 or 6 for IP, and
            # 0 for the RFC 4448 §4.6 control word of an Ethernet pseudowire.
            while True:
                if pos + 4 > end:
                    return CUT_SHORT, pos, seen
                bottom = _u8(buf, pos + 2) & 1
                pos += 4
                if bottom:
                    break
            if pos >= end:
                return CUT_SHORT, pos, seen
            nibble = _u8(buf, pos) >> 4
            if nibble in (4, 6):
                return nibble, pos, seen
            if nibble != 0:
                return NOT_IP, pos, seen
            seen.add(E_EOMPLS)
            ethertype, pos = ETH_TEB, pos + 4
        elif ethertype == ETHERTYPE_PPPOE:
            # RFC 2516 §4: ver/type, code, session id, length (6 bytes), then the PPP protocol
            # (RFC 1661): 0x0021 IPv4, 0x0057 IPv6
            if pos + 8 > end:
                return CUT_SHORT, pos, seen
            proto = _u16(buf, pos + 6)
            return {0x0021: 4, 0x0057: 6}.get(proto, NOT_IP), pos + 8, seen
        elif ethertype < 0x0600:
            # IEEE 802.3: a length, not a type; IEEE 802.2 LLC follows. Only SNAP (DSAP and
            # SSAP 0xAA, UI 0x03) with OUI 00-00-00 (RFC 1042) or 00-00-F8 (802.1H) names an
            # EtherType, in its last two bytes.
            if pos + 8 > end:
                return CUT_SHORT, pos, seen
            snap = bytes(buf[pos : pos + 6])
            if snap not in (b"\xaa\xaa\x03\x00\x00\x00", b"\xaa\xaa\x03\x00\x00\xf8"):
                return NOT_IP, pos, seen
            seen.add(E_LLC_SNAP)
            ethertype, pos = _u16(buf, pos + 6), pos + 8
        else:
            return NOT_IP, pos, seen


def _link_to_l3(buf, off: int, caplen: int, linktype: int) -> tuple[int, int, set[int]]:  # type: ignore[no-untyped-def]
    """(IP version or NOT_IP / CUT_SHORT / UNKNOWN_LINK, IP header offset, encapsulations)."""
    end = off + caplen
    # LINKTYPE_ETHERNET (1): destination, source, EtherType at byte 12
    # LINKTYPE_LINUX_SLL (113): 16-byte header, protocol type at byte 14
    # LINKTYPE_LINUX_SLL2 (276): 20-byte header, protocol type first
    # LINKTYPE_IPOIB (242, RFC 4391): 20-byte destination and source, type at byte 40
    # LINKTYPE_C_HDLC (104): address, control, EtherType
    ethertype_at = {1: (14, 12), 113: (16, 14), 276: (20, 0), 242: (44, 40), 104: (4, 2)}
    if linktype in ethertype_at:
        header_len, type_at = ethertype_at[linktype]
        if caplen < header_len:
            return CUT_SHORT, off, set()
        return _after_ethertype(buf, off + header_len, end, _u16(buf, off + type_at))
    # LINKTYPE_FDDI (10): frame control, destination, source (13 bytes), then 802.2 LLC;
    # LINKTYPE_ATM_RFC1483 (100): LLC at once (RFC 2684). Type 0 is "a length: LLC".
    if linktype in (10, 100):
        start = off + 13 if linktype == 10 else off
        if start > end:
            return CUT_SHORT, off, set()
        return _after_ethertype(buf, start, end, 0)
    # LINKTYPE_PPP (9), LINKTYPE_PPP_HDLC (50): RFC 1662 §3.1 address 0xFF and control 0x03
    # (optional on 9), then the PPP protocol (RFC 1661 §2)
    if linktype in (9, 50):
        pos = off + 2 if bytes(buf[off : min(off + 2, end)]) == b"\xff\x03" else off
        if pos + 2 > end:
            return CUT_SHORT, off, set()
        return {0x0021: 4, 0x0057: 6}.get(_u16(buf, pos), NOT_IP), pos + 2, set()
    # LINKTYPE_RAW (101) and the DLT_RAW values 12 and 14: IP at once, version in the nibble
    if linktype in (101, 12, 14):
        if caplen < 1:
            return CUT_SHORT, off, set()
        version = _u8(buf, off) >> 4
        return (version, off, set()) if version in (4, 6) else (NOT_IP, off, set())
    # LINKTYPE_IPV4 (228) and LINKTYPE_IPV6 (229): the version is the link type
    if linktype in (228, 229):
        return (4 if linktype == 228 else 6), off, set()
    # LINKTYPE_NULL (0, host byte order) and LINKTYPE_LOOP (108, network byte order):
    # a 4-byte address family, AF_INET being 2 everywhere
    if linktype in (0, 108):
        if caplen < 4:
            return CUT_SHORT, off, set()
        family = _u32(buf, off)
        if linktype == 0 and family > 0xFFFF:  # written little-endian by the capturing host
            family = struct.unpack_from("<I", buf, off)[0]
        version = 4 if family == 2 else 6 if family in AF_INET6_VALUES else NOT_IP
        return version, off + 4, set()
    return UNKNOWN_LINK, off, set()


# ------------------------------------------------------------------------- tunnels

# what _decapsulate says in place of an EtherType
TUNNEL_CUT_SHORT, TUNNEL_NOT_IP = -1, 0


def _ip_type_by_nibble(buf, pos: int, end: int) -> int:  # type: ignore[no-untyped-def]
    if pos >= end:
        return TUNNEL_CUT_SHORT
    return {4: ETHERTYPE_IPV4, 6: ETHERTYPE_IPV6}.get(_u8(buf, pos) >> 4, TUNNEL_NOT_IP)


def _gre(buf, pos: int, end: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    # RFC 2784 §2.1: C (bit 0), Reserved0 (bits 1-12), Ver (bits 13-15), Protocol Type; RFC
    # 2890 §2: K (bit 2) and S (bit 3), then Checksum+Reserved1 if C, Key if K, Sequence
    # Number if S. Bit 1 (RFC 1701's routing) and versions above 1 are not opened; version
    # 1 is PPTP's enhanced GRE.
    if pos + 4 > end:
        return E_GRE, 0, TUNNEL_CUT_SHORT, pos
    flags, proto = struct.unpack_from(">HH", buf, pos)
    if flags & 0x4000 or flags & 0x0007 > 1:
        return E_NONE, 0, TUNNEL_NOT_IP, pos
    if flags & 0x0007 == 1:
        return _pptp_gre(buf, pos, end, flags, proto)
    has_checksum, has_key, has_seq = (
        bool(flags & 0x8000),
        bool(flags & 0x2000),
        bool(flags & 0x1000),
    )
    key_at = pos + 4 + 4 * has_checksum
    p = key_at + 4 * has_key + 4 * has_seq
    if p > end:
        return E_GRE, 0, TUNNEL_CUT_SHORT, pos
    key = _u32(buf, key_at) if has_key else 0
    # draft-foschiano-erspan: type I has no sequence number and no header; type II
    # (0x88BE with S) an 8-byte header; type III (0x22EB) 12 bytes, and an 8-byte platform
    # specific subheader when its last bit (O) is set. Session ID: low 10 bits of bytes 2-3.
    if proto == 0x88BE and not has_seq:
        return E_ERSPAN, 0, ETH_TEB, p
    if proto in (0x88BE, 0x22EB):
        fixed = 8 if proto == 0x88BE else 12
        if p + fixed > end:
            return E_ERSPAN, 0, TUNNEL_CUT_SHORT, p
        length = 20 if proto == 0x22EB and _u8(buf, p + 11) & 1 else fixed
        return E_ERSPAN, _u16(buf, p + 2) & 0x3FF, ETH_TEB, p + length
    return E_GRE, key, proto, p


def _pptp_gre(buf, pos: int, end: int, flags: int, proto: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    # RFC 2637 §4.1 enhanced GRE: K set, Protocol Type 0x880B (PPP); Key is Payload Length
    # (16 bits) and Call ID (16); Sequence Number present if S, Acknowledgment Number if A
    # (bit 8). A payload length of 0 is an acknowledgment with no PPP frame.
    if proto != 0x880B or not flags & 0x2000:
        return E_NONE, 0, TUNNEL_NOT_IP, pos
    p = pos + 8 + 4 * bool(flags & 0x1000) + 4 * bool(flags & 0x0080)
    if p > end:
        return E_GRE, 0, TUNNEL_CUT_SHORT, pos
    payload_len, call_id = struct.unpack_from(">HH", buf, pos + 4)
    if payload_len == 0:
        return E_GRE, call_id, TUNNEL_NOT_IP, p
    # RFC 1662 §3.1: address 0xFF and control 0x03, unless compressed away (RFC 1661 §6.6);
    # RFC 1661 §6.5: a protocol field compressed to one byte is told by its odd value
    if bytes(buf[p : min(p + 2, end)]) == b"\xff\x03":
        p += 2
    if p >= end:
        return E_GRE, call_id, TUNNEL_CUT_SHORT, p
    width = 1 if _u8(buf, p) & 1 else 2
    if p + width > end:
        return E_GRE, call_id, TUNNEL_CUT_SHORT, p
    ppp = _u8(buf, p) if width == 1 else _u16(buf, p)
    return E_GRE, call_id, {0x21: ETHERTYPE_IPV4, 0x57: ETHERTYPE_IPV6}.get(ppp, 0), p + width


def _gtpu(buf, pos: int, end: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    # 3GPP TS 29.281 §5.1: Version (3 bits, 1), PT (1), spare, E, S, PN; Message Type (255 is
    # G-PDU, carrying a T-PDU); Length; TEID. If any of E, S, PN: Sequence Number (16), N-PDU
    # Number (8), Next Extension Header Type (8). §5.2: each extension header starts with its
    # length in 4-octet units and ends with the next one's type (0: no more).
    if pos + 8 > end:
        return E_GTPU, 0, TUNNEL_CUT_SHORT, pos
    flags, message_type, _length, teid = struct.unpack_from(">BBHI", buf, pos)
    if flags >> 5 != 1 or not flags & 0x10 or message_type != 0xFF:
        return E_GTPU, teid, TUNNEL_NOT_IP, pos
    p = pos + 8
    if flags & 0x07:
        if p + 4 > end:
            return E_GTPU, teid, TUNNEL_CUT_SHORT, pos
        next_type = _u8(buf, p + 3) if flags & 0x04 else 0
        p += 4
        while next_type:
            if p >= end or _u8(buf, p) == 0:
                return E_GTPU, teid, TUNNEL_CUT_SHORT, pos
            p += _u8(buf, p) * 4
            if p > end:
                return E_GTPU, teid, TUNNEL_CUT_SHORT, pos
            next_type = _u8(buf, p - 1)
    return E_GTPU, teid, _ip_type_by_nibble(buf, p, end), p


def _teredo(buf, pos: int, end: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    # RFC 4380 §5.1.1: an optional authentication indicator (0x0001, ID-len, AU-len, client
    # identifier, authentication value, 8-octet nonce, confirmation byte), then an optional
    # origin indication (0x0000, obfuscated port and address: 8 octets), then IPv6
    p = pos
    if p + 4 <= end and _u16(buf, p) == 1:
        p += 4 + _u8(buf, p + 2) + _u8(buf, p + 3) + 8 + 1
    if p + 2 <= end and _u16(buf, p) == 0:
        p += 8
    return E_TEREDO, 0, _ip_type_by_nibble(buf, p, end), p


def _ayiya(buf, pos: int, end: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    # draft-massar-v6ops-ayiya §5: IdLen (4 bits) IdType, SigLen (4 bits, 4-octet units)
    # HshMeth, AutMeth OpCode (4 bits; 1 is "forward": a packet follows), Next Header (an
    # IP protocol number), Epoch Time (32), Identity (2^IdLen octets), Signature
    if pos + 8 > end:
        return E_AYIYA, 0, TUNNEL_CUT_SHORT, pos
    if _u8(buf, pos + 2) & 0x0F != 1:
        return E_AYIYA, 0, TUNNEL_NOT_IP, pos
    p = pos + 8 + (1 << (_u8(buf, pos) >> 4)) + (_u8(buf, pos + 1) >> 4) * 4
    return E_AYIYA, 0, {4: ETHERTYPE_IPV4, 41: ETHERTYPE_IPV6}.get(_u8(buf, pos + 3), 0), p


def _udp_tunnel(buf, pos: int, end: int, port: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    if port in (4789, 6081):
        kind = E_VXLAN if port == 4789 else E_GENEVE
        if pos + 8 > end:
            return kind, 0, TUNNEL_CUT_SHORT, pos
        vni = _u32(buf, pos + 4) >> 8
        if port == 4789:
            # RFC 7348 §5: flags (8), reserved (24), VNI (24), reserved (8); an Ethernet frame
            return E_VXLAN, vni, ETH_TEB, pos + 8
        # RFC 8926 §3.4: Ver (2), Opt Len (6, in 4-byte multiples), O, C, Rsvd (6), Protocol
        # Type (an EtherType), VNI (24), Reserved (8), then the options
        opt_len = (_u8(buf, pos) & 0x3F) * 4
        return E_GENEVE, vni, _u16(buf, pos + 2), pos + 8 + opt_len
    if port == 4790:
        # draft-ietf-nvo3-vxlan-gpe: flags (8), reserved (16), Next Protocol (8: 1 IPv4,
        # 2 IPv6, 3 Ethernet, 4 NSH, 5 MPLS), VNI (24), reserved (8)
        if pos + 8 > end:
            return E_VXLAN, 0, TUNNEL_CUT_SHORT, pos
        next_type = {1: ETHERTYPE_IPV4, 2: ETHERTYPE_IPV6, 3: ETH_TEB, 5: MPLS_TYPES[0]}
        vni = _u32(buf, pos + 4) >> 8
        return E_VXLAN, vni, next_type.get(_u8(buf, pos + 3), TUNNEL_NOT_IP), pos + 8
    handlers = {2152: _gtpu, 3544: _teredo, 5072: _ayiya}
    if port in handlers:
        return handlers[port](buf, pos, end)  # type: ignore[no-any-return]
    return E_NONE, 0, TUNNEL_NOT_IP, pos


def _decapsulate(buf, proto: int, pos: int, end: int) -> tuple[int, int, int, int]:  # type: ignore[no-untyped-def]
    """(encapsulation or E_NONE, id, EtherType or TUNNEL_*, offset) of a non-TCP IP payload."""
    if proto in (4, 41):  # RFC 2003 IPv4 in IP; RFC 4213 §3 / RFC 2473 IPv6 in IP
        return E_IPIP, 0, ETHERTYPE_IPV4 if proto == 4 else ETHERTYPE_IPV6, pos
    if proto == 47:
        return _gre(buf, pos, end)
    if proto == 17 and pos + 8 <= end:
        # RFC 768 header; the tunnel is named by a well-known port, the lower of the two tried
        # first as Wireshark does (epan/dissectors/packet-udp.c, decode_udp_ports)
        ports = sorted(struct.unpack_from(">HH", buf, pos))
        for port in ports:
            found = _udp_tunnel(buf, pos + 8, end, port)
            if found[0] != E_NONE:
                return found
    return E_NONE, 0, TUNNEL_NOT_IP, pos


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


def _ipv4(
    buf, l3, cap_end, wire_end, out, row, frags, counters, frame, ts_ns
) -> tuple[int, tuple[int, int, int, int] | None]:  # type: ignore[no-untyped-def]
    if l3 + 20 > cap_end:
        return S_TRUNCATED_HEADER, None
    # RFC 791 §3.1: Version (4 bits), IHL "the length of the internet header in 32 bit words
    # ... the minimum value for a correct header is 5"
    version, ihl = _u8(buf, l3) >> 4, (_u8(buf, l3) & 0x0F) * 4
    if version != 4 or ihl < 20:
        return S_MALFORMED, None
    if l3 + ihl > cap_end:
        return S_TRUNCATED_HEADER, None
    _vihl, _tos, total, ident, flags_offset, ttl, proto = struct.unpack_from(">BBHHHBB", buf, l3)
    if total == 0:  # segmentation offload: the NIC fills the length in after capture
        total = wire_end - l3
    if total < ihl:
        return S_MALFORMED, None
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
        return S_FRAGMENT, None
    if proto != 6:
        return S_NON_TCP, (proto, l4, l4_cap, l4_len)
    # RFC 9293 §3.1 pseudo-header: source address, destination address, zero, PTCL, TCP
    # length. A TSO super-packet's length may exceed 16 bits; both halves are summed.
    pseudo = _word_sum(bytes(buf[l3 + 12 : l3 + 20])) + 6 + (l4_len >> 16) + (l4_len & 0xFFFF)
    st = _tcp(buf, l4, l4_cap, l4_len, pseudo, out, row)
    if st == S_TCP:
        out.ip_version[row], out.ttl[row], out.ip_id[row] = 4, ttl, ident
        out.src[row], out.dst[row] = list(src), list(dst)
        out.fragmented[row], out.ip_checksum[row] = False, ip_ck
    return st, None


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


def _ipv6(
    buf, l3, cap_end, wire_end, out, row, frags, counters, frame, ts_ns
) -> tuple[int, tuple[int, int, int, int] | None]:  # type: ignore[no-untyped-def]
    if l3 + 40 > cap_end:
        return S_TRUNCATED_HEADER, None
    if _u8(buf, l3) >> 4 != 6:
        return S_MALFORMED, None
    # RFC 8200 §3: version/class/flow (32), Payload Length (16), Next Header (8), Hop Limit (8),
    # Source Address (128), Destination Address (128)
    _vcf, plen, nh, hop_limit = struct.unpack_from(">IHBB", buf, l3)
    p, pseudo_dst, jumbo = l3 + 40, l3 + 24, 0
    fragment = None
    while nh in V6_EXTENSION_HEADERS:
        if p + 8 > cap_end:
            return S_TRUNCATED_HEADER, None
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
            return S_TRUNCATED_HEADER, None
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
        return S_MALFORMED, None
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
        return S_FRAGMENT, None
    if nh != 6:
        return S_NON_TCP, (nh, p, l4_cap, l4_len)
    # RFC 8200 §8.1 pseudo-header: Source Address, Destination Address (final), Upper-Layer
    # Packet Length (32 bits), zero (24 bits), Next Header
    pseudo_bytes = bytes(buf[l3 + 8 : l3 + 24]) + bytes(buf[pseudo_dst : pseudo_dst + 16])
    pseudo = _word_sum(pseudo_bytes + struct.pack(">IxxxB", l4_len, 6))
    st = _tcp(buf, p, l4_cap, l4_len, pseudo, out, row)
    if st == S_TCP:
        out.ip_version[row], out.ttl[row], out.ip_id[row] = 6, hop_limit, 0
        out.src[row], out.dst[row] = list(src), list(dst)
        out.fragmented[row], out.ip_checksum[row] = False, CK_NONE  # IPv6 has no header checksum
    return st, None


def _put_tunnel(buf, out, row: int, tunnel: tuple[int, int, int, int] | None) -> None:  # type: ignore[no-untyped-def]
    if tunnel is None:  # the other tunnel columns are left as the caller zeroed them
        out.tunnel[row] = E_NONE
        return
    kind, ident, version, l3 = tunnel
    out.tunnel[row], out.tunnel_id[row] = kind, ident
    read = _v4_address if version == 4 else _v6_address
    src_at, dst_at = (l3 + 12, l3 + 16) if version == 4 else (l3 + 8, l3 + 24)
    out.tunnel_src[row], out.tunnel_dst[row] = list(read(buf, src_at)), list(read(buf, dst_at))


def decode_records(buf, buf64, rec, file_index, frame_base, out, row0, status, frags, counters):  # type: ignore[no-untyped-def]
    """Decode every record; TCP rows go to ``out`` from ``row0``, fragments to ``frags``.

    Returns the row after the last one written.

    ``buf64`` (the kernel's fast checksum view) is not needed here.
    """
    row = row0
    for i in range(len(rec.offset)):
        off, caplen, wirelen = int(rec.offset[i]), int(rec.caplen[i]), int(rec.wirelen[i])
        version, l3, seen = _link_to_l3(buf, off, caplen, int(rec.linktype[i]))
        for kind in seen:
            counters[C_ENCAP + kind] += 1
        if version in (UNKNOWN_LINK, CUT_SHORT, NOT_IP):
            status[i] = {UNKNOWN_LINK: S_UNKNOWN_LINK, CUT_SHORT: S_TRUNCATED_HEADER}.get(
                version, S_NON_IP
            )
            continue
        frame = frame_base + i + 1  # frames are numbered from 1, as Wireshark does
        cap_end, wire_end = off + caplen, off + wirelen
        tunnel = None  # the innermost IP tunnel: (kind, id, outer IP version, outer offset)
        for _depth in range(MAX_TUNNEL_DEPTH):
            decode_ip = _ipv4 if version == 4 else _ipv6
            st, payload = decode_ip(
                buf, l3, cap_end, wire_end, out, row, frags, counters, frame, rec.ts_ns[i]
            )
            if payload is None:
                break
            proto, l4, l4_cap, l4_len = payload
            kind, ident, ethertype, pos = _decapsulate(buf, proto, l4, l4 + l4_cap)
            if kind == E_NONE:
                break
            counters[C_ENCAP + kind] += 1
            tunnel = (kind, ident, version, l3)
            cap_end, wire_end = l4 + l4_cap, l4 + l4_len  # the inner packet ends with the outer
            if ethertype in (TUNNEL_CUT_SHORT, TUNNEL_NOT_IP):
                st = S_TRUNCATED_HEADER if ethertype == TUNNEL_CUT_SHORT else S_NON_TCP
                break
            version, l3, seen = _after_ethertype(buf, pos, cap_end, ethertype)
            for link_kind in seen:
                counters[C_ENCAP + link_kind] += 1
            if version in (NOT_IP, CUT_SHORT):
                st = S_TRUNCATED_HEADER if version == CUT_SHORT else S_NON_TCP
                break
        status[i] = st
        if st != S_TCP:
            continue
        out.frame[row], out.file[row], out.offset[row] = frame, file_index, off
        out.ts_ns[row], out.caplen[row], out.wirelen[row] = rec.ts_ns[i], caplen, wirelen
        _put_tunnel(buf, out, row, tunnel)
        row += 1
    return row
