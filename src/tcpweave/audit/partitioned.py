"""The audit of a big capture, partition by partition, in bounded memory.

The capture is cut by flow into partitions (``tcpweave.output.partitions``: every
4-tuple, hence every session and direction, lies in one partition; sessions are
numbered with the capture's stream indexes). Each partition is audited on its
own (``audit_partition``, on forked workers) into an :class:`AuditPart`, and the
parts are merged (``report.merge_parts``) into exactly the audit of the whole
capture:

- packet counts, E, the 4-tuple counts (P_spec) and the continuity breaks add up;
- per-stream facts (verdict reasons, bytes, SYN, E's and S's shares, the endpoints
  of mismatching streams) are scattered to their global stream index;
- P_b groups (client address, server address, server port) span partitions: each
  part returns its groups with their session counts and distinct client ports, and
  the groups are merged by key (a (group, client port) pair is one 4-tuple, so
  distinct client ports add up). The merged groups are sorted by key as the
  whole-capture grouping is, so sum(P_b) is summed in the same order: the figures
  are the same floats.

The verification matrix (``--matrix``) never exists whole. Each worker writes its
partition's rows, sorted by (stream, direction, offset, frame) and renumbered with
global streams, to an Arrow IPC file in batches of ``batch_streams`` consecutive
global stream indexes. The driver then takes batch after batch -- that batch of
every partition file -- sorts the rows by stream (a stable sort: a stream's rows
come from one partition, already in order) and appends them to the output as one
Parquet row group or one CSV chunk. The rows and their order are those of the
whole-capture matrix; CSV output is byte-identical, Parquet output has the same
schema and rows but other row-group boundaries.

What bounds memory: a worker holds one partition and its matrix; the driver holds
the merged per-stream facts (a few tens of bytes per session, as ``per_stream`` of
the JSON lists every stream anyway) and one matrix batch.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.enums import ChecksumMode, Policy
from tcpweave.errors import UsageError
from tcpweave.output.partitions import ROWS_PER_PARTITION, PartitionedRun, map_partitions

from .figures import DEFAULT_PORT_RANGE
from .matrix import MatrixWriter, build_matrix
from .report import Audit, AuditPart, audit_part, merge_parts

__all__ = ["MATRIX_BATCH_STREAMS", "audit_partition", "audit_partitioned"]

#: global streams per matrix batch (one Parquet row group / CSV chunk of the output)
MATRIX_BATCH_STREAMS = 4096


def parse_settings(
    policy: str | Policy, checksums: str | ChecksumMode
) -> tuple[Policy, ChecksumMode]:
    if not isinstance(policy, Policy):
        try:
            policy = Policy.parse(policy)
        except KeyError:
            names = ", ".join(str(p) for p in Policy)
            raise UsageError(f"unknown overlap policy {policy!r} (choose from {names})") from None
    if not isinstance(checksums, ChecksumMode):
        try:
            checksums = ChecksumMode[checksums.upper()]
        except KeyError:
            raise UsageError(
                f"unknown checksum mode {checksums!r} (auto, strict, ignore)"
            ) from None
    return policy, checksums


def audit_partition(
    view: Any,
    policy: int,
    checksums: int,
    matrix_dir: str | None = None,
    batch_streams: int = MATRIX_BATCH_STREAMS,
) -> AuditPart:
    """Task per partition (a ``PartitionView``): its share of the audit, streams numbered
    globally; its matrix rows go to a file under ``matrix_dir`` when given."""
    the_plan = view.plan(Policy(policy), ChecksumMode(checksums))
    matrix = build_matrix(view.packets, view.flows, the_plan, view.sources,
                          release=functools.partial(_drop_pages, view.sources))  # fmt: skip
    part = audit_part(view.packets, view.flows, the_plan, matrix, view.global_index)
    if matrix_dir is not None and len(matrix):
        table = matrix.to_arrow(view.global_index)
        del matrix
        part.matrix_file, part.matrix_batches = _write_batches(table, matrix_dir, batch_streams)
    return part


def _drop_pages(sources: list[Any]) -> None:
    """Drop the capture pages the occurrence count has read (they are not needed again)."""
    for src in sources:
        src.drop_pages()


def _write_batches(table: pa.Table, matrix_dir: str, batch_streams: int) -> tuple[str, list[int]]:
    """One IPC record batch per run of ``batch_streams`` global streams that has rows."""
    stream = table.column("stream").to_numpy()
    batch = stream // batch_streams
    starts = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1]])
    bounds = np.append(starts, len(stream))
    path = os.path.join(matrix_dir, f"part-{int(stream[0]):012d}.arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            writer.write_table(table.slice(lo, hi - lo), max_chunksize=hi - lo)
    return path, batch[starts].tolist()


def audit_partitioned(
    paths: list[str],
    policy: str | Policy = "first",
    checksums: str | ChecksumMode = "auto",
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    *,
    jobs: int = 1,
    workdir: str | None = None,
    rows_per_partition: int = ROWS_PER_PARTITION,
    matrix: str | None = None,
    report: Callable[[PartitionedRun], None] | None = None,
    batch_streams: int | None = None,
) -> Audit:
    """The audit of the capture ``paths``, partition by partition on ``jobs`` workers;
    the verification matrix is written to ``matrix`` (.parquet, else CSV) when given, a
    batch of ``batch_streams`` (default :data:`MATRIX_BATCH_STREAMS`) streams at a time.
    Equal to ``tcpweave.open(paths).audit(...)`` (``Audit.matrix`` is None here)."""
    pol, ck = parse_settings(policy, checksums)
    with tempfile.TemporaryDirectory(prefix="tcpweave-audit-", dir=workdir) as tmp:
        task = functools.partial(
            audit_partition,
            policy=int(pol),
            checksums=int(ck),
            matrix_dir=tmp if matrix is not None else None,
            batch_streams=batch_streams or MATRIX_BATCH_STREAMS,
        )
        parts = list(map_partitions(paths, task, jobs, workdir, rows_per_partition, report))
        out = merge_parts(parts, list(paths), str(pol), str(ck), port_range)
        if matrix is not None:
            write_matrix(parts, matrix)
    return out


def write_matrix(parts: list[AuditPart], path: str) -> None:
    """The partitions' matrix files merged batch by batch into ``path``, in matrix order."""
    files = [p for p in parts if p.matrix_file is not None]
    handles = [pa.OSFile(str(p.matrix_file), "rb") for p in files]
    readers = [pa.ipc.open_file(h) for h in handles]
    # (batch number, part, batch position in its file) in batch order
    todo = sorted(
        (b, i, j) for i, p in enumerate(files) for j, b in enumerate(p.matrix_batches or [])
    )
    with contextlib.ExitStack() as stack, MatrixWriter(path) as out:
        for h in handles:
            stack.callback(h.close)
        at = 0
        while at < len(todo):
            end = at
            while end < len(todo) and todo[end][0] == todo[at][0]:
                end += 1
            pieces = [readers[i].get_batch(j) for _, i, j in todo[at:end]]
            table = pa.Table.from_batches(pieces)
            order = np.argsort(table.column("stream").to_numpy(), kind="stable")
            out.write(table.take(order))
            at = end
