"""Python views of reassembled streams: both directions' bytes, chunks, gaps, conflicts."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba.typed import List as TypedList

from tcpweave.capture import Source
from tcpweave.decode.table import PacketTable, format_address
from tcpweave.enums import Fate, GapReason
from tcpweave.flows import Flows
from tcpweave.output._kernels import gather_payloads
from tcpweave.reassembly import Plan

#: kept ranges turned into Python ints at a time by ``Direction._iter_kept``
_ITER_SLICE = 65536
#: payload bytes of one block copied at once by ``StreamViews.block(..., gather=True)``
GATHER_BYTES = 64 << 20
#: Reading a payload through the mapped capture maps the 64 KiB around it (the kernel's
#: fault-around), and the segments of one session are spread over the whole capture: after
#: this many payloads are read, the capture's pages are unmapped from this process (they
#: stay in the page cache), so that its resident set stays below about 64 KiB times this.
DROP_PAGES_AFTER = 2048
_READS = [0]


def note_reads(n: int, sources: list[Any]) -> None:
    """Count ``n`` payloads read from ``sources``; unmap their pages every DROP_PAGES_AFTER."""
    _READS[0] += n
    if _READS[0] >= DROP_PAGES_AFTER:
        for src in sources:
            src.drop_pages()
        _READS[0] = 0


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
    _rows: Any = None  # (kept plan rows, lo, hi): this direction's slice, sorted by offset
    _gathered: list[tuple[int, int, list[memoryview]]] | None = None  # runs already copied
    _sources: list[Source] = field(default_factory=list, repr=False)
    _packets: Any = None

    def bytes(self, gaps: str = "fill") -> bytes:
        """The stream: gaps zero-filled (offsets = relative sequence numbers) or omitted."""
        if gaps not in ("fill", "omit"):
            raise ValueError("gaps must be 'fill' or 'omit'")
        pieces: list[bytes | memoryview] = []
        cursor = 0
        for offset, length, views in self.runs():
            if gaps == "fill" and offset > cursor:
                pieces.append(bytes(offset - cursor))
            pieces.extend(views)
            cursor = offset + length
        if gaps == "fill" and self.length > cursor:
            pieces.append(bytes(self.length - cursor))
        return b"".join(pieces)

    def runs(self, max_views: int = 1024) -> Iterator[tuple[int, int, list[memoryview]]]:
        """(stream offset, length, payload views) per run of contiguous kept ranges.

        The views point into the mapped capture: nothing is copied. A run of more than
        ``max_views`` ranges comes as consecutive pieces (memory stays bounded on long
        directions; ``max_views`` is also what one ``pwritev`` call takes).
        """
        if self._gathered is not None:
            yield from self._gathered
            return
        run: list[memoryview] = []
        run_start = run_end = 0
        for offset, start, file, length in self._iter_kept():
            view = self._sources[file].buffer[start : start + length].data
            if run and offset == run_end and len(run) < max_views:
                run.append(view)
                run_end += length
                continue
            if run:
                yield run_start, run_end - run_start, run
            run, run_start, run_end = [view], offset, offset + length
        if run:
            yield run_start, run_end - run_start, run

    def memoryview(self, gaps: str = "fill") -> memoryview:
        return memoryview(self.bytes(gaps))

    def open(self, gaps: str = "fill") -> io.BytesIO:
        """A file-like object over the stream."""
        return io.BytesIO(self.bytes(gaps))

    def chunks(self) -> list[Chunk]:
        """Kept ranges in stream order with the frame, timestamp and offset of each."""
        out: list[Chunk] = []
        r = self._slice()
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

    def _slice(self) -> dict[str, np.ndarray] | None:
        if self._rows is None:
            return None
        table, lo, hi = self._rows
        return {name: col[lo:hi] for name, col in table.items()}

    def _iter_kept(self) -> Iterator[tuple[int, int, int, int]]:
        """(stream offset, payload start, file, length) of each kept range, in offset order;
        converted to Python ints a slice at a time (a long direction has millions)."""
        if self._rows is None:
            return
        table, lo, hi = self._rows
        cols = [table[name] for name in ("stream_offset", "payload_start", "file", "length")]
        for at in range(lo, hi, _ITER_SLICE):
            end = min(at + _ITER_SLICE, hi)
            yield from zip(*(c[at:end].tolist() for c in cols), strict=True)


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


class StreamViews:
    """Stream objects built on demand, a range at a time, from the plan's arrays.

    Holding a Python object per direction for hundreds of thousands of sessions
    costs hundreds of megabytes; writers take blocks of streams and drop them.
    """

    def __init__(self, packets: PacketTable, flows: Flows, plan: Plan, sources: list[Source]):
        self.packets, self.flows, self.plan, self.sources = packets, flows, plan, sources
        rows = plan.rows
        kept = (rows["fate"] == Fate.NEW) | (rows["fate"] == Fate.OVERLAP_CONFLICT_KEPT)
        cols = ("stream", "direction", "frame", "row", "stream_offset", "payload_start", "file",
                "length", "fate")  # fmt: skip
        self.kept_rows = {name: rows[name][kept] for name in cols}
        slots = np.arange(2 * flows.n_streams + 1)
        self.row_bounds = _bounds(self.kept_rows, slots)
        self.gap_bounds = _bounds(plan.gaps, slots)
        self.conflict_bounds = _bounds(plan.conflicts, slots)
        self.slot_dir = np.full(2 * flows.n_streams, -1, np.int64)
        keys = plan.directions["stream"] * 2 + plan.directions["direction"]
        self.slot_dir[keys] = np.arange(len(keys))
        self._typed_buffers: Any = None

    def __len__(self) -> int:
        return self.flows.n_streams

    def block(self, lo: int, hi: int, gather: bool = False) -> list[Stream]:
        """Streams lo..hi-1 (in stream order).

        With ``gather``, the payloads of the block's directions (up to ``GATHER_BYTES`` in
        all) are first copied into one buffer by a kernel, and each of those directions
        offers its runs as slices of it: a writer then makes a few calls per direction
        instead of several per segment.
        """
        hi = min(hi, len(self))
        if hi <= lo:
            return []
        info = {
            name: self.plan.directions[name][self.slot_dir[2 * lo : 2 * hi].clip(0)].tolist()
            for name in ("length", "packets", "bytes", "rst", "fin", "first_ts_ns", "last_ts_ns")
        }
        slot_dir = self.slot_dir[2 * lo : 2 * hi].tolist()
        rb = self.row_bounds[2 * lo : 2 * hi + 1].tolist()
        gb = self.gap_bounds[2 * lo : 2 * hi + 1].tolist()
        cb = self.conflict_bounds[2 * lo : 2 * hi + 1].tolist()
        ends = _endpoints(self.packets, self.flows, lo, hi)
        sessions = self.flows.session[lo:hi].tolist()
        streams = []
        for s in range(lo, hi):
            (c_addr, c_port), (s_addr, s_port) = ends[s - lo]
            dirs = []
            for d, (src, sport, dst, dport) in enumerate(
                ((c_addr, c_port, s_addr, s_port), (s_addr, s_port, c_addr, c_port))
            ):
                out = Direction(
                    "c2s" if d == 0 else "s2c", src, sport, dst, dport, _sources=self.sources,
                    _packets=self.packets,
                )  # fmt: skip
                j = 2 * (s - lo) + d
                if slot_dir[j] >= 0:
                    _fill(out, info, j)
                    out._rows = (self.kept_rows, rb[j], rb[j + 1])
                    out.gaps = _gaps_of(self.plan.gaps, gb[j], gb[j + 1])
                    out.conflicts = _conflicts_of(self.plan.conflicts, cb[j], cb[j + 1])
                dirs.append(out)
            streams.append(Stream(s, sessions[s - lo], dirs[0], dirs[1]))
        if gather:
            self._gather([d for st in streams for d in (st.c2s, st.s2c)], rb)
        return streams

    def _gather(self, directions: list[Direction], rb: list[int]) -> None:
        """Copy the kept payloads of the first directions (up to GATHER_BYTES) into one buffer
        and hand each its runs (contiguous stream ranges) as views of it."""
        kr = self.kept_rows
        bounds = np.asarray(rb) - rb[0]  # direction k owns rows bounds[k]..bounds[k+1]
        lo = rb[0]
        cum = np.concatenate(([0], np.cumsum(kr["length"][lo : rb[-1]])))
        fits = int(np.searchsorted(cum[bounds[1:]], GATHER_BYTES, side="right"))
        n = int(bounds[fits])
        if n == 0:
            return
        length = kr["length"][lo : lo + n]
        out = np.empty(int(cum[n]), np.uint8)
        bufs = self._buffers()
        for a in range(0, n, DROP_PAGES_AFTER):  # pages read are dropped between the calls
            b = min(a + DROP_PAGES_AFTER, n)
            gather_payloads(
                bufs,
                kr["file"][lo + a : lo + b],
                kr["payload_start"][lo + a : lo + b],
                length[a:b],
                out[cum[a] : cum[b]],
            )
            note_reads(b - a, self.sources)
        offset = kr["stream_offset"][lo : lo + n]
        first = np.zeros(n, np.bool_)
        first[bounds[:fits][bounds[:fits] < n]] = True  # a direction's first row starts a run
        first[1:] |= offset[1:] != offset[:-1] + length[:-1]
        starts = np.flatnonzero(first)
        run_len = np.diff(np.append(cum[starts], cum[n]))
        view = out.data
        runs = list(
            zip(offset[starts].tolist(), run_len.tolist(), cum[starts].tolist(), strict=True)
        )
        edges = np.searchsorted(starts, bounds[: fits + 1]).tolist()
        for k in range(fits):
            directions[k]._gathered = [
                (off, size, [view[at : at + size]])
                for off, size, at in runs[edges[k] : edges[k + 1]]
            ]

    def _buffers(self) -> Any:
        if self._typed_buffers is None:
            self._typed_buffers = TypedList([src.buffer for src in self.sources])
        return self._typed_buffers


def build_streams(
    packets: PacketTable, flows: Flows, plan: Plan, sources: list[Source]
) -> list[Stream]:
    """One Stream per session, in stream order."""
    views = StreamViews(packets, flows, plan, sources)
    return views.block(0, len(views))


def _bounds(table: dict[str, np.ndarray], slots: np.ndarray) -> np.ndarray:
    """Where each (stream, direction) starts in a table sorted by stream then direction."""
    keys = table["stream"] * 2 + table["direction"]
    return np.searchsorted(keys, slots)


def _endpoints(
    packets: PacketTable, flows: Flows, lo: int, hi: int
) -> list[tuple[tuple[str, int], ...]]:
    """((client address, port), (server address, port)) of streams lo..hi-1."""
    first = flows.first_row[lo:hi]
    versions = packets.ip_version[first].tolist()
    srcs, dsts = packets.src[first], packets.dst[first]
    sports, dports = packets.sport[first].tolist(), packets.dport[first].tolist()
    sent_by_client = (flows.direction[first] == 0).tolist()
    cache: dict[bytes, str] = {}
    out: list[tuple[tuple[str, int], ...]] = []
    for i, v in enumerate(versions):
        a = (_address(srcs[i], v, cache), sports[i])
        b = (_address(dsts[i], v, cache), dports[i])
        out.append((a, b) if sent_by_client[i] else (b, a))
    return out


def _address(raw: np.ndarray, version: int, cache: dict[bytes, str]) -> str:
    key = raw.tobytes()
    text = cache.get(key)
    if text is None:
        text = cache[key] = format_address(raw, version)
    return text


def _fill(out: Direction, info: dict[str, list[Any]], di: int) -> None:
    """Per-direction facts from ``info`` (lists aligned with the block's direction slots)."""
    out.length = info["length"][di]
    out.packets = info["packets"][di]
    out.kept_bytes = info["bytes"][di]
    out.close = "rst" if info["rst"][di] else ("fin" if info["fin"][di] else "open")
    out.first_ts_ns = info["first_ts_ns"][di]
    out.last_ts_ns = info["last_ts_ns"][di]


def _gaps_of(g: dict[str, np.ndarray], lo: int, hi: int) -> list[Gap]:
    if lo == hi:
        return []
    return [
        Gap(int(o), int(n), GapReason(int(r)))
        for o, n, r in zip(g["offset"][lo:hi], g["length"][lo:hi], g["reason"][lo:hi], strict=True)
    ]


def _conflicts_of(c: dict[str, np.ndarray], lo: int, hi: int) -> list[Conflict]:
    if lo == hi:
        return []
    return [
        Conflict(int(o), int(n), int(kf), int(df))
        for o, n, kf, df in zip(
            c["offset"][lo:hi],
            c["length"][lo:hi],
            c["kept_frame"][lo:hi],
            c["dropped_frame"][lo:hi],
            strict=True,
        )
    ]
