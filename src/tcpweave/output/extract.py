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
computed over exactly the bytes of the file. Each partition of a run writes its own
streams (``extract_block`` a block at a time) and its part of streams.jsonl
(``write_lines``); ``merge_lines`` puts the parts together in stream order.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tcpweave.enums import Close
from tcpweave.output._kernels import gather_ranges
from tcpweave.output.streams import BlockColumns, Gathered, StreamViews

STREAMS_PER_DIR = 1000
#: the version of streams.jsonl's direction record (docs/schemas/records-v1.schema.json)
RECORDS_SCHEMA = "urn:tcpweave:schema:records:1"

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


def tcpweave_name(stream: int, direction: str, src: str, sport: int, dst: str, dport: int) -> str:
    return (
        f"{stream // STREAMS_PER_DIR:06d}/{stream:08d}-{direction}-"
        f"{safe_address(src)}.{sport}-{safe_address(dst)}.{dport}.bin"
    )


def session_capture_name(layout: str, stream: int) -> str:
    """The capture file ``extract --pcap`` writes a session's records to: beside its stream
    files, whose names start with the same stream number."""
    if layout == "tcpweave":
        return f"{stream // STREAMS_PER_DIR:06d}/{stream:08d}.pcap"
    return f"{stream:08d}.pcap"


def _tcpflow_address(addr: str) -> str:
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return ".".join(f"{int(part):03d}" for part in addr.split("."))
    return str(ip)  # tcpflow 1.6 prints IPv6 in its compressed form


def tcpflow_name(session: int, src: str, sport: int, dst: str, dport: int) -> str:
    name = f"{_tcpflow_address(src)}.{sport:05d}-{_tcpflow_address(dst)}.{dport:05d}"
    return name + (f"c{session}" if session else "")


#: a stream file is always new: one that exists is never overwritten (output/outdir.py)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def _write_runs(fd: int, runs: Iterable[tuple[int, int, list[Any]]], length: int, gaps: str) -> str:
    """Write runs (stream offset, length, views) to ``fd`` (none when -1): at their stream
    offsets with holes for the gaps (``fill``, the file is ``length`` long), or back to back
    (``omit``). Returns the sha256 of the file's bytes."""
    digest = hashlib.sha256()
    fill = gaps == "fill"
    cursor = written = 0  # end of the last run in the stream; bytes written before this run
    for offset, n, views in runs:
        if fill:
            _hash_zeros(digest, offset - cursor)
        for v in views:
            digest.update(v)
        if fd >= 0:
            _pwrite_all(fd, views, n, offset if fill else written)
        written += n
        cursor = offset + n
    if fill:
        _hash_zeros(digest, length - cursor)
        if fd >= 0 and cursor < length:  # a trailing gap: extend, leaving a hole
            os.ftruncate(fd, length)
    return digest.hexdigest()


def _pwrite_all(fd: int, views: list[Any], n: int, offset: int) -> None:
    """``pwritev`` until all ``n`` bytes of ``views`` are written (a call may write fewer)."""
    done = os.pwritev(fd, views, offset)
    while done < n:
        if done <= 0:
            raise OSError(errno.EIO, f"write made no progress at offset {offset}")
        rest = b"".join(bytes(v) for v in views)[done:]  # rare: a short write
        views, n, offset = [rest], len(rest), offset + done
        done = os.pwritev(fd, views, offset)


def _hash_zeros(digest: Any, n: int) -> None:
    while n > 0:
        step = min(n, len(_ZERO_BLOCK))
        digest.update(_ZERO_BLOCK[:step])
        n -= step


def extract_block(
    views: StreamViews,
    lo: int,
    hi: int,
    out_dir: Path | str,
    layout: str,
    gaps: str,
    index: list[int] | None = None,
    ledger: str | None = None,
    only: frozenset[int] | None = None,
    pcap: bool = False,
) -> tuple[bytes, list[int], tuple[int, int, int, int, int, int]]:
    """Write streams ``lo..hi-1`` of ``views``; returns their streams.jsonl lines, the stream
    of each line, and the block's counts (directions, files, bytes, gap bytes, gaps,
    conflicts).

    ``index`` maps the views' stream numbers to the capture's (a partition's streams);
    ``only``: the capture's streams to write (default: all). ``pcap``: the records name
    their session's capture file (``session_capture_name``, written by ``extract --pcap``).
    The names of the files about to be made are appended to the file ``ledger`` first
    (output/outdir.py: what tcpweave made, and may remove).
    Payloads of many directions are gathered by one kernel call, and each direction is
    then an open, a write, a close and a hash: plain strings, lists and orjson, since at
    200,000 files any per-file overhead in Python shows.
    """
    cols = views.columns(lo, hi)
    info = cols.info
    packets, length, kept = info["packets"], info["length"], info["bytes"]
    gb, cb = cols.gap_bounds, cols.conflict_bounds
    fill = gaps == "fill"
    root = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    lines: list[bytes] = []
    line_streams: list[int] = []
    counts = [0] * 6
    made: set[int] = set()  # subdirectories made (by number)
    got, g0 = None, 0
    slots = [j for j in range(2 * (cols.hi - cols.lo)) if packets[j]]
    if only is not None:
        local = [cols.lo + j // 2 for j in slots]
        slots = [j for j, s in zip(slots, local, strict=True)
                 if (index[s] if index is not None else s) in only]  # fmt: skip
    named = [_names_of(cols, j, index, layout, length[j] if fill else kept[j]) for j in slots]
    if ledger is not None:
        _append_ledger(ledger, [rel for _, _, _, rel in named if rel is not None])
    sha256, dumps, direction_name = hashlib.sha256, orjson.dumps, Close.direction_name
    first_ts, last_ts, rst, fin = (info[name] for name in ("first_ts_ns", "last_ts_ns", "rst",
                                                           "fin"))  # fmt: skip
    tunnels, session = cols.tunnels, cols.session
    tcpweave_layout = layout == "tcpweave"
    try:
        for j, (stream, name, (src, sport, dst, dport), rel) in zip(slots, named, strict=True):
            if got is None or j >= g0 + max(got.fits, 1):
                got, g0 = views.gather(cols.row_bounds[j:]), j
            if rel is not None and tcpweave_layout and stream // STREAMS_PER_DIR not in made:
                _make_subdir(root, made, stream, rel)
            fd = -1 if rel is None else os.open(rel, _CREATE, 0o644, dir_fd=root)
            try:
                k = j - g0
                if k < got.fits:
                    e = got.edges[k]
                    run = got.runs[e] if got.edges[k + 1] == e + 1 else None
                    if run is not None and ((run[0] == 0 and run[1] == length[j]) or not fill):
                        view = got.view[run[2] : run[2] + run[1]]  # the usual: one run
                        if fd >= 0 and os.pwrite(fd, view, 0) != run[1]:
                            _pwrite_all(fd, [view], run[1], 0)  # (rewrites what was short)
                        sha = sha256(view).hexdigest()
                    else:
                        sha = _write_gathered(fd, got, k, length[j], fill)
                else:  # larger than a gather: read in place
                    runs = views.direction(cols, j).runs(max_views=_IOV_MAX)
                    sha = _write_runs(fd, runs, length[j], gaps)
            finally:
                if fd >= 0:
                    os.close(fd)
            gap_list = views.gap_list(gb[j], gb[j + 1]) if gb[j + 1] > gb[j] else []
            conflict_list = views.conflict_list(cb[j], cb[j + 1]) if cb[j + 1] > cb[j] else []
            gap_bytes = sum(g["length"] for g in gap_list) if gap_list else 0
            # docs/design.md's contract, and more (docs/schemas/records-v1.schema.json)
            rec = {
                "stream": stream,
                "session": session[j // 2],
                "direction": name,
                "src": src,
                "sport": sport,
                "dst": dst,
                "dport": dport,
                "first_ts": first_ts[j] / 1e9,
                "last_ts": last_ts[j] / 1e9,
                "packets": packets[j],
                "bytes": kept[j],
                "length": length[j],
                "gaps": len(gap_list),
                "gap_bytes": gap_bytes,
                "gap_list": gap_list,
                "conflicts": len(conflict_list),
                "conflict_list": conflict_list,
                "close": direction_name(rst[j], fin[j]),
                "path": rel,
                "sha256": sha,
            }
            if tunnels and tunnels[j] is not None:
                rec["tunnel"] = tunnels[j]  # only for streams that came through one
            if pcap:
                rec["pcap"] = session_capture_name(layout, stream)
            lines.append(dumps(rec))
            line_streams.append(stream)
            counts[0] += 1
            counts[1] += rel is not None
            counts[2] += kept[j]
            counts[3] += gap_bytes
            counts[4] += len(gap_list)
            counts[5] += len(conflict_list)
    finally:
        os.close(root)
    text = b"\n".join(lines) + b"\n" if lines else b""
    return text, line_streams, (counts[0], counts[1], counts[2], counts[3], counts[4], counts[5])


def _names_of(
    cols: BlockColumns, j: int, index: list[int] | None, layout: str, has_file: int
) -> tuple[int, str, tuple[str, int, str, int], str | None]:
    """Direction slot ``j``'s stream index, direction name, endpoints (source first) and
    file name relative to the output directory (None when it gets no file)."""
    local = cols.lo + j // 2
    stream = index[local] if index is not None else local
    client, server = cols.ends[j // 2]
    (src, sport), (dst, dport) = (client, server) if j % 2 == 0 else (server, client)
    name = "c2s" if j % 2 == 0 else "s2c"
    rel = None
    if has_file:
        rel = (
            tcpweave_name(stream, name, src, sport, dst, dport)
            if layout == "tcpweave"
            else tcpflow_name(cols.session[j // 2], src, sport, dst, dport)
        )
    return stream, name, (src, sport, dst, dport), rel


def _append_ledger(ledger: str, names: list[str]) -> None:
    if names:
        with open(ledger, "a", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")


def _make_subdir(root: int, made: set[int], stream: int, rel: str) -> None:
    """With the tcpweave layout, a stream's subdirectory is made on first use (``made``
    holds the ones made)."""
    if stream // STREAMS_PER_DIR not in made:
        with contextlib.suppress(FileExistsError):
            os.mkdir(rel[: rel.index("/")], 0o755, dir_fd=root)
        made.add(stream // STREAMS_PER_DIR)


def _write_gathered(fd: int, got: Gathered, k: int, length: int, fill: bool) -> str:
    """Write direction ``k`` of a gather (to ``fd``, unless -1); returns its sha256. The
    usual direction, one run from offset 0 (or any runs with ``--gaps omit``, which lie end
    to end in the gather), is one write and one hash."""
    runs = got.runs[got.edges[k] : got.edges[k + 1]]
    if not runs:  # no byte kept: empty, or all gap
        return _write_runs(fd, [], length, "fill" if fill else "omit")
    first, n = runs[0][2], runs[-1][2] + runs[-1][1] - runs[0][2]
    if (len(runs) == 1 and runs[0][0] == 0 and runs[0][1] == length) or not fill:
        view = got.view[first : first + n]
        if fd >= 0:
            _pwrite_all(fd, [view], n, 0)
        return hashlib.sha256(view).hexdigest()
    return _write_runs(fd, got.runs_of(k), length, "fill")


#: streams whose streams.jsonl lines are merged at a time
MERGE_STREAMS = 1 << 13


def write_lines(path: str, texts: list[bytes], keys: list[int]) -> None:
    """A part of streams.jsonl: ``path`` holds the lines (in stream order) and
    ``path.index`` each line's stream and end; ``path`` appears (by rename) last."""
    lines = b"".join(texts)
    ends = np.flatnonzero(np.frombuffer(lines, np.uint8) == ord("\n")) + 1
    np.stack([np.asarray(keys, np.int64), ends]).tofile(path + ".index")
    with open(path + ".tmp", "wb") as f:
        f.write(lines)
    os.replace(path + ".tmp", path)


def merge_lines(parts: list[str], out: str) -> None:
    """streams.jsonl from its parts (``write_lines``), in stream order.

    The lines of MERGE_STREAMS streams at a time are read from every part, put in order
    (stable: c2s before s2c) and copied out by one kernel call.
    """
    index = {}
    for k, path in enumerate(parts):
        keys, ends = np.fromfile(path + ".index", np.int64).reshape(2, -1)
        index[k] = (keys, np.concatenate(([0], ends)))
    top = max((int(k[-1]) + 1 for k, _ in index.values() if len(k)), default=0)
    files = {k: open(path, "rb", buffering=0) for k, path in enumerate(parts)}
    try:
        with open(out, "wb") as f:
            for a in range(0, top, MERGE_STREAMS):
                f.write(_merged_window(index, files, a, a + MERGE_STREAMS))
    finally:
        for handle in files.values():
            handle.close()


def _merged_window(index: dict[int, Any], files: dict[int, Any], a: int, b: int) -> Any:
    """The lines of streams ``a..b-1`` from every part, in stream order."""
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
