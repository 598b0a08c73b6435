"""One capture file: format detection, memory map, and its record index.

pcap (tcpdump.org/manpages/pcap-savefile.5.html): magic 0xa1b2c3d4 (µs) or
0xa1b23c4d (ns) in the writer's byte order, then version, thiszone, sigfigs,
snaplen, and the link type (low 16 bits; the upper bits may carry FCS info).
pcapng (draft-ietf-opsawg-pcapng): a chain of blocks starting with a Section
Header Block.

Resync rule for pcap, whose records carry no marker. A record header is damaged
when its capture length exceeds max(snaplen, 256 KiB) (libpcap refuses those too), or
when it is odd -- capture length above the snaplen, above the wire length, or running
past the end of the file -- and the header it points to is not plausible (a record
ending the file exactly needs no confirmation). An odd header that IS confirmed is
read: libpcap-written files may hold caplen > snaplen (sf-pcap.c, pcap_next_packet,
reads such a record and keeps snaplen bytes of it; so does this reader, reporting it).
From the byte after a damaged header, the reader looks for the first offset where a
record header is plausible (fraction of a second below 10^6 or 10^9, capture length
within bounds and not above the wire length, seconds within 7 days of the last good
record) AND the header that would follow it is plausible too (or the record ends the
file exactly). Everything in between is one corrupt region, reported and skipped; when
nothing plausible follows a record that runs past the end, the file was cut inside it
("record cut short"). For pcapng the block length repeated at each block's end is the
marker: the reader steps 4 bytes at a time to the next block whose type is known and
whose two lengths agree.

Every damaged region is a ``CaptureError`` with its offset and the bytes it made the
reader skip (``skipped``); ``Source.scan_skipped_bytes`` totals them. A file truncated by
another process while it is mapped is caught by ``_mapguard`` (zero pages instead of
SIGBUS) and ends the walk with a ``CaptureError`` (``Source.check_intact``).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from tcpweave import _faults as fault
from tcpweave.capture import _kernels as k
from tcpweave.capture import _mapguard
from tcpweave.capture._compress import compression_of, spool
from tcpweave.capture.index import (
    RecordColumns,
    concat_records,
    empty_interfaces,
    empty_records,
    slice_records,
)
from tcpweave.errors import CaptureError, UsageError

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_MAGIC = 0x0A0D0D0A
#: largest capture length libpcap accepts for most link types (MAXIMUM_SNAPLEN)
MAX_SNAPLEN = 262144
#: hard ceiling for any record, whatever the header claims
HARD_MAX_CAPLEN = 16 * 1024 * 1024
MAX_INTERFACES = 65536
#: files up to this size are pre-mapped whole; larger ones fault pages in as they are read
POPULATE_MAX_BYTES = 8 << 30
#: bytes of a mapped file released (and read ahead) at a time by ``Source.release_before``
RELEASE_STEP = 32 << 20
_MAX_STORED_ERRORS = 1000
#: records per chunk: small enough that a chunk's bytes are still in cache when decoded
CHUNK_RECORDS = 4096
#: slots of a walk's state array (``_kernels.ST_*``)
STATE_SLOTS = 9

ERROR_REASONS = {
    k.E_CORRUPT_RECORD: "corrupt record header (implausible lengths); skipped {arg} bytes to the "
    "next plausible record",
    k.E_TRUNCATED_RECORD: "record cut short by the end of the file ({arg} bytes missing); dropped",
    k.E_OVERSIZED_RECORD: "record of {arg} bytes is longer than the file's snaplen; kept snaplen "
    "bytes (as libpcap does)",
    k.E_BAD_BLOCK: "damaged pcapng block (length fields disagree or overrun); skipped {arg} bytes "
    "to the next sane block",
    k.E_UNKNOWN_INTERFACE: "packet block names interface {arg}, which its section never defined; "
    "skipped",
    k.E_TOO_MANY_INTERFACES: "more than 65536 interfaces; interface {arg} ignored",
    k.E_PACKET_BEYOND_BLOCK: "packet of {arg} bytes overruns its block; skipped",
    k.E_TRAILING_BYTES: "{arg} trailing bytes too short for a block; ignored",
}


@dataclass
class Source:
    """A capture file mapped in memory; its records are read in chunks (``record_chunks``)."""

    path: str
    format: str  # "pcap", "pcapng", or "defrag" for rebuilt IP datagrams
    compression: str | None
    buffer: np.ndarray  # uint8 view of the whole (decompressed) file
    decompress_errors: list[CaptureError] = field(default_factory=list)
    scan_errors: list[CaptureError] = field(default_factory=list)  # from the last full walk
    scan_error_count: int = 0
    scan_skipped_bytes: int = 0  # bytes of the file not used because of damage (last full walk)
    snaplen: int = 0
    first_ts_ns: int | None = None
    _scan: Any = field(default=None, repr=False)  # (kernel call, initial state) or fixed records
    _records: Any = field(default=None, repr=False)
    _keep: list[Any] = field(default_factory=list, repr=False)
    _released: int = field(default=0, repr=False)
    _pcap: Any = field(default=None, repr=False)  # pcap scan parameters (restrict_pcap)
    #: a ``bpf.RecordFilter``: records it rejects are passed by when decoding
    record_filter: Any = field(default=None, repr=False)
    _guard: int = field(default=-1, repr=False)  # slot of the mapping in _mapguard
    #: rebuilt datagrams ("defrag"): the fragment frames each came from (decode.fragments.Origins)
    origins: Any = field(default=None, repr=False)
    _ifaces: Any = field(default=None, repr=False)  # pcapng: InterfaceColumns by global slot

    @property
    def nanosecond(self) -> bool:
        """A pcap file whose timestamps are in nanoseconds (magic 0xa1b23c4d)."""
        return self._pcap is not None and self._pcap[0] == 1

    @property
    def interfaces(self) -> Any:
        """pcapng: the interfaces (``InterfaceColumns`` by the records' ``interface`` slot)
        defined by the blocks walked so far; None for other formats."""
        return self._ifaces

    def _mapping(self) -> mmap.mmap | None:
        """The memory map behind ``buffer`` (None for an empty or closed source)."""
        return next((obj for obj in self._keep if isinstance(obj, mmap.mmap)), None)

    def release_before(self, end: int) -> None:
        """Drop this process's mapping of the pages before ``end`` (they stay readable).

        The pages stay in the page cache; only this process's resident set shrinks,
        so that walking a capture larger than memory keeps memory bounded. Released
        in steps of ``RELEASE_STEP`` bytes; the next step is read ahead at the same time.
        """
        if end - self._released < RELEASE_STEP and end < self.buffer.size:
            return
        mm = self._mapping()
        if mm is None or not hasattr(mm, "madvise"):
            return
        end = min(end, len(mm)) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > self._released:
            mm.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end
        ahead = min(RELEASE_STEP, len(mm) - end)
        if ahead > 0:
            # MADV_POPULATE_READ (Linux 5.14) maps the next step in one call; older
            # kernels refuse it, and the pages then fault in as they are read
            with contextlib.suppress(OSError):
                mm.madvise(getattr(mmap, "MADV_POPULATE_READ", 22), end, ahead)

    def read_randomly(self) -> None:
        """Tell the kernel that the file will now be read here and there (payloads of one
        partition are spread over the whole capture): no readahead around each page that
        is missed, so that a capture larger than the page cache is not read many times."""
        mm = self._mapping()
        if mm is not None and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_RANDOM)

    def drop_pages(self) -> None:
        """Unmap every resident page of the file from this process (they stay readable)."""
        mm = self._mapping()
        if mm is not None and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED)

    @property
    def buffer64(self) -> np.ndarray:
        """The buffer as native 64-bit words (for checksum kernels)."""
        whole = self.buffer.size // 8 * 8
        return self.buffer[:whole].view(np.uint64)

    @property
    def records(self) -> Any:
        """The whole record index (RecordColumns), built on first use."""
        if self._records is None:
            parts = [
                RecordColumns(*(col.copy() for col in chunk))
                for chunk in self.record_chunks(CHUNK_RECORDS)
            ]
            self._records = concat_records(parts) if parts else empty_records(0)
        return self._records

    def record_chunks(self, max_records: int = 0) -> Iterator[Any]:
        """Yield the record index in chunks of at most ``max_records`` rows, in file order.

        A chunk's columns are reused for the next one: copy what must outlive the
        iteration. Damaged records are added to ``errors`` as they are met.
        """
        if self._records is not None or self._scan is None:
            if self._records is not None and len(self._records.offset):
                yield self._records
            return
        call, initial = self._scan
        state = initial.copy()
        rec = empty_records(max_records or CHUNK_RECORDS)
        errs = _error_columns()
        while not state[k.ST_DONE]:
            n = call(state, rec, errs)
            fault.at("read", self.path)
            self.check_intact()
            if n:
                yield slice_records(rec, n)
        self.check_intact()  # the last chunk was used (its payloads read) meanwhile
        self._collect_errors(state, errs)

    def check_intact(self) -> None:
        """Raise ``CaptureError`` if the file was found truncated while being read (pages of
        its mapping gone: ``_mapguard``)."""
        if _mapguard.faults(self._guard):
            raise _mapguard.truncated(self._guard)[0]

    @property
    def errors(self) -> list[CaptureError]:
        """Damage found so far: in the compressed stream, then in the records (file order)."""
        return self.decompress_errors + self.scan_errors

    @property
    def error_count(self) -> int:
        """All damaged records, including those beyond the stored error list."""
        return len(self.decompress_errors) + self.scan_error_count

    def _collect_errors(self, state: np.ndarray, errs: tuple[np.ndarray, ...]) -> None:
        stored = min(int(state[k.ST_ERRORS]), _MAX_STORED_ERRORS)
        self.scan_errors = []
        for off, code, arg, skipped in zip(*(e[:stored] for e in errs), strict=True):
            reason = ERROR_REASONS.get(int(code), "damaged record ({arg})").format(arg=int(arg))
            self.scan_errors.append(CaptureError(self.path, int(off), reason, int(skipped)))
        self.scan_error_count = int(state[k.ST_ERRORS])
        self.scan_skipped_bytes = int(state[k.ST_SKIPPED])

    def close(self) -> None:
        _mapguard.unregister(self._guard)
        self._guard = -1
        self.buffer = np.zeros(0, np.uint8)
        for obj in reversed(self._keep):
            # a caller may still hold a view; the map then closes when that view is dropped
            with contextlib.suppress(BufferError):
                obj.close()
        self._keep.clear()


def fixed_source(path: str, fmt: str, buffer: np.ndarray, records: Any, keep: list[Any]) -> Source:
    """A source whose records are already known (rebuilt IP datagrams)."""
    return Source(path, fmt, None, buffer, _records=records, _keep=keep)


def open_source(
    path: str | os.PathLike[str], workdir: str | None = None, populate: bool = True
) -> Source:
    """Map ``path`` (decompressing it first if needed) and index its records.

    ``populate`` pre-maps the whole file (when not too large); a caller that walks
    the file once and releases pages behind it (``Source.release_before``) says False.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise CaptureError(path, None, f"cannot open: {exc.strerror or exc}") from exc
    compression = compression_of(head)
    keep: list[Any] = []
    errors: list[CaptureError] = []
    if compression is not None:
        fobj, errors = spool(path, workdir)
        keep.append(fobj)
    else:
        fobj = open(path, "rb")
        keep.append(fobj)
    buffer = _map(fobj, path, keep, populate)
    src = Source(path, "", compression, buffer, decompress_errors=errors, _keep=keep)
    src._guard = _mapguard.register(buffer, path, fobj.fileno())
    try:
        _index(src)
    except BaseException:
        src.close()
        raise
    return src


def _map(fobj: IO[bytes], path: str, keep: list[Any], populate: bool = True) -> np.ndarray:
    size = os.fstat(fobj.fileno()).st_size
    if size == 0:
        for obj in keep:
            obj.close()
        raise CaptureError(path, 0, "empty file")
    # Pre-map the pages (MAP_POPULATE): faulting 4 KiB pages in one by one while the
    # kernels walk the file costs several times the walk itself on a 1 GB capture.
    pre = getattr(mmap, "MAP_POPULATE", 0) if populate and size <= POPULATE_MAX_BYTES else 0
    mm = mmap.mmap(fobj.fileno(), 0, flags=mmap.MAP_SHARED | pre, prot=mmap.PROT_READ)
    if hasattr(mm, "madvise"):
        mm.madvise(mmap.MADV_SEQUENTIAL)
    keep.append(mm)
    return np.frombuffer(mm, dtype=np.uint8)


def _index(src: Source) -> None:
    buf = src.buffer
    if buf.size < 4:
        raise CaptureError(src.path, 0, f"too short for a capture file ({buf.size} bytes)")
    magic_le = int.from_bytes(buf[:4].tobytes(), "little")
    magic_be = int.from_bytes(buf[:4].tobytes(), "big")
    if magic_le == PCAPNG_MAGIC:
        src.format = "pcapng"
        _index_pcapng(src)
    elif PCAP_MAGIC_US in (magic_le, magic_be) or PCAP_MAGIC_NS in (magic_le, magic_be):
        src.format = "pcap"
        _index_pcap(src, swapped=magic_be in (PCAP_MAGIC_US, PCAP_MAGIC_NS))
    else:
        raise CaptureError(
            src.path, 0, f"not a pcap or pcapng file (starts with {buf[:4].tobytes().hex()})"
        )


def _index_pcap(src: Source, swapped: bool) -> None:
    buf = src.buffer
    if buf.size < 24:
        raise CaptureError(src.path, 0, f"pcap file header cut short ({buf.size} of 24 bytes)")
    order = ">" if swapped else "<"
    magic, _vmaj, _vmin, _zone, _sigfigs, snaplen, linktype = struct.unpack(
        order + "IHHiIII", buf[:24].tobytes()
    )
    nano = magic == PCAP_MAGIC_NS
    src.snaplen = snaplen
    max_caplen = min(max(snaplen, MAX_SNAPLEN), HARD_MAX_CAPLEN)
    state = np.zeros(STATE_SLOTS, np.int64)
    state[k.ST_POS] = 24
    state[k.ST_SWAPPED] = int(swapped)
    state[k.ST_LAST_SEC] = -1
    ts_scale, frac_limit = (1, 10**9) if nano else (1000, 10**6)
    src._pcap = (ts_scale, frac_limit, snaplen, max_caplen, linktype)
    call = _pcap_call(buf, *src._pcap)
    src._scan = (call, state)
    src.first_ts_ns = _first_ts(call, state)


def _pcap_call(
    buf: np.ndarray, ts_scale: int, frac_limit: int, snaplen: int, max_caplen: int, linktype: int
) -> Any:
    def call(st: np.ndarray, rec: Any, errs: tuple[np.ndarray, ...]) -> int:
        n = int(k.scan_pcap_records(buf, ts_scale, frac_limit, snaplen, max_caplen, st, rec, *errs))
        rec.linktype[:n] = linktype & 0xFFFF
        rec.interface[:n] = 0
        return n

    return call


def restrict_pcap(src: Source, start: int, end: int, last_sec: int) -> None:
    """Make ``src`` (a pcap file) walk only its records in ``[start, end)``.

    ``start`` and ``end`` must be record boundaries found by a full walk, and
    ``last_sec`` the seconds of the record before ``start`` (-1 at the first): the
    walk then finds exactly the records, and damage, that the full walk found there.
    """
    if src._pcap is None:
        raise UsageError(f"{src.path}: only pcap files can be read in ranges")
    state = np.zeros(STATE_SLOTS, np.int64)
    state[k.ST_POS] = start
    state[k.ST_SWAPPED] = int(src._scan[1][k.ST_SWAPPED])
    state[k.ST_LAST_SEC] = last_sec
    src._scan = (_pcap_call(src.buffer[:end], *src._pcap), state)


def _index_pcapng(src: Source) -> None:
    buf = src.buffer
    state = np.zeros(STATE_SLOTS, np.int64)
    ifaces = empty_interfaces(MAX_INTERFACES)

    def call(st: np.ndarray, rec: Any, errs: tuple[np.ndarray, ...]) -> int:
        if st[k.ST_POS] == 0:  # a fresh walk: interfaces are defined again as it goes
            ifaces.linktype[:] = 0
        return int(k.scan_pcapng_blocks(buf, st, ifaces, rec, *errs))

    src._scan = (call, state)
    src._ifaces = ifaces
    src.first_ts_ns = _first_ts(call, state)


def _first_ts(call: Any, initial: np.ndarray) -> int | None:
    """Timestamp of the first record (orders the files of one capture)."""
    state = initial.copy()
    rec = empty_records(1)
    errs = _error_columns()
    while not state[k.ST_DONE]:
        if call(state, rec, errs):
            return int(rec.ts_ns[0])
    return None


def _error_columns() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Offset, code, argument and bytes skipped of each error (the first 1000 are kept)."""
    return (
        np.zeros(_MAX_STORED_ERRORS, np.int64),
        np.zeros(_MAX_STORED_ERRORS, np.int32),
        np.zeros(_MAX_STORED_ERRORS, np.int64),
        np.zeros(_MAX_STORED_ERRORS, np.int64),
    )
