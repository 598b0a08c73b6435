"""``extract``: every direction of every session to a file, with streams.jsonl.

The output directory is claimed first (``output/outdir.py``). The run's partitions are
written by ``write_partition`` (on the executor): its streams' files, positionally from
its sources, and its part of streams.jsonl in the work directory; ``merge_lines`` then
puts the parts together in stream order. A partition is done once its part exists (by
rename), so ``--resume`` writes only the others. On Ctrl-C or SIGTERM the finished parts
are merged, the marker lists the partial streams and the work directory is kept; on any
other failure the marker says why and the work directory is removed. With ``parquet``,
``packets.parquet`` and ``plan.parquet`` are merged from the partitions too.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave import _faults as fault
from tcpweave.capture import truncated_inputs
from tcpweave.capture.inputs import check_distinct
from tcpweave.errors import Interrupted, UsageError, stop_signal
from tcpweave.output.extract import (
    RECORDS_SCHEMA,
    STREAMS_PER_DIR,
    ExtractSummary,
    extract_block,
    merge_lines,
    session_capture_name,
    write_lines,
)
from tcpweave.output.outdir import (
    REPORT_FILE,
    STREAMS_FILE,
    OutputDir,
    RunIdentity,
    input_identity,
)
from tcpweave.output.store import (
    INDEX_FILE,
    STORE_FORMAT,
    store_part,
    write_index,
    write_store_part,
)
from tcpweave.output.streams import StreamViews
from tcpweave.run.carving import carve_partition, keyed_file, keyed_windows, write_session_captures
from tcpweave.run.driver import Progress, Run
from tcpweave.run.executors import Executor, InProcess
from tcpweave.run.merge import KeyedFile, merge_keyed, write_keyed
from tcpweave.run.partition import Partition
from tcpweave.run.settings import ROWS_PER_PARTITION, Settings

__all__ = ["Extraction", "extract", "write_partition"]

#: frames (packets.parquet) and streams (plan.parquet) per merged window
PARQUET_FRAMES = 1 << 16
PARQUET_STREAMS = 1 << 12


@dataclass(frozen=True)
class Extraction:
    """What every partition's writer needs (picklable)."""

    out_dir: str
    workdir: str
    layout: str = "tcpweave"
    gaps: str = "fill"
    ledger_dir: str = ""
    parquet: bool = False
    streams: frozenset[int] | None = None  # the streams to write (None: all)
    store: bool = False  # out_dir is a store (output/store.py): Parquet rows, no files
    pcap: bool = False  # also each session's records as a capture file (``--pcap``)
    origins: Any = None  # with pcap: the run's fragment origins (decode.fragments.Origins)

    def part(self, p: int) -> str:
        return os.path.join(self.workdir, f"part-{p:05d}.jsonl")

    def done(self, p: int) -> str:
        """The file whose existence says that partition ``p`` is written."""
        return os.path.join(self.out_dir, store_part(p)) if self.store else self.part(p)


def write_partition(part: Partition, job: Extraction) -> tuple[int, ...]:
    """Plan and write one partition: its stream files and its part of streams.jsonl.

    The files an earlier, interrupted attempt at the partition made (its ledger lists
    them) are removed first: stream files are only ever created, never overwritten."""
    p = part.index
    ledger = os.path.join(job.ledger_dir, f"part-{p:05d}") if job.ledger_dir else None
    if ledger is not None and os.path.exists(ledger):
        _forget(job.out_dir, ledger)
    views = part.views()
    if job.store:
        return _store_partition(part, job, views, ledger)
    texts: list[bytes] = []
    keys: list[int] = []
    totals = [0] * 6
    index = part.global_index.tolist()
    for lo in range(0, len(views), STREAMS_PER_DIR):
        text, line_streams, counts = extract_block(
            views,
            lo,
            lo + STREAMS_PER_DIR,
            job.out_dir,
            job.layout,
            job.gaps,
            index,
            ledger,
            job.streams,
            job.pcap,
        )
        texts.append(text)
        keys += line_streams
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    if job.parquet:
        _parquet_parts(part, job)
    if job.pcap:
        chosen = None if job.streams is None else np.array(sorted(job.streams), np.int64)
        carve_partition(part, chosen, job.origins, job.workdir)
    with open(job.part(p) + ".counts", "w", encoding="utf-8") as f:
        json.dump(totals, f)
    write_lines(job.part(p), texts, keys)  # the partition is done once this name exists
    n_streams = len(views)
    del views
    part.discard()  # its spill is not needed again, even on --resume
    return (n_streams, *totals)


def _store_partition(
    part: Partition, job: Extraction, views: StreamViews, ledger: str | None
) -> tuple[int, ...]:
    """``write_partition`` for a store: the partition's rows as one Parquet file."""
    rel = store_part(part.index)
    if ledger is not None:
        with open(ledger, "a", encoding="utf-8") as f:
            f.write(f"{rel}.tmp\n{rel}\n")
    os.makedirs(os.path.dirname(job.done(part.index)), exist_ok=True)
    if job.parquet:
        _parquet_parts(part, job)
    with open(job.part(part.index) + ".counts", "w", encoding="utf-8") as f:
        counts = write_store_part(views, part.global_index, job.done(part.index) + ".tmp",
                                  job.gaps, job.streams)  # fmt: skip
        json.dump(counts, f)
    os.replace(job.done(part.index) + ".tmp", job.done(part.index))  # done once it exists
    n_streams = len(views)
    del views
    part.discard()
    return (n_streams, *counts)


def _forget(out_dir: str, ledger: str) -> None:
    """Remove the files listed in ``ledger`` (made by this run) and the ledger itself."""
    with open(ledger, encoding="utf-8") as f:
        names = [n for n in f.read().split("\n") if n]
    for rel in names:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(out_dir, rel))
    os.remove(ledger)


def _parquet_parts(part: Partition, job: Extraction) -> None:
    """The partition's packet rows (by frame) and plan rows (global streams, in plan order)
    as keyed IPC files for the merge."""
    packets = part.packets.to_arrow()
    for name, col in zip(("file", "payload_offset"), part.capture_columns, strict=True):
        packets = packets.set_column(packets.schema.get_field_index(name), name, pa.array(col))
    write_keyed(packets, "frame", PARQUET_FRAMES, job.workdir, f"packets-{part.index:05d}")
    plan = part.plan().to_arrow()
    stream = part.global_index[plan.column("stream").to_numpy()]
    row = plan.column("row").to_numpy()
    capture_file, capture_offset = part.capture_columns
    # the payload's place in the capture file: the row's, moved as far as the range is in
    start = capture_offset[row] + plan.column("payload_start").to_numpy()
    start -= part.packets.payload_offset[row]
    for name, col in (("stream", stream), ("file", capture_file[row]), ("payload_start", start)):
        plan = plan.set_column(plan.schema.get_field_index(name), name, pa.array(col))
    order = np.lexsort((plan.column("stream_offset").to_numpy(),
                        plan.column("direction").to_numpy(), stream))  # fmt: skip
    write_keyed(plan.take(order), "stream", PARQUET_STREAMS, job.workdir,
                f"plan-{part.index:05d}")  # fmt: skip


def extract(
    paths: list[str],
    out_dir: str | os.PathLike[str],
    settings: Settings = Settings(),  # noqa: B008 (frozen)
    *,
    layout: str = "tcpweave",
    gaps: str = "fill",
    executor: Executor | None = None,
    workdir: str | None = None,
    resume: bool = False,
    force: bool = False,
    rows_per_partition: int = ROWS_PER_PARTITION,
    progress: Progress | None = None,
    parquet: bool = False,
    streams: Sequence[int] | None = None,
    store: bool = False,
    pcap: bool = False,
    report: Callable[[Run, str], object] | None = None,
) -> tuple[ExtractSummary, Run]:
    """Extract every stream of the capture ``paths`` (or only ``streams``, by index) into
    ``out_dir`` (see the module docstring); ``report(run, path)`` then writes
    ``out_dir/report.html`` from a run of the capture read again (the partitions written
    are gone), before the manifest. Raises ``Interrupted`` after Ctrl-C or
    SIGTERM, once the output directory says what is complete; ``UsageError`` when a stream
    asked for is not in the capture. With ``store``, ``out_dir`` is a store: the streams
    as Parquet rows with their bytes (output/store.py), no files and no streams.jsonl."""
    check_distinct(paths)  # before the output directory is touched
    if store and pcap:
        raise UsageError("extract: --pcap writes capture files beside the stream files; "
                         "a --store has none (use tcpweave carve)")  # fmt: skip
    if store and report is not None:
        raise UsageError("extract: --report links the stream files; a --store has none "
                         "(use tcpweave report)")  # fmt: skip
    tick = progress or (lambda phase, n, total, packets: None)
    chosen = None if streams is None else frozenset(int(i) for i in streams)
    options = (*settings.options(), ("gaps", gaps), ("layout", layout), ("parquet", parquet),
               ("streams", None if chosen is None else sorted(chosen)),
               *((("store", True),) if store else ()),
               *((("pcap", True),) if pcap else ()))  # fmt: skip
    if report is not None:
        options += (("report", True),)
    identity = RunIdentity("extract", input_identity(paths), tuple(sorted(options)))
    claim = OutputDir.claim(out_dir, identity, force=force, resume=resume, workdir=workdir)
    job = Extraction(str(out_dir), claim.workdir, layout, gaps, claim.ledger(""), parquet, chosen,
                     store=store, pcap=pcap)  # fmt: skip
    run: Run | None = None
    try:
        with executor or InProcess() as ex:
            run = Run(paths, settings, ex, workdir=claim.workdir, keep_workdir=True,
                      rows_per_partition=rows_per_partition, progress=tick)  # fmt: skip
            summary = _write(run, job, tick)
            if report is not None:
                with Run(paths, settings, ex, workdir=claim.workdir,
                         rows_per_partition=rows_per_partition) as again:  # fmt: skip
                    report(again, os.path.join(str(out_dir), REPORT_FILE))
        fault.at("finish")
        cut = truncated_inputs()
        if cut:  # the run read zeros where the file was: it did not finish
            raise cut[0]
        claim.finish(_manifest(run, summary, job))
    except Interrupted as exc:
        claim.stopped("interrupted", f"stopped by signal {exc.signum}", keep_work=True,
                      partial_streams=exc.partial)  # fmt: skip
        _close(run)
        raise
    except KeyboardInterrupt as exc:  # before the partitions were written
        signum = getattr(exc, "signum", 2)
        claim.stopped("interrupted", f"stopped by signal {signum}", keep_work=True)
        total = run.n_parts if run is not None else 0
        _close(run)
        raise Interrupted(0, total, signum=signum) from None
    except BaseException as exc:
        signum = stop_signal(exc)
        if signum is not None:  # a signal that surfaced as another error
            claim.stopped("interrupted", f"stopped by signal {signum}", keep_work=True)
            _close(run)
            raise Interrupted(0, run.n_parts if run is not None else 0, signum=signum) from None
        claim.stopped("failed", _reason(exc), keep_work=False)
        _close(run)
        raise
    assert run is not None
    run.close()  # what it found stays readable: decode_stats(), capture_errors()
    return summary, run


def _close(run: Run | None) -> None:
    if run is not None:
        run.close()


def _write(run: Run, job: Extraction, tick: Progress) -> ExtractSummary:
    """Write the partitions not done yet, then merge their parts."""
    parts = list(range(run.n_parts))
    ranks = run.ranks()
    total = sum(len(r) for r in ranks)
    missing = sorted(s for s in job.streams or () if not 0 <= s < total)
    if missing:
        has = f"0 to {total - 1}" if total else "none"
        raise UsageError(f"--stream: no stream {', '.join(map(str, missing))} in the capture "
                         f"(its streams: {has})")  # fmt: skip
    done = {p for p in parts if os.path.exists(job.done(p))}
    if job.pcap:
        job = replace(job, origins=run._fragment_origins())
    summary = ExtractSummary()
    try:
        for p, _counts in run.map(write_partition, job, todo=[p for p in parts if p not in done]):
            done.add(p)
            tick("write", len(ranks[p]), total, 0)
            fault.at("write")  # here, in the driver, as each partition is reported written
    except KeyboardInterrupt as exc:
        done |= {p for p in parts if os.path.exists(job.done(p))}
        _merge(job, sorted(done), summary)
        partial = sorted(int(s) for p in parts if p not in done for s in ranks[p])
        raise Interrupted(len(done), len(parts), partial, getattr(exc, "signum", 2)) from None
    fault.at("merge")
    _merge(job, parts, summary)
    if job.parquet:
        _merge_parquet(job, parts)
    if job.pcap:
        _write_captures(run, job, parts, total)
    summary.streams = total if job.streams is None else len(job.streams)
    return summary


def _write_captures(run: Run, job: Extraction, parts: list[int], total: int) -> None:
    """Each session's capture file, from the frames every partition named (``--pcap``);
    what an interrupted attempt made is removed first (its ledger lists it)."""
    ledger = os.path.join(job.ledger_dir, "pcap")
    if os.path.exists(ledger):
        _forget(job.out_dir, ledger)
    streams = sorted(job.streams) if job.streams is not None else range(total)
    with open(ledger, "a", encoding="utf-8") as f:  # listed before they are made
        f.writelines(session_capture_name(job.layout, s) + "\n" for s in streams)
    files = [keyed_file(os.path.join(job.workdir, f"carve-{p:05d}.arrow")) for p in parts]
    write_session_captures(run, keyed_windows(files), job.out_dir,
                           lambda s: session_capture_name(job.layout, s))  # fmt: skip


def _merge(job: Extraction, parts: list[int], summary: ExtractSummary) -> None:
    """streams.jsonl from the partitions' parts, in stream order (a store's index); the
    summary's counts."""
    if job.store:
        write_index(job.out_dir, parts)
    else:
        merge_lines([job.part(p) for p in parts], os.path.join(job.out_dir, STREAMS_FILE))
    for p in parts:
        with open(job.part(p) + ".counts", encoding="utf-8") as f:
            summary.add(json.load(f))


def _merge_parquet(job: Extraction, parts: list[int]) -> None:
    """packets.parquet in frame order, then plan.parquet in plan order, its ``row`` column
    the packet's row in packets.parquet (the rank of its frame among the TCP packets',
    from a bitmap of their frames: a quarter of a byte per frame)."""
    import pyarrow.parquet as pq

    frames = _FrameRanks()
    for name, key in (("packets", "frame"), ("plan", "stream")):
        files = [f for f in (_keyed(job, name, p) for p in parts) if f is not None]
        writer: Any = None
        for table in merge_keyed(files, key):
            if name == "packets":
                frames.add(table.column("frame").to_numpy())
            else:
                rows = frames.rank(table.column("frame").to_numpy())
                table = table.set_column(table.schema.get_field_index("row"), "row",
                                         pa.array(rows))  # fmt: skip
            if writer is None:
                writer = pq.ParquetWriter(os.path.join(job.out_dir, f"{name}.parquet"),
                                          table.schema)  # fmt: skip
            writer.write_table(table)
        if writer is None and files:  # no row: an empty table with the schema
            with pa.memory_map(files[0].path) as f:
                schema = pa.ipc.open_file(f).schema
            writer = pq.ParquetWriter(os.path.join(job.out_dir, f"{name}.parquet"), schema)
        if writer is not None:
            writer.close()


_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.int64)


class _FrameRanks:
    """Which frames hold a TCP packet (a bitmap), and the rank of a frame among them."""

    def __init__(self) -> None:
        self.bits = np.zeros(0, np.uint8)
        self.before: np.ndarray | None = None

    def add(self, frames: np.ndarray) -> None:
        need = int(frames.max()) // 8 + 1 if len(frames) else 0
        if need > len(self.bits):
            self.bits = np.concatenate([self.bits, np.zeros(need - len(self.bits), np.uint8)])
        np.bitwise_or.at(self.bits, frames // 8, (1 << (frames % 8)).astype(np.uint8))

    def rank(self, frames: np.ndarray) -> np.ndarray:
        if self.before is None:  # TCP frames before each byte of the bitmap
            self.before = np.concatenate(([0], np.cumsum(_POPCOUNT[self.bits])))
        byte = frames // 8
        below = self.bits[byte] & ((1 << (frames % 8)) - 1).astype(np.uint8)
        return np.asarray(self.before[byte] + _POPCOUNT[below])


def _keyed(job: Extraction, name: str, p: int) -> KeyedFile | None:
    """A partition's keyed file (written by its task, maybe by an earlier process)."""
    path = os.path.join(job.workdir, f"{name}-{p:05d}.arrow")
    if not os.path.exists(path):
        return None
    key, window = ("frame", PARQUET_FRAMES) if name == "packets" else ("stream", PARQUET_STREAMS)
    with pa.memory_map(path) as f:
        reader = pa.ipc.open_file(f)
        windows = tuple(int(reader.get_batch(i).column(key)[0].as_py()) // window
                        for i in range(reader.num_record_batches))  # fmt: skip
    return KeyedFile(path, windows)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def _manifest(run: Run, summary: ExtractSummary, job: Extraction) -> dict[str, Any]:
    """What manifest.json says of a finished extraction (besides inputs and options)."""
    errors = run.capture_errors()
    store = {}
    if job.store:  # its files: what a later run into the directory may replace
        store = {"store": {"format": STORE_FORMAT, "index": INDEX_FILE,
                           "files": [store_part(p) for p in range(run.n_parts)]}}  # fmt: skip
    return {
        **store,
        "records_schema": RECORDS_SCHEMA,  # of streams.jsonl's lines (a store's rows)
        "summary": asdict(summary),
        "decode": asdict(run.decode_stats()),
        "input_damage": {
            "records": run.decode_stats().corrupt_records,
            "skipped_bytes": run.decode_stats().skipped_bytes,
            "regions_listed": len(errors),
            "regions": [
                {"file": e.path, "offset": e.offset, "length": e.skipped, "reason": e.reason}
                for e in errors
            ],
        },
    }
