"""Cutting capture files into pieces that workers decode independently.

A pcap file holds no marker between records, so only its record index says where a
piece may start: at a record header (the global header is 24 bytes, a record header
16). ``pieces`` walks the index once: frame numbers continue across files, and each pcap
file longer than ``range_bytes`` is cut at record boundaries into ranges of about that
size. A pcapng file is decoded whole by one worker (its sections and interfaces are
state carried from block to block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcpweave.capture.source import Source

__all__ = ["PCAP_HEADER_BYTES", "PCAP_RECORD_HEADER_BYTES", "Piece", "pieces"]

PCAP_HEADER_BYTES = 24
PCAP_RECORD_HEADER_BYTES = 16


@dataclass(frozen=True)
class Piece:
    """A share of the decode for one worker: file ``file`` whole (``start`` -1), or its pcap
    records in ``[start, end)``; ``frame_base`` is the frame number before its first record
    and ``last_sec`` the seconds of the record before ``start`` (for the resync check)."""

    file: int
    frame_base: int
    start: int = -1
    end: int = -1
    last_sec: int = -1

    @property
    def tag(self) -> str:
        """A name for the piece's own files (unique within a run)."""
        return f".f{self.file:05d}.{max(self.start, 0):013d}"

    @property
    def first(self) -> bool:
        """Does the piece start its file (where damage found while decompressing belongs)?"""
        return self.start <= PCAP_HEADER_BYTES


def pieces(sources: list[Source], range_bytes: int) -> list[Piece]:
    """The pieces of ``sources`` (one walk over their record indexes)."""
    out: list[Piece] = []
    frame = 0
    for i, src in enumerate(sources):
        cut = src.format == "pcap" and len(src.buffer) > range_bytes
        # the piece being walked: (frame base, start, seconds of the record before it)
        base, start, before = frame, (PCAP_HEADER_BYTES if cut else -1), -1
        next_cut, last_sec = range_bytes, -1
        for rec in src.record_chunks(1 << 16):
            if cut:
                heads = rec.offset - PCAP_RECORD_HEADER_BYTES
                j = int(np.searchsorted(heads, next_cut))
                while j < len(heads):
                    out.append(Piece(i, base, start, int(heads[j]), before))
                    before = int(rec.ts_ns[j - 1]) // 10**9 if j else last_sec
                    base, start = frame + j, int(heads[j])
                    next_cut = start + range_bytes
                    j = int(np.searchsorted(heads, next_cut))
                last_sec = int(rec.ts_ns[-1]) // 10**9
            frame += len(rec.offset)
            src.release_before(int(rec.offset[0]))
        out.append(Piece(i, base, start, len(src.buffer) if cut else -1, before))
        src.drop_pages()
    return out
