"""``tcpweave.open``, ``tcpweave.extract`` and the Capture object.

A ``Capture`` is a run of one in-memory partition (``tcpweave.run``): its packet table,
sessions, plan and streams are those of the whole capture, and its sessions, audit and
PDUs come from the same per-partition functions the command line uses at any size.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from tcpweave.capture import Source
from tcpweave.decode import DecodeStats
from tcpweave.decode.table import PacketTable
from tcpweave.enums import ChecksumMode, Policy
from tcpweave.errors import CaptureError, UsageError
from tcpweave.flows import Flows
from tcpweave.output.extract import ExtractSummary
from tcpweave.output.streams import Stream, StreamViews, build_streams
from tcpweave.reassembly import Plan
from tcpweave.run import ROWS_PER_PARTITION, Run, Settings, executor_for
from tcpweave.run import extract as run_extract
from tcpweave.run.carving import CarveSummary
from tcpweave.run.carving import carve as run_carve
from tcpweave.run.partition import Partition

if TYPE_CHECKING:
    from tcpweave.audit import Audit
    from tcpweave.framing import Framer, Pdus
    from tcpweave.framing.objects import HttpObject

CaptureStats = DecodeStats

__all__ = ["Capture", "CaptureStats", "extract", "open"]

PathLike = str | os.PathLike[str]


class Capture:
    """One or several capture files read as one capture.

    ``packets`` is the packet table; ``stats`` its counts; ``errors`` every
    damaged record reported by the readers (file, byte offset, reason);
    ``sources`` the capture files in capture order (a last, synthetic source
    holds datagrams rebuilt from IP fragments, when there are any).
    """

    def __init__(self, paths: list[str], workdir: str | None = None, bpf: str = "") -> None:
        self.paths = paths
        self._bpf = bpf
        self._run = Run(paths, Settings.of(bpf=bpf), whole=True, workdir=workdir)
        self._runs: dict[Settings, Run] = {self._run.settings: self._run}
        whole = self._run.whole  # sessions numbered only when asked for (flows, plan, ...)
        self.sources: list[Source] = whole.sources
        self.packets: PacketTable = whole.packets
        self.stats: DecodeStats = self._run.decode_stats()
        self.errors: list[CaptureError] = self._run.capture_errors()

    def _with(self, policy: str | Policy, checksums: str | ChecksumMode) -> Run:
        settings = Settings.of(policy, checksums, bpf=self._bpf)
        if settings not in self._runs:
            self._runs[settings] = self._run.with_settings(settings)
        return self._runs[settings]

    def _part(self, policy: str | Policy, checksums: str | ChecksumMode) -> Partition:
        return self._with(policy, checksums).partition(0)

    @property
    def flows(self) -> Flows:
        """Stream (session) and direction of every packet."""
        return self._run.partition(0).flows

    def plan(self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto") -> Plan:
        """The reassembly plan (cached per policy and checksum mode)."""
        return self._part(policy, checksums).plan()

    def streams(
        self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto"
    ) -> list[Stream]:
        """Every session with both directions' bytes, chunks, gaps and conflicts."""
        part = self._part(policy, checksums)
        return build_streams(part.packets, part.flows, part.plan(), part.sources)

    def sessions(
        self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto"
    ) -> pa.Table:
        """One row per session, as Arrow (schema ``tcpweave.output.sessions.SESSION_SCHEMA``):
        endpoints, times, per-direction figures, close state and Zeek-style history."""
        from tcpweave.run import sessions as run_sessions  # not above: it loads audit/framing

        return run_sessions(self._with(policy, checksums))

    def stream_views(
        self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto"
    ) -> StreamViews:
        """Streams built a block at a time (``len()``, ``block(lo, hi)``), for huge captures."""
        return self._part(policy, checksums).views()

    def pdus(
        self,
        framer: Framer | str,
        streams: int | Iterable[int] | None = None,
        policy: str | Policy = "first",
        checksums: str | ChecksumMode = "auto",
        *,
        data: bool = True,
    ) -> Pdus:
        """The PDUs a framer (or a framer spec such as ``"length:size=2,adjust=2"``) cuts
        from the chosen streams (all by default): iterate them, or ``.to_arrow()``."""
        from tcpweave.framing.spec import parse_framer
        from tcpweave.run import pdus as run_pdus

        chosen = [streams] if isinstance(streams, int) else streams
        framer = parse_framer(framer) if isinstance(framer, str) else framer
        return run_pdus(self._with(policy, checksums), framer, chosen, data=data)

    def carve(
        self, streams: Iterable[int], path: PathLike, *, fmt: str = "auto", force: bool = False
    ) -> CarveSummary:
        """Write every original record of ``streams`` (tcp.stream indexes) to the capture
        file ``path`` (``tcpweave carve``: pcap, or pcapng by name, ``fmt`` or need)."""
        return run_carve(self._run, streams, path, fmt=fmt, force=force)

    def http_objects(
        self,
        policy: str | Policy = "first",
        checksums: str | ChecksumMode = "auto",
        max_decoded: int | None = None,
    ) -> list[HttpObject]:
        """The body of every HTTP/1.x message, de-chunked and content-decoded, with its
        request, status, state and gaps (tcpweave.HttpObject; docs/objects.md); 206 pieces
        put together where they cover their representation. ``max_decoded`` caps a
        decoded body (default 256 MiB)."""
        from tcpweave.framing.objects import DEFAULT_MAX_DECODED
        from tcpweave.run.objects import http_objects

        limit = DEFAULT_MAX_DECODED if max_decoded is None else max_decoded
        return http_objects(self._with(policy, checksums), limit)

    def audit(
        self,
        policy: str | Policy = "first",
        checksums: str | ChecksumMode = "auto",
        port_range: tuple[int, int] | None = None,
    ) -> Audit:
        """Accuracy figures, verification matrix and per-stream verdicts (tcpweave.audit)."""
        from tcpweave.audit import DEFAULT_PORT_RANGE
        from tcpweave.run import audit as run_audit

        return run_audit(self._with(policy, checksums), port_range or DEFAULT_PORT_RANGE)

    def payload(self, row: int) -> bytes:
        """The captured TCP payload bytes of packet-table row ``row``."""
        p = self.packets
        start = int(p.payload_offset[row])
        return (
            self.sources[int(p.file[row])]
            .buffer[start : start + int(p.payload_caplen[row])]
            .tobytes()
        )

    def close(self) -> None:
        self._run.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Capture({len(self.paths)} files, {len(self.packets)} TCP packets)"


def _paths(paths: PathLike | Iterable[PathLike]) -> list[str]:
    if isinstance(paths, str | os.PathLike):
        out = [os.fspath(paths)]
    else:
        out = [os.fspath(p) for p in paths]
    if not out:
        raise UsageError("no capture file given")
    return out


def extract(
    paths: PathLike | Iterable[PathLike],
    out_dir: PathLike,
    *,
    policy: str | Policy = "first",
    checksums: str | ChecksumMode = "auto",
    layout: str = "tcpweave",
    gaps: str = "fill",
    jobs: int | None = None,
    workdir: str | None = None,
    resume: bool = False,
    partition_rows: int = ROWS_PER_PARTITION,
    progress: Callable[[str, int, int, int], None] | None = None,
    client: Any = None,
    idle_timeout: float = 0.0,
    force: bool = False,
    parquet: bool = False,
    streams: Iterable[int] | None = None,
    bpf: str = "",
    store: bool = False,
    pcap: bool = False,
    report: bool = False,
) -> tuple[ExtractSummary, Run]:
    """Write every direction of every session (or of ``streams``, by index) under
    ``out_dir`` with ``streams.jsonl``; with ``store``, as a store instead: Parquet rows
    with the bytes, read with ``open_store`` or any Parquet reader (docs/store.md).

    Memory stays bounded: a capture larger than ``partition_rows`` packets is cut by flow
    into partitions spilled to a work directory (see ``tcpweave.run``). ``jobs`` worker
    processes (default: all cores), or the workers of ``client`` (a
    ``dask.distributed.Client`` or a scheduler address), plan and write the partitions;
    the output does not depend on either. ``idle_timeout`` (seconds, 0 = off) starts a
    new session on a 4-tuple after that much silence, besides the SYN rules.
    ``parquet`` also writes ``packets.parquet`` and ``plan.parquet``; ``pcap`` each
    session's original records as a capture file (named by its records' ``pcap``); ``report`` also
    ``report.html`` (``tcpweave.report``), linked to the stream files.

    ``out_dir`` must be new or empty, or hold an earlier tcpweave run: the same run
    (``resume`` continues it when it was interrupted) or, with ``force``, another one,
    whose files (and only those) are replaced. ``workdir``: a directory in which
    tcpweave makes its own work directory (never touching anything else there).
    """
    if layout not in ("tcpweave", "tcpflow") or gaps not in ("fill", "omit"):
        raise UsageError(f"unknown layout {layout!r} or gap mode {gaps!r}")
    settings = Settings.of(policy, checksums, idle_timeout, bpf)
    write = None
    if report:
        from tcpweave.report.page import plotly_bundle

        plotly_bundle()  # a missing plotting library is said before anything is written
        write = functools.partial(_report_into, os.fspath(out_dir))
    return run_extract(
        _paths(paths), Path(os.fspath(out_dir)), settings, layout=layout, gaps=gaps,
        executor=executor_for(jobs or os.cpu_count() or 1, client), workdir=workdir,
        resume=resume, force=force, rows_per_partition=partition_rows, progress=progress,
        parquet=parquet, streams=None if streams is None else list(streams), store=store,
        pcap=pcap, report=write,
    )  # fmt: skip


def _report_into(out_dir: str, run: Run, path: str) -> None:
    """extract --report: the page in the output directory, linked to its stream files."""
    from tcpweave.report import write_report

    write_report(run, path, links_from=out_dir)


def open(
    paths: PathLike | Iterable[PathLike], *, workdir: str | None = None, bpf: str = ""
) -> Capture:
    """Read one capture file, or several as one capture (ordered by first timestamp);
    ``bpf``: a capture filter (pcap-filter(7)) -- records it rejects are not read."""
    return Capture(_paths(paths), workdir, bpf)
