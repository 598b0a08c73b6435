"""The capture files a run is given: each read once."""

from __future__ import annotations

import os

from tcpweave.errors import UsageError

__all__ = ["check_distinct"]


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
