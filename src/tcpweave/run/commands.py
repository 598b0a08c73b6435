"""Every command but extract as one function per partition plus one merge.

Each ``*_partition`` function runs on one partition (in this process, a forked worker or
a Dask worker) and returns its share with the capture's stream numbers; the command
function maps it over the run and merges the shares in stream (or frame) order. A
capture read whole is a run of one partition: the same functions, one share.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.audit.figures import DEFAULT_PORT_RANGE
from tcpweave.audit.matrix import MatrixWriter, build_matrix
from tcpweave.audit.report import Audit, AuditPart, audit_part, merge_parts
from tcpweave.errors import UsageError
from tcpweave.framing.api import Framer
from tcpweave.framing.driver import COLUMNS as PDU_COLUMNS
from tcpweave.framing.driver import Pdus, frame
from tcpweave.output.follow import FollowStream, follow
from tcpweave.output.sessions import session_table
from tcpweave.run.driver import Run
from tcpweave.run.merge import KeyedFile, merge_keyed, write_keyed
from tcpweave.run.partition import Partition

__all__ = [
    "MATRIX_BATCH_STREAMS",
    "audit",
    "follow_stream",
    "packet_rows",
    "pdu_windows",
    "pdus",
    "sessions",
    "stream_count",
]

#: global streams per matrix batch (one Parquet row group / CSV chunk of the output)
MATRIX_BATCH_STREAMS = 4096
#: frames per merged window of the packet rows
PACKET_FRAMES = 1 << 16
#: streams per merged window of the PDUs
PDU_STREAMS = 1 << 12


def stream_count(run: Run) -> int:
    return sum(len(r) for r in run.ranks())


# -- sessions -------------------------------------------------------------------------------


def sessions_partition(part: Partition) -> pa.Table:
    """The partition's session table, streams numbered globally."""
    return session_table(part.packets, part.flows, part.plan(), part.global_index)


def sessions(run: Run) -> pa.Table:
    """One row per session of the capture (``output/sessions.py``), in stream order."""
    shares = [table for _, table in run.map(sessions_partition)]
    if len(shares) == 1:
        return shares[0]
    table = pa.concat_tables(shares)
    return table.take(np.argsort(table.column("stream").to_numpy(), kind="stable"))


# -- audit ----------------------------------------------------------------------------------


def audit_partition(
    part: Partition, matrix_dir: str | None, batch_streams: int, keep_matrix: bool = False
) -> AuditPart:
    """One partition's share of the audit, streams numbered globally; its matrix rows go to
    a keyed file under ``matrix_dir`` when given, and the matrix stays in the share with
    ``keep_matrix`` (a capture read whole, in this process)."""
    the_plan = part.plan()
    matrix = build_matrix(part.packets, part.flows, the_plan, part.sources,
                          release=functools.partial(_drop_pages, part.sources))  # fmt: skip
    share = audit_part(part.packets, part.flows, the_plan, matrix, part.global_index)
    if matrix_dir is not None and len(matrix):
        table = matrix.to_arrow(part.global_index)
        del matrix
        keyed = write_keyed(table, "stream", batch_streams, matrix_dir, f"m{part.index:05d}")
        share.matrix_file, share.matrix_batches = keyed.path, list(keyed.windows)
    elif keep_matrix:
        share.matrix = matrix
    return share


def _drop_pages(sources: list[Any]) -> None:
    """Drop the pages the occurrence count has read (they are not needed again)."""
    for src in sources:
        src.drop_pages()


def audit(
    run: Run,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    matrix: str | None = None,
    batch_streams: int | None = None,
) -> Audit:
    """The audit of the run's capture; the verification matrix is written to ``matrix``
    (.parquet, else CSV) when given, ``batch_streams`` (MATRIX_BATCH_STREAMS) streams at a
    time. A run of one
    in-memory partition keeps the matrix in ``Audit.matrix``."""
    keep = run.in_memory and matrix is None
    batch_streams = batch_streams or MATRIX_BATCH_STREAMS
    with tempfile.TemporaryDirectory(prefix="tcpweave-audit-") as tmp:
        matrix_dir = tmp if matrix is not None else None
        found = run.map(audit_partition, matrix_dir, batch_streams, keep)
        shares = [s for _, s in sorted(found, key=lambda ps: ps[0])]
        settings = run.settings
        out = merge_parts(shares, list(run.paths), str(settings.policy), str(settings.checksums),
                          port_range)  # fmt: skip
        if keep:
            out.matrix = shares[0].matrix
        if matrix is not None:
            files = [KeyedFile(str(s.matrix_file), tuple(s.matrix_batches or []))
                     for s in shares if s.matrix_file is not None]  # fmt: skip
            with MatrixWriter(matrix) as writer:
                for window in merge_keyed(files, "stream"):
                    writer.write(window)
    return out


# -- pdus -----------------------------------------------------------------------------------


def pdus_partition(part: Partition, framer: Framer, chosen: np.ndarray | None, data: bool) -> Pdus:
    """The PDUs of the partition's chosen streams (all when None), streams numbered globally."""
    local: Iterable[int] | None = None
    if chosen is not None:
        local = np.flatnonzero(np.isin(part.global_index, chosen)).tolist()
        if not local:
            return _renumbered(frame(part.views(), framer, [], data=data), part.global_index)
    return _renumbered(frame(part.views(), framer, local, data=data), part.global_index)


def _renumbered(found: Pdus, global_index: np.ndarray) -> Pdus:
    found.columns["stream"] = global_index[found.columns["stream"]]
    return found


def pdus(
    run: Run, framer: Framer, streams: Iterable[int] | None = None, *, data: bool = True
) -> Pdus:
    """The PDUs ``framer`` cuts from the chosen streams (all by default), in stream order."""
    chosen = _chosen(run, streams)
    shares = [share for _, share in run.map(pdus_partition, framer, chosen, data)]
    return _concat_pdus(framer.name, shares)


def _pdus_keyed(
    part: Partition, framer: Framer, chosen: np.ndarray | None, data: bool, workdir: str
) -> tuple[KeyedFile, int]:
    found = pdus_partition(part, framer, chosen, data)
    keyed = write_keyed(found.to_arrow(), "stream", PDU_STREAMS, workdir, f"pdus-{part.index:05d}")
    return keyed, found.skipped_bytes


def pdu_windows(
    run: Run, framer: Framer, streams: Iterable[int] | None = None, *, data: bool = True
) -> Iterator[Pdus]:
    """The PDUs of ``pdus``, a window of streams at a time (bounded memory on a spilled
    run); the last window carries the skipped byte count of the whole capture."""
    if run.in_memory:
        yield pdus(run, framer, streams, data=data)
        return
    chosen = _chosen(run, streams)
    with tempfile.TemporaryDirectory(prefix="tcpweave-pdus-") as tmp:
        shares = [share for _, share in run.map(_pdus_keyed, framer, chosen, data, tmp)]
        skipped = sum(n for _, n in shares)
        held: pa.Table | None = None  # one window behind, to give the last one the count
        for window in merge_keyed([f for f, _ in shares], "stream"):
            if held is not None:
                yield Pdus.from_arrow(framer.name, held)
            held = window
        if held is not None:
            yield Pdus.from_arrow(framer.name, held, skipped)


def _chosen(run: Run, streams: Iterable[int] | None) -> np.ndarray | None:
    if streams is None:
        return None
    chosen = np.unique(np.asarray([int(s) for s in streams], np.int64))
    n = stream_count(run)
    bad = chosen[(chosen < 0) | (chosen >= n)]
    if bad.size:
        raise UsageError(f"no stream {int(bad[0])} (the capture has {n} streams)")
    return chosen


def _concat_pdus(name: str, shares: list[Pdus]) -> Pdus:
    """The shares' PDUs in (stream, direction, offset) order."""
    if len(shares) == 1:
        return shares[0]
    cols = {c: np.concatenate([s.columns[c] for s in shares]) for c in PDU_COLUMNS}
    order = np.lexsort((cols["stream_offset"], cols["direction"], cols["stream"]))
    cols = {c: v[order] for c, v in cols.items()}
    lengths = np.concatenate([np.diff(s.data_offsets) for s in shares])
    starts = np.concatenate([s.data_offsets[:-1] + base for s, base in
                             zip(shares, np.cumsum([0] + [len(s.data) for s in shares[:-1]]),
                                 strict=True)])  # fmt: skip
    data = np.concatenate([s.data for s in shares]) if shares else np.zeros(0, np.uint8)
    offsets = np.concatenate(([0], np.cumsum(lengths[order]))).astype(np.int64)
    out = np.empty(int(offsets[-1]), np.uint8)
    for i, k in enumerate(order.tolist()):
        out[offsets[i] : offsets[i + 1]] = data[starts[k] : starts[k] + lengths[k]]
    return Pdus(name, cols, out, offsets, sum(s.skipped_bytes for s in shares))


# -- follow ---------------------------------------------------------------------------------


def follow_partition(part: Partition, stream: int) -> FollowStream | None:
    local = part.local_stream(stream)
    if local is None:
        return None
    found = follow(part.packets, part.flows, part.sources, local, part.header_cut())
    return FollowStream(stream, found.nodes, found.chunks)


def follow_stream(run: Run, stream: int) -> FollowStream:
    """Stream ``stream`` as Wireshark's Follow TCP Stream shows it; a UsageError when the
    capture has no such stream."""
    n = stream_count(run)
    if not 0 <= stream < n:
        have = f"streams 0 to {n - 1}" if n else "no TCP stream"
        raise UsageError(f"no stream {stream} (the capture has {have})")
    todo = [p for p, r in enumerate(run.ranks()) if np.any(r == stream)]
    for _, found in run.map(follow_partition, stream, todo=todo):
        if found is not None:
            return found  # type: ignore[no-any-return]
    raise AssertionError(f"stream {stream} is in no partition")  # pragma: no cover


# -- packets --------------------------------------------------------------------------------


def packets_partition(part: Partition, workdir: str | None) -> pa.Table | KeyedFile:
    """The partition's packet rows with their session (``Partition.packets_as_captured``);
    as a table, or a keyed file under ``workdir`` (for the merge)."""
    table = part.packets_as_captured()
    if workdir is None:
        return table
    return write_keyed(table, "frame", PACKET_FRAMES, workdir, f"packets-{part.index:05d}")


def packet_rows(run: Run) -> Iterator[pa.Table]:
    """The capture's packet rows with their session columns, in frame order, a window of
    frames at a time."""
    if run.in_memory:
        yield from (share for _, share in run.map(packets_partition, None))
        return
    with tempfile.TemporaryDirectory(prefix="tcpweave-packets-") as tmp:
        files = [f for _, f in run.map(packets_partition, tmp)]
        yield from merge_keyed(files, "frame")
