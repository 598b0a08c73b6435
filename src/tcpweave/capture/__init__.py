"""capture/: files -> record index (pcap, pcapng, compressed, several files as one).

Each file is memory-mapped (compressed ones are first spooled to a temporary
file), walked by a kernel that writes one record-index row per frame, and the
files of one capture are ordered by their first timestamp.
"""

from __future__ import annotations

import re

from tcpweave.capture._mapguard import truncated as truncated_inputs
from tcpweave.capture.index import RECORD_COLUMNS, RecordColumns
from tcpweave.capture.source import ERROR_REASONS, Source, open_source

__all__ = [
    "ERROR_REASONS",
    "RECORD_COLUMNS",
    "RecordColumns",
    "Source",
    "open_source",
    "open_sources",
    "truncated_inputs",
]


def _natural(path: str) -> list[object]:
    """Sort key that orders embedded numbers numerically (capture1 < capture2 < capture10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def open_sources(
    paths: list[str], workdir: str | None = None, populate: bool = True
) -> list[Source]:
    """Open every file and order them as one capture: by first timestamp, then by name.

    Files without any packet keep their place after the others (they add no frames);
    files whose first timestamps are equal keep their natural name order.
    """
    sources: list[Source] = []
    try:
        for path in paths:
            sources.append(open_source(path, workdir, populate))
    except BaseException:
        for src in sources:
            src.close()
        raise
    order = sorted(
        range(len(sources)),
        key=lambda i: (
            sources[i].first_ts_ns is None,
            sources[i].first_ts_ns or 0,
            _natural(sources[i].path),  # equal first timestamps: rotation order (f, f1, f2, f10)
            i,
        ),
    )
    return [sources[i] for i in order]
