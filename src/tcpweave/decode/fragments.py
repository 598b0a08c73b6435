"""IPv4 and IPv6 fragment reassembly, before TCP sees the datagram.

The decode kernel writes each fragment's header fields and byte ranges (not its
bytes) to fragment columns. This module groups them by (version, source,
destination, identification, protocol) -- RFC 791 §3.2 and RFC 8200 §4.5 --
in capture order, and once a datagram is covered from offset 0 to the end
named by its last fragment, rebuilds it (first fragment's header, fields
fixed up as for an unfragmented packet) into a spool file that is decoded like
a raw-IP capture. The TCP row takes the frame number and timestamp of the
fragment that completed the datagram, as Wireshark reports it.

Overlapping fragments are kept first-come (the bytes already held win) and
counted; when their bytes differ the overlap is also reported as a conflict
(RFC 5722 tells IPv6 hosts to drop such datagrams; a forensic reader keeps and
flags them instead). A datagram whose first fragment is older than 30 seconds
(Linux's default ipfrag_time) is abandoned, as is the oldest pending datagram
when more than MAX_PENDING_FRAGMENTS fragments wait: pending state holds only
offsets, so memory stays bounded whatever the input.
"""

from __future__ import annotations

import struct
import tempfile
from collections import OrderedDict, namedtuple
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FRAGMENT_COLUMNS: tuple[tuple[str, Any, tuple[int, ...]], ...] = (
    ("frame", np.int64, ()),
    ("ts_ns", np.int64, ()),
    ("version", np.uint8, ()),
    ("src", np.uint8, (16,)),
    ("dst", np.uint8, (16,)),
    ("ident", np.int64, ()),
    ("proto", np.uint8, ()),
    ("frag_offset", np.int64, ()),
    ("more", np.bool_, ()),
    ("header_offset", np.int64, ()),
    ("header_len", np.int64, ()),
    ("data_offset", np.int64, ()),
    ("data_len", np.int64, ()),
    ("data_caplen", np.int64, ()),
    ("ttl", np.uint8, ()),
    ("ip_checksum", np.uint8, ()),
    ("pseudo_dst", np.int64, ()),
)
FragmentColumns = namedtuple(  # type: ignore[misc]
    "FragmentColumns", ["count", *(name for name, _, _ in FRAGMENT_COLUMNS)]
)

FRAGMENT_TIMEOUT_NS = 30 * 1_000_000_000
MAX_PENDING_FRAGMENTS = 200_000
MAX_DATAGRAM = 0xFFFF + 40  # largest datagram a fragment chain can describe (plus an IPv6 header)


def empty_fragments(n: int) -> Any:
    count = np.zeros(2, np.int64)  # [stored, seen]
    return FragmentColumns(  # type: ignore[call-arg]
        count, *(np.zeros((n, *shape), dtype) for _, dtype, shape in FRAGMENT_COLUMNS)
    )


@dataclass
class _Piece:
    frame: int
    ts_ns: int
    buf: np.ndarray
    offset: int  # where the fragment's data starts in ``buf``
    start: int  # fragment offset in the datagram
    caplen: int
    length: int


@dataclass
class _Pending:
    first_ts_ns: int
    pieces: list[_Piece] = field(default_factory=list)
    end: int | None = None  # datagram payload length, known once the last fragment arrived
    header: bytes = b""
    version: int = 4


@dataclass
class Datagram:
    """A rebuilt datagram: where it sits in the spool and what the completing fragment said."""

    spool_offset: int
    length: int
    caplen: int
    frame: int
    ts_ns: int
    ttl: int
    ident: int
    ip_checksum: int


@dataclass
class Reassembly:
    datagrams: list[Datagram] = field(default_factory=list)
    spool: Any = None
    overlaps: int = 0
    conflicts: int = 0
    dropped: int = 0


def reassemble(parts: list[tuple[np.ndarray, Any]], workdir: str | None) -> Reassembly:
    """Rebuild datagrams from fragment columns of several sources, in capture order.

    ``parts`` holds (source buffer, fragment columns) pairs.
    """
    result = Reassembly()
    pending: OrderedDict[tuple[Any, ...], _Pending] = OrderedDict()
    held = 0
    for buf, frags in parts:
        n = int(frags.count[0])
        for k in range(n):
            ts = int(frags.ts_ns[k])
            key = (
                int(frags.version[k]),
                frags.src[k].tobytes(),
                frags.dst[k].tobytes(),
                int(frags.ident[k]),
                int(frags.proto[k]),
            )
            held -= _expire(pending, ts, result)
            entry = pending.get(key)
            if entry is None:
                entry = pending[key] = _Pending(ts, version=key[0])
            piece = _Piece(
                int(frags.frame[k]),
                ts,
                buf,
                int(frags.data_offset[k]),
                int(frags.frag_offset[k]),
                int(frags.data_caplen[k]),
                int(frags.data_len[k]),
            )
            entry.pieces.append(piece)
            held += 1
            if piece.start == 0:
                h0 = int(frags.header_offset[k])
                entry.header = buf[h0 : h0 + int(frags.header_len[k])].tobytes()
            if not frags.more[k]:
                entry.end = piece.start + piece.length
            if _complete(entry):
                del pending[key]
                held -= len(entry.pieces)
                _emit(entry, frags, k, result, workdir)
            while held > MAX_PENDING_FRAGMENTS and pending:
                _, old = pending.popitem(last=False)
                held -= len(old.pieces)
                result.dropped += len(old.pieces)
    result.dropped += sum(len(e.pieces) for e in pending.values())
    return result


def _expire(pending: OrderedDict[tuple[Any, ...], _Pending], now: int, result: Reassembly) -> int:
    """Abandon datagrams whose first fragment is older than the timeout; returns pieces freed."""
    freed = 0
    while pending:
        key, oldest = next(iter(pending.items()))
        if now - oldest.first_ts_ns <= FRAGMENT_TIMEOUT_NS:
            break
        del pending[key]
        freed += len(oldest.pieces)
        result.dropped += len(oldest.pieces)
    return freed


def _complete(entry: _Pending) -> bool:
    if entry.end is None or not entry.header:
        return False
    covered = 0
    for piece in sorted(entry.pieces, key=lambda p: p.start):
        if piece.start > covered:
            return False
        covered = max(covered, piece.start + piece.length)
    return covered >= entry.end


def _emit(entry: _Pending, frags: Any, k: int, result: Reassembly, workdir: str | None) -> None:
    assert entry.end is not None
    end = min(entry.end, MAX_DATAGRAM)
    data = bytearray(end)
    have = np.zeros(end, np.bool_)
    captured = np.zeros(end, np.bool_)
    for piece in entry.pieces:  # arrival order: bytes already held win
        lo, hi = piece.start, min(piece.start + piece.length, end)
        if lo >= hi:
            continue
        cap_hi = min(hi, lo + piece.caplen)
        new = piece.buf[piece.offset : piece.offset + (cap_hi - lo)].tobytes()
        span = have[lo:hi]
        if span.any():
            result.overlaps += 1
            old = bytes(data[lo:cap_hi])
            mask = have[lo:cap_hi]
            if any(a != b for a, b, m in zip(old, new, mask, strict=True) if m):
                result.conflicts += 1
        for i in np.flatnonzero(~have[lo:cap_hi]):
            data[lo + i] = new[i]
        captured[lo:cap_hi] |= ~have[lo:cap_hi]
        have[lo:hi] = True
    header = bytearray(entry.header)
    if entry.version == 4:
        struct.pack_into("!H", header, 2, len(header) + end)
        struct.pack_into("!H", header, 6, struct.unpack_from("!H", header, 6)[0] & 0x4000)
        struct.pack_into("!H", header, 10, 0)
        struct.pack_into("!H", header, 10, _checksum(bytes(header)))
    else:
        struct.pack_into("!H", header, 4, len(header) - 40 + end)
        struct.pack_into("!H", header, len(header) - 6, 0)  # fragment header -> atomic (RFC 6946)
    # bytes never captured (a truncated fragment) end the captured prefix
    missing = np.flatnonzero(~captured)
    caplen = len(header) + (int(missing[0]) if missing.size else end)
    if result.spool is None:
        result.spool = tempfile.TemporaryFile(prefix="tcpweave-defrag-", dir=workdir)
    offset = result.spool.seek(0, 2)
    result.spool.write(bytes(header) + bytes(data))
    last = entry.pieces[-1]
    result.datagrams.append(
        Datagram(
            offset,
            len(header) + end,
            caplen,
            last.frame,
            last.ts_ns,
            int(frags.ttl[k]),
            int(frags.ident[k]),
            int(frags.ip_checksum[k]),
        )
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)
