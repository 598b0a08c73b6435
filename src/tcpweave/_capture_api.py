"""``tcpweave.open`` and the Capture object: sources + packet table + stats."""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import TracebackType

from tcpweave.capture import Source, open_sources
from tcpweave.decode import DecodeStats, decode
from tcpweave.decode.table import PacketTable
from tcpweave.errors import CaptureError, UsageError

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


def open(paths: PathLike | Iterable[PathLike], *, workdir: str | None = None) -> Capture:
    """Read one capture file, or several as one capture (ordered by first timestamp)."""
    if isinstance(paths, str | os.PathLike):
        path_list = [os.fspath(paths)]
    else:
        path_list = [os.fspath(p) for p in paths]
    if not path_list:
        raise UsageError("no capture file given")
    return Capture(path_list, workdir)
