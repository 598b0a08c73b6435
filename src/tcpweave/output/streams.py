"""Python views of reassembled streams: both directions' bytes, chunks, gaps, conflicts."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tcpweave.capture import Source
from tcpweave.decode.table import PacketTable, format_address, format_tunnel_address
from tcpweave.enums import Close, Encapsulation, Fate, GapReason
from tcpweave.flows import Flows
from tcpweave.output._kernels import gather_ranges
from tcpweave.reassembly import Plan

#: kept ranges turned into Python ints at a time by ``Direction._iter_kept``
_ITER_SLICE = 65536
#: payload bytes copied at once by ``StreamViews.gather``
GATHER_BYTES = 64 << 20
#: Reading a payload through the mapped capture maps the 64 KiB around it (the kernel's
#: fault-around), and the segments of one session are spread over the whole capture: after
#: this many payloads are read, the capture's pages are unmapped from this process (they
#: stay in the page cache), so that its resident set stays below about 64 KiB times this.
DROP_PAGES_AFTER = 2048


class PageKeeper:
    """Counts the payloads read from ``sources`` and unmaps their pages every
    DROP_PAGES_AFTER (one per StreamViews: the code that reads the pages drops them)."""

    def __init__(self, sources: list[Any]) -> None:
        self.sources = sources
        self.reads = 0

    def note(self, n: int) -> None:
        self.reads += n
        if self.reads >= DROP_PAGES_AFTER:
            for src in self.sources:
                src.drop_pages()
            self.reads = 0


def join_runs(runs: Iterable[tuple[int, int, list[Any]]], length: int, gaps: str) -> bytes:
    """A direction's bytes from its runs (stream offset, length, views), ``length`` long with
    the gaps zero-filled (offsets = relative sequence numbers), or with the gaps omitted."""
    if gaps not in ("fill", "omit"):
        raise ValueError("gaps must be 'fill' or 'omit'")
    pieces: list[bytes | memoryview] = []
    cursor = 0
    for offset, n, views in runs:
        if gaps == "fill" and offset > cursor:
            pieces.append(bytes(offset - cursor))
        pieces.extend(views)
        cursor = offset + n
    if gaps == "fill" and length > cursor:
        pieces.append(bytes(length - cursor))
    return b"".join(pieces)


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
    close: str = str(Close.OPEN)
    first_ts_ns: int | None = None  # None: the direction carried no packet (0 is a time)
    last_ts_ns: int | None = None
    gaps: list[Gap] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    _rows: Any = None  # (kept plan rows, lo, hi): this direction's slice, sorted by offset
    _sources: list[Source] = field(default_factory=list, repr=False)
    _packets: Any = None
    _pages: PageKeeper | None = field(default=None, repr=False)

    def bytes(self, gaps: str = "fill") -> bytes:
        """The stream: gaps zero-filled (offsets = relative sequence numbers) or omitted."""
        return join_runs(self.runs(), self.length, gaps)

    def runs(self, max_views: int = 1024) -> Iterator[tuple[int, int, list[memoryview]]]:
        """(stream offset, length, payload views) per run of contiguous kept ranges.

        The views point into the mapped capture: nothing is copied. A run of more than
        ``max_views`` ranges comes as consecutive pieces (memory stays bounded on long
        directions; ``max_views`` is also what one ``pwritev`` call takes). The pages
        read are counted by the views' PageKeeper, which unmaps them now and then.
        """
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
                self._noted(len(run))
            run, run_start, run_end = [view], offset, offset + length
        if run:
            yield run_start, run_end - run_start, run
            self._noted(len(run))

    def _noted(self, n: int) -> None:
        if self._pages is not None:
            self._pages.note(n)

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


@dataclass
class BlockColumns:
    """Streams ``lo..hi-1`` for writers: per stream ``session`` and ``ends`` ((client address,
    port), (server address, port)); per direction slot ``j = 2 * (stream - lo) + direction``
    the plan's facts ``info[name][j]`` (``packets`` 0: no such direction) and the bounds of
    its kept rows, gaps and conflicts (``row_bounds[j]..row_bounds[j + 1]`` ...)."""

    lo: int
    hi: int
    session: list[int]
    ends: list[tuple[tuple[str, int], ...]]
    info: dict[str, list[Any]]
    row_bounds: list[int]
    gap_bounds: list[int]
    conflict_bounds: list[int]
    #: per direction slot: the tunnel of its first packet (None outside tunnels), as
    #: streams.jsonl gives it (docs/encapsulations.md)
    tunnels: list[dict[str, Any] | None] = field(default_factory=list)


@dataclass
class Gathered:
    """Payloads of the first ``fits`` directions asked for, copied back to back into ``view``:
    direction k's runs of contiguous bytes are ``runs[edges[k]:edges[k + 1]]``, each
    (stream offset, length, position in ``view``)."""

    view: memoryview
    runs: list[tuple[int, int, int]]
    edges: list[int]
    fits: int

    def runs_of(self, k: int) -> list[tuple[int, int, list[memoryview]]]:
        """Direction k's runs as ``Direction.runs`` gives them."""
        view = self.view
        mine = self.runs[self.edges[k] : self.edges[k + 1]]
        return [(off, n, [view[at : at + n]]) for off, n, at in mine]


def _first_rows(flows: Flows, packets: PacketTable) -> np.ndarray:
    """Per direction slot (2 * stream + direction): its first packet-table row, -1 if none."""
    slot = flows.stream * 2 + flows.direction
    first = np.full(2 * flows.n_streams, -1, np.int64)
    slots, rows = np.unique(slot, return_index=True)  # rows are in frame order
    first[slots] = rows
    return first


class StreamViews:
    """Stream objects built on demand, a range at a time, from the plan's arrays.

    Holding a Python object per direction for hundreds of thousands of sessions
    costs hundreds of megabytes; writers take blocks of streams and drop them.
    """

    def __init__(self, packets: PacketTable, flows: Flows, plan: Plan, sources: list[Source]):
        self.packets, self.flows, self.plan, self.sources = packets, flows, plan, sources
        rows = plan.rows
        kept = Fate.kept_in(rows["fate"])
        cols = ("stream", "direction", "frame", "row", "stream_offset", "payload_start", "file",
                "length", "fate")  # fmt: skip
        every = bool(kept.all())  # then the plan's columns serve as they are (no copy)
        self.kept_rows = {name: rows[name] if every else rows[name][kept] for name in cols}
        slots = np.arange(2 * flows.n_streams + 1)
        self.row_bounds = _bounds(self.kept_rows, slots)
        self.gap_bounds = _bounds(plan.gaps, slots)
        self.conflict_bounds = _bounds(plan.conflicts, slots)
        self.slot_dir = np.full(2 * flows.n_streams, -1, np.int64)
        keys = plan.directions["stream"] * 2 + plan.directions["direction"]
        self.slot_dir[keys] = np.arange(len(keys))
        self._addresses: dict[bytes, str] = {}  # printed form of each raw address met
        self.slot_first_row = _first_rows(flows, packets) if packets.tunnel.any() else None
        self.pages = PageKeeper(sources)

    def __len__(self) -> int:
        return self.flows.n_streams

    def block(self, lo: int, hi: int) -> list[Stream]:
        """Streams lo..hi-1 (in stream order)."""
        cols = self.columns(lo, hi)
        streams = []
        for i, s in enumerate(range(cols.lo, cols.hi)):
            dirs = [self.direction(cols, 2 * i + d) for d in (0, 1)]
            streams.append(Stream(s, cols.session[i], dirs[0], dirs[1]))
        return streams

    def columns(self, lo: int, hi: int) -> BlockColumns:
        """What writers need of streams lo..hi-1, as lists (no object per direction)."""
        hi = max(min(hi, len(self)), lo)
        slots = self.slot_dir[2 * lo : 2 * hi]
        info = {
            name: self.plan.directions[name][slots.clip(0)].tolist()
            for name in ("length", "bytes", "rst", "fin", "first_ts_ns", "last_ts_ns")
        }
        packets = self.plan.directions["packets"][slots.clip(0)]
        info["packets"] = np.where(slots >= 0, packets, 0).tolist()
        return BlockColumns(
            lo,
            hi,
            self.flows.session[lo:hi].tolist(),
            self._endpoints(lo, hi),
            info,
            self.row_bounds[2 * lo : 2 * hi + 1].tolist(),
            self.gap_bounds[2 * lo : 2 * hi + 1].tolist(),
            self.conflict_bounds[2 * lo : 2 * hi + 1].tolist(),
            self._tunnels(lo, hi),
        )

    def _tunnels(self, lo: int, hi: int) -> list[dict[str, Any] | None]:
        """The tunnel of each direction slot's first packet, streams lo..hi-1."""
        if self.slot_first_row is None:
            return [None] * (2 * (hi - lo))
        p = self.packets
        out: list[dict[str, Any] | None] = []
        for row in self.slot_first_row[2 * lo : 2 * hi].tolist():
            kind = Encapsulation(int(p.tunnel[row])) if row >= 0 else Encapsulation.NONE
            out.append(None if kind == Encapsulation.NONE else {
                "encapsulation": str(kind),
                "id": int(p.tunnel_id[row]),
                "src": format_tunnel_address(p.tunnel_src[row]),
                "dst": format_tunnel_address(p.tunnel_dst[row]),
            })  # fmt: skip
        return out

    def direction(self, cols: BlockColumns, j: int) -> Direction:
        """Direction slot ``j`` of the block ``cols`` as an object (payloads read in place)."""
        c, s = cols.ends[j // 2]
        src, dst = (c, s) if j % 2 == 0 else (s, c)
        out = Direction("c2s" if j % 2 == 0 else "s2c", src[0], src[1], dst[0], dst[1],
                        _sources=self.sources, _packets=self.packets,
                        _pages=self.pages)  # fmt: skip
        if cols.info["packets"][j]:
            _fill(out, cols.info, j)
            rb, gb, cb = cols.row_bounds, cols.gap_bounds, cols.conflict_bounds
            out._rows = (self.kept_rows, rb[j], rb[j + 1])
            out.gaps = _gaps_of(self.plan.gaps, gb[j], gb[j + 1])
            out.conflicts = _conflicts_of(self.plan.conflicts, cb[j], cb[j + 1])
        return out

    def gap_list(self, lo: int, hi: int) -> list[dict[str, Any]]:
        """Gaps ``lo..hi-1`` of the plan as streams.jsonl writes them (offset, length,
        reason name)."""
        return [{"offset": g.offset, "length": g.length, "reason": str(g.reason)}
                for g in _gaps_of(self.plan.gaps, lo, hi)]  # fmt: skip

    def conflict_list(self, lo: int, hi: int) -> list[dict[str, int]]:
        """Conflicts ``lo..hi-1`` of the plan as streams.jsonl writes them (offset, length,
        kept frame, dropped frame)."""
        return [
            {"offset": c.offset, "length": c.length, "kept_frame": c.kept_frame,
             "dropped_frame": c.dropped_frame}
            for c in _conflicts_of(self.plan.conflicts, lo, hi)
        ]  # fmt: skip

    def gather(self, row_bounds: list[int]) -> Gathered:
        """Copy the kept payloads of the leading directions whose rows are ``row_bounds``
        (direction k owns kept rows ``row_bounds[k]..row_bounds[k+1]``), up to GATHER_BYTES
        in all, into one buffer; a direction larger than that is not gathered (``fits`` 0)."""
        kr = self.kept_rows
        lo = row_bounds[0]
        bounds = np.asarray(row_bounds) - lo
        cum = np.concatenate(([0], np.cumsum(kr["length"][lo : row_bounds[-1]])))
        fits = int(np.searchsorted(cum[bounds[1:]], GATHER_BYTES, side="right"))
        n = int(bounds[fits])
        out = np.empty(int(cum[n]), np.uint8)
        length = kr["length"][lo : lo + n]
        for a in range(0, n, DROP_PAGES_AFTER):  # pages read are dropped between the calls
            b = min(a + DROP_PAGES_AFTER, n)
            self.copy_kept(slice(lo + a, lo + b), cum[a:b], out)
            self.pages.note(b - a)
        offset = kr["stream_offset"][lo : lo + n]
        starts = kept_run_starts(offset, length, bounds[:fits])
        run_len = np.diff(np.append(cum[starts], cum[n]))
        runs = list(
            zip(offset[starts].tolist(), run_len.tolist(), cum[starts].tolist(), strict=True)
        )
        edges = np.searchsorted(starts, bounds[: fits + 1]).tolist()
        return Gathered(out.data, runs, edges, fits)

    def _endpoints(self, lo: int, hi: int) -> list[tuple[tuple[str, int], ...]]:
        """((client address, port), (server address, port)) of streams lo..hi-1."""
        packets, flows = self.packets, self.flows
        first = flows.first_row[lo:hi]
        versions = packets.gather("ip_version", first).tolist()
        srcs, dsts = packets.gather("src", first), packets.gather("dst", first)
        sports = packets.gather("sport", first).tolist()
        dports = packets.gather("dport", first).tolist()
        sent_by_client = (flows.direction[first] == 0).tolist()
        cache = self._addresses
        out: list[tuple[tuple[str, int], ...]] = []
        for i, v in enumerate(versions):
            a = (_address(srcs[i], v, cache), sports[i])
            b = (_address(dsts[i], v, cache), dports[i])
            out.append((a, b) if sent_by_client[i] else (b, a))
        return out

    def copy_kept(self, rows: slice | np.ndarray, at: np.ndarray, out: np.ndarray) -> None:
        """Copy the payloads of kept ``rows`` (a slice or indexes of ``kept_rows``) to their
        places ``at`` in ``out``, one kernel call per source they come from."""
        kr = self.kept_rows
        file, start, length = kr["file"][rows], kr["payload_start"][rows], kr["length"][rows]
        buffers = [src.buffer for src in self.sources]
        if all(b is buffers[0] for b in buffers):  # one capture file, or a partition's spill
            gather_ranges(buffers[0], start, length, at, out)
            return
        for f in np.unique(file).tolist():
            mine = file == f
            gather_ranges(buffers[f], start[mine], length[mine], at[mine], out)


def kept_run_starts(offset: np.ndarray, length: np.ndarray, direction_starts: np.ndarray) -> Any:
    """Where the runs of contiguous kept bytes start, in kept rows sorted by direction then
    offset: at each direction's first row (``direction_starts``) and at each row that does
    not continue the one before it."""
    first = np.zeros(len(offset), np.bool_)
    first[direction_starts[direction_starts < len(offset)]] = True
    first[1:] |= offset[1:] != offset[:-1] + length[:-1]
    return np.flatnonzero(first)


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
    out.close = Close.direction_name(info["rst"][di], info["fin"][di])
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
