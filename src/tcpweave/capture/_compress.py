"""Compressed captures are detected by their magic bytes and spooled to a temporary file.

Why spool rather than decode in blocks: every later stage addresses frames and
payloads by byte offset into one flat, memory-mapped buffer (the plan points
into it and writers gather from it). Decoding blocks would force copying every
payload out of short-lived buffers. The spool is written in 1 MiB steps, so
memory stays flat whatever the capture's size; it lives in ``workdir`` (or the
system temporary directory) and is deleted when the capture is closed.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import tempfile
import zlib
from collections.abc import Callable
from typing import IO, Any, BinaryIO

import zstandard

from tcpweave.errors import CaptureError

_STEP = 1 << 20

#: magic prefix -> (name, opener of a decompressing reader)
_FORMATS: tuple[tuple[bytes, str, Callable[[BinaryIO], Any]], ...] = (
    (b"\x1f\x8b", "gzip", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (
        b"\x28\xb5\x2f\xfd",
        "zstd",
        lambda f: zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True),
    ),
    (b"\xfd7zXZ\x00", "xz", lambda f: lzma.LZMAFile(f, mode="rb")),
    (b"BZh", "bzip2", lambda f: bz2.BZ2File(f, mode="rb")),
)


def compression_of(head: bytes) -> str | None:
    """The compression format whose magic ``head`` starts with, or None."""
    for magic, name, _ in _FORMATS:
        if head.startswith(magic):
            return name
    return None


def spool(path: str, workdir: str | None) -> tuple[IO[bytes], list[CaptureError]]:
    """Decompress ``path`` into an anonymous temporary file; report damage, keep what decoded.

    A damaged or cut-short compressed stream keeps every byte decoded before
    the damage; the error names the compressed file and the decoded offset.
    """
    with open(path, "rb") as raw:
        head = raw.read(8)
        raw.seek(0)
        name = compression_of(head)
        if name is None:
            raise ValueError(f"{path} is not compressed")
        opener = next(op for magic, n, op in _FORMATS if n == name)
        out = tempfile.TemporaryFile(prefix="tcpweave-spool-", dir=workdir)
        errors: list[CaptureError] = []
        written = 0
        try:
            with opener(raw) as reader:
                # read1, not read: read() drops what it decoded in a call that hits the damage
                while chunk := reader.read1(_STEP):
                    out.write(chunk)
                    written += len(chunk)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
            errors.append(
                CaptureError(
                    path,
                    written,
                    f"{name} stream damaged or cut short ({exc}); "
                    f"kept the {written} bytes decoded before it",
                )
            )
        out.flush()
        return out, errors
