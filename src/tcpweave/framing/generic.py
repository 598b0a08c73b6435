"""Generic framers: length-prefixed (with optional magic), delimiter, fixed size, varint length.

Each is a plain-Python :class:`Framer` (the readable statement of its rule, used
by the reference driver) that also describes itself as a parameter vector
(:meth:`spec`), so the driver runs it as a numba kernel instead. The two must
answer alike; tests/test_framing_kernels.py checks that they do.

Like Wireshark's ``tcp_dissect_pdus(..., fixed_len, get_pdu_len, ...)`` the
length rule is: read the header, compute the PDU length from it, reject lengths
that cannot be right (doc/README.dissector, "TCP protocol dissection").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tcpweave.errors import UsageError
from tcpweave.framing import _spec as S
from tcpweave.framing.api import Answer, Framer, Need, Skip

__all__ = ["Delimited", "FixedSize", "GenericFramer", "LengthPrefixed", "VarintLength", "from_spec"]

DEFAULT_MAX_LEN = 1 << 24


class GenericFramer(Framer):
    """A framer the kernels can run: it describes itself as parameters."""

    def spec(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(int64 parameters, magic bytes, delimiter bytes) for the kernels."""
        raise NotImplementedError


def _magic_mismatch(data: bytes, magic: bytes, at: int) -> bool:
    """True when the magic bytes present in ``data`` differ (absent ones are not judged)."""
    seen = data[at : at + len(magic)]
    return seen != magic[: len(seen)]


@dataclass(frozen=True)
class LengthPrefixed(GenericFramer):
    """PDU length = the ``size``-byte field at ``offset`` + ``adjust``; optional magic bytes.

    DNS over TCP is ``LengthPrefixed(size=2, adjust=2)`` (RFC 1035 §4.2.2: a
    two-byte length field, not counting itself). A length outside
    [``min_len``, ``max_len``] or a magic mismatch means "not mine" (skip 1 byte).
    """

    offset: int = 0
    size: int = 2
    endian: str = "big"
    adjust: int = 0
    max_len: int = DEFAULT_MAX_LEN
    min_len: int = 0  # 0: the header length
    magic: bytes = b""
    magic_offset: int = 0
    name: ClassVar[str] = "length"

    def __post_init__(self) -> None:
        if self.size not in (1, 2, 3, 4, 8):
            raise UsageError(f"length field size must be 1, 2, 3, 4 or 8, not {self.size}")
        if self.endian not in ("big", "little"):
            raise UsageError(f"endian must be big or little, not {self.endian!r}")
        if self.offset < 0 or self.magic_offset < 0 or self.max_len < 1:
            raise UsageError("offsets must be >= 0 and max_len >= 1")

    @property
    def header_len(self) -> int:
        return max(self.offset + self.size, self.magic_offset + len(self.magic), 1)

    @property
    def smallest(self) -> int:
        return max(self.min_len, self.header_len)

    def frame(self, data: bytes, direction: int, eof: bool) -> Answer:
        if _magic_mismatch(data, self.magic, self.magic_offset):
            return Skip(1)
        if len(data) < self.header_len:
            return Need(self.header_len - len(data))
        field = data[self.offset : self.offset + self.size]
        length = int.from_bytes(field, self.endian) + self.adjust  # type: ignore[arg-type]
        if not self.smallest <= length <= self.max_len:
            return Skip(1)
        return length

    def spec(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _vector(
            S.KIND_LENGTH,
            self.offset,
            self.size,
            self.endian == "big",
            self.adjust,
            self.smallest,
            self.max_len,
            self.magic_offset,
            self.header_len,
            self.magic,
        )


@dataclass(frozen=True)
class FixedSize(GenericFramer):
    """Every PDU is ``size`` bytes (optionally starting with magic bytes)."""

    size: int
    magic: bytes = b""
    magic_offset: int = 0
    name: ClassVar[str] = "fixed"

    def __post_init__(self) -> None:
        if self.size < 1 or self.magic_offset + len(self.magic) > self.size:
            raise UsageError("fixed size must be >= 1 and hold the magic bytes")

    def frame(self, data: bytes, direction: int, eof: bool) -> Answer:
        if _magic_mismatch(data, self.magic, self.magic_offset):
            return Skip(1)
        return self.size

    def spec(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _vector(
            S.KIND_FIXED, 0, self.size, 1, 0, self.size, self.size, self.magic_offset, 0, self.magic
        )


@dataclass(frozen=True)
class Delimited(GenericFramer):
    """A PDU runs up to and including ``delimiter`` (a line, for CRLF).

    A run of ``max_len`` bytes without the delimiter is not mine: it is skipped
    (keeping its last ``len(delimiter) - 1`` bytes, which may begin a delimiter).
    """

    delimiter: bytes = b"\r\n"
    max_len: int = 65536
    name: ClassVar[str] = "delimiter"

    def __post_init__(self) -> None:
        if not self.delimiter or self.max_len <= len(self.delimiter):
            raise UsageError("the delimiter must be non-empty and shorter than max_len")

    def frame(self, data: bytes, direction: int, eof: bool) -> Answer:
        window = data[: self.max_len]
        at = window.find(self.delimiter)
        if at >= 0:
            return at + len(self.delimiter)
        if len(window) >= self.max_len:
            return Skip(self.max_len - len(self.delimiter) + 1)
        return None

    def spec(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vec, magic, _ = _vector(S.KIND_DELIMITER, 0, 0, 1, 0, 1, self.max_len, 0, 0, b"")
        return vec, magic, np.frombuffer(self.delimiter, np.uint8).copy()


@dataclass(frozen=True)
class VarintLength(GenericFramer):
    """PDU = an unsigned LEB128 varint at ``offset`` (as protobuf's delimited streams use),
    then ``value + adjust`` bytes. The PDU length counts the bytes up to and including the
    varint. More than 10 varint bytes, or a length outside [min_len, max_len], is not mine."""

    offset: int = 0
    adjust: int = 0
    max_len: int = DEFAULT_MAX_LEN
    min_len: int = 1
    name: ClassVar[str] = "varint"

    def frame(self, data: bytes, direction: int, eof: bool) -> Answer:
        value = 0
        for i in range(S.VARINT_MAX_BYTES):
            at = self.offset + i
            if at >= len(data):
                return Need(1)
            value |= (data[at] & 0x7F) << (7 * i)
            if data[at] < 0x80:
                length = at + 1 + value + self.adjust
                return length if self.min_len <= length <= self.max_len else Skip(1)
        return Skip(1)

    def spec(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _vector(
            S.KIND_VARINT, self.offset, 0, 0, self.adjust, max(self.min_len, 1), self.max_len, 0,
            self.offset + 1, b"",
        )  # fmt: skip


def _vector(
    kind: int,
    offset: int,
    size: int,
    big: bool | int,
    adjust: int,
    min_len: int,
    max_len: int,
    magic_offset: int,
    header: int,
    magic: bytes,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vec = np.zeros(S.N_SPEC, np.int64)
    vec[S.S_KIND], vec[S.S_OFFSET], vec[S.S_SIZE], vec[S.S_BIG] = kind, offset, size, int(big)
    vec[S.S_ADJUST], vec[S.S_MIN], vec[S.S_MAX] = adjust, min_len, max_len
    vec[S.S_MAGIC_OFFSET], vec[S.S_HEADER] = magic_offset, header
    return vec, np.frombuffer(magic, np.uint8).copy(), np.zeros(0, np.uint8)


def from_spec(vec: np.ndarray, magic: np.ndarray, delim: np.ndarray) -> GenericFramer:
    """The Python framer a parameter vector describes (the reference driver runs it)."""
    kind = int(vec[S.S_KIND])
    m = magic.tobytes()
    if kind == S.KIND_LENGTH:
        return LengthPrefixed(
            int(vec[S.S_OFFSET]), int(vec[S.S_SIZE]), "big" if vec[S.S_BIG] else "little",
            int(vec[S.S_ADJUST]), int(vec[S.S_MAX]), int(vec[S.S_MIN]), m,
            int(vec[S.S_MAGIC_OFFSET]),
        )  # fmt: skip
    if kind == S.KIND_FIXED:
        return FixedSize(int(vec[S.S_SIZE]), m, int(vec[S.S_MAGIC_OFFSET]))
    if kind == S.KIND_DELIMITER:
        return Delimited(delim.tobytes(), int(vec[S.S_MAX]))
    if kind == S.KIND_VARINT:
        return VarintLength(
            int(vec[S.S_OFFSET]), int(vec[S.S_ADJUST]), int(vec[S.S_MAX]), int(vec[S.S_MIN])
        )
    raise UsageError(f"unknown generic framer kind {kind}")
