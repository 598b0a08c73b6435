"""The capture files a run is given: each read once; ``-`` is standard input."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

from tcpweave.errors import UsageError

__all__ = ["STDIN", "check_distinct", "stdin_spooled"]


def check_distinct(paths: list[str]) -> None:
    """Refuse a file given twice (by any name: same device and inode): read twice, its
    sessions would silently be doubled. A missing file is left to the reader to report."""
    seen: dict[tuple[int, int], str] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            same = "given twice" if seen[key] == p else f"the same file as {seen[key]}"
            raise UsageError(f"{p}: {same}; each capture file is read once, give it once")
        seen[key] = p


#: the name that stands for standard input (``tcpdump -w - | tcpweave extract - -o DIR``)
STDIN = "-"


@contextlib.contextmanager
def stdin_spooled(paths: list[str], directory: str | None = None) -> Iterator[list[str]]:
    """``paths`` with ``-`` replaced by a file holding everything read from standard input
    (a capture is read more than once, so a pipe is copied to a file first, 1 MiB at a
    time; the file is ours and removed afterwards). ``-`` may be given once."""
    if STDIN not in paths:
        yield paths
        return
    if paths.count(STDIN) > 1:
        raise UsageError("- (standard input) given more than once")
    if sys.stdin.isatty():
        raise UsageError("- reads a capture from standard input, which is a terminal")
    fd, spool = tempfile.mkstemp(prefix="tcpweave-stdin-", suffix=".capture", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        yield [spool if p == STDIN else p for p in paths]
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(spool)
