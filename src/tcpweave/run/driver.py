"""The run: a capture cut into partitions, and per-partition tasks on an executor.

Theory of operation. Every command is one function applied to each partition plus one
merge of the results (``run/commands.py``); this module makes the partitions and hands
them to the tasks.

1. decode -- a capture small enough (``fits_whole``: no more packets than one partition
   could hold, judged from the files' size) is decoded whole in this process: one
   in-memory partition whose sources are the capture files. A larger one is decoded a
   chunk of records at a time and each chunk's rows are routed by a hash of their
   order-free 4-tuple into P partitions spilled to the work directory, rows and payload
   bytes (``run/spill.py``); several files, or a big pcap cut into record ranges
   (``capture/pieces.py``), are decoded by the executor's workers. IP fragments are
   rebuilt last, by this process (a datagram may span pieces).
2. sessions -- each partition's sessions are numbered (``flows.assign``) and the frame of
   each session's first packet comes back; their rank over the whole capture is the
   global stream index (order of first packet, as Wireshark's tcp.stream). With it comes
   what the partition shows about hosts that sent bad TCP checksums, so that checksum
   offload is decided once over the whole capture (``reassembly.offload``) and is part
   of the settings every task receives.
3. tasks -- ``map(fn)`` calls ``fn(partition, *args)`` for every partition on the
   executor (forked children inherit the run; Dask workers load the partition from the
   work directory), and yields ``(p, result)`` as they complete.

A spilled run keeps its state (``state.json``, ``ranks.npz``) in the work directory, so
that ``extract --resume`` continues it. What bounds memory: the driver holds a window of
the capture, one decode chunk and an 8-byte first frame per session; a task holds one
partition (about ``rows_per_partition`` rows, a few hundred bytes each while it is
planned). The results do not depend on the number of partitions or processes.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from tcpweave import _faults as fault
from tcpweave.capture import RecordColumns, Source, open_source, open_sources
from tcpweave.capture.bpf import RecordFilter
from tcpweave.capture.inputs import check_distinct
from tcpweave.capture.pieces import Piece, pieces
from tcpweave.capture.source import fixed_source, restrict_pcap
from tcpweave.decode import (
    DecodeStats,
    decode,
    decode_file_into,
    decode_into,
    finish_fragments,
    merge_stats,
)
from tcpweave.decode.fragments import Origins
from tcpweave.errors import CaptureError, UsageError
from tcpweave.output.outdir import WORK_MARK
from tcpweave.reassembly.offload import (
    EVIDENCE_DTYPE,
    bad_senders,
    checksum_evidence,
    offloaded_hosts,
)
from tcpweave.run.executors import Executor, InProcess
from tcpweave.run.partition import Partition, load, save_flows
from tcpweave.run.settings import ROWS_PER_PARTITION, Settings
from tcpweave.run.spill import Router, SpillLayout

__all__ = ["MIN_FRAME_BYTES", "ROWS_PER_PARTITION", "Run", "fits_whole"]

#: the smallest plausible frame with its record header: a capture's packets are at most
#: its size over this (``fits_whole``); also the frame size assumed when the first
#: records say nothing
MIN_FRAME_BYTES = 160
#: pcap files larger than this are decoded by several workers, in ranges of records
RANGE_BYTES = 256 << 20
#: spilled captures with fewer TCP packets are numbered and planned without forking
FORK_MIN_ROWS = 50_000
#: rows handed to the router at a time by the decoder
ROUTE_ROWS = 1 << 16
STATE_FILE = "state.json"
RANKS_FILE = "ranks.npz"
#: which fragments each rebuilt datagram came from (``Run._fragment_origins``)
ORIGINS_FILE = "origins.npz"

Progress = Callable[[str, int, int, int], None]


def fits_whole(paths: list[str], rows_per_partition: int) -> bool:
    """Can the capture be one in-memory partition? Its files' size at the smallest
    plausible frame size says it holds no more packets than one partition."""
    return sum(os.path.getsize(p) for p in paths) // MIN_FRAME_BYTES <= rows_per_partition


def _no_progress(phase: str, n: int, total: int, packets: int) -> None:
    pass


@dataclass
class RunState:
    """What the decode step of a spilled run found (``state.json`` in its work directory)."""

    layout: SpillLayout
    inputs: list[list[Any]]  # [path, size, mtime_ns] of every capture file
    stats: dict[str, Any]
    rows: list[int]  # per partition
    errors: list[list[Any]] = field(default_factory=list)  # [file, offset, reason, skipped]
    buffer_paths: list[str] = field(default_factory=list)

    def save(self) -> None:
        raw = asdict(self)
        with open(os.path.join(self.layout.workdir, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump(raw, f)

    @classmethod
    def load(cls, workdir: str) -> RunState | None:
        try:
            with open(os.path.join(workdir, STATE_FILE), encoding="utf-8") as f:
                raw = json.load(f)
            layout = raw.pop("layout")
            raw["layout"] = SpillLayout(
                workdir, layout["n_parts"], tuple(layout["tags"]), layout["n_files"]
            )
            return cls(**raw)
        except (OSError, ValueError, KeyError, TypeError):
            return None


class Run:
    """A capture cut into partitions (see the module docstring). Close it (or use ``with``):
    a spilled run in a work directory it made removes it."""

    def __init__(
        self,
        paths: list[str],
        settings: Settings,
        executor: Executor | None = None,
        *,
        whole: bool | None = None,
        workdir: str | None = None,
        keep_workdir: bool = False,
        rows_per_partition: int = ROWS_PER_PARTITION,
        progress: Progress | None = None,
    ) -> None:
        """Decode ``paths`` (several files are one capture). ``whole`` forces (True) or
        forbids (False) one in-memory partition; by default the capture's size decides.
        A spilled run works in ``workdir`` (a directory tcpweave owns: kept when
        ``keep_workdir``, and a run found there is continued), or in a temporary directory
        it makes (inside ``workdir`` when that is given with ``keep_workdir`` False)."""
        check_distinct(paths)
        self.paths = paths
        self.settings = settings
        self.executor: Executor = (executor or InProcess()).__enter__()
        self._tick = progress or _no_progress
        self._memory: Partition | None = None
        self._sources: list[Source] = []
        self._ranks: list[np.ndarray] | None = None
        self._own_workdir: str | None = None
        self._owner = True  # closes the sources and the work directory
        if whole is None:
            whole = fits_whole(paths, rows_per_partition)
        if whole:
            self._decode_whole(workdir)
            return
        if workdir is None or not keep_workdir:
            workdir = self._own_workdir = tempfile.mkdtemp(prefix="tcpweave-run-", dir=workdir)
        state = RunState.load(workdir)
        if state is None:
            state = self._decode_spilled(workdir, rows_per_partition)
        self.state: RunState | None = state

    # -- step 1 ---------------------------------------------------------------------------

    def _decode_whole(self, spool_dir: str | None) -> None:
        fault.at("decode")
        self._sources = _filtered(open_sources(self.paths, spool_dir), self.settings.bpf)
        decoded = decode(self._sources, spool_dir)
        if decoded.defrag is not None:
            self._sources.append(decoded.defrag)
        self.stats: DecodeStats = decoded.stats
        self.errors: list[CaptureError] = [e for s in self._sources for e in s.errors]
        fault.at("sessions")
        self._memory = Partition(decoded.packets, self._sources, self.settings,
                                 defrag_file=len(self.paths))  # fmt: skip
        self.state = None

    def _decode_spilled(self, workdir: str, rows_per_partition: int) -> RunState:
        _empty(workdir)  # a resumed run that stopped before its state was saved
        bpf = self.settings.bpf
        sources: list[Any] = _filtered(open_sources(self.paths, workdir, populate=False), bpf)
        try:
            n_parts = _n_parts(sources, rows_per_partition)
            workers = self.executor.workers
            n_parts = -(-n_parts // workers) * workers  # no worker idle at the end
            if _decode_on_workers_pays(sources, self.executor):
                state = _decode_on_workers(sources, workdir, n_parts, self.executor, self._tick,
                                           bpf)  # fmt: skip
            else:
                state = _decode_here(sources, workdir, n_parts, self._tick)
        finally:
            for src in sources:
                src.close()
        state.inputs = _inputs(self.paths)
        state.save()
        return state

    def with_settings(self, settings: Settings) -> Run:
        """The same decoded capture under other settings: nothing is decoded again, and
        closing the new run closes nothing (this one owns the sources and files)."""
        other = copy.copy(self)
        other.settings, other._ranks, other._owner = settings, None, False
        if self._memory is not None:
            other._memory = Partition(self._memory.packets, self._memory.sources, settings,
                                      defrag_file=len(self.paths))  # fmt: skip
        return other

    @property
    def in_memory(self) -> bool:
        return self._memory is not None

    @property
    def whole(self) -> Partition:
        """The one in-memory partition of a capture read whole, as decoded: its sessions are
        numbered and ranked when first asked for (``partition(0)``), not here."""
        if self._memory is None:
            raise UsageError("this run was not read whole")
        return self._memory

    @property
    def n_parts(self) -> int:
        return 1 if self.state is None else self.state.layout.n_parts

    def _fragment_origins(self) -> Origins:
        """The frames of the IP fragments each rebuilt datagram came from."""
        if self.state is None:
            found = (s.origins for s in self._sources if s.origins is not None)
            return next(found, Origins.none())
        return Origins.load(os.path.join(self.state.layout.workdir, ORIGINS_FILE))

    @contextlib.contextmanager
    def _capture_sources(self) -> Iterator[list[Source]]:
        """The capture files in the order the run numbers their frames: the run's own when
        it holds them open, else opened again for the block (a spilled run closed them)."""
        if self._sources:
            yield self._sources[: len(self.paths)]
            return
        spool = self.state.layout.workdir if self.state is not None else None
        sources = open_sources(self.paths, spool, populate=False)
        try:
            yield sources
        finally:
            for src in sources:
                src.close()

    def decode_stats(self) -> DecodeStats:
        if self.state is None:
            return self.stats
        stats = dict(self.state.stats)
        stats["unknown_link_types"] = {
            int(k): v for k, v in stats.get("unknown_link_types", {}).items()
        }
        return DecodeStats(**stats)

    def capture_errors(self) -> list[CaptureError]:
        if self.state is None:
            return self.errors
        return [CaptureError(*e) for e in self.state.errors]

    # -- step 2 ---------------------------------------------------------------------------

    def ranks(self) -> list[np.ndarray]:
        """Every partition's global stream indexes (local stream -> tcp.stream). Step 2
        also decides checksum offload for the run (``settings.offloaded``)."""
        if self._ranks is not None:
            return self._ranks
        if self._memory is not None:
            fault.at("rank")
            part = self._memory
            self._decided([checksum_evidence(part.packets, part.flows)])
            part.settings = self.settings
            self._ranks = [part.global_index]
            return self._ranks
        assert self.state is not None
        path = os.path.join(self.state.layout.workdir, RANKS_FILE)
        parts = range(self.n_parts)
        if os.path.exists(path):
            with np.load(path) as z:
                if "evidence" in z.files:  # (a run saved by an older version has none)
                    self._ranks = [z[f"p{p}"] for p in parts]
                    self._decided([z["evidence"]])
                    return self._ranks
        fault.at("sessions")
        args = [(_session_firsts, p, self.state.layout, p, self.settings) for p in parts]
        found = dict(self._executor().map(_tagged, args, warm=self._warm_here(list(parts))))
        ranks = _rank([found[p][0] for p in parts])
        suspects = np.unique(np.concatenate([np.zeros((0, 16), np.uint8)]
                                            + [found[p][1] for p in parts]), axis=0)  # fmt: skip
        evidence = np.zeros(0, EVIDENCE_DTYPE)
        if len(suspects):  # what every partition shows about the hosts that sent a bad checksum
            jobs = [(_evidence, p, self.state.layout, p, self.settings, suspects) for p in parts]
            reports = dict(self._executor().map(_tagged, jobs))
            evidence = np.concatenate([evidence] + [reports[p] for p in parts])
        fault.at("rank")
        np.savez(path, evidence=evidence, **{f"p{p}": r for p, r in enumerate(ranks)})  # type: ignore[arg-type]
        self._decided([evidence])
        self._ranks = ranks
        return ranks

    def _decided(self, evidence: list[np.ndarray]) -> None:
        """Fix the run's checksum-offload verdict into its settings."""
        hosts = offloaded_hosts(evidence)
        self.settings = replace(self.settings, offloaded=tuple(bytes(h) for h in hosts))

    # -- step 3 ---------------------------------------------------------------------------

    def partition(self, p: int) -> Partition:
        """Partition ``p``, in this process."""
        if self._memory is not None:
            self.ranks()
            return self._memory
        assert self.state is not None
        return load(self.state.layout, p, self.settings, self.ranks()[p])

    def map(
        self, fn: Callable[..., Any], *args: Any, todo: list[int] | None = None
    ) -> Iterator[tuple[int, Any]]:
        """``(p, fn(partition p, *args))`` for every partition (or those in ``todo``), in
        the order they complete. On Dask ``fn`` and ``args`` are pickled."""
        parts = list(range(self.n_parts)) if todo is None else todo
        if self._memory is not None:
            self.ranks()
            if parts:
                yield 0, fn(self._memory, *args)
            return
        assert self.state is not None
        if not parts:
            return
        ranks = self.ranks()
        jobs = [(_on_partition, p, self.state.layout, p, self.settings, ranks[p], fn, args)
                for p in parts]  # fmt: skip
        yield from self._executor().map(_tagged, jobs, warm=self._warm_here(parts))

    def _executor(self) -> Executor:
        """The executor, or this process alone for a small spilled capture (forking and
        warming workers would cost more than they save)."""
        assert self.state is not None
        if self.executor.shares_memory and sum(self.state.rows) < FORK_MIN_ROWS:
            return InProcess()
        return self.executor

    def _warm_here(self, parts: list[int]) -> Callable[[], None] | None:
        """With forked workers: plan the smallest of ``parts`` here first, so the children
        of later batches inherit the kernels loaded. With Dask: compile them into numba's
        cache before the fan-out (the workers then load, not compile)."""
        assert self.state is not None
        nonempty = [p for p in parts if self.state.rows[p]]
        if not nonempty:
            return None
        p = min(nonempty, key=lambda q: self.state.rows[q])  # type: ignore[union-attr]
        layout, settings = self.state.layout, self.settings

        def warm() -> None:
            # the partition may be written -- and its spill removed -- by a worker meanwhile:
            # warming is only worth having, never worth failing for
            with contextlib.suppress(FileNotFoundError):
                load(layout, p, settings).plan()

        if not self.executor.shares_memory:
            warm()
            return None
        return warm if self._executor().workers > 1 else None

    # -- the end --------------------------------------------------------------------------

    def close(self) -> None:
        if not self._owner:
            return
        self.executor.__exit__(None, None, None)
        for src in self._sources:
            src.close()
        self._sources = []
        self._memory = None
        if self._own_workdir is not None:
            shutil.rmtree(self._own_workdir, ignore_errors=True)
            self._own_workdir = None

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- tasks (module level: picklable for Dask) --------------------------------------------------


def _session_firsts(
    layout: SpillLayout, p: int, settings: Settings
) -> tuple[np.ndarray, np.ndarray]:
    """Task of step 2: frame of the first packet of each session of partition ``p``, and
    the hosts that sent a bad TCP checksum in it."""
    part = load(layout, p, settings)
    save_flows(layout, part)  # numbered once: step 3 loads them
    return np.asarray(part.packets.frame[part.flows.first_row]), bad_senders(part.packets)


def _evidence(layout: SpillLayout, p: int, settings: Settings, hosts: np.ndarray) -> np.ndarray:
    """Task of step 2, when some host sent a bad checksum: partition ``p``'s checksum-offload
    evidence about ``hosts``."""
    part = load(layout, p, settings)
    return checksum_evidence(part.packets, part.flows, hosts)


def _on_partition(
    layout: SpillLayout,
    p: int,
    settings: Settings,
    ranks: np.ndarray,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> Any:
    return fn(load(layout, p, settings, ranks), *args)


def _tagged(fn: Callable[..., Any], p: int, *args: Any) -> tuple[int, Any]:
    """``(p, fn(*args))``, the C heap trimmed after the task."""
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


def _rank(firsts: list[np.ndarray]) -> list[np.ndarray]:
    """Global stream index of every partition's sessions: rank of their first frame."""
    sizes = [len(f) for f in firsts]
    everything = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    rank = np.empty(len(everything), np.int64)
    rank[np.argsort(everything, kind="stable")] = np.arange(len(everything))
    return np.split(rank, np.cumsum(sizes)[:-1]) if sizes else []


# -- step 1 of a spilled run ------------------------------------------------------------------


def _inputs(paths: list[str]) -> list[list[Any]]:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return out


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


def _decode_on_workers_pays(sources: list[Source], ex: Executor) -> bool:
    """Several files, or a pcap file big enough to cut, and workers other than this process;
    forked workers only for files they can map as they are (a compressed capture would
    first be copied out decompressed)."""
    if ex.shares_memory and ex.workers <= 1:  # this process alone: decode here
        return False
    if not (len(sources) > 1 or len(sources[0].buffer) > RANGE_BYTES):
        return False
    return not ex.shares_memory or all(s.compression is None for s in sources)


def _decode_here(sources: list[Source], workdir: str, n_parts: int, progress: Progress) -> RunState:
    layout = SpillLayout(workdir, n_parts, n_files=len(sources))
    router = Router(layout)
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
        stats, defrag = decode_into(sources, sink, workdir, ROUTE_ROWS, release=True)
    finally:
        router.close()
    if defrag is not None:
        sources.append(defrag)
        defrag.origins.save(os.path.join(workdir, ORIGINS_FILE))
    errors = [_error_row(e) for s in sources for e in s.errors]
    return RunState(layout, [], asdict(stats), router.rows.tolist(), errors)


def _error_row(err: CaptureError, path: str | None = None) -> list[Any]:
    """A damaged record as ``state.json`` keeps it (``path`` names the capture file)."""
    return [path or err.path, err.offset, err.reason, err.skipped]


def _filtered(sources: list[Source], bpf: str) -> list[Source]:
    """``sources`` with the run's BPF filter (if any) to apply as they are decoded."""
    if bpf:
        record_filter = RecordFilter(bpf)
        record_filter.check()  # a bad expression fails before any work
        for src in sources:
            src.record_filter = record_filter
    return sources


def _decode_piece(
    layout: SpillLayout, buffer_path: str, piece: Piece, name: str, bpf: str = ""
) -> tuple[list[int], dict[str, Any], np.ndarray, list[Any], list[list[Any]]]:
    """Task of step 1 on a worker: decode one piece of a file (mapped by path) into spill files.

    Returns the rows per partition, the counts, the decoder's counters, the IP
    fragments met (rebuilt by the driver: a datagram may end in a later piece), and
    the damaged records (named after the capture file ``name``).
    """
    [src] = _filtered([open_source(buffer_path, layout.workdir, populate=False)], bpf)
    if piece.start >= 0:
        restrict_pcap(src, piece.start, piece.end, piece.last_sec)
    router = Router(layout, piece.tag)
    try:
        one = decode_file_into(src, piece.file, piece.frame_base, router, ROUTE_ROWS, release=True)
    finally:
        router.close()
        src.close()
    errors = [_error_row(e, name) for e in src.scan_errors]
    return router.rows.tolist(), asdict(one.stats), one.counters, one.fragments, errors


def _decode_on_workers(
    sources: list[Source],
    workdir: str,
    n_parts: int,
    ex: Executor,
    progress: Progress,
    bpf: str = "",
) -> RunState:
    """Step 1 with the files decoded by the workers: the driver walks the record headers
    first (frame numbers continue across files; big pcap files are cut into ranges), the
    workers decode the pieces, and the driver rebuilds IP fragments last."""
    buffer_paths = _buffer_paths(sources, workdir)
    # a few pieces per worker: enough to share the work out, few spill files per partition
    total = sum(len(src.buffer) for src in sources)
    cut = pieces(sources, max(RANGE_BYTES, total // (4 * max(ex.workers, 1))))
    layout = SpillLayout(workdir, n_parts, (*(pc.tag for pc in cut), ".defrag"), len(sources))
    _warm_decode(sources[0])
    jobs = [(_decode_piece, k, layout, buffer_paths[pc.file], pc, sources[pc.file].path, bpf)
            for k, pc in enumerate(cut)]  # fmt: skip
    results = dict(ex.map(_tagged, jobs))
    stats = DecodeStats()
    counters = np.zeros_like(results[0][2]) if results else np.zeros(0, np.int64)
    rows = np.zeros(n_parts, np.int64)
    parts: list[tuple[np.ndarray, Any]] = []
    errors: list[list[Any]] = []
    for k, pc in enumerate(cut):
        src = sources[pc.file]
        part_rows, stats_dict, piece_counters, fragments, piece_errors = results[k]
        one = DecodeStats(**stats_dict)
        if pc.first:  # damage found while decompressing belongs to the file's first piece
            one.corrupt_records += len(src.decompress_errors)
            errors += [_error_row(e) for e in src.decompress_errors]
        merge_stats(stats, one)
        counters += piece_counters
        rows += part_rows
        parts.extend((src.buffer, f) for f in fragments)
        errors += piece_errors
        progress("decode", total * (k + 1) // len(cut) - total * k // len(cut), total,
                 one.tcp_packets)  # fmt: skip
    router = Router(layout, ".defrag")
    try:
        defrag = finish_fragments(parts, len(sources), workdir, router, stats, counters)
    finally:
        router.close()
    if defrag is not None:
        sources.append(defrag)  # closed with the capture's sources
        defrag.origins.save(os.path.join(workdir, ORIGINS_FILE))
    rows += router.rows
    return RunState(layout, [], asdict(stats), rows.tolist(), errors, buffer_paths)


def _warm_decode(src: Source) -> None:
    """Compile the decode kernels here (into numba's cache) before the workers need them:
    decode the file's first records and throw the rows away."""
    first = next(iter(src.record_chunks(64)), None)
    if first is not None:
        head = RecordColumns(*(col.copy() for col in first))
        decode_file_into(fixed_source(src.path, src.format, src.buffer, head, []), 0, 0, _drop)


def _drop(cols: Any, buffer: np.ndarray) -> None:
    pass


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
