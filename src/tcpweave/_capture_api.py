"""``tcpweave.open`` and the Capture object: sources + packet table + stats."""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import TracebackType

from tcpweave.capture import Source, open_sources
from tcpweave.decode import DecodeStats, decode
from tcpweave.decode.table import PacketTable
from tcpweave.enums import ChecksumMode, Policy
from tcpweave.errors import CaptureError, UsageError
from tcpweave.flows import Flows, assign
from tcpweave.output.streams import Stream, StreamViews, build_streams
from tcpweave.reassembly import Plan, plan

CaptureStats = DecodeStats

__all__ = ["Capture", "CaptureStats", "open"]

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


def open(paths: PathLike | Iterable[PathLike], *, workdir: str | None = None) -> Capture:
    """Read one capture file, or several as one capture (ordered by first timestamp)."""
    if isinstance(paths, str | os.PathLike):
        path_list = [os.fspath(paths)]
    else:
        path_list = [os.fspath(p) for p in paths]
    if not path_list:
        raise UsageError("no capture file given")
    return Capture(path_list, workdir)
