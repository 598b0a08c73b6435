"""Capture files of chosen sessions, made of their original records (``tcpweave carve``).

Theory of operation. What to carve arrives as frame numbers (the run's numbering: the
capture's records in order, file after file), each with a key: the output file it goes
to. ``picked`` walks the record index of the capture files once, alongside those frames
in frame order, and yields the records they name (file, offset, lengths, time, link
type). The bytes are never copied from anywhere but the capture source (mapped,
decompressed when the file was compressed). ``Carver`` writes them in two passes over
the same frames: the first learns what each output file needs (link types, time
precision, largest record), which fixes its header; the second writes the records,
verbatim, buffered a few megabytes at a time.

Formats. pcap (tcpdump.org/manpages/pcap-savefile.5.html): a 24-byte header (magic
0xa1b2c3d4 for microseconds, 0xa1b23c4d for nanoseconds; version 2.4; snaplen; link
type), then per record seconds, fraction, captured and original length. pcapng
(IETF draft-ietf-opsawg-pcapng, §4.1 SHB, §4.2 IDB, §4.3 EPB): one Section Header
Block, one Interface Description Block per link type (``if_tsresol`` 9 when the file
keeps nanoseconds), then one Enhanced Packet Block per record. A file is pcap unless
its records have several link types or pcapng is asked for; it keeps nanoseconds when
a record came from a source that has them (a nanosecond pcap, a pcapng interface whose
resolution is finer than a microsecond).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tcpweave.capture import Source
from tcpweave.errors import CaptureError, UsageError

__all__ = ["FORMATS", "Carver", "Picked", "format_for_path", "open_output", "picked"]

#: output formats: "auto" is pcap unless the records' link types differ
FORMATS = ("auto", "pcap", "pcapng")
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
#: snaplen written when nothing says one (libpcap's MAXIMUM_SNAPLEN)
DEFAULT_SNAPLEN = 262144
#: bytes held for the output files before they are written out
BUFFER_BYTES = 16 << 20
#: output files held open at a time
OPEN_FILES = 64
#: records of the capture index read at a time by ``picked``
CHUNK_RECORDS = 1 << 14


def format_for_path(path: str, fmt: str = "auto") -> str:
    """The format an output named ``path`` gets: ``fmt`` unless "auto", then pcapng for a
    ``.pcapng`` (or ``.ntar``) name, else auto (pcap unless link types differ)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "auto" and path.lower().endswith((".pcapng", ".ntar")):
        return "pcapng"
    return fmt


@dataclass
class Picked:
    """Records of one chunk of the capture index that are wanted: their keys, the capture
    file they are in, and their index rows."""

    keys: np.ndarray
    file: int
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts_ns: np.ndarray
    linktype: np.ndarray
    nano: np.ndarray  # the record's source keeps finer than microseconds
    snaplen: np.ndarray  # the record's source's snaplen (0: none said)


class _Wanted:
    """Frames (sorted) with their keys, taken a range at a time from windows."""

    def __init__(self, windows: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        self._windows = iter(windows)
        self.frames = np.zeros(0, np.int64)
        self.keys = np.zeros(0, np.int64)

    def upto(self, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The frames below ``end`` not yet taken, and their keys."""
        while not len(self.frames) or self.frames[-1] < end:
            nxt = next(self._windows, None)
            if nxt is None:
                break
            self.frames = np.concatenate([self.frames, nxt[0]])
            self.keys = np.concatenate([self.keys, nxt[1]])
        cut = int(np.searchsorted(self.frames, end))
        got = self.frames[:cut], self.keys[:cut]
        self.frames, self.keys = self.frames[cut:], self.keys[cut:]
        return got


def _nano_interfaces(src: Source) -> tuple[np.ndarray, np.ndarray]:
    """Per pcapng interface slot: finer than microseconds, and the snaplen."""
    ifaces = src.interfaces
    if ifaces is None:
        return np.zeros(0, np.bool_), np.zeros(0, np.int64)
    decimal = (ifaces.ts_binary == 0) & (ifaces.ts_exponent > 6)
    binary = (ifaces.ts_binary != 0) & (ifaces.ts_exponent >= 20)  # 2^-20 s < 1 µs
    return decimal | binary, ifaces.snaplen


def picked(
    sources: list[Source], windows: Iterable[tuple[np.ndarray, np.ndarray]]
) -> Iterator[Picked]:
    """The records of the wanted frames, in frame order. ``sources`` are the capture files
    as the run numbered their frames (frame 1 is the first file's first record), and
    ``windows`` give the wanted frames (ascending) with their keys."""
    wanted = _Wanted(windows)
    base = 0
    for f, src in enumerate(sources):
        for rec in src.record_chunks(CHUNK_RECORDS):
            n = len(rec.offset)
            frames, keys = wanted.upto(base + n + 1)
            base += n
            if not len(frames):
                continue
            i = frames - (base - n) - 1
            if src.format == "pcapng":
                fine, snaps = _nano_interfaces(src)
                slot = rec.interface[i]
                nano, snaplen = fine[slot], snaps[slot]
            else:
                nano = np.full(len(i), src.nanosecond, np.bool_)
                snaplen = np.full(len(i), src.snaplen, np.int64)
            yield Picked(keys, f, rec.offset[i].copy(), rec.caplen[i].copy(),
                         rec.wirelen[i].copy(), rec.ts_ns[i].copy(), rec.linktype[i].copy(),
                         nano, snaplen)  # fmt: skip
    rest, _ = wanted.upto(np.iinfo(np.int64).max)
    if len(rest):
        path = sources[-1].path if sources else "?"
        raise CaptureError(path, None, f"frame {int(rest[0])} is not in the capture any more "
                           "(was a file changed since it was read?)")  # fmt: skip


@dataclass
class _Layout:
    """What one output file needs to know before its header is written."""

    linktypes: list[int] = field(default_factory=list)
    nano: bool = False
    snaplen: int = 0


class Carver:
    """Output files keyed by number: ``learn`` every record, then ``write`` them.

    ``open_file(key, again)`` opens the key's file for writing: new (``again`` False: it
    decides the name and whether an existing file may be replaced), or to append to what
    was written (few files are held open at a time)."""

    def __init__(self, fmt: str, open_file: Callable[[int, bool], Any]) -> None:
        self.fmt = fmt
        self._open_file = open_file
        self._made: set[int] = set()
        self._layouts: dict[int, _Layout] = {}
        self._pending: dict[int, list[bytes]] = {}
        self._held = 0
        self._started: set[int] = set()
        self._files: dict[int, Any] = {}
        self.records = 0

    def learn(self, got: Picked) -> None:
        for key, lt, nano, size in zip(got.keys.tolist(), got.linktype.tolist(),
                                       got.nano.tolist(),
                                       np.maximum(got.snaplen, got.caplen).tolist(),
                                       strict=True):  # fmt: skip
            lay = self._layouts.get(key)
            if lay is None:
                lay = self._layouts[key] = _Layout()
            if lt not in lay.linktypes:
                lay.linktypes.append(lt)
            lay.nano |= nano
            lay.snaplen = max(lay.snaplen, size)

    def check(self) -> None:
        """Refuse pcap for records of several link types (before any file is made)."""
        if self.fmt != "pcap":
            return
        for lay in self._layouts.values():
            if len(lay.linktypes) > 1:
                kinds = ", ".join(map(str, lay.linktypes))
                msg = f"the records have several link types ({kinds}): pcap holds one"
                raise UsageError(msg + "; write pcapng (--format pcapng or a .pcapng name)")

    def kind(self, key: int) -> str:
        lay = self._layouts[key]
        if self.fmt == "pcapng" or len(lay.linktypes) > 1:
            return "pcapng"
        return "pcap"

    def write(self, got: Picked, buffer: np.ndarray) -> None:
        """Add the records of ``got`` (their bytes are in ``buffer``) to their files."""
        for r, key in enumerate(got.keys.tolist()):
            if key not in self._started:
                self._started.add(key)
                self._hold(key, self._header(key))
            off, cap = int(got.offset[r]), int(got.caplen[r])
            data = buffer[off : off + cap].tobytes()
            self._hold(key, self._record(key, int(got.linktype[r]), int(got.ts_ns[r]), cap,
                                         int(got.wirelen[r]), data))  # fmt: skip
            self.records += 1
        if self._held > BUFFER_BYTES:
            self.flush()

    def _hold(self, key: int, data: bytes) -> None:
        self._pending.setdefault(key, []).append(data)
        self._held += len(data)

    def flush(self) -> None:
        for key, parts in self._pending.items():
            f = self._files.get(key)
            if f is None:
                f = self._files[key] = self._open_file(key, key in self._made)
                self._made.add(key)
            f.write(b"".join(parts))
            if len(self._files) > OPEN_FILES:  # many files: do not hold them all open
                self._files.pop(key).close()
        self._pending.clear()
        self._held = 0

    def close(self) -> list[int]:
        """Write what is held and close every file; returns the keys that got a file."""
        self.flush()
        for f in self._files.values():
            f.close()
        self._files.clear()
        return sorted(self._started)

    # -- encodings ---------------------------------------------------------------------------

    def _header(self, key: int) -> bytes:
        lay = self._layouts[key]
        snaplen = lay.snaplen or DEFAULT_SNAPLEN
        if self.kind(key) == "pcap":
            magic = PCAP_MAGIC_NS if lay.nano else PCAP_MAGIC_US
            return struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, lay.linktypes[0])
        # SHB: byte-order magic, version 1.0, section length unknown (-1)
        shb = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
        tsresol = struct.pack("<HHB3x", 9, 1, 9) if lay.nano else b""
        idbs = b"".join(
            _block(
                1, struct.pack("<HHI", lt, 0, snaplen) + tsresol + (b"\0" * 4 if tsresol else b"")
            )
            for lt in lay.linktypes
        )
        return shb + idbs

    def _record(self, key: int, linktype: int, ts_ns: int, caplen: int, wirelen: int,
                data: bytes) -> bytes:  # fmt: skip
        lay = self._layouts[key]
        if self.kind(key) == "pcap":
            sec, frac = divmod(ts_ns, 1_000_000_000)
            if not lay.nano:
                frac //= 1000
            return struct.pack("<IIII", sec, frac, caplen, wirelen) + data
        ticks = ts_ns if lay.nano else ts_ns // 1000
        iface = lay.linktypes.index(linktype)
        pad = b"\0" * (-caplen % 4)
        body = struct.pack("<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, caplen, wirelen)
        return _block(6, body + data + pad)


def _block(block_type: int, body: bytes) -> bytes:
    """A pcapng block: type, total length, body, total length again."""
    n = len(body) + 12
    return struct.pack("<II", block_type, n) + body + struct.pack("<I", n)


def open_output(path: str, again: bool) -> Any:
    """``path`` opened for writing: created, when it must not exist yet (O_EXCL: a file
    that exists is never overwritten), or ``again`` to append."""
    if again:
        return open(path, "ab")
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644), "wb")
