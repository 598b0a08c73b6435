"""decode/: records -> packet table (link, tunnels, IPv4/IPv6, fragments, TCP, checksums).

``decode`` runs the decode kernel over each source's record index, hands IP
fragments to the reassembler, decodes the rebuilt datagrams with the same
kernel, and merges everything into one packet table in frame order.
"""

from __future__ import annotations

import gc
import mmap
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from tcpweave.capture import Source
from tcpweave.capture.bpf import FILTERED_LINKTYPE
from tcpweave.capture.index import RecordColumns
from tcpweave.capture.source import fixed_source
from tcpweave.decode import _kernels as k
from tcpweave.decode.fragments import Reassembly, empty_fragments, reassemble
from tcpweave.decode.table import (
    PacketTable,
    concat_packets,
    empty_packets,
    take_packets,
    zero_tunnel_details,
)
from tcpweave.enums import Checksum, Encapsulation

__all__ = [
    "DecodeStats",
    "FileDecode",
    "PacketTable",
    "RecordStatus",
    "decode",
    "decode_file_into",
    "decode_into",
    "finish_fragments",
    "merge_stats",
]

#: records decoded per kernel call (their bytes are still in cache from the scan)
CHUNK_RECORDS = 4096
#: first guess of the average frame size, to size the packet table before growing it
ESTIMATED_FRAME_BYTES = 400


class RecordStatus(IntEnum):
    """What the decoder made of a frame."""

    TCP = k.S_TCP
    NON_IP = k.S_NON_IP
    NON_TCP = k.S_NON_TCP
    FRAGMENT = k.S_FRAGMENT
    UNKNOWN_LINK = k.S_UNKNOWN_LINK
    MALFORMED = k.S_MALFORMED
    TRUNCATED_HEADER = k.S_TRUNCATED_HEADER


@dataclass
class DecodeStats:
    """Counts over the whole capture (``Capture.stats``)."""

    frames: int = 0
    tcp_packets: int = 0
    non_ip: int = 0
    non_tcp: int = 0
    fragmented: int = 0  # frames that carried an IP fragment
    reassembled: int = 0  # datagrams rebuilt from fragments
    fragment_overlaps: int = 0
    fragment_conflicts: int = 0  # overlaps whose bytes differ
    fragments_dropped: int = 0  # fragments of datagrams never completed
    truncated: int = 0  # TCP packets captured short of their wire length
    bad_ip_checksum: int = 0  # among TCP packets
    bad_tcp_checksum: int = 0
    unknown_link_types: dict[int, int] = field(default_factory=dict)
    corrupt_records: int = 0  # damaged or cut-short records reported by the readers
    skipped_bytes: int = 0  # bytes of the capture files left unused because of damage
    malformed: int = 0  # IP or TCP headers too bogus to decode
    truncated_headers: int = 0  # frames cut short before the TCP header ended
    ip_length_beyond_frame: int = 0
    filtered: int = 0  # records a BPF filter rejected (not packets of the capture)
    #: frames that went through each encapsulation (``str(Encapsulation)`` -> count), only
    #: those met; a frame with nested tunnels counts once for each
    encapsulations: dict[str, int] = field(default_factory=dict)

    def summary_rows(self) -> list[tuple[str, int]]:
        """The counts as ``tcpweave info`` and the HTML report show them: (label, count)."""
        rows = [
            ("frames", self.frames),
            ("rejected by the filter", self.filtered),
            ("TCP packets", self.tcp_packets),
            ("not IP", self.non_ip),
            ("IP but not TCP", self.non_tcp),
            ("IP fragments", self.fragmented),
            ("datagrams reassembled", self.reassembled),
            ("fragment overlaps", self.fragment_overlaps),
            ("fragments dropped", self.fragments_dropped),
            ("truncated TCP packets", self.truncated),
            ("bad IPv4 header checksums", self.bad_ip_checksum),
            ("bad TCP checksums", self.bad_tcp_checksum),
            ("malformed headers", self.malformed),
            ("headers cut short", self.truncated_headers),
            ("corrupt records", self.corrupt_records),
            ("bytes skipped (damaged input)", self.skipped_bytes),
        ]
        rows += [(f"frames through {name}", n) for name, n in self.encapsulations.items()]
        rows += [
            (f"unknown link type {lt}", n) for lt, n in sorted(self.unknown_link_types.items())
        ]
        return rows


@dataclass
class Decoded:
    packets: PacketTable
    stats: DecodeStats
    defrag: Source | None


class _Rows:
    """A packet table that grows by doubling while chunks are decoded into it."""

    def __init__(self, capacity: int) -> None:
        self.cols = empty_packets(capacity, zeroed=False)
        self.n = 0

    def reserve(self, extra: int) -> None:
        if self.n + extra <= len(self.cols.frame):
            return
        bigger = empty_packets(max(2 * len(self.cols.frame), self.n + extra), zeroed=False)
        for old, new in zip(self.cols, bigger, strict=True):
            new[: self.n] = old[: self.n]
        self.cols = bigger

    def table(self) -> Any:
        return take_packets(self.cols, slice(0, self.n))


def decode(sources: list[Source], workdir: str | None = None) -> Decoded:
    """Decode all sources (already in capture order) into one packet table.

    Each source is walked in record chunks that are decoded as soon as they are
    indexed, while their bytes are still in the CPU cache, straight into one
    growing table (fresh memory costs page faults; it is touched once). Python's
    cyclic collector is paused meanwhile: the loop creates only short-lived,
    acyclic objects, and a full collection walks numba's many type registries.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _decode(sources, workdir)
    finally:
        if paused:
            gc.enable()


def _decode(sources: list[Source], workdir: str | None) -> Decoded:
    stats = DecodeStats()
    counters = np.zeros(k.N_COUNTERS, np.int64)
    rows = _Rows(sum(src.buffer.size for src in sources) // ESTIMATED_FRAME_BYTES + 1024)
    frag_parts = _walk(sources, rows, stats, counters)
    reasm = reassemble(frag_parts, workdir)
    defrag = None
    cols = rows.table()
    if reasm.datagrams:
        defrag, extra = _decode_datagrams(reasm, len(sources), counters)
        cols = concat_packets([cols, extra])
        cols = take_packets(cols, np.argsort(cols.frame, kind="stable"))
    _tally(stats, cols)
    _finish_stats(stats, reasm, counters)
    return Decoded(PacketTable(cols), stats, defrag)


class _Spill:
    """Rows handed to ``sink`` whenever ``capacity`` of them are decoded (streaming decode),
    with the buffer their payload offsets point into."""

    def __init__(
        self, capacity: int, sink: Callable[[Any, np.ndarray], None], stats: DecodeStats,
        buffer: np.ndarray,
    ) -> None:  # fmt: skip
        self.cols = empty_packets(capacity, zeroed=False)
        self.n = 0
        self.sink, self.stats, self.buffer = sink, stats, buffer

    def held_from(self, offset: int) -> int:
        """``offset``, or the record offset of the first row not yet handed on if lower
        (pages from there on are still to be read by the sink)."""
        return min(offset, int(self.cols.offset[0])) if self.n else offset

    def reserve(self, extra: int) -> None:
        if self.n + extra > len(self.cols.frame):
            self.flush()
        if extra > len(self.cols.frame):
            self.cols = empty_packets(extra, zeroed=False)

    def flush(self) -> None:
        if self.n:
            chunk = take_packets(self.cols, slice(0, self.n))
            _tally(self.stats, chunk)
            self.sink(chunk, self.buffer)
            zero_tunnel_details(self.cols, self.n)  # the columns are decoded into again
        self.n = 0


def decode_into(
    sources: list[Source],
    sink: Callable[[Any, np.ndarray], None],
    workdir: str | None = None,
    chunk_rows: int = 1 << 18,
    release: bool = False,
) -> tuple[DecodeStats, Source | None]:
    """Decode all sources, handing rows to ``sink`` in chunks of at most ``chunk_rows``.

    Chunks come in frame order, then (in a last chunk) the rows of datagrams rebuilt
    from IP fragments, which carry their completing fragment's frame. ``sink`` gets the
    rows and the buffer their payload offsets point into; it must copy what it keeps (the
    chunk's columns are reused). With ``release``, pages of
    each source are dropped from this process once decoded (memory stays bounded on
    captures larger than RAM). Returns the stats and the rebuilt-datagram source.
    """
    stats = DecodeStats()
    counters = np.zeros(k.N_COUNTERS, np.int64)
    parts: list[tuple[np.ndarray, Any]] = []
    frame_base = 0
    for i, src in enumerate(sources):
        one = decode_file_into(src, i, frame_base, sink, chunk_rows, release)
        merge_stats(stats, one.stats)
        counters += one.counters
        parts.extend((src.buffer, f) for f in one.fragments)
        frame_base += one.stats.frames
    defrag = finish_fragments(parts, len(sources), workdir, sink, stats, counters)
    return stats, defrag


@dataclass
class FileDecode:
    """What decoding one file left besides its rows: counts and the IP fragments it met."""

    stats: DecodeStats
    counters: np.ndarray
    fragments: list[Any]  # fragment columns, in file order; offsets point into the file


def decode_file_into(
    src: Source,
    file_index: int,
    frame_base: int,
    sink: Callable[[Any, np.ndarray], None],
    chunk_rows: int = 1 << 18,
    release: bool = False,
) -> FileDecode:
    """Decode one file whose first record is frame ``frame_base + 1``; rows go to ``sink``.

    Fragments are only collected: datagrams may be completed by a later file
    (``finish_fragments`` rebuilds them once every file is decoded).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        stats = DecodeStats()
        counters = np.zeros(k.N_COUNTERS, np.int64)
        rows = _Spill(chunk_rows, sink, stats, src.buffer)
        frags = _walk([src], rows, stats, counters, release, file_index, frame_base)
        rows.flush()
        if release:
            src.release_before(src.buffer.size)
        return FileDecode(stats, counters, [f for _, f in frags])
    finally:
        if paused:
            gc.enable()


def finish_fragments(
    parts: list[tuple[np.ndarray, Any]],
    n_sources: int,
    workdir: str | None,
    sink: Callable[[Any, np.ndarray], None],
    stats: DecodeStats,
    counters: np.ndarray,
) -> Source | None:
    """Rebuild datagrams from the fragments of all files (in capture order), decode them into
    ``sink`` and complete ``stats``; returns the rebuilt-datagram source, if any."""
    reasm = reassemble(parts, workdir)
    defrag = None
    if reasm.datagrams:
        defrag, extra = _decode_datagrams(reasm, n_sources, counters)
        _tally(stats, extra)
        sink(extra, defrag.buffer)
    _finish_stats(stats, reasm, counters)
    return defrag


def merge_stats(total: DecodeStats, part: DecodeStats) -> None:
    """Add the counts of ``part`` (one file's) to ``total``."""
    for name, value in vars(part).items():
        if isinstance(value, dict):
            mine = getattr(total, name)
            for key, n in value.items():
                mine[key] = mine.get(key, 0) + n
        else:
            setattr(total, name, getattr(total, name) + value)


def _walk(
    sources: list[Source],
    rows: Any,
    stats: DecodeStats,
    counters: np.ndarray,
    release: bool = False,
    first_file: int = 0,
    frame_base: int = 0,
) -> list[tuple[np.ndarray, Any]]:
    """Decode every record chunk of every source into ``rows``; returns the IP fragments met.

    The sources are files ``first_file``, ``first_file + 1``... of the capture, and their
    first record is frame ``frame_base + 1``.
    """
    frag_parts = []
    status = np.empty(CHUNK_RECORDS, np.uint8)
    scratch = _Scratch(counters)
    start = frame_base
    for file_index, src in enumerate(sources, first_file):
        for rec in src.record_chunks(CHUNK_RECORDS):
            n = len(rec.offset)
            if src.record_filter is not None:
                rec, rejected = src.record_filter.apply(src.buffer, rec)
                stats.filtered += rejected
            rows.reserve(n)
            rows.n, frags = _decode_chunk(
                src, rec, file_index, frame_base, rows.cols, rows.n, status[:n], counters, scratch
            )
            if frags.count[0]:
                frag_parts.append((src.buffer, frags))
                scratch.frags = None  # kept: the next chunk gets fresh columns
            _count_status(stats, status[:n], rec)
            frame_base += n
            if release:
                src.release_before(rows.held_from(int(rec.offset[0])))
        if release:
            src.release_before(rows.held_from(src.buffer.size))
        stats.corrupt_records += src.error_count
        stats.skipped_bytes += src.scan_skipped_bytes
    stats.frames = frame_base - start
    return frag_parts


class _Scratch:
    """Columns every chunk's kernel call writes into, reused from chunk to chunk (allocating
    them per chunk cost more than a small chunk's decoding): its counters, and fragment
    columns until a chunk keeps them."""

    def __init__(self, counters: np.ndarray) -> None:
        self.counters = np.zeros_like(counters)
        self.frags: Any = None

    def fragments(self, capacity: int) -> Any:
        if self.frags is None or len(self.frags.frame) < capacity:
            self.frags = empty_fragments(capacity)
        self.frags.count[:] = 0
        return self.frags


def _decode_chunk(
    src: Source,
    rec: Any,
    file_index: int,
    frame_base: int,
    out: Any,
    row0: int,
    status: np.ndarray,
    counters: np.ndarray,
    scratch: _Scratch | None = None,
) -> tuple[int, Any]:
    """Decode one chunk into ``out`` from ``row0``; returns the next free row and fragments
    (the fragment columns are ``scratch``'s: whoever keeps them must drop them from it)."""
    scratch = scratch or _Scratch(counters)
    capacity = 16
    while True:
        frags = scratch.fragments(capacity)
        scratch.counters[:] = 0
        end = k.decode_records(
            src.buffer,
            src.buffer64,
            rec,
            file_index,
            frame_base,
            out,
            row0,
            status,
            frags,
            scratch.counters,
        )
        if frags.count[1] <= len(frags.frame):
            counters += scratch.counters
            return int(end), frags
        capacity = int(frags.count[1])


def _count_status(stats: DecodeStats, status: np.ndarray, rec: Any) -> None:
    counts = np.bincount(status, minlength=8)
    stats.non_ip += int(counts[k.S_NON_IP])
    stats.non_tcp += int(counts[k.S_NON_TCP])
    stats.fragmented += int(counts[k.S_FRAGMENT])
    stats.malformed += int(counts[k.S_MALFORMED])
    stats.truncated_headers += int(counts[k.S_TRUNCATED_HEADER])
    if not counts[k.S_UNKNOWN_LINK]:
        return
    unknown = (status == k.S_UNKNOWN_LINK) & (rec.linktype != FILTERED_LINKTYPE)
    if unknown.any():
        types, per_type = np.unique(rec.linktype[unknown], return_counts=True)
        for lt, c in zip(types.tolist(), per_type.tolist(), strict=True):
            stats.unknown_link_types[lt] = stats.unknown_link_types.get(lt, 0) + c


def _decode_datagrams(
    reasm: Reassembly, file_index: int, counters: np.ndarray
) -> tuple[Source, Any]:
    """Decode rebuilt datagrams as raw-IP records and give them their completing frame."""
    reasm.spool.flush()
    mm = mmap.mmap(reasm.spool.fileno(), 0, access=mmap.ACCESS_READ)
    buffer = np.frombuffer(mm, dtype=np.uint8)
    dg = reasm.datagrams
    n = len(dg)
    rec = RecordColumns(  # type: ignore[call-arg]
        np.array([d.spool_offset for d in dg], np.int64),
        np.array([d.caplen for d in dg], np.int64),
        np.array([d.length for d in dg], np.int64),
        np.array([d.ts_ns for d in dg], np.int64),
        np.full(n, k.LT_RAW, np.int32),
        np.zeros(n, np.int32),
    )
    src = fixed_source("<reassembled IP fragments>", "defrag", buffer, rec, [reasm.spool, mm])
    src.origins = reasm.origins()
    out = empty_packets(n)
    end, _frags = _decode_chunk(src, rec, file_index, 0, out, 0, np.empty(n, np.uint8), counters)
    out = take_packets(out, slice(0, end))
    which = out.frame - 1  # decode numbered rows 1..n by datagram
    out.frame[:] = [dg[i].frame for i in which]
    out.fragmented[:] = True
    out.ttl[:] = [dg[i].ttl for i in which]
    out.ip_id[:] = [dg[i].ident for i in which]
    out.ip_checksum[:] = [dg[i].ip_checksum for i in which]
    return src, out


def _tally(stats: DecodeStats, cols: Any) -> None:
    """Add the per-packet counts of some packet-table rows."""
    stats.tcp_packets += len(cols.frame)
    stats.truncated += int(np.count_nonzero(cols.caplen < cols.wirelen))
    stats.bad_ip_checksum += int(np.count_nonzero(cols.ip_checksum == Checksum.BAD))
    stats.bad_tcp_checksum += int(np.count_nonzero(cols.tcp_checksum == Checksum.BAD))


def _finish_stats(stats: DecodeStats, reasm: Reassembly, counters: np.ndarray) -> None:
    stats.reassembled = len(reasm.datagrams)
    stats.fragment_overlaps = reasm.overlaps
    stats.fragment_conflicts = reasm.conflicts
    stats.fragments_dropped = reasm.dropped
    stats.ip_length_beyond_frame = int(counters[k.C_IP_LEN_BEYOND_FRAME])
    for kind in Encapsulation:
        n = int(counters[k.C_ENCAP + kind])
        if n:
            stats.encapsulations[str(kind)] = n
