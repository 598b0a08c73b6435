"""Python views of reassembled streams: both directions' bytes, chunks, gaps, conflicts."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tcpweave.capture import Source
from tcpweave.decode.table import PacketTable, format_address
from tcpweave.enums import Fate, GapReason
from tcpweave.flows import Flows
from tcpweave.reassembly import Plan


@dataclass(frozen=True)
class Chunk:
    """A kept byte range: where it sits in the stream and which frame carried it."""

    frame: int
    ts_ns: int
    offset: int
    length: int
    fate: Fate
    data: bytes


@dataclass(frozen=True)
class Gap:
    offset: int
    length: int
    reason: GapReason


@dataclass(frozen=True)
class Conflict:
    offset: int
    length: int
    kept_frame: int
    dropped_frame: int


@dataclass
class Direction:
    """One direction of a session (client->server or server->client)."""

    name: str  # "c2s" or "s2c"
    src: str
    sport: int
    dst: str
    dport: int
    length: int = 0
    packets: int = 0
    kept_bytes: int = 0
    close: str = "open"
    first_ts_ns: int = 0
    last_ts_ns: int = 0
    gaps: list[Gap] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    _rows: Any = None  # plan rows of this direction (kept only), sorted by offset
    _sources: list[Source] = field(default_factory=list, repr=False)
    _packets: Any = None

    def bytes(self, gaps: str = "fill") -> bytes:
        """The stream: gaps zero-filled (offsets = relative sequence numbers) or omitted."""
        if gaps not in ("fill", "omit"):
            raise ValueError("gaps must be 'fill' or 'omit'")
        pieces = []
        cursor = 0
        for offset, start, file, length in self._iter_kept():
            if gaps == "fill" and offset > cursor:
                pieces.append(bytes(offset - cursor))
            pieces.append(self._sources[file].buffer[start : start + length].tobytes())
            cursor = offset + length
        if gaps == "fill" and self.length > cursor:
            pieces.append(bytes(self.length - cursor))
        return b"".join(pieces)

    def memoryview(self, gaps: str = "fill") -> memoryview:
        return memoryview(self.bytes(gaps))

    def open(self, gaps: str = "fill") -> io.BytesIO:
        """A file-like object over the stream."""
        return io.BytesIO(self.bytes(gaps))

    def chunks(self) -> list[Chunk]:
        """Kept ranges in stream order with the frame, timestamp and offset of each."""
        out: list[Chunk] = []
        r = self._rows
        if r is None:
            return out
        for i in range(len(r["stream_offset"])):
            start, length, file = int(r["payload_start"][i]), int(r["length"][i]), int(r["file"][i])
            out.append(
                Chunk(
                    int(r["frame"][i]),
                    int(self._packets.ts_ns[r["row"][i]]),
                    int(r["stream_offset"][i]),
                    length,
                    Fate(int(r["fate"][i])),
                    self._sources[file].buffer[start : start + length].tobytes(),
                )
            )
        return out

    def _iter_kept(self) -> Any:
        r = self._rows
        if r is None:
            return iter(())
        return zip(
            r["stream_offset"].tolist(),
            r["payload_start"].tolist(),
            r["file"].tolist(),
            r["length"].tolist(),
            strict=True,
        )


@dataclass
class Stream:
    """A TCP session: index (as tcp.stream), index among its 4-tuple's sessions, directions."""

    index: int
    session: int
    c2s: Direction
    s2c: Direction

    @property
    def client(self) -> tuple[str, int]:
        return self.c2s.src, self.c2s.sport

    @property
    def server(self) -> tuple[str, int]:
        return self.c2s.dst, self.c2s.dport


def build_streams(
    packets: PacketTable, flows: Flows, plan: Plan, sources: list[Source]
) -> list[Stream]:
    """One Stream per session, in stream order."""
    rows = plan.rows
    kept = (rows["fate"] == Fate.NEW) | (rows["fate"] == Fate.OVERLAP_CONFLICT_KEPT)
    kept_rows = {name: col[kept] for name, col in rows.items()}
    keys = kept_rows["stream"] * 2 + kept_rows["direction"]
    bounds = np.searchsorted(keys, np.arange(2 * flows.n_streams + 1))
    streams = []
    for s in range(flows.n_streams):
        dirs = [_direction(packets, flows, plan, sources, kept_rows, bounds, s, d) for d in (0, 1)]
        streams.append(Stream(s, int(flows.session[s]), dirs[0], dirs[1]))
    return streams


def _direction(
    packets: PacketTable,
    flows: Flows,
    plan: Plan,
    sources: list[Source],
    kept_rows: dict[str, Any],
    bounds: np.ndarray,
    s: int,
    d: int,
) -> Direction:
    first = int(flows.first_row[s])
    v = int(packets.ip_version[first])
    a = (format_address(packets.src[first], v), int(packets.sport[first]))
    b = (format_address(packets.dst[first], v), int(packets.dport[first]))
    sender_is_a = int(flows.direction[first]) == d
    (src, sport), (dst, dport) = (a, b) if sender_is_a else (b, a)
    out = Direction(
        "c2s" if d == 0 else "s2c", src, sport, dst, dport, _sources=sources, _packets=packets
    )
    di = plan.direction_index(s, d)
    if di is None:
        return out
    info = plan.directions
    out.length = int(info["length"][di])
    out.packets = int(info["packets"][di])
    out.kept_bytes = int(info["bytes"][di])
    out.close = "rst" if info["rst"][di] else ("fin" if info["fin"][di] else "open")
    out.first_ts_ns = int(info["first_ts_ns"][di])
    out.last_ts_ns = int(info["last_ts_ns"][di])
    lo, hi = bounds[2 * s + d], bounds[2 * s + d + 1]
    out._rows = {name: col[lo:hi] for name, col in kept_rows.items()}
    g = plan.gaps
    m = (g["stream"] == s) & (g["direction"] == d)
    out.gaps = [
        Gap(int(o), int(n), GapReason(int(r)))
        for o, n, r in zip(g["offset"][m], g["length"][m], g["reason"][m], strict=True)
    ]
    c = plan.conflicts
    m = (c["stream"] == s) & (c["direction"] == d)
    out.conflicts = [
        Conflict(int(o), int(n), int(kf), int(df))
        for o, n, kf, df in zip(
            c["offset"][m], c["length"][m], c["kept_frame"][m], c["dropped_frame"][m], strict=True
        )
    ]
    return out
