"""Craft TCP sessions by stream offset, in a chosen arrival order, and write them as pcap.

Built on the independent builders of ``tests/craft.py`` (nothing here imports
tcpweave). A :class:`Trace` is one capture: frames in the order they were added
(the arrival order at the capture point). A :class:`Session` is one TCP
connection inside a trace; its segments are given by stream OFFSET, i.e.
``seq = ISN + 1 + offset`` (mod 2^32), so a test can say exactly which stream
bytes a segment carries whatever the ISN.

    s = Session(cisn=2**32 - 11)
    s.handshake()
    s.c(5, b"world")            # client bytes 5..9 arrive first
    s.c(0, b"hello")
    s.close()
    s.write(tmp_path / "x.pcap")

:meth:`Session.play` builds a whole exchange from an arrival script such as
``"SYN 2 1 3 dup-2 FIN"`` (numbers are 1-based client pieces); :func:`script_name`
gives such names to parametrized tests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from craft import (
    ACK,
    FIN,
    LINKTYPE_ETHERNET,
    PSH,
    RST,
    SYN,
    ChecksumSpec,
    Tcp,
    TcpOption,
    ethernet,
    ipv4,
    ipv6,
    write_pcap,
)

__all__ = [
    "ACK",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "Sent",
    "Session",
    "Trace",
    "script_name",
]

MOD = 1 << 32
T0_NS = 1_700_000_000 * 1_000_000_000
STEP_NS = 1_000_000  # one frame per millisecond unless told otherwise


@dataclass(frozen=True)
class Sent:
    """One frame as written: who sent it, what it carried, and how it was captured."""

    index: int  # 0-based position in the trace (frame number - 1)
    ts_ns: int
    session: Session
    from_client: bool
    offset: int  # stream offset of the first payload byte (-1 for a SYN's own seq)
    tcp: Tcp
    data: bytes  # full frame bytes
    snap: int | None  # captured length (None: whole frame)
    label: str

    @property
    def frame(self) -> int:
        return self.index + 1

    @property
    def payload(self) -> bytes:
        return self.tcp.payload

    @property
    def captured(self) -> bytes:
        return self.data if self.snap is None else self.data[: self.snap]


@dataclass
class Trace:
    """Frames of one capture in arrival order (shared by every session added to it)."""

    t0_ns: int = T0_NS
    step_ns: int = STEP_NS
    frames: list[Sent] = field(default_factory=list)

    def session(self, **kw: object) -> Session:
        return Session(trace=self, **kw)  # type: ignore[arg-type]

    def next_ts(self) -> int:
        return self.t0_ns + len(self.frames) * self.step_ns

    def write(self, path: str | Path, *, snaplen: int = 65535) -> Path:
        """A pcap (Ethernet) with every frame in the order added; per-frame cuts kept."""
        packets = []
        for f in self.frames:
            cap = f.captured[:snaplen]
            packets.append((f.ts_ns, cap, len(f.data)))
        return write_pcap(path, packets, LINKTYPE_ETHERNET, nano=True, snaplen=snaplen)

    @property
    def name(self) -> str:
        return " ".join(f.label for f in self.frames)


def _flag_names(flags: int) -> str:
    names = [n for bit, n in ((SYN, "SYN"), (FIN, "FIN"), (RST, "RST")) if flags & bit]
    if flags & ACK and names and "SYN" in names:
        names.append("ACK")
    return "-".join(names)


class Session:
    """One TCP connection: client/server endpoints, ISNs, and segments by stream offset."""

    def __init__(
        self,
        client: str = "10.0.0.1",
        server: str = "10.0.0.2",
        cport: int = 40000,
        sport: int = 80,
        cisn: int = 1000,
        sisn: int = 5000,
        *,
        trace: Trace | None = None,
    ) -> None:
        self.client, self.server = client, server
        self.cport, self.sport = cport, sport
        self.cisn, self.sisn = cisn % MOD, sisn % MOD
        self.version = ipaddress.ip_address(client).version
        if ipaddress.ip_address(server).version != self.version:
            raise ValueError("client and server must be the same IP version")
        self.trace = trace if trace is not None else Trace()
        # highest stream offset each side has sent (data and FIN), for default ACK numbers
        self._next = {True: 0, False: 0}

    # ------------------------------------------------------------------ raw segments

    def seq_of(self, from_client: bool, offset: int) -> int:
        isn = self.cisn if from_client else self.sisn
        return (isn + 1 + offset) % MOD

    def send(
        self,
        from_client: bool,
        offset: int,
        data: bytes = b"",
        flags: int = PSH | ACK,
        *,
        ack: int | None = None,
        seq: int | None = None,
        window: int = 65535,
        options: tuple[TcpOption, ...] = (),
        checksum: ChecksumSpec = "good",
        ip_checksum: ChecksumSpec = "good",
        snap: int | None = None,
        label: str | None = None,
        ts_ns: int | None = None,
    ) -> Sent:
        """Add one segment; ``offset`` is relative to ISN + 1 (``seq`` overrides it).

        ``ack`` defaults to the peer's ISN + 1 + everything the peer has sent so far
        (when ACK is set). ``snap`` cuts the captured frame to that many bytes; ``options``
        are TCP options (craft.WScale, ...); ``checksum`` and ``ip_checksum`` say how the
        TCP and IPv4 header checksums are written (craft.ChecksumSpec).
        """
        raw_seq = self.seq_of(from_client, offset) if seq is None else seq % MOD
        if ack is None:
            ack = self.seq_of(not from_client, self._next[not from_client]) if flags & ACK else 0
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        sp, dp = (self.cport, self.sport) if from_client else (self.sport, self.cport)
        tcp = Tcp(
            sp,
            dp,
            raw_seq,
            ack % MOD,
            flags,
            window,
            options=options,
            payload=data,
            checksum=checksum,
        )
        if self.version == 4:
            ip = ipv4(src, dst, tcp, ident=len(self.trace.frames) + 1, df=True,
                      checksum=ip_checksum)  # fmt: skip
        else:
            ip = ipv6(src, dst, tcp)
        frame = ethernet(ip)
        end = offset + len(data) + (1 if flags & FIN else 0)
        if seq is None and not flags & RST:
            self._next[from_client] = max(self._next[from_client], end)
        who = "c" if from_client else "s"
        auto = _flag_names(flags) or (f"{who}{offset}+{len(data)}" if data else f"{who}-ack")
        sent = Sent(
            len(self.trace.frames),
            self.trace.next_ts() if ts_ns is None else ts_ns,
            self,
            from_client,
            offset,
            tcp,
            frame,
            snap,
            label or auto,
        )
        self.trace.frames.append(sent)
        return sent

    def c(self, offset: int, data: bytes = b"", flags: int = PSH | ACK, **kw: object) -> Sent:
        """A client -> server segment at stream ``offset``."""
        return self.send(True, offset, data, flags, **kw)  # type: ignore[arg-type]

    def s(self, offset: int, data: bytes = b"", flags: int = PSH | ACK, **kw: object) -> Sent:
        """A server -> client segment at stream ``offset``."""
        return self.send(False, offset, data, flags, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ helpers

    def syn(self, data: bytes = b"", **kw: object) -> Sent:
        """Client SYN (seq = ISN); ``data`` is TCP Fast Open data at stream offset 0."""
        sent = self.send(True, -1, data, SYN, **kw)  # type: ignore[arg-type]
        self._next[True] = max(self._next[True], len(data))
        return sent

    def synack(self, **kw: object) -> Sent:
        return self.send(False, -1, b"", SYN | ACK, **kw)  # type: ignore[arg-type]

    def ack_c(self, **kw: object) -> Sent:
        """A pure ACK from the client (at its current next offset)."""
        return self.send(True, self._next[True], b"", ACK, **kw)  # type: ignore[arg-type]

    def ack_s(self, **kw: object) -> Sent:
        return self.send(False, self._next[False], b"", ACK, **kw)  # type: ignore[arg-type]

    def handshake(self, data: bytes = b"") -> Session:
        self.syn(data)
        self.synack()
        self.ack_c()
        return self

    def fin_c(self, offset: int | None = None, **kw: object) -> Sent:
        off = self._next[True] if offset is None else offset
        return self.send(True, off, b"", FIN | ACK, **kw)  # type: ignore[arg-type]

    def fin_s(self, offset: int | None = None, **kw: object) -> Sent:
        off = self._next[False] if offset is None else offset
        return self.send(False, off, b"", FIN | ACK, **kw)  # type: ignore[arg-type]

    def close(self) -> Session:
        """Client FIN, server FIN-ACK, client ACK."""
        self.fin_c()
        self.fin_s()
        self.ack_c()
        return self

    def rst_c(self, data: bytes = b"", offset: int | None = None, **kw: object) -> Sent:
        off = self._next[True] if offset is None else offset
        return self.send(True, off, data, RST | ACK, **kw)  # type: ignore[arg-type]

    def rst_s(self, data: bytes = b"", offset: int | None = None, **kw: object) -> Sent:
        off = self._next[False] if offset is None else offset
        return self.send(False, off, data, RST | ACK, **kw)  # type: ignore[arg-type]

    def play(self, script: str, pieces: Sequence[bytes], reply: bytes = b"") -> Session:
        """Build a session from an arrival script.

        Tokens: ``SYN`` (three-way handshake), ``N`` (client piece N, 1-based, at its
        offset), ``dup-N`` (piece N again), ``reply`` (server sends ``reply`` at 0),
        ``FIN`` (client FIN, server FIN-ACK, client ACK; the FIN sits after the last
        piece whether or not every piece was sent), ``RST`` (server reset).
        """
        offsets = [sum(len(p) for p in pieces[:i]) for i in range(len(pieces))]
        total = sum(len(p) for p in pieces)
        for token in script.split():
            if token == "SYN":
                self.handshake()
            elif token == "FIN":
                self.fin_c(total, label="FIN")
                self.fin_s(label="FIN-ACK")
                self.ack_c(label="ACK")
            elif token == "RST":
                self.rst_s(label="RST")
            elif token == "reply":
                self.s(0, reply, label="reply")
            elif token.startswith("dup-"):
                n = int(token[4:])
                self.c(offsets[n - 1], pieces[n - 1], label=token)
            else:
                n = int(token)
                self.c(offsets[n - 1], pieces[n - 1], label=token)
        return self

    # ------------------------------------------------------------------ output

    def write(self, path: str | Path, *, snaplen: int = 65535) -> Path:
        """Write the whole trace this session belongs to (every session in arrival order)."""
        return self.trace.write(path, snaplen=snaplen)

    @property
    def frames(self) -> list[Sent]:
        return [f for f in self.trace.frames if f.session is self]

    def sent_by(self, from_client: bool) -> list[Sent]:
        return [f for f in self.frames if f.from_client == from_client]


def script_name(script: str) -> str:
    """A pytest id for an arrival script ("SYN 2 1 3 dup-2 FIN" -> "SYN_2_1_3_dup-2_FIN")."""
    return script.replace(" ", "_")
