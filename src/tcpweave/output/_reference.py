"""Plain-Python references of the output stage's kernels (same names, same results)."""

from __future__ import annotations

from typing import Any


def gather_ranges(buf: Any, start: Any, length: Any, at: Any, out: Any) -> int:
    """Each row's bytes of ``buf`` copied to its place ``at`` in ``out``."""
    rows = zip(start.tolist(), length.tolist(), at.tolist(), strict=True)
    for s, n, a in rows:
        out[a : a + n] = bytearray(buf[s : s + n].tobytes())
    return int(sum(length.tolist()))
