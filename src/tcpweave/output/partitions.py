"""Extraction in bounded memory: the capture cut by flow into partitions spilled to disk.

Theory of operation (``extract_partitioned``):

1. decode -- the sources are decoded a chunk of records at a time
   (``decode.decode_into``); each chunk's rows are routed by a hash of their
   order-free 4-tuple to one of P partitions and appended to that partition's
   spill file (``part-NNNNN.rows``, the packet-table columns as one record per
   row), and the rows' payload bytes to its payload spill (``part-NNNNN.payload``;
   ``payload_offset`` then points there). Every packet of a 4-tuple -- hence every
   session and direction -- lands in one partition. Pages of the mapped capture
   behind the decoder are released, so a capture larger than memory streams
   through, and this is the only pass over the capture.
2. sessions -- each partition is loaded (rows put back in frame order) and its
   sessions numbered (``flows.assign``); the frame of each session's first
   packet goes back to the driver, which ranks all of them: the rank is the
   global stream index (order of first packet, as Wireshark's tcp.stream).
3. streams -- each partition is loaded again, planned (``reassembly.plan``) and
   written: stream files positionally from its mapped payload spill, its
   streams.jsonl lines to ``part-NNNNN.jsonl`` (with a line index). Its spill
   files are then removed. The driver merges the jsonl files in stream order
   into ``DIR/streams.jsonl``.

Each step runs on this process and ``jobs - 1`` forked children (``_pool``), or
on Dask workers; steps 2 and 3 read only the work directory. The output does not
depend on how many processes run.

What bounds memory: the driver holds a window of the mapped capture (released
behind the decoder), one decode chunk, and an 8-byte first frame per session; a
process writing holds one partition (about ``ROWS_PER_PARTITION`` rows: packet
table, flows and plan, a few hundred bytes per row), the pages of its payload
spill being read (unmapped as the writers go) and the payloads of one block. A
single direction with more packets than a partition's share makes its partition
that much larger: one direction's packets are planned together.

Interruption: a partition's jsonl file appears (by rename) only when all its
streams are written. On Ctrl-C the driver merges the finished partitions into
streams.jsonl, lists the unfinished partitions' streams in
``DIR/INCOMPLETE.json`` (their files may be partial) and keeps the work
directory; ``--resume`` reuses it and writes only what is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import mmap
import os
import resource
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tcpweave import _faults as fault
from tcpweave.capture import RecordColumns, Source, open_source, open_sources
from tcpweave.capture.inputs import check_distinct
from tcpweave.capture.source import fixed_source, restrict_pcap
from tcpweave.decode import (
    DecodeStats,
    decode_file_into,
    decode_into,
    finish_fragments,
    merge_stats,
)
from tcpweave.decode.table import PACKET_COLUMNS, PacketColumns, PacketTable, take_packets
from tcpweave.enums import ChecksumMode, Policy
from tcpweave.errors import CaptureError
from tcpweave.flows import assign
from tcpweave.output._kernels import gather_ranges
from tcpweave.output._pool import LocalPool
from tcpweave.output.extract import STREAMS_PER_DIR, ExtractSummary, extract_block
from tcpweave.output.outdir import WORK_MARK, OutputDir, RunIdentity, input_identity
from tcpweave.output.streams import StreamViews, build_streams
from tcpweave.reassembly import plan

__all__ = [
    "ROWS_PER_PARTITION",
    "Interrupted",
    "PartitionView",
    "PartitionedRun",
    "extract_partitioned",
    "load_partition",
    "map_partitions",
    "partition_of",
]

#: rows a partition should hold (it bounds a worker's memory; see the module docstring):
#: a few hundred bytes per row while it is planned and written
ROWS_PER_PARTITION = 100_000
#: average frame size assumed when the first records say nothing
MIN_FRAME_BYTES = 160
#: with Dask, pcap files larger than this are decoded by several workers, in ranges of records
RANGE_BYTES = 256 << 20
#: payload bytes copied at once by a router (their copy is held while they are written)
ROUTE_BYTES = 8 << 20
#: captures with fewer TCP packets are numbered, planned and written by this process alone
FORK_MIN_ROWS = 50_000
#: streams whose streams.jsonl lines are merged at a time
MERGE_STREAMS = 1 << 13
#: rows handed to a router at a time by the decoder
ROUTE_ROWS = 1 << 16
SPILL_DTYPE = np.dtype([(name, dtype, shape) for name, dtype, shape in PACKET_COLUMNS])
STATE_FILE = "state.json"


class Interrupted(Exception):
    """Extraction stopped by Ctrl-C or a stop signal (``signum``); the output directory
    lists what was completed and is marked unfinished."""

    def __init__(
        self, done: int, total: int, partial: list[int] | None = None, signum: int = 2
    ) -> None:
        super().__init__(f"interrupted: {done} of {total} partitions written")
        self.done, self.total, self.signum = done, total, signum
        self.partial = partial or []


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
    """Partition of each row: a hash of its 4-tuple that ignores direction (a sum is order-free)."""
    with np.errstate(over="ignore"):
        h = _mix(_endpoint_hash(cols.src, cols.sport) + _endpoint_hash(cols.dst, cols.dport))
    return np.asarray(h % np.uint64(n_parts)).astype(np.int64)


def _rows_path(workdir: str, p: int, tag: str = "") -> str:
    return os.path.join(workdir, f"part-{p:05d}{tag}.rows")


def _payload_path(workdir: str, p: int, tag: str = "") -> str:
    return os.path.join(workdir, f"part-{p:05d}{tag}.payload")


def _jsonl_path(workdir: str, p: int) -> str:
    return os.path.join(workdir, f"part-{p:05d}.jsonl")


class _Router:
    """The decode sink: appends each chunk's rows to their partitions' spill files, and the
    rows' payload bytes to their partitions' payload files (``payload_offset`` rewritten to
    point there), so that later steps never read the capture again."""

    def __init__(self, workdir: str, n_parts: int, tag: str = "") -> None:
        self.n_parts = n_parts
        _allow_files(2 * n_parts + 64)
        self.files = [open(_rows_path(workdir, p, tag), "wb") for p in range(n_parts)]
        self.payloads = [open(_payload_path(workdir, p, tag), "wb") for p in range(n_parts)]
        self.rows = np.zeros(n_parts, np.int64)
        self.payload_bytes = np.zeros(n_parts, np.int64)

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
        for name, _, _ in PACKET_COLUMNS:
            rec[name] = getattr(cols, name)[order]
        bounds = np.searchsorted(part[order], np.arange(self.n_parts + 1))
        length = rec["payload_caplen"]
        at = np.concatenate(([0], np.cumsum(length)))  # where each row's payload is copied
        payload = np.empty(int(at[-1]), np.uint8)
        gather_ranges(buffer, rec["payload_offset"], length, at[:-1], payload)
        sizes = np.diff(bounds)
        rec["payload_offset"] = at[:-1] + np.repeat(self.payload_bytes - at[bounds[:-1]], sizes)
        for p in np.flatnonzero(sizes).tolist():
            self.files[p].write(rec[bounds[p] : bounds[p + 1]].data)
            self.payloads[p].write(payload[at[bounds[p]] : at[bounds[p + 1]]].data)
        self.rows += sizes
        self.payload_bytes += at[bounds[1:]] - at[bounds[:-1]]

    def close(self) -> None:
        for f in self.files + self.payloads:
            f.close()


def _allow_files(n: int) -> None:
    """Raise this process's limit of open files to ``n`` if the hard limit allows (a router
    holds two files per partition)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        want = n if hard == resource.RLIM_INFINITY else min(n, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _spill_names(workdir: str, p: int, tags: list[str] | None, kind: str) -> list[str]:
    """Partition ``p``'s spill files of one ``kind`` (rows, payload), one per tag (one per
    piece of step 1 when workers decoded the capture; default: look them up)."""
    prefix = f"part-{p:05d}"
    if tags is None:
        names = sorted(
            n for n in os.listdir(workdir) if n.startswith(prefix) and n.endswith(".rows")
        )
        tags = [n[len(prefix) : -len(".rows")] for n in names]
    return [os.path.join(workdir, f"{prefix}{tag}.{kind}") for tag in tags]


#: spill rows read at a time while a partition is loaded (about 18 MB)
LOAD_ROWS = 1 << 17


def load_partition(workdir: str, p: int, tags: list[str] | None = None) -> PacketTable:
    """Partition ``p``'s rows as a packet table, in frame order. Their payloads are in the
    partition's payload spill files, one per tag: ``file`` says which (its index in
    ``tags``) and ``payload_offset`` where in it (see ``PartitionView.sources``).

    The spill files are read LOAD_ROWS rows at a time into the columns, and rows are put in
    frame order one column at a time: loading holds the table plus one chunk or one
    column, never two copies of the table."""
    names = _spill_names(workdir, p, tags, "rows")
    sizes = [os.path.getsize(path) // SPILL_DTYPE.itemsize for path in names]
    n = sum(sizes)
    cols = {name: np.empty((n, *shape), dtype) for name, dtype, shape in PACKET_COLUMNS}
    at = 0
    for k, path in enumerate(names):
        with open(path, "rb") as f:
            while chunk := f.read(LOAD_ROWS * SPILL_DTYPE.itemsize):
                rec = np.frombuffer(chunk, dtype=SPILL_DTYPE)
                for name in cols:
                    cols[name][at : at + len(rec)] = rec[name]
                cols["file"][at : at + len(rec)] = k
                at += len(rec)
                del rec, chunk
    frame = cols["frame"]
    if n > 1 and np.any(frame[1:] < frame[:-1]):  # rebuilt datagrams come last, pieces apart
        order = np.argsort(frame, kind="stable")
        for name in cols:
            cols[name] = cols[name][order]
        del order
    return PacketTable(PacketColumns(**cols))


class MappedFile:
    """A file mapped read-only: all that planning and writing need of a source (``buffer``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) if size else None
        self.buffer = np.frombuffer(self._mm, dtype=np.uint8) if self._mm else np.zeros(0, np.uint8)
        self.read_randomly()

    def read_randomly(self) -> None:
        if self._mm is not None:
            self._mm.madvise(mmap.MADV_RANDOM)

    def drop_pages(self) -> None:
        if self._mm is not None:
            self._mm.madvise(mmap.MADV_DONTNEED)


@dataclass
class Settings:
    """What every partition task needs to know (picklable, for Dask workers)."""

    workdir: str
    out_dir: str
    n_parts: int
    policy: int = int(Policy.FIRST)
    checksums: int = int(ChecksumMode.AUTO)
    layout: str = "tcpweave"
    gaps: str = "fill"
    idle_timeout_ns: int = 0
    buffer_paths: list[str] = field(default_factory=list)  # for workers that map files by path
    spill_tags: list[str] = field(default_factory=lambda: [""])  # spill files of a partition
    ledger_dir: str = ""  # where writers list the files they make (output/outdir.py)


def session_firsts(settings: Settings, p: int) -> np.ndarray:
    """Task of step 2: frame of the first packet of each session of partition ``p``."""
    fault.at("sessions")
    view = PartitionView(settings, p, np.zeros(0, np.int64))
    return np.asarray(view.packets.frame[view.flows.first_row])


def write_partition(settings: Settings, p: int, streams: np.ndarray) -> tuple[int, ...]:
    """Task of step 3: plan and write partition ``p``, its sessions numbered ``streams``.

    The files an earlier, interrupted attempt at the partition made (its ledger lists
    them) are removed first: stream files are only ever created, never overwritten."""
    fault.at("write")
    ledger = os.path.join(settings.ledger_dir, f"part-{p:05d}") if settings.ledger_dir else None
    if ledger is not None and os.path.exists(ledger):
        _forget(settings.out_dir, ledger)
    part = PartitionView(settings, p, streams)
    the_plan = part.plan(Policy(settings.policy), ChecksumMode(settings.checksums))
    views = StreamViews(part.packets, part.flows, the_plan, part.sources)
    texts: list[bytes] = []
    keys: list[int] = []
    totals = [0] * 6
    index = streams.tolist()
    for lo in range(0, len(views), STREAMS_PER_DIR):
        text, line_streams, counts = extract_block(
            views, lo, lo + STREAMS_PER_DIR, settings.out_dir, settings.layout, settings.gaps,
            index, ledger,
        )  # fmt: skip
        texts.append(text)
        keys += line_streams
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    path = _jsonl_path(settings.workdir, p)
    with open(path + ".counts", "w", encoding="utf-8") as f:
        json.dump(totals, f)
    lines = b"".join(texts)
    ends = np.flatnonzero(np.frombuffer(lines, np.uint8) == ord("\n")) + 1
    np.stack([np.asarray(keys, np.int64), ends]).tofile(path + ".index")
    with open(path + ".tmp", "wb") as f:
        f.write(lines)
    os.replace(path + ".tmp", path)  # the partition is done once this name exists
    n_streams = len(views)
    del views, the_plan, part  # unmapped: its spill is not needed again, even on --resume
    tags = settings.spill_tags
    for name in _spill_names(settings.workdir, p, tags, "rows") + _spill_names(
        settings.workdir, p, tags, "payload"
    ):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
    return (n_streams, *totals)


def _forget(out_dir: str, ledger: str) -> None:
    """Remove the files listed in ``ledger`` (made by this run) and the ledger itself."""
    with open(ledger, encoding="utf-8") as f:
        names = [n for n in f.read().split("\n") if n]
    for rel in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, rel))
    os.remove(ledger)


@dataclass
class PartitionedRun:
    """The state of a partitioned extraction, as kept in ``workdir/state.json``."""

    settings: Settings
    inputs: list[list[Any]]  # [path, size, mtime_ns] of every capture file given
    stats: dict[str, Any]
    rows: list[int]
    errors: list[list[Any]] = field(default_factory=list)  # [file, offset, reason]

    def save(self) -> None:
        with open(os.path.join(self.settings.workdir, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(asdict(self), f)

    @classmethod
    def load(cls, workdir: str) -> PartitionedRun | None:
        try:
            with open(os.path.join(workdir, STATE_FILE), encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError):
            return None
        raw["settings"] = Settings(**raw["settings"])
        return cls(**raw)

    def decode_stats(self) -> DecodeStats:
        stats = dict(self.stats)
        stats["unknown_link_types"] = {
            int(k): v for k, v in stats.get("unknown_link_types", {}).items()
        }
        return DecodeStats(**stats)

    def capture_errors(self) -> list[CaptureError]:
        return [CaptureError(f, o, r) for f, o, r in self.errors]


def _inputs(paths: list[str]) -> list[list[Any]]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return out


def _n_parts(sources: list[Source], rows_per_partition: int) -> int:
    """Partitions for about ``rows_per_partition`` rows each, from the average frame size of
    the first records (a fifth more, for captures whose frames shrink later)."""
    total = sum(len(src.buffer) for src in sources)
    average = MIN_FRAME_BYTES
    for rec in sources[0].record_chunks(4096) if sources else ():
        average = max(int(rec.caplen.mean()) + 16, 64) if len(rec.caplen) else average
        break
    estimate = total * 6 // (5 * average)
    return max(1, -(-estimate // rows_per_partition))


def _decode_step(
    paths: list[str],
    settings: Settings,
    rows_per_partition: int,
    progress: Callable[[str, int, int, int], None],
    ex: Any = None,
) -> PartitionedRun:
    """Step 1: decode every source into partition spill files (here, or by the workers of
    ``ex`` when several files make a capture)."""
    sources: list[Any] = open_sources(paths, settings.workdir, populate=False)
    try:
        settings.n_parts = _n_parts(sources, rows_per_partition)
        workers = getattr(ex, "workers", 1) if ex is not None else 1
        settings.n_parts = -(-settings.n_parts // workers) * workers  # no worker idle at the end
        if ex is not None and _decode_on_workers_pays(sources, ex):
            stats, defrag, rows, errors = _decode_on_workers(sources, settings, ex, progress)
        else:
            stats, defrag, rows = _decode_here(sources, settings, progress)
            errors = []
        if defrag is not None:
            sources.append(defrag)
        if not errors:
            errors = [[e.path, e.offset, e.reason] for s in sources for e in s.errors]
    finally:
        for src in sources:
            src.close()
    return PartitionedRun(settings, _inputs(paths), asdict(stats), rows.tolist(), errors)


def _decode_on_workers_pays(sources: list[Source], ex: Any) -> bool:
    """Several files, or a pcap file big enough to cut; local workers only for files they
    can map as they are (a compressed capture would first be copied out decompressed)."""
    if not (len(sources) > 1 or len(sources[0].buffer) > RANGE_BYTES):
        return False
    return not getattr(ex, "local", False) or all(s.compression is None for s in sources)


def _decode_here(
    sources: list[Source], settings: Settings, progress: Callable[[str, int, int, int], None]
) -> tuple[DecodeStats, Source | None, np.ndarray]:
    router = _Router(settings.workdir, settings.n_parts)
    sizes = [len(src.buffer) for src in sources]
    base = np.concatenate([[0], np.cumsum(sizes)])
    total = int(base[-1])
    done = [0]

    def sink(cols: Any, buffer: np.ndarray) -> None:
        router(cols, buffer)
        n = len(cols.frame)
        if n:
            last = int(cols.file[-1])
            at = min(int(base[last] + cols.offset[-1]), total) if last < len(sizes) else total
            progress("decode", max(at - done[0], 0), total, n)
            done[0] = max(done[0], at)

    try:
        stats, defrag = decode_into(sources, sink, settings.workdir, ROUTE_ROWS, release=True)
    finally:
        router.close()
    return stats, defrag, router.rows


@dataclass
class Piece:
    """A share of step 1 for one worker: file ``file`` whole, or its pcap records in
    ``[start, end)`` (``last_sec``: seconds of the record before ``start``)."""

    file: int
    frame_base: int
    start: int = -1
    end: int = -1
    last_sec: int = -1


def decode_piece_task(
    settings: Settings, piece: Piece, name: str
) -> tuple[list[int], dict[str, Any], np.ndarray, list[Any], list[list[Any]]]:
    """Task of step 1 on a worker: decode one piece of a file (mapped by path) into spill files.

    Returns the rows per partition, the counts, the decoder's counters, the IP
    fragments met (rebuilt by the driver: a datagram may end in a later piece), and
    the damaged records (named after the capture file ``name``).
    """
    i = piece.file
    src = open_source(settings.buffer_paths[i], settings.workdir, populate=False)
    if piece.start >= 0:
        restrict_pcap(src, piece.start, piece.end, piece.last_sec)
    router = _Router(settings.workdir, settings.n_parts, _piece_tag(piece))
    try:
        one = decode_file_into(src, i, piece.frame_base, router, ROUTE_ROWS, release=True)
    finally:
        router.close()
        src.close()
    errors = [[name, e.offset, e.reason] for e in src.scan_errors]
    return router.rows.tolist(), asdict(one.stats), one.counters, one.fragments, errors


def _piece_tag(piece: Piece) -> str:
    return f".f{piece.file:05d}.{max(piece.start, 0):013d}"


def _pieces(sources: list[Source], range_bytes: int = 0) -> list[Piece]:
    """The index pass: frame numbers at each file's start, and pcap files longer than
    ``range_bytes`` (default ``RANGE_BYTES``) cut at record boundaries into ranges of
    about that size."""
    range_bytes = range_bytes or RANGE_BYTES
    pieces: list[Piece] = []
    frame = 0
    for i, src in enumerate(sources):
        cut = src.format == "pcap" and len(src.buffer) > range_bytes
        pieces.append(Piece(i, frame, 24 if cut else -1, -1, -1))
        next_cut, last_sec = range_bytes, -1
        for rec in src.record_chunks(1 << 16):
            if cut:
                heads = rec.offset - 16
                j = int(np.searchsorted(heads, next_cut))
                while j < len(heads):
                    before = int(rec.ts_ns[j - 1]) // 10**9 if j else last_sec
                    pieces[-1].end = int(heads[j])
                    pieces.append(Piece(i, frame + j, int(heads[j]), -1, before))
                    next_cut = int(heads[j]) + range_bytes
                    j = int(np.searchsorted(heads, next_cut))
                last_sec = int(rec.ts_ns[-1]) // 10**9
            frame += len(rec.offset)
            src.release_before(int(rec.offset[0]))
        if cut:
            pieces[-1].end = len(src.buffer)
        src.drop_pages()
    return pieces


def _decode_on_workers(
    sources: list[Source],
    settings: Settings,
    ex: Any,
    progress: Callable[[str, int, int, int], None],
) -> tuple[DecodeStats, Source | None, np.ndarray, list[list[Any]]]:
    """Step 1 with the files decoded by the workers: the driver walks the record headers
    first (frame numbers continue across files; big pcap files are cut into ranges), the
    workers decode the pieces, and the driver rebuilds IP fragments last."""
    settings.buffer_paths = _buffer_paths(sources, settings.workdir)
    # a few pieces per worker: enough to share the work out, few spill files per partition
    total = sum(len(src.buffer) for src in sources)
    pieces = _pieces(sources, max(RANGE_BYTES, total // (4 * max(getattr(ex, "workers", 1), 1))))
    settings.spill_tags = [_piece_tag(pc) for pc in pieces] + [".defrag"]
    _warm_decode(sources[0])
    jobs = [
        (decode_piece_task, k, settings, pc, sources[pc.file].path) for k, pc in enumerate(pieces)
    ]
    results = dict(ex.map(_tagged, jobs))
    stats = DecodeStats()
    counters = np.zeros_like(results[0][2]) if results else np.zeros(0, np.int64)
    rows = np.zeros(settings.n_parts, np.int64)
    parts: list[tuple[np.ndarray, Any]] = []
    errors: list[list[Any]] = []
    for k, pc in enumerate(pieces):
        src = sources[pc.file]
        part_rows, stats_dict, piece_counters, fragments, piece_errors = results[k]
        one = DecodeStats(**stats_dict)
        if pc.start <= 24:  # the file's first piece: its damage found while decompressing
            one.corrupt_records += len(src.decompress_errors)
            errors += [[e.path, e.offset, e.reason] for e in src.decompress_errors]
        merge_stats(stats, one)
        counters += piece_counters
        rows += part_rows
        parts.extend((src.buffer, f) for f in fragments)
        errors += piece_errors
        progress("decode", total * (k + 1) // len(pieces) - total * k // len(pieces), total,
                 one.tcp_packets)  # fmt: skip
    router = _Router(settings.workdir, settings.n_parts, ".defrag")
    try:
        defrag = finish_fragments(parts, len(sources), settings.workdir, router, stats, counters)
    finally:
        router.close()
    return stats, defrag, rows + router.rows, errors


def _warm_decode(src: Source) -> None:
    """Compile the decode kernels here (into numba's cache) before the workers need them:
    decode the file's first records and throw the rows away."""
    first = next(iter(src.record_chunks(64)), None)
    if first is not None:
        head = RecordColumns(*(col.copy() for col in first))
        decode_file_into(fixed_source(src.path, src.format, src.buffer, head, []), 0, 0, _drop)


def _drop(cols: Any, buffer: np.ndarray) -> None:
    pass


def _ranks(settings: Settings, ex: Any, warm: Callable[[], None] | None = None) -> list[np.ndarray]:
    """Step 2 on the executor ``ex``: every partition's global stream indexes (kept in the
    work directory, where a resumed run finds them). ``warm`` is handed to ``ex.map``."""
    path = os.path.join(settings.workdir, "ranks.npz")
    parts = range(settings.n_parts)
    if os.path.exists(path):
        with np.load(path) as z:
            return [z[f"p{p}"] for p in parts]
    firsts = dict(ex.map(_tagged, [(session_firsts, p, settings, p) for p in parts], warm=warm))
    ranks = _rank([firsts[p] for p in parts])
    fault.at("rank")
    np.savez(path, **{f"p{p}": r for p, r in enumerate(ranks)})  # type: ignore[arg-type]
    return ranks


def _rank(firsts: list[np.ndarray]) -> list[np.ndarray]:
    """Global stream index of every partition's sessions: rank of their first frame."""
    sizes = [len(f) for f in firsts]
    everything = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    rank = np.empty(len(everything), np.int64)
    rank[np.argsort(everything, kind="stable")] = np.arange(len(everything))
    return np.split(rank, np.cumsum(sizes)[:-1]) if sizes else []


def _tagged(fn: Callable[..., Any], p: int, *args: Any) -> tuple[int, Any]:
    try:
        return p, fn(*args)
    finally:
        _give_back()


def _give_back() -> None:
    """Return the C heap's free memory to the system after a task. glibc keeps freed
    blocks below its (self-raising) mmap threshold in the heap: a worker otherwise holds
    on to ~45 MB of a partition's freed arrays between tasks."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def extract_partitioned(
    paths: list[str],
    out_dir: Path,
    policy: Policy = Policy.FIRST,
    checksums: ChecksumMode = ChecksumMode.AUTO,
    layout: str = "tcpweave",
    gaps: str = "fill",
    jobs: int = 1,
    workdir: str | None = None,
    resume: bool = False,
    rows_per_partition: int = ROWS_PER_PARTITION,
    progress: Callable[[str, int, int, int], None] | None = None,
    pool: Any = None,
    idle_timeout_ns: int = 0,
    force: bool = False,
) -> tuple[ExtractSummary, PartitionedRun]:
    """Extract every stream of the capture ``paths`` into ``out_dir`` in bounded memory.

    ``out_dir`` is claimed first (output/outdir.py): it must be new, empty, or hold
    this run (``resume`` continues it) or, with ``force``, another tcpweave run; the
    spill files go under it, or in a directory made inside ``workdir``. ``pool``
    replaces the local workers (see ``tcpweave.output.distributed``);
    ``idle_timeout_ns`` > 0 also starts a new session on a 4-tuple after that much
    silence. Raises ``Interrupted`` after Ctrl-C or a stop signal, once the output
    directory says what is complete; on any other failure the directory is marked
    failed and the spill files are removed.
    """
    tick = progress or (lambda phase, n, total, packets: None)
    fresh = Settings("", str(out_dir), 1, int(policy), int(checksums), layout, gaps,
                     idle_timeout_ns)  # fmt: skip
    identity = RunIdentity("extract", input_identity(paths), _options(fresh))
    claim = OutputDir.claim(out_dir, identity, force=force, resume=resume, workdir=workdir)
    fresh.workdir, fresh.ledger_dir = claim.workdir, claim.ledger("")
    run: PartitionedRun | None = None
    try:
        run = PartitionedRun.load(claim.workdir) if claim.resumed else None
        with pool if pool is not None else LocalPool(jobs) as ex:
            decoders = ex if pool is not None or jobs > 1 else None
            run = _prepare(paths, run, fresh, rows_per_partition, tick, decoders)
            if pool is not None:
                _warm(run.settings, run.rows)  # into numba's cache, before the fan-out
            summary = _partition_steps(run, ex, tick, out_dir)
        fault.at("finish")
        claim.finish(_manifest(run, summary))
    except Interrupted as exc:
        claim.stopped("interrupted", f"stopped by signal {exc.signum}", keep_work=True,
                      partial_streams=exc.partial)  # fmt: skip
        raise
    except KeyboardInterrupt as exc:  # before the partitions were written
        signum = getattr(exc, "signum", 2)
        claim.stopped("interrupted", f"stopped by signal {signum}", keep_work=True)
        total = run.settings.n_parts if run is not None else 0
        raise Interrupted(0, total, signum=signum) from None
    except BaseException as exc:
        claim.stopped("failed", _reason(exc), keep_work=False)
        raise
    return summary, run


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def _manifest(run: PartitionedRun, summary: ExtractSummary) -> dict[str, Any]:
    """What manifest.json says of a finished extraction (besides inputs and options)."""
    return {
        "summary": asdict(summary),
        "decode": run.stats,
        "input_damage": {
            "records": int(run.stats.get("corrupt_records", 0)),
            "regions": [{"file": f, "offset": o, "reason": r} for f, o, r in run.errors],
        },
    }


def _options(s: Settings) -> tuple[tuple[str, Any], ...]:
    """The options that shape an extraction's output (sorted by name)."""
    return (("checksums", ChecksumMode(s.checksums).name.lower()), ("gaps", s.gaps),
            ("idle_timeout_ns", s.idle_timeout_ns), ("layout", s.layout),
            ("policy", Policy(s.policy).name.lower()))  # fmt: skip


def _prepare(
    paths: list[str],
    run: PartitionedRun | None,
    settings: Settings,
    rows_per_partition: int,
    tick: Callable[[str, int, int, int], None],
    ex: Any,
) -> PartitionedRun:
    """Step 1 (into ``settings.workdir``), or the state of the run being resumed. The
    capture is not needed after it: the spill files hold every row and payload byte."""
    if run is not None:
        return run
    _empty(settings.workdir)  # a resumed run that stopped before its state was saved
    run = _decode_step(paths, settings, rows_per_partition, tick, ex)
    run.save()
    return run


def _empty(workdir: str) -> None:
    """Empty a work directory tcpweave made (output/outdir.py), keeping its mark."""
    os.makedirs(workdir, exist_ok=True)
    for name in os.listdir(workdir):
        if name == WORK_MARK:
            continue
        path = os.path.join(workdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def _warm(settings: Settings, rows: list[int]) -> None:
    """Compile the session and plan kernels here, before workers are forked or sent tasks
    (they then inherit them, or load them from numba's cache, instead of each compiling)."""
    nonempty = [p for p, n in enumerate(rows) if n]
    if not nonempty:
        return
    p = min(nonempty, key=lambda q: rows[q])
    part = PartitionView(settings, p, np.zeros(0, np.int64))
    part.plan(Policy(settings.policy), ChecksumMode(settings.checksums))


def _buffer_paths(sources: list[Source], workdir: str) -> list[str]:
    """A plain file per capture file for workers that map files by path (a compressed
    capture lives in an anonymous file: it is copied, decompressed, to the work directory)."""
    paths = []
    for i, src in enumerate(sources):
        if src.compression is None:
            paths.append(os.path.abspath(src.path))
            continue
        path = os.path.join(workdir, f"source-{i:05d}.bin")
        if not os.path.exists(path):
            with open(path + ".tmp", "wb") as f:
                f.write(src.buffer.data)
            os.replace(path + ".tmp", path)
        paths.append(path)
    return paths


def _partition_steps(
    run: PartitionedRun,
    ex: Any,
    tick: Callable[[str, int, int, int], None],
    out_dir: Path,
) -> ExtractSummary:
    """Steps 2 and 3 on the executor ``ex``: they read only the work directory."""
    settings = run.settings
    parts = list(range(settings.n_parts))
    summary = ExtractSummary()
    done: set[int] = {p for p in parts if os.path.exists(_jsonl_path(settings.workdir, p))}
    if getattr(ex, "local", False) and sum(run.rows) < FORK_MIN_ROWS:
        ex = LocalPool(1)  # a small capture: forking and warming would cost more than it saves
    local = getattr(ex, "local", False) and ex.workers > 1
    warm = functools.partial(_warm, settings, run.rows) if local else None
    ranks = _ranks(settings, ex, warm)  # warm: plan kernels loaded here, inherited by writers
    total = sum(len(r) for r in ranks)
    todo = [p for p in parts if p not in done]
    try:
        args = [(write_partition, p, settings, p, ranks[p]) for p in todo]
        for p, _counts in ex.map(_tagged, args):
            done.add(p)
            tick("write", len(ranks[p]), total, 0)
    except KeyboardInterrupt as exc:
        done |= {p for p in parts if os.path.exists(_jsonl_path(settings.workdir, p))}
        _merge(settings, sorted(done), out_dir, summary)
        partial = sorted(int(s) for p in parts if p not in done for s in ranks[p])
        raise Interrupted(len(done), len(parts), partial, getattr(exc, "signum", 2)) from None
    fault.at("merge")
    _merge(settings, parts, out_dir, summary)
    summary.streams = total
    return summary


class PartitionView:
    """One partition seen as a small capture: ``packets``, ``flows``, ``plan()``, ``streams()``,
    ``sources``; its sessions are numbered locally, ``global_index`` maps them to the
    capture's stream indexes.

    Payload bytes come from the partition's payload spill files, not from the capture: a
    row's ``file`` is the spill file that holds its payload (``sources[file]``, mapped on
    first use: numbering sessions needs no payload) and ``payload_offset`` its place there.
    """

    def __init__(self, settings: Settings, p: int, global_index: np.ndarray) -> None:
        self.settings, self.p = settings, p
        self.packets = load_partition(settings.workdir, p, settings.spill_tags)
        self.flows = assign(self.packets, settings.idle_timeout_ns)
        self.global_index = global_index
        self._plans: dict[tuple[int, int], Any] = {}
        self._sources: list[Any] | None = None

    @property
    def sources(self) -> list[Any]:
        """The partition's payload spill files (mapped; read here and there, and unmapped as
        the writers go: see ``output.streams.note_reads``)."""
        if self._sources is None:
            names = _spill_names(self.settings.workdir, self.p, self.settings.spill_tags, "payload")
            self._sources = [MappedFile(path) for path in names]
        return self._sources

    def plan(self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto") -> Any:
        pol = policy if isinstance(policy, Policy) else Policy.parse(policy)
        ck = checksums if isinstance(checksums, ChecksumMode) else ChecksumMode[checksums.upper()]
        key = (int(pol), int(ck))
        if key not in self._plans:
            self._plans[key] = plan(self.packets, self.flows, self.sources, pol, ck)
        return self._plans[key]

    def streams(
        self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto"
    ) -> list[Any]:
        return build_streams(self.packets, self.flows, self.plan(policy, checksums), self.sources)


def _view_task(settings: Settings, p: int, global_index: np.ndarray, fn: Callable[..., Any]) -> Any:
    return fn(PartitionView(settings, p, global_index))


def map_partitions(
    paths: list[str],
    fn: Callable[[PartitionView], Any],
    jobs: int = 1,
    workdir: str | None = None,
    rows_per_partition: int = ROWS_PER_PARTITION,
    report: Callable[[PartitionedRun], None] | None = None,
) -> Iterator[Any]:
    """Call ``fn`` on every partition of the capture (as a ``PartitionView``) on ``jobs``
    forked workers; yields the results in no particular order. ``fn`` must be picklable (a
    module-level function, or a partial of one). ``report`` sees the decoded run (counts,
    damaged records) first. Memory is bounded as for extraction."""
    import tempfile

    check_distinct(paths)
    with tempfile.TemporaryDirectory(prefix="tcpweave-parts-", dir=workdir) as work:
        tick = _no_progress
        fresh = Settings(os.path.join(work, "w"), work, 1)
        run = _prepare(paths, None, fresh, rows_per_partition, tick, None)
        if report is not None:
            report(run)
        with LocalPool(jobs) as ex:
            settings = run.settings
            ranks = _ranks(settings, ex)
            args = [(_view_task, p, settings, p, r, fn) for p, r in enumerate(ranks)]
            for _p, result in ex.map(_tagged, args):
                yield result


def _no_progress(phase: str, n: int, total: int, packets: int) -> None:
    pass


def _merge(settings: Settings, parts: list[int], out_dir: Path, summary: ExtractSummary) -> None:
    """streams.jsonl from the partitions' files, in stream order; sums the summary counts.

    Each partition's lines are in stream order, and its index file gives each line's
    stream and end. The lines of MERGE_STREAMS streams at a time are read from every
    partition, put in order (stable: c2s before s2c) and copied out by one kernel call.
    """
    index = {}
    for p in parts:
        path = _jsonl_path(settings.workdir, p) + ".index"
        keys, ends = np.fromfile(path, np.int64).reshape(2, -1)
        index[p] = (keys, np.concatenate(([0], ends)))
    top = max((int(k[-1]) + 1 for k, _ in index.values() if len(k)), default=0)
    files = {p: open(_jsonl_path(settings.workdir, p), "rb", buffering=0) for p in parts}
    try:
        with open(out_dir / "streams.jsonl", "wb") as out:
            for a in range(0, top, MERGE_STREAMS):
                out.write(_merged_window(index, files, a, a + MERGE_STREAMS))
    finally:
        for f in files.values():
            f.close()
    for p in parts:
        with open(_jsonl_path(settings.workdir, p) + ".counts", encoding="utf-8") as cf:
            summary.add(json.load(cf))


def _merged_window(index: dict[int, Any], files: dict[int, Any], a: int, b: int) -> Any:
    """The lines of streams ``a..b-1`` from every partition, in stream order."""
    spans = []
    for p, (k, _ends) in index.items():
        i, j = np.searchsorted(k, [a, b]).tolist()
        if i < j:
            spans.append((p, i, j))
    size = sum(int(index[p][1][j] - index[p][1][i]) for p, i, j in spans)
    joined = np.empty(size, np.uint8)
    keys, starts, lengths = [], [], []
    base = 0
    for p, i, j in spans:
        k, ends = index[p]
        n = int(ends[j] - ends[i])
        if os.preadv(files[p].fileno(), [joined[base : base + n].data], int(ends[i])) != n:
            raise OSError(f"{files[p].name}: shorter than its index says")
        keys.append(k[i:j])
        starts.append(ends[i:j] - ends[i] + base)
        lengths.append(np.diff(ends[i : j + 1]))
        base += n
    out = np.empty(size, np.uint8)
    if spans:
        order = np.argsort(np.concatenate(keys), kind="stable")
        length = np.concatenate(lengths)[order]
        at = np.concatenate(([0], np.cumsum(length)[:-1]))
        gather_ranges(joined, np.concatenate(starts)[order], length, at, out)
    return out.data
