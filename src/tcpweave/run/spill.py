"""Partitions on disk: rows routed by flow into spill files, and loaded back.

A partition's rows are spilled to ``part-NNNNN<tag>.rows`` (the packet-table columns as
one record per row) and their payload bytes to ``part-NNNNN<tag>.payload``, where
``payload_offset`` then points; ``tag`` names the piece of the capture a worker decoded
(one file per piece and partition, so that workers never share a file). Every packet of a
4-tuple lands in one partition (``partition_of``), hence every session and direction.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import resource
from dataclasses import dataclass
from typing import Any

import numpy as np

from tcpweave import _faults as fault
from tcpweave.decode.table import PACKET_COLUMN_NAMES, PACKET_COLUMNS, PacketTable, take_packets
from tcpweave.output._kernels import gather_ranges

__all__ = [
    "SPILL_DTYPE",
    "MappedFile",
    "Router",
    "SpillLayout",
    "SpilledColumns",
    "load_partition",
    "partition_of",
]

#: the tunnel columns are spilled apart (``part-NNNNN<tag>.tunnels``), for the rows that
#: came through a tunnel only: most captures have none, and their rows stay as small as
#: they were before tunnels were decoded
TUNNEL_COLUMNS = ("tunnel", "tunnel_id", "tunnel_src", "tunnel_dst")
_ROW_COLUMNS = tuple(c for c in PACKET_COLUMNS if c[0] not in TUNNEL_COLUMNS)
#: a spilled row: the packet-table columns as the capture gave them (``file`` and
#: ``payload_offset`` name the capture file and the payload's place in it) and where the
#: payload was copied in the partition's payload spill
SPILL_DTYPE = np.dtype(
    [(name, dtype, shape) for name, dtype, shape in _ROW_COLUMNS] + [("spill_offset", np.int64)]
)
#: a spilled tunnel: the row it belongs to (its index in the rows file) and its columns
TUNNEL_DTYPE = np.dtype([("row", np.int64)] + [c for c in PACKET_COLUMNS if c[0] in TUNNEL_COLUMNS])
#: payload bytes copied at once by a router (their copy is held while they are written)
ROUTE_BYTES = 8 << 20


@dataclass(frozen=True)
class SpillLayout:
    """Where a run's partitions are: the work directory, how many, the tag of each decoded
    piece (a partition has one rows and one payload file per tag), and how many capture
    files there were."""

    workdir: str
    n_parts: int
    tags: tuple[str, ...] = ("",)
    n_files: int = 0  # capture files: rows rebuilt from IP fragments have ``file`` n_files

    def path(self, p: int, kind: str, tag: str = "") -> str:
        """Partition ``p``'s spill file of one ``kind`` ("rows", "payload") and piece."""
        return os.path.join(self.workdir, f"part-{p:05d}{tag}.{kind}")

    def files(self, p: int, kind: str) -> list[str]:
        return [self.path(p, kind, tag) for tag in self.tags]

    def remove(self, p: int) -> None:
        """Remove partition ``p``'s spill files (not needed once it is written)."""
        for name in [*self.files(p, "rows"), *self.files(p, "payload"),
                     *self.files(p, "tunnels"), self.path(p, "flows")]:  # fmt: skip
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele, Lea, Flood 2014): every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        return np.asarray(x ^ (x >> np.uint64(31)))


def _endpoint_hash(addr: np.ndarray, port: np.ndarray) -> np.ndarray:
    words = np.ascontiguousarray(addr).view("<u8")
    with np.errstate(over="ignore"):
        return _mix(words[:, 0] ^ _mix(words[:, 1] ^ _mix(port.astype(np.uint64))))


def partition_of(cols: Any, n_parts: int) -> np.ndarray:
    """Partition of each row: a hash of its 4-tuple that ignores direction (a sum is order-free).

    For a tunnelled row it is the inner 4-tuple's: both halves of a tunnelled flow land
    together, and so does every tunnel's copy of one 4-tuple, which keeps ``session`` (the
    index among a 4-tuple's sessions) a partition's own business (docs/encapsulations.md).
    """
    with np.errstate(over="ignore"):
        h = _mix(_endpoint_hash(cols.src, cols.sport) + _endpoint_hash(cols.dst, cols.dport))
    return np.asarray(h % np.uint64(n_parts)).astype(np.int64)


class Router:
    """The decode sink of a spilled run: appends each chunk's rows to their partitions' spill
    files, and the rows' payload bytes to their partitions' payload files (``payload_offset``
    rewritten to point there), so that later steps never read the capture again."""

    def __init__(self, layout: SpillLayout, tag: str = "") -> None:
        self.layout, self.tag = layout, tag
        self.tunnels: dict[int, Any] = {}  # partition -> its tunnel spill, once it has one
        self.n_parts = layout.n_parts
        _allow_files(2 * self.n_parts + 64)
        self.files = [open(layout.path(p, "rows", tag), "wb") for p in range(self.n_parts)]
        self.payloads = [open(layout.path(p, "payload", tag), "wb") for p in range(self.n_parts)]
        self.rows = np.zeros(self.n_parts, np.int64)
        self.payload_bytes = np.zeros(self.n_parts, np.int64)

    def __call__(self, cols: Any, buffer: np.ndarray) -> None:
        """Route rows whose payload offsets point into ``buffer``, a slice of at most
        ROUTE_BYTES of payload at a time (the copy of the payloads is held meanwhile)."""
        fault.at("decode")
        ends = np.cumsum(cols.payload_caplen)
        a, n = 0, len(ends)
        while a < n:
            before = int(ends[a - 1]) if a else 0
            b = max(a + 1, int(np.searchsorted(ends, before + ROUTE_BYTES, side="right")))
            self._route(take_packets(cols, slice(a, b)), buffer)
            a = b

    def _route(self, cols: Any, buffer: np.ndarray) -> None:
        n = len(cols.frame)
        part = partition_of(cols, self.n_parts)
        order = np.argsort(part, kind="stable")
        rec = np.empty(n, SPILL_DTYPE)
        for name, _, _ in _ROW_COLUMNS:
            rec[name] = getattr(cols, name)[order]
        bounds = np.searchsorted(part[order], np.arange(self.n_parts + 1))
        if cols.tunnel.any():
            self._route_tunnels(cols, order, bounds)
        length = rec["payload_caplen"]
        at = np.concatenate(([0], np.cumsum(length)))  # where each row's payload is copied
        payload = np.empty(int(at[-1]), np.uint8)
        gather_ranges(buffer, rec["payload_offset"], length, at[:-1], payload)
        sizes = np.diff(bounds)
        rec["spill_offset"] = at[:-1] + np.repeat(self.payload_bytes - at[bounds[:-1]], sizes)
        for p in np.flatnonzero(sizes).tolist():
            self.files[p].write(rec[bounds[p] : bounds[p + 1]].data)
            self.payloads[p].write(payload[at[bounds[p]] : at[bounds[p + 1]]].data)
        self.rows += sizes
        self.payload_bytes += at[bounds[1:]] - at[bounds[:-1]]

    def _route_tunnels(self, cols: Any, order: np.ndarray, bounds: np.ndarray) -> None:
        """Append the tunnel columns of the tunnelled rows to their partitions' tunnel
        spills, each with its row's index in the partition's rows file (before this chunk's
        rows are counted in ``self.rows``)."""
        inside = np.flatnonzero(cols.tunnel[order])
        part = np.searchsorted(bounds, inside, side="right") - 1
        rec = np.empty(len(inside), TUNNEL_DTYPE)
        rec["row"] = self.rows[part] + inside - bounds[part]
        for name in TUNNEL_COLUMNS:
            rec[name] = getattr(cols, name)[order[inside]]
        for p in np.unique(part).tolist():
            if p not in self.tunnels:
                self.tunnels[p] = open(self.layout.path(p, "tunnels", self.tag), "wb")
            self.tunnels[p].write(rec[part == p].data)

    def close(self) -> None:
        for f in self.files + self.payloads + list(self.tunnels.values()):
            f.close()


def _allow_files(n: int) -> None:
    """Raise this process's limit of open files to ``n`` if the hard limit allows (a router
    holds two files per partition)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def load_partition(layout: SpillLayout, p: int) -> tuple[PacketTable, SpilledColumns]:
    """Partition ``p``'s rows as a packet table, in frame order, whose payloads are in the
    partition's payload spill files, one per tag: ``file`` says which (its index in
    ``layout.tags``) and ``payload_offset`` where in it. Also the rows' ``file`` and
    ``payload_offset`` as the capture gave them (for exports of the packet table), as the
    ``capture_file`` and ``capture_offset`` columns of the second value.

    Columns are read from the spill files when a step first asks for them (``SpilledColumns``),
    so that a partition in memory holds the columns its steps use, not the whole table."""
    cols = SpilledColumns(layout.files(p, "rows"), layout.files(p, "tunnels"))
    return PacketTable(cols), cols


class SpilledColumns:
    """The packet-table columns of a spilled partition, each read from the partition's spill
    files when it is first asked for: a pass over the mapped files takes that column (with
    ``load``, several at once), in frame order. ``drop`` forgets columns
    (they are read again if asked for later). Also ``capture_file`` and ``capture_offset``:
    ``file`` and ``payload_offset`` as the capture gave them."""

    def __init__(self, paths: list[str], tunnel_paths: list[str] | None = None) -> None:
        self._paths = paths
        self._tunnel_paths = tunnel_paths or []  # per rows file: its tunnel spill, if any
        self._n = sum(os.path.getsize(path) // SPILL_DTYPE.itemsize for path in paths)
        self._cache: dict[str, np.ndarray] = {}
        self._kept_rows = np.zeros(0, np.int64)  # rows whose values of some columns are kept
        self._kept: dict[str, np.ndarray] = {}  # (``keep_rows``: the rows writers ask for)
        self._order: np.ndarray | None = None  # rows to frame order, when the spill is not
        frame = self.load(["frame"])["frame"]
        if self._n > 1 and np.any(frame[1:] < frame[:-1]):  # rebuilt datagrams come last
            self._order = np.argsort(frame, kind="stable")
            self._cache["frame"] = frame[self._order]

    def __len__(self) -> int:
        return self._n

    def __getattr__(self, name: str) -> np.ndarray:
        if name not in PACKET_COLUMN_NAMES and name not in _CAPTURE_COLUMNS:
            raise AttributeError(name)
        return self.load([name])[name]

    def __iter__(self) -> Any:
        return iter([getattr(self, name) for name in PACKET_COLUMN_NAMES])

    def load(self, names: list[str]) -> dict[str, np.ndarray]:
        """The columns ``names``, those not held yet read in one pass over the spill files."""
        todo = [name for name in dict.fromkeys(names) if name not in self._cache]
        if todo:
            for name, col in self._read(todo).items():
                self._cache[name] = col if self._order is None else col[self._order]
        return {name: self._cache[name] for name in names}

    def keep_rows(self, rows: np.ndarray, names: list[str]) -> None:
        """Keep the values of columns ``names`` at ``rows`` (sorted, distinct): ``gather``
        serves them from there once the columns are dropped."""
        self._kept_rows = np.asarray(rows, np.int64)
        self._kept = {name: col[rows] for name, col in self.load(names).items()}

    def gather(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` at ``rows`` (frame order): from the column if it is held, or the
        rows kept (``keep_rows``), else from one pass over the spill files that keeps only
        those rows."""
        if name in self._cache:
            return np.asarray(self._cache[name][rows])
        if name in self._kept and len(self._kept_rows):
            pos = np.minimum(np.searchsorted(self._kept_rows, rows), len(self._kept_rows) - 1)
            if np.array_equal(self._kept_rows[pos], rows):
                return self._kept[name][pos]
        if name not in PACKET_COLUMN_NAMES and name not in _CAPTURE_COLUMNS:
            raise KeyError(name)
        if name in TUNNEL_COLUMNS:  # (spilled apart, for tunnelled rows only: few)
            return np.asarray(self.load([name])[name][rows])
        rows = np.asarray(rows, np.int64)
        where = rows if self._order is None else self._order[rows]  # rows in the spill
        by_place = np.argsort(where, kind="stable")
        places = where[by_place]
        dtype, shape = self._shape(name)
        out = np.empty((len(rows), *shape), dtype)
        field = _SPILL_FIELD.get(name, name)
        at = 0
        for k, path in enumerate(self._paths):
            rec = _mapped_rows(path)
            end = at + len(rec)
            a, b = np.searchsorted(places, (at, end))
            if b > a:
                hit = by_place[a:b]
                out[hit] = k if name == "file" else rec[field][places[a:b] - at]
            at = end
            del rec  # (unmapped once no view of it is left)
        return out

    @staticmethod
    def _shape(name: str) -> tuple[Any, tuple[int, ...]]:
        for column, dtype, shape in PACKET_COLUMNS:
            if column == name:
                return dtype, shape
        return _CAPTURE_COLUMNS[name]

    def drop(self, names: list[str]) -> None:
        for name in names:
            self._cache.pop(name, None)

    def _read(self, names: list[str]) -> dict[str, np.ndarray]:
        shapes = {name: (dtype, shape) for name, dtype, shape in PACKET_COLUMNS}
        shapes.update(_CAPTURE_COLUMNS)
        tunnel = {name: np.zeros((self._n, *shapes[name][1]), shapes[name][0])
                  for name in names if name in TUNNEL_COLUMNS}  # fmt: skip
        out = {name: np.empty((self._n, *shapes[name][1]), shapes[name][0])
               for name in names if name not in TUNNEL_COLUMNS}  # fmt: skip
        field = {name: _SPILL_FIELD.get(name, name) for name in out}
        at = 0
        for k, path in enumerate(self._paths):
            if tunnel and k < len(self._tunnel_paths):
                _load_tunnels(self._tunnel_paths[k], at, tunnel)
            rec = _mapped_rows(path)
            end = at + len(rec)
            for name, col in out.items():
                col[at:end] = k if name == "file" else rec[field[name]]
            at = end
            del rec  # (unmapped once no view of it is left)
        return {**out, **tunnel}


#: where a column is in a spilled row: the packet table points into the payload spill, the
#: capture columns keep what the capture gave
_SPILL_FIELD = {"payload_offset": "spill_offset", "capture_file": "file",
                "capture_offset": "payload_offset"}  # fmt: skip
_CAPTURE_COLUMNS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "capture_file": (np.int32, ()),
    "capture_offset": (np.int64, ()),
}


def _mapped_rows(path: str) -> np.ndarray:
    """A rows spill file as a read-only array of its records, mapped: a column is copied
    straight from the page cache (no read into a buffer first); the mapping goes with the
    last view of the array."""
    with open(path, "rb") as f:
        n = os.fstat(f.fileno()).st_size // SPILL_DTYPE.itemsize
        if n == 0:
            return np.zeros(0, SPILL_DTYPE)
        mm = mmap.mmap(f.fileno(), n * SPILL_DTYPE.itemsize, prot=mmap.PROT_READ)
    mm.madvise(mmap.MADV_SEQUENTIAL)
    return np.frombuffer(mm, SPILL_DTYPE, count=n)


def _load_tunnels(path: str, first_row: int, cols: dict[str, np.ndarray]) -> None:
    """Put the tunnel columns of one tunnel spill (if there is one) into the rows it names,
    counted from ``first_row``."""
    if not os.path.exists(path):
        return
    rec = np.fromfile(path, dtype=TUNNEL_DTYPE)
    rows = first_row + rec["row"]
    for name in TUNNEL_COLUMNS:
        if name in cols:
            cols[name][rows] = rec[name]


class MappedFile:
    """A spill file mapped read-only: all that planning and writing need of a source
    (``buffer``). Pages are read at random (no readahead) and released by ``drop_pages``."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if size else None
        self.buffer = np.frombuffer(self._mm, dtype=np.uint8) if self._mm else np.zeros(0, np.uint8)
        if self._mm is not None:
            self._mm.madvise(mmap.MADV_RANDOM)

    def drop_pages(self) -> None:
        if self._mm is not None:
            self._mm.madvise(mmap.MADV_DONTNEED)
