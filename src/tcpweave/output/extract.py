"""Write every direction of every session to its own file, and ``streams.jsonl``.

Layout (``tcpweave``): ``DIR/<stream // 1000 as 6 digits>/<stream as 8 digits>-<c2s|s2c>-
<src>.<sport>-<dst>.<dport>.bin``. Names sort by stream index, carry addresses
and ports (IPv6 colons become ``_``, legal on Linux, macOS and Windows), and
cannot collide because the stream index is unique. Subdirectories of 1000
streams keep directories small, since creating hundreds of thousands of files
in one directory is the slowest part of extraction on common filesystems.
Layout ``tcpflow`` reproduces tcpflow 1.6's names in DIR itself
(``AAA.BBB.CCC.DDD.PPPPP-AAA.BBB.CCC.DDD.PPPPP``, with ``cN`` appended for the
N-th reuse of a 4-tuple) for drop-in use.

Each file is written positionally from the mapped capture: one ``pwritev``
per run of contiguous kept ranges, gaps left as holes (``--gaps fill``, sparse
where the filesystem allows) or closed up (``--gaps omit``). The sha256 is
computed over exactly the bytes of the file. Work is split by subdirectory over
``jobs`` forked processes, which share the mapped capture.
"""

from __future__ import annotations

import gc
import hashlib
import ipaddress
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tcpweave.output.streams import Direction, Stream, StreamViews, note_reads

STREAMS_PER_DIR = 1000

_IOV_MAX = 1024
_ZERO_BLOCK = bytes(1 << 16)


@dataclass
class ExtractSummary:
    streams: int = 0
    directions: int = 0
    files: int = 0
    bytes: int = 0
    gap_bytes: int = 0
    gaps: int = 0
    conflicts: int = 0

    def add(self, counts: Sequence[int]) -> None:
        """Add a block's (directions, files, bytes, gap bytes, gaps, conflicts)."""
        self.directions += counts[0]
        self.files += counts[1]
        self.bytes += counts[2]
        self.gap_bytes += counts[3]
        self.gaps += counts[4]
        self.conflicts += counts[5]


def safe_address(addr: str) -> str:
    """An address as a file-name part: IPv6 colons become underscores."""
    return addr.replace(":", "_")


def tcpweave_name(stream: Stream, d: Direction) -> str:
    sub = f"{stream.index // STREAMS_PER_DIR:06d}"
    leaf = (
        f"{stream.index:08d}-{d.name}-{safe_address(d.src)}.{d.sport}-"
        f"{safe_address(d.dst)}.{d.dport}.bin"
    )
    return f"{sub}/{leaf}"


def _tcpflow_address(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return ".".join(f"{int(part):03d}" for part in addr.split("."))
    return str(ip)  # tcpflow 1.6 prints IPv6 in its compressed form


def tcpflow_name(stream: Stream, d: Direction) -> str:
    name = f"{_tcpflow_address(d.src)}.{d.sport:05d}-{_tcpflow_address(d.dst)}.{d.dport:05d}"
    return name + (f"c{stream.session}" if stream.session else "")


def write_direction(path: str | Path | None, d: Direction, gaps: str) -> str:
    """Write one direction (or only hash it when ``path`` is None); returns its sha256."""
    digest = hashlib.sha256()
    fd = -1
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        total = d.length if gaps == "fill" else d.kept_bytes
        cursor = 0
        written = 0  # bytes before this run in the file (what --gaps omit closes up)
        for stream_offset, run_len, views in d.runs(max_views=_IOV_MAX):
            out_offset = stream_offset if gaps == "fill" else written
            written += run_len
            if gaps == "fill":
                _hash_zeros(digest, stream_offset - cursor)
            for v in views:
                digest.update(v)
            if fd >= 0:
                os.pwritev(fd, views, out_offset)
            cursor = stream_offset + run_len
            if d._gathered is None:
                note_reads(len(views), d._sources)
        if gaps == "fill":
            _hash_zeros(digest, d.length - cursor)
            if fd >= 0 and cursor < total:  # a trailing gap: extend, leaving a hole
                os.ftruncate(fd, total)
    finally:
        if fd >= 0:
            os.close(fd)
    return digest.hexdigest()


def _hash_zeros(digest: Any, n: int) -> None:
    while n > 0:
        step = min(n, len(_ZERO_BLOCK))
        digest.update(_ZERO_BLOCK[:step])
        n -= step


def _record(stream: Stream, d: Direction, rel: str | None, sha: str) -> dict[str, Any]:
    return {
        "stream": stream.index,
        "session": stream.session,
        "direction": d.name,
        "src": d.src,
        "sport": d.sport,
        "dst": d.dst,
        "dport": d.dport,
        "first_ts": d.first_ts_ns / 1e9,
        "last_ts": d.last_ts_ns / 1e9,
        "packets": d.packets,
        "bytes": d.kept_bytes,
        "length": d.length,
        "gaps": len(d.gaps),
        "gap_bytes": sum(g.length for g in d.gaps),
        "gap_list": [[g.offset, g.length, str(g.reason)] for g in d.gaps],
        "conflicts": len(d.conflicts),
        "conflict_list": [[c.offset, c.length, c.kept_frame, c.dropped_frame] for c in d.conflicts],
        "close": d.close,
        "path": rel,
        "sha256": sha,
    }


def extract_block(
    streams: list[Stream], out_dir: Path, layout: str, gaps: str
) -> tuple[str, tuple[int, int, int, int, int, int]]:
    """Write one block of streams; returns its streams.jsonl lines and its counts.

    Paths are plain strings and records are encoded with orjson: at 200,000 files the
    per-file overhead of pathlib and the json module was a quarter of the writer's time.
    """
    root = str(out_dir)
    lines = []
    directions = files = total = gap_bytes = n_gaps = n_conflicts = 0
    made: set[str] = set()
    for stream in streams:
        for d in (stream.c2s, stream.s2c):
            if d.packets == 0:
                continue
            size = d.length if gaps == "fill" else d.kept_bytes
            rel = None
            if size:
                rel = tcpweave_name(stream, d) if layout == "tcpweave" else tcpflow_name(stream, d)
                parent = rel.rpartition("/")[0]
                if parent and parent not in made:
                    os.makedirs(f"{root}/{parent}", exist_ok=True)
                    made.add(parent)
            sha = write_direction(f"{root}/{rel}" if rel else None, d, gaps)
            rec = _record(stream, d, rel, sha)
            lines.append(orjson.dumps(rec).decode() + "\n")
            directions += 1
            files += rel is not None
            total += rec["bytes"]
            gap_bytes += rec["gap_bytes"]
            n_gaps += rec["gaps"]
            n_conflicts += rec["conflicts"]
    return "".join(lines), (directions, files, total, gap_bytes, n_gaps, n_conflicts)


class _ListViews:
    """A plain list of streams offered block by block, like ``StreamViews``."""

    def __init__(self, streams: list[Stream]) -> None:
        self.streams = streams

    def __len__(self) -> int:
        return len(self.streams)

    def block(self, lo: int, hi: int, gather: bool = False) -> list[Stream]:
        return self.streams[lo:hi]


#: the streams being extracted, inherited by forked workers (never pickled: they point
#: into the mapped capture)
_SHARED: list[Any] = []


def _worker(args: tuple[int, int, Path, str, str]) -> tuple[str, tuple[int, ...]]:
    lo, hi, out_dir, layout, gaps = args
    return extract_block(_SHARED[0].block(lo, hi, gather=True), out_dir, layout, gaps)


def extract(
    streams: list[Stream] | StreamViews,
    out_dir: Path,
    layout: str = "tcpweave",
    gaps: str = "fill",
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Write all streams under ``out_dir`` with ``streams.jsonl``; returns a summary.

    Streams go in blocks of 1000 (one subdirectory each); with ``jobs`` > 1 the
    blocks are shared out to forked workers, and ``streams.jsonl`` is written in
    stream order as blocks complete.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda n: None)
    views = _ListViews(streams) if isinstance(streams, list) else streams
    blocks = [
        (lo, min(lo + STREAMS_PER_DIR, len(streams)))
        for lo in range(0, len(streams), STREAMS_PER_DIR)
    ]
    summary = ExtractSummary(streams=len(streams))
    with open(out_dir / "streams.jsonl", "w", encoding="utf-8") as f:
        for text, counts in _run_blocks(views, blocks, out_dir, layout, gaps, jobs):
            f.write(text)
            summary.add(counts)
            tick(STREAMS_PER_DIR)
    return summary


def _run_blocks(
    views: Any,
    blocks: list[tuple[int, int]],
    out_dir: Path,
    layout: str,
    gaps: str,
    jobs: int,
) -> Iterator[tuple[str, tuple[int, ...]]]:
    if jobs <= 1 or len(blocks) < 2:
        for lo, hi in blocks:
            yield extract_block(views.block(lo, hi, gather=True), out_dir, layout, gaps)
        return
    _SHARED[:] = [views]
    # Freeze the parent's objects out of the collector: a forked worker that ran a full
    # collection would write to every object header and copy the whole heap.
    gc.freeze()
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(min(jobs, len(blocks))) as pool:
            args = [(lo, hi, out_dir, layout, gaps) for lo, hi in blocks]
            yield from pool.imap(_worker, args)
    finally:
        gc.unfreeze()
        _SHARED.clear()
