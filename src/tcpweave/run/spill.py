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
from tcpweave.decode.table import (
    PACKET_COLUMNS,
    PacketColumns,
    PacketTable,
    take_packets,
)
from tcpweave.output._kernels import gather_ranges

__all__ = [
    "SPILL_DTYPE",
    "MappedFile",
    "Router",
    "SpillLayout",
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
#: spill rows read at a time while a partition is loaded (about 18 MB)
LOAD_ROWS = 1 << 17


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
        for name in self.files(p, "rows") + self.files(p, "payload") + self.files(p, "tunnels"):
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


def load_partition(layout: SpillLayout, p: int) -> tuple[PacketTable, np.ndarray, np.ndarray]:
    """Partition ``p``'s rows as a packet table, in frame order, whose payloads are in the
    partition's payload spill files, one per tag: ``file`` says which (its index in
    ``layout.tags``) and ``payload_offset`` where in it. Also the rows' ``file`` and
    ``payload_offset`` as the capture gave them (for exports of the packet table).

    The spill files are read LOAD_ROWS rows at a time into the columns, and rows are put in
    frame order one column at a time: loading holds the table plus one chunk or one
    column, never two copies of the table."""
    names = layout.files(p, "rows")
    sizes = [os.path.getsize(path) // SPILL_DTYPE.itemsize for path in names]
    n = sum(sizes)
    cols: dict[str, np.ndarray] = {
        name: np.empty((n, *shape), dtype) for name, dtype, shape in PACKET_COLUMNS
    }
    capture: dict[str, np.ndarray] = {
        "file": np.empty(n, np.int32),
        "payload_offset": np.empty(n, np.int64),
    }
    for name in TUNNEL_COLUMNS:  # zero pages until a tunnelled row is written
        cols[name] = np.zeros_like(cols[name])
    at = 0
    for k, path in enumerate(names):
        _load_tunnels(layout.path(p, "tunnels", layout.tags[k]), at, cols)
        with open(path, "rb") as f:
            while chunk := f.read(LOAD_ROWS * SPILL_DTYPE.itemsize):
                rec = np.frombuffer(chunk, dtype=SPILL_DTYPE)
                end = at + len(rec)
                for name, _, _ in _ROW_COLUMNS:
                    cols[name][at:end] = rec[name]
                for name, col in capture.items():
                    col[at:end] = rec[name]
                cols["file"][at:end] = k
                cols["payload_offset"][at:end] = rec["spill_offset"]
                at = end
                del rec, chunk
    frame = cols["frame"]
    if n > 1 and np.any(frame[1:] < frame[:-1]):  # rebuilt datagrams come last, pieces apart
        order = np.argsort(frame, kind="stable")
        for table in (cols, capture):
            for name in table:
                table[name] = table[name][order]
        del order
    return PacketTable(PacketColumns(**cols)), capture["file"], capture["payload_offset"]


def _load_tunnels(path: str, first_row: int, cols: dict[str, np.ndarray]) -> None:
    """Put the tunnel columns of one tunnel spill (if there is one) into the rows it names,
    counted from ``first_row``."""
    if not os.path.exists(path):
        return
    rec = np.fromfile(path, dtype=TUNNEL_DTYPE)
    rows = first_row + rec["row"]
    for name in TUNNEL_COLUMNS:
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
