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

import hashlib
import ipaddress
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tcpweave.output.streams import Direction, Stream

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


def write_direction(path: Path | None, d: Direction, gaps: str) -> str:
    """Write one direction (or only hash it when ``path`` is None); returns its sha256."""
    digest = hashlib.sha256()
    fd = -1
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        total = d.length if gaps == "fill" else d.kept_bytes
        if fd >= 0 and total:
            os.ftruncate(fd, total)  # gaps stay holes: sparse where the filesystem allows
        cursor = 0
        for out_offset, stream_offset, views in _runs(d, gaps):
            if gaps == "fill":
                _hash_zeros(digest, stream_offset - cursor)
            for v in views:
                digest.update(v)
            if fd >= 0:
                for k in range(0, len(views), _IOV_MAX):
                    part = views[k : k + _IOV_MAX]
                    os.pwritev(fd, part, out_offset + sum(len(v) for v in views[:k]))
            cursor = stream_offset + sum(len(v) for v in views)
        if gaps == "fill":
            _hash_zeros(digest, d.length - cursor)
    finally:
        if fd >= 0:
            os.close(fd)
    return digest.hexdigest()


def _hash_zeros(digest: Any, n: int) -> None:
    while n > 0:
        step = min(n, len(_ZERO_BLOCK))
        digest.update(_ZERO_BLOCK[:step])
        n -= step


def _runs(d: Direction, gaps: str) -> Iterator[tuple[int, int, list[memoryview]]]:
    """(output offset, stream offset, payload views) per run of contiguous kept ranges."""
    run: list[memoryview] = []
    run_start = run_end = 0
    written = 0
    for offset, start, file, length in d._iter_kept():
        view = memoryview(d._sources[file].buffer[start : start + length])
        if run and offset == run_end:
            run.append(view)
            run_end += length
            continue
        if run:
            yield (run_start if gaps == "fill" else written), run_start, run
            written += run_end - run_start
        run, run_start, run_end = [view], offset, offset + length
    if run:
        yield (run_start if gaps == "fill" else written), run_start, run


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


def _extract_part(
    streams: list[Stream], out_dir: Path, layout: str, gaps: str, progress: Callable[[int], None]
) -> list[dict[str, Any]]:
    records = []
    made: set[str] = set()
    for stream in streams:
        for d in (stream.c2s, stream.s2c):
            if d.packets == 0:
                continue
            size = d.length if gaps == "fill" else d.kept_bytes
            rel = None
            if size:
                rel = tcpweave_name(stream, d) if layout == "tcpweave" else tcpflow_name(stream, d)
                parent = os.path.dirname(rel)
                if parent and parent not in made:
                    (out_dir / parent).mkdir(parents=True, exist_ok=True)
                    made.add(parent)
            sha = write_direction(out_dir / rel if rel else None, d, gaps)
            records.append(_record(stream, d, rel, sha))
        progress(1)
    return records


#: the streams being extracted, inherited by forked workers (never pickled: they point
#: into the mapped capture)
_SHARED: list[Stream] = []


def _worker(args: tuple[list[int], Path, str, str]) -> list[dict[str, Any]]:
    indexes, out_dir, layout, gaps = args
    return _extract_part([_SHARED[i] for i in indexes], out_dir, layout, gaps, lambda n: None)


def extract(
    streams: list[Stream],
    out_dir: Path,
    layout: str = "tcpweave",
    gaps: str = "fill",
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ExtractSummary:
    """Write all streams under ``out_dir`` with ``streams.jsonl``; returns a summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tick = progress or (lambda n: None)
    if jobs > 1 and len(streams) >= 2 * STREAMS_PER_DIR:
        records = _extract_forked(streams, out_dir, layout, gaps, jobs, tick)
    else:
        records = _extract_part(streams, out_dir, layout, gaps, tick)
    with open(out_dir / "streams.jsonl", "w", encoding="utf-8") as f:
        for rec in sorted(records, key=lambda r: (r["stream"], r["direction"] != "c2s")):
            f.write(json.dumps(rec) + "\n")
    summary = ExtractSummary(streams=len(streams), directions=len(records))
    for rec in records:
        summary.files += rec["path"] is not None
        summary.bytes += rec["bytes"]
        summary.gap_bytes += rec["gap_bytes"]
        summary.gaps += rec["gaps"]
        summary.conflicts += rec["conflicts"]
    return summary


def _extract_forked(
    streams: list[Stream],
    out_dir: Path,
    layout: str,
    gaps: str,
    jobs: int,
    tick: Callable[[int], None],
) -> list[dict[str, Any]]:
    """Split by subdirectory (whole blocks of 1000 streams) over forked workers."""
    shares: list[list[int]] = [[] for _ in range(jobs)]
    for i in range(len(streams)):
        shares[(i // STREAMS_PER_DIR) % jobs].append(i)
    ctx = multiprocessing.get_context("fork")
    records: list[dict[str, Any]] = []
    _SHARED[:] = streams
    try:
        with ctx.Pool(jobs) as pool:
            for part in pool.imap_unordered(_worker, [(s, out_dir, layout, gaps) for s in shares]):
                records.extend(part)
                tick(len(part) // 2)
    finally:
        _SHARED.clear()
    return records
