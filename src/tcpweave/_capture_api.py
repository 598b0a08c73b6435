"""``tcpweave.open`` and the Capture object: sources + packet table + stats."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tcpweave.capture import Source, open_sources
from tcpweave.capture.inputs import check_distinct
from tcpweave.decode import DecodeStats, decode
from tcpweave.decode.table import PacketTable
from tcpweave.enums import ChecksumMode, Policy
from tcpweave.errors import CaptureError, UsageError
from tcpweave.flows import Flows, assign
from tcpweave.output.distributed import DaskPool
from tcpweave.output.extract import ExtractSummary
from tcpweave.output.partitions import ROWS_PER_PARTITION, PartitionedRun, extract_partitioned
from tcpweave.output.streams import Stream, StreamViews, build_streams
from tcpweave.reassembly import Plan, plan

if TYPE_CHECKING:
    from tcpweave.audit import Audit
    from tcpweave.framing import Framer, Pdus

CaptureStats = DecodeStats

__all__ = ["Capture", "CaptureStats", "extract", "open"]

PathLike = str | os.PathLike[str]


class Capture:
    """One or several capture files read as one capture.

    ``packets`` is the packet table; ``stats`` its counts; ``errors`` every
    damaged record reported by the readers (file, byte offset, reason);
    ``sources`` the mapped files in capture order (a last, synthetic source
    holds datagrams rebuilt from IP fragments, when there are any).
    """

    def __init__(self, paths: list[str], workdir: str | None = None) -> None:
        self.paths = paths
        self.sources: list[Source] = open_sources(paths, workdir)
        decoded = decode(self.sources, workdir)
        if decoded.defrag is not None:
            self.sources.append(decoded.defrag)
        self.packets: PacketTable = decoded.packets
        self.stats: DecodeStats = decoded.stats
        self.errors: list[CaptureError] = [e for s in self.sources for e in s.errors]
        self._flows: Flows | None = None
        self._plans: dict[tuple[Policy, ChecksumMode], Plan] = {}

    @property
    def flows(self) -> Flows:
        """Stream (session) and direction of every packet."""
        if self._flows is None:
            self._flows = assign(self.packets)
        return self._flows

    def plan(self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto") -> Plan:
        """The reassembly plan (cached per policy and checksum mode)."""
        key = (_policy(policy), _checksum_mode(checksums))
        if key not in self._plans:
            self._plans[key] = plan(self.packets, self.flows, self.sources, *key)
        return self._plans[key]

    def streams(
        self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto"
    ) -> list[Stream]:
        """Every session with both directions' bytes, chunks, gaps and conflicts."""
        return build_streams(self.packets, self.flows, self.plan(policy, checksums), self.sources)

    def stream_views(
        self, policy: str | Policy = "first", checksums: str | ChecksumMode = "auto"
    ) -> StreamViews:
        """Streams built a block at a time (``len()``, ``block(lo, hi)``), for huge captures."""
        return StreamViews(self.packets, self.flows, self.plan(policy, checksums), self.sources)

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
        from tcpweave.framing import frame
        from tcpweave.framing.spec import parse_framer

        chosen = [streams] if isinstance(streams, int) else streams
        framer = parse_framer(framer) if isinstance(framer, str) else framer
        return frame(self.stream_views(policy, checksums), framer, chosen, data=data)

    def audit(
        self,
        policy: str | Policy = "first",
        checksums: str | ChecksumMode = "auto",
        port_range: tuple[int, int] | None = None,
    ) -> Audit:
        """Accuracy figures, verification matrix and per-stream verdicts (tcpweave.audit)."""
        from tcpweave.audit import DEFAULT_PORT_RANGE, audit

        return audit(
            self.packets,
            self.flows,
            self.plan(policy, checksums),
            self.sources,
            captures=self.paths,
            port_range=port_range or DEFAULT_PORT_RANGE,
        )

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
        for src in self.sources:
            src.close()

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


def _policy(value: str | Policy) -> Policy:
    if isinstance(value, Policy):
        return value
    try:
        return Policy.parse(value)
    except KeyError:
        names = ", ".join(str(p) for p in Policy)
        raise UsageError(f"unknown overlap policy {value!r} (choose from {names})") from None


def _checksum_mode(value: str | ChecksumMode) -> ChecksumMode:
    if isinstance(value, ChecksumMode):
        return value
    try:
        return ChecksumMode[value.upper()]
    except KeyError:
        raise UsageError(f"unknown checksum mode {value!r} (auto, strict, ignore)") from None


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
) -> tuple[ExtractSummary, PartitionedRun]:
    """Write every direction of every session under ``out_dir`` with ``streams.jsonl``.

    Memory stays bounded: the capture is cut by flow into partitions spilled under
    ``workdir`` (see ``tcpweave.output.partitions``). ``jobs`` worker processes (default:
    all cores), or the workers of ``client`` (a ``dask.distributed.Client`` or a scheduler
    address), plan and write the partitions; the output does not depend on either.
    ``idle_timeout`` (seconds, 0 = off) starts a new session on a 4-tuple after that much
    silence, besides the SYN rules.

    ``out_dir`` must be new or empty, or hold an earlier tcpweave run: the same run
    (``resume`` continues it when it was interrupted) or, with ``force``, another one,
    whose files (and only those) are replaced. ``workdir``: a directory in which
    tcpweave makes its own work directory (never touching anything else there).
    """
    path_list = (
        [os.fspath(paths)]
        if isinstance(paths, str | os.PathLike)
        else [os.fspath(p) for p in paths]
    )
    if not path_list:
        raise UsageError("no capture file given")
    check_distinct(path_list)
    if layout not in ("tcpweave", "tcpflow") or gaps not in ("fill", "omit"):
        raise UsageError(f"unknown layout {layout!r} or gap mode {gaps!r}")
    pool = DaskPool(client) if client is not None else None
    return extract_partitioned(
        path_list,
        Path(os.fspath(out_dir)),
        _policy(policy),
        _checksum_mode(checksums),
        layout,
        gaps,
        jobs or os.cpu_count() or 1,
        workdir,
        resume,
        partition_rows,
        progress,
        pool,
        int(idle_timeout * 1e9),
        force,
    )


def open(paths: PathLike | Iterable[PathLike], *, workdir: str | None = None) -> Capture:
    """Read one capture file, or several as one capture (ordered by first timestamp)."""
    if isinstance(paths, str | os.PathLike):
        path_list = [os.fspath(paths)]
    else:
        path_list = [os.fspath(p) for p in paths]
    if not path_list:
        raise UsageError("no capture file given")
    check_distinct(path_list)
    return Capture(path_list, workdir)
