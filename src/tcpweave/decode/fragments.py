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
when more than MAX_PENDING_FRAGMENTS fragments wait. Pending state is a few
integers per fragment in flat arrays (no Python object per fragment or datagram),
so memory stays bounded, and small, whatever the input.
"""

from __future__ import annotations

import bisect
import itertools
import struct
import tempfile
from array import array
from collections import namedtuple
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
    #: the frames of every fragment each datagram was rebuilt from (``Origins``), flat
    origin_frames: array[int] = field(default_factory=lambda: array("q"))
    origin_bounds: array[int] = field(default_factory=lambda: array("q", [0]))

    def origins(self) -> Origins:
        completing = np.array([d.frame for d in self.datagrams], np.int64)
        return Origins(completing, np.asarray(self.origin_bounds, np.int64),
                       np.asarray(self.origin_frames, np.int64))  # fmt: skip


@dataclass
class Origins:
    """Which capture frames each rebuilt datagram came from: datagram ``k``, whose TCP row
    carries the frame ``completing[k]`` of the fragment that completed it, was rebuilt from
    the fragments in frames ``frames[bounds[k]:bounds[k + 1]]`` -- every fragment that
    joined it, duplicates and overlaps the rebuilt bytes did not use included (what a
    carved capture of its session must hold: ``tcpweave carve``)."""

    completing: np.ndarray
    bounds: np.ndarray
    frames: np.ndarray

    @classmethod
    def none(cls) -> Origins:
        return cls(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int64))

    def save(self, path: str) -> None:
        np.savez(path, completing=self.completing, bounds=self.bounds, frames=self.frames)

    @classmethod
    def load(cls, path: str) -> Origins:
        """Those ``save`` wrote to ``path``; none when it does not exist (no datagram)."""
        try:
            with np.load(path) as z:
                return cls(z["completing"], z["bounds"], z["frames"])
        except FileNotFoundError:
            return cls.none()

    def expand(self, completing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fragment frames of the datagrams completed by frames ``completing``, and for
        each the position in ``completing`` of its datagram."""
        order = np.argsort(self.completing, kind="stable")
        at = np.searchsorted(self.completing[order], completing)
        at = np.minimum(at, max(len(order) - 1, 0))
        found = len(order) > 0 and bool(np.all(self.completing[order][at] == completing))
        if len(completing) and not found:
            raise ValueError("a rebuilt datagram's completing frame is unknown")
        k = order[at] if len(completing) else np.zeros(0, np.int64)
        lo, hi = self.bounds[k], self.bounds[k + 1]
        which = np.repeat(np.arange(len(completing)), hi - lo)
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(hi - lo)[:-1])), hi - lo)
        return self.frames[np.arange(len(which)) + starts], which


def reassemble(parts: list[tuple[np.ndarray, Any]], workdir: str | None) -> Reassembly:
    """Rebuild datagrams from fragment columns of several sources, in capture order.

    ``parts`` holds (source buffer, fragment columns) pairs.
    """
    result = Reassembly()
    frags = _Fragments(parts)
    if not frags.n:
        return result
    state = _Pending(frags.n, frags.key)
    for p, (_, cols) in enumerate(parts):
        first = frags.base[p]
        for i in range(first, first + frags.counts[p]):
            _expire(state, frags, i, result)
            c = state.add(i)
            start = frags.start[i]
            if start == 0:  # the latest first fragment's header is the datagram's
                state.header[c] = i if int(cols.header_len[i - first]) > 0 else -1
            if not cols.more[i - first]:
                state.end[c] = start + frags.length[i]
            if _complete(state, frags, c):
                state.close(c)
                _emit(state, frags, c, i, result, workdir)
            while state.held > MAX_PENDING_FRAGMENTS:
                result.dropped += state.close(state.oldest(i + 1))
    result.dropped += state.held
    return result


class _Fragments:
    """The fragments of all parts numbered in capture order, with the columns the pending
    state reads on every fragment kept flat; ``key`` numbers the datagram each belongs to
    (equal version, source, destination, identification and protocol)."""

    def __init__(self, parts: list[tuple[np.ndarray, Any]]) -> None:
        self.parts = parts
        self.counts = [int(cols.count[0]) for _, cols in parts]
        self.base = [0, *itertools.accumulate(self.counts)]
        self.n = self.base[-1]
        used = [(cols, n) for (_, cols), n in zip(parts, self.counts, strict=True) if n]
        self.ts = _flat(np.concatenate([c.ts_ns[:n] for c, n in used] or [_NONE]))
        self.start = _flat(np.concatenate([c.frag_offset[:n] for c, n in used] or [_NONE]))
        self.length = _flat(np.concatenate([c.data_len[:n] for c, n in used] or [_NONE]))
        self.key = _flat(_key_ids([(c, n) for c, n in used]))

    def at(self, i: int) -> tuple[np.ndarray, Any, int]:
        """Source buffer, fragment columns and row of fragment ``i``."""
        p = bisect.bisect_right(self.base, i) - 1
        buf, cols = self.parts[p]
        return buf, cols, i - self.base[p]


_NONE = np.zeros(0, np.int64)


def _flat(values: np.ndarray) -> array[int]:
    """An int64 array that Python indexes fast (plain ints, no numpy scalars)."""
    out = array("q")
    out.frombytes(values.astype(np.int64).tobytes())
    return out


def _key_ids(used: list[tuple[Any, int]]) -> np.ndarray:
    """A number per fragment, equal for fragments of one datagram: equal version, source,
    destination, identification and protocol (RFC 791 §3.2, RFC 8200 §4.5)."""
    if not used:
        return _NONE
    words = [np.concatenate(col) for col in zip(*(_key_words(c, n) for c, n in used), strict=True)]
    order = np.lexsort(words)
    new = np.zeros(len(order), np.bool_)
    new[0] = True
    for word in words:
        ordered = word[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    ids = np.empty(len(order), np.int64)
    ids[order] = np.cumsum(new) - 1
    return ids


def _key_words(cols: Any, n: int) -> list[np.ndarray]:
    """The key fields of ``n`` fragments as five 64-bit words each."""
    src = np.ascontiguousarray(cols.src[:n]).view(np.uint64)
    dst = np.ascontiguousarray(cols.dst[:n]).view(np.uint64)
    rest = (
        (cols.ident[:n].astype(np.uint64) << np.uint64(16))
        | (cols.version[:n].astype(np.uint64) << np.uint64(8))
        | cols.proto[:n].astype(np.uint64)
    )  # IPv6 identifications are 32 bits
    return [src[:, 0], src[:, 1], dst[:, 0], dst[:, 1], rest]


class _Pending:
    """Datagrams still waiting for fragments, in arrays over fragment numbers: a datagram is
    named by the fragment that opened it, so datagrams are ordered by age (what expiry and
    eviction drop first) and the state is a few integers per fragment, whatever the input.
    Its fragments form a list in arrival order (``head`` .. ``tail`` through ``next``)."""

    def __init__(self, n: int, key: array[int]) -> None:
        self.key = key
        self.opened = array("q", [-1]) * (max(key) + 1)  # datagram open for a key, or -1
        self.next = array("q", [-1]) * n
        self.tail = array("q", [-1]) * n
        self.pieces = array("q", [0]) * n
        self.end = array("q", [-1]) * n  # payload length, once the last fragment arrived
        self.header = array("q", [-1]) * n  # the latest fragment at offset 0
        self.is_open = bytearray(n)
        self.first_open = 0  # no datagram opened before this one is still open
        self.held = 0  # fragments in open datagrams

    def add(self, i: int) -> int:
        """Fragment ``i`` joins its key's open datagram or opens one; returns the datagram."""
        c = self.opened[self.key[i]]
        if c < 0:
            c = self.opened[self.key[i]] = i
            self.is_open[c] = 1
        else:
            self.next[self.tail[c]] = i
        self.tail[c] = i
        self.pieces[c] += 1
        self.held += 1
        return c

    def close(self, c: int) -> int:
        """Close datagram ``c`` (completed or dropped); returns how many fragments it held."""
        self.is_open[c] = 0
        self.opened[self.key[c]] = -1
        self.held -= self.pieces[c]
        return self.pieces[c]

    def oldest(self, limit: int) -> int:
        """The oldest open datagram among those opened before fragment ``limit``, or -1."""
        while self.first_open < limit and not self.is_open[self.first_open]:
            self.first_open += 1
        return self.first_open if self.first_open < limit else -1

    def members(self, c: int) -> list[int]:
        out = [c]
        while self.next[out[-1]] >= 0 and out[-1] != self.tail[c]:
            out.append(self.next[out[-1]])
        return out


def _expire(state: _Pending, frags: _Fragments, now_i: int, result: Reassembly) -> None:
    """Abandon datagrams whose first fragment is older than the timeout, oldest first."""
    now = frags.ts[now_i]
    while (c := state.oldest(now_i)) >= 0 and now - frags.ts[c] > FRAGMENT_TIMEOUT_NS:
        result.dropped += state.close(c)


def _complete(state: _Pending, frags: _Fragments, c: int) -> bool:
    if state.end[c] < 0 or state.header[c] < 0:
        return False
    covered = 0
    for i in sorted(state.members(c), key=lambda i: frags.start[i]):
        if frags.start[i] > covered:
            return False
        covered = max(covered, frags.start[i] + frags.length[i])
    return covered >= state.end[c]


def _emit(
    state: _Pending, frags: _Fragments, c: int, last: int, result: Reassembly,
    workdir: str | None,
) -> None:  # fmt: skip
    end = min(state.end[c], MAX_DATAGRAM)
    data = bytearray(end)
    have = np.zeros(end, np.bool_)
    captured = np.zeros(end, np.bool_)
    for i in state.members(c):  # arrival order: bytes already held win
        buf, cols, k = frags.at(i)
        lo, hi = frags.start[i], min(frags.start[i] + frags.length[i], end)
        if lo >= hi:
            continue
        offset = int(cols.data_offset[k])
        cap_hi = min(hi, lo + int(cols.data_caplen[k]))
        new = buf[offset : offset + (cap_hi - lo)].tobytes()
        span = have[lo:hi]
        if span.any():
            result.overlaps += 1
            old = bytes(data[lo:cap_hi])
            mask = have[lo:cap_hi]
            if any(a != b for a, b, m in zip(old, new, mask, strict=True) if m):
                result.conflicts += 1
        for j in np.flatnonzero(~have[lo:cap_hi]):
            data[lo + j] = new[j]
        captured[lo:cap_hi] |= ~have[lo:cap_hi]
        have[lo:hi] = True
    for i in state.members(c):
        buf, cols, k = frags.at(i)
        result.origin_frames.append(int(cols.frame[k]))
    result.origin_bounds.append(len(result.origin_frames))
    buf, cols, k = frags.at(state.header[c])
    h0 = int(cols.header_offset[k])
    header = bytearray(buf[h0 : h0 + int(cols.header_len[k])].tobytes())
    buf, cols, k = frags.at(last)
    if int(cols.version[k]) == 4:
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
    result.datagrams.append(
        Datagram(
            offset,
            len(header) + end,
            caplen,
            int(cols.frame[k]),
            int(cols.ts_ns[k]),
            int(cols.ttl[k]),
            int(cols.ident[k]),
            int(cols.ip_checksum[k]),
        )
    )


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)
