"""Named states used in tables and outputs: one IntEnum each, with its string."""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from tcpweave import _lazy
from tcpweave.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
else:  # imported when a method below first needs it: the command line starts without it
    np = _lazy.module("numpy")

__all__ = [
    "Checksum",
    "ChecksumMode",
    "Close",
    "ConnState",
    "Encapsulation",
    "Fate",
    "FollowMode",
    "GapReason",
    "LinkType",
    "Policy",
    "parse_option",
]


class Checksum(IntEnum):
    """Result of verifying a checksum (packet-table columns ``ip_checksum``, ``tcp_checksum``)."""

    UNKNOWN = 0  # not all covered bytes were captured, so it could not be verified
    OK = 1
    BAD = 2
    NONE = 3  # the header has no checksum (IPv6)

    def __str__(self) -> str:
        return self.name.lower()


class LinkType(IntEnum):
    """LINKTYPE_* values tcpweave decodes (https://www.tcpdump.org/linktypes.html)."""

    NULL = 0
    ETHERNET = 1
    RAW = 101
    LOOP = 108
    LINUX_SLL = 113
    IPV4 = 228
    IPV6 = 229
    LINUX_SLL2 = 276
    IPOIB = 242
    # DLT_RAW values that some platforms write in place of LINKTYPE_RAW
    DLT_RAW_12 = 12
    DLT_RAW_14 = 14
    PPP = 9
    FDDI = 10
    PPP_HDLC = 50
    ATM_RFC1483 = 100
    C_HDLC = 104


class Encapsulation(IntEnum):
    """Encapsulations the decoder opens (docs/encapsulations.md).

    The IP tunnels (IPIP to ERSPAN) are the values of the packet table's ``tunnel`` column;
    every kind is counted in ``DecodeStats.encapsulations``.
    """

    NONE = 0
    IPIP = 1  # IPv4/IPv6 in IPv4/IPv6 (RFC 2003, RFC 4213, RFC 2473)
    GRE = 2  # RFC 2784, RFC 2890
    VXLAN = 3  # RFC 7348
    GENEVE = 4  # RFC 8926
    GTPU = 5  # 3GPP TS 29.281
    TEREDO = 6  # RFC 4380
    AYIYA = 7  # draft-massar-v6ops-ayiya
    ERSPAN = 8  # draft-foschiano-erspan, over GRE
    PBB = 9  # IEEE 802.1ah
    FABRICPATH = 10  # Cisco FabricPath
    VNTAG = 11  # Cisco VN-Tag
    ETAG = 12  # IEEE 802.1BR
    EOMPLS = 13  # Ethernet over MPLS with a control word (RFC 4448)
    LLC_SNAP = 14  # IEEE 802.2 LLC with SNAP (RFC 1042)

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def is_tunnel(self) -> bool:
        """An IP tunnel: it has outer addresses and keys flows."""
        return Encapsulation.IPIP <= self <= Encapsulation.ERSPAN

    @property
    def id_keys_flows(self) -> bool:
        """Whether the tunnel id is the same both ways, and so part of a flow's key.

        A VXLAN VNI names the segment both ends are on (RFC 7348 §4) and an ERSPAN session
        id the mirror session. A Geneve VNI may differ per direction (RFC 8926 does not tie
        them; tcpdump's geneve.pcap has 0xa one way and 0xb back), a GRE key is chosen for
        its receiver (RFC 2890 §2.1; Linux's ikey/okey), and a GTP-U TEID names the
        receiving endpoint (3GPP TS 29.281 §5.1): those are kept per packet only.
        """
        return self in (Encapsulation.VXLAN, Encapsulation.ERSPAN)


class Fate(IntEnum):
    """What the plan did with a byte range of a segment (plan column ``fate``)."""

    NEW = 0  # kept: first bytes seen at these offsets
    RETRANSMISSION = 1  # whole segment already held, same bytes
    OVERLAP_SAME = 2  # part already held, same bytes
    OVERLAP_CONFLICT_KEPT = 3  # bytes differ from another version; this one kept (policy)
    OVERLAP_CONFLICT_DROPPED = 4  # bytes differ; the other version kept
    OUTSIDE_WINDOW = 5  # starts where the receiver could not have accepted it (RFC 9293 §3.10.7.4)
    BAD_CHECKSUM = 6  # dropped for its TCP checksum (see the checksum mode)
    AFTER_CLOSE = 7  # data seen after the session was reset
    RST_DATA = 8  # payload of an RST segment (diagnostic text, not stream data, RFC 9293 §3.5.3)
    KEEPALIVE = 9  # keep-alive probe byte (seq = next - 1)
    TRUNCATED = 10  # bytes the segment carried on the wire but the capture cut off
    BEFORE_START = 11  # before the direction's first byte (sequence below ISN + 1)
    AFTER_FIN = 12  # beyond the sender's FIN: not stream data (RFC 9293 §3.10.7.4, FIN check)

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")

    @property
    def kept(self) -> bool:
        """Do the range's bytes go into the stream?"""
        return self in (Fate.NEW, Fate.OVERLAP_CONFLICT_KEPT)

    @classmethod
    def kept_in(cls, fates: np.ndarray) -> np.ndarray:
        """Mask of a fate column: True where the fate is ``kept``."""
        return np.isin(fates, [int(f) for f in cls if f.kept])


class GapReason(IntEnum):
    NOT_CAPTURED = 0  # no segment carrying these bytes was captured
    TRUNCATED = 1  # a segment carried them but the capture cut it short

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


class Policy(IntEnum):
    """Overlap policies: which version wins where overlapping bytes differ.

    The rules and their sources: docs/overlap-policies.md.
    """

    FIRST = 0
    LAST = 1
    BSD = 2
    LINUX = 3
    WINDOWS = 4
    SOLARIS = 5
    HPUX10 = 6
    HPUX11 = 7
    IRIX = 8
    MACOS = 9
    VISTA = 10
    OLD_LINUX = 11

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")

    @classmethod
    def parse(cls, name: str) -> Policy:
        return cls[name.upper().replace("-", "_")]


class ChecksumMode(IntEnum):
    AUTO = 0  # drop bad TCP checksums unless the direction shows checksum offload
    STRICT = 1  # drop every segment with a bad TCP checksum
    IGNORE = 2  # keep segments whatever their checksum

    def __str__(self) -> str:
        return self.name.lower()


E = TypeVar("E", bound=IntEnum)


def parse_option(kind: type[E], value: str | E, option: str) -> E:
    """The member of ``kind`` an option names: a member itself, or its output string
    (``str(member)``) or name, in any case, with ``-`` or ``_``. Anything else is a
    UsageError that names ``option`` and the choices (the one parser for enum options)."""
    if isinstance(value, kind):
        return value
    wanted = str(value).strip().lower().replace("_", "-")
    for member in kind:
        if wanted in (str(member), member.name.lower().replace("_", "-")):
            return member
    choices = ", ".join(str(m) for m in kind)
    raise UsageError(f"{option} {value!r}: not one of {choices}")


class Close(IntEnum):
    """How a direction, or a whole session, ended (session table ``close_c2s``, ``close_s2c``,
    ``close``; streams.jsonl ``close``). The rules are the two tables below the class."""

    OPEN = 0
    FIN = 1
    HALF_CLOSED = 2  # a session only: one side sent a FIN, the other neither FIN nor RST
    RST = 3

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")

    @staticmethod
    def of_directions(rst: Any, fin: Any) -> np.ndarray:
        """Each direction's state from its ``rst`` and ``fin`` flags (arrays or scalars)."""
        rule = np.array(_DIRECTION_RULE, np.int8)
        rst_i = np.asarray(rst, np.bool_).astype(np.intp)
        return np.asarray(rule[rst_i, np.asarray(fin, np.bool_).astype(np.intp)])

    @staticmethod
    def of_sessions(c2s: Any, s2c: Any) -> np.ndarray:
        """Each session's state from its two directions' states (arrays or scalars)."""
        rule = np.array(_SESSION_RULE, np.int8)
        return np.asarray(rule[np.asarray(c2s, np.intp), np.asarray(s2c, np.intp)])

    @staticmethod
    def direction_name(rst: Any, fin: Any) -> str:
        """One direction's state as its string (the fast path of writers, one per file)."""
        return _DIRECTION_NAMES[bool(rst)][bool(fin)]


_O, _F, _H, _R = Close.OPEN, Close.FIN, Close.HALF_CLOSED, Close.RST
#: a direction's state by [sent a reset][sent a FIN]: a reset outranks a FIN
_DIRECTION_RULE = ((_O, _F), (_R, _R))
#: a session's state by [client's state][server's state]: a reset by either side ends it;
#: a FIN from both sides is a close, from one side a half-close
_SESSION_RULE = ((_O, _H, _H, _R), (_H, _F, _H, _R), (_H, _H, _H, _R), (_R, _R, _R, _R))
_DIRECTION_NAMES = [[str(v) for v in row] for row in _DIRECTION_RULE]


class ConnState(IntEnum):
    """Zeek's ``conn_state`` of a session (session table ``conn_state``), computed from the
    final states of Zeek's TCP endpoint model (docs/sessions.md). The meanings are Zeek's
    (docs.zeek.org, ``Conn::Info``); the rule is ``conn_state`` in
    scripts/base/protocols/conn/main.zeek, written out in tcpweave/output/sessions.py."""

    S0 = 0  # connection attempt seen, no reply
    S1 = 1  # established, not terminated
    SF = 2  # normal establishment and termination
    REJ = 3  # connection attempt rejected
    S2 = 4  # established, close attempt by the originator seen (no reply from the responder)
    S3 = 5  # established, close attempt by the responder seen (no reply from the originator)
    RSTO = 6  # established, the originator aborted (sent a RST)
    RSTR = 7  # the responder sent a RST
    RSTOS0 = 8  # the originator sent a SYN then a RST; no SYN-ACK from the responder seen
    RSTRH = 9  # the responder sent a SYN-ACK then a RST; no SYN from the originator seen
    SH = 10  # the originator sent a SYN then a FIN; no SYN-ACK from the responder seen
    SHR = 11  # the responder sent a SYN-ACK then a FIN; no SYN from the originator seen
    OTH = 12  # no SYN seen, just midstream traffic

    def __str__(self) -> str:
        return self.name


class FollowMode(StrEnum):
    """The output modes of ``tshark -z follow,tcp,<mode>,<stream>`` (tcpweave.output.follow)."""

    ASCII = "ascii"
    HEX = "hex"
    RAW = "raw"
    YAML = "yaml"
