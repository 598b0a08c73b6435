"""Plain-Python references of the output stage's kernels (same names, same results)."""

from __future__ import annotations

from typing import Any


def gather_payloads(bufs: Any, file: Any, payload_start: Any, length: Any, out: Any) -> int:
    """The rows' payloads, one after the other, written into ``out``."""
    joined = b"".join(
        bufs[f][s : s + n].tobytes()
        for f, s, n in zip(file.tolist(), payload_start.tolist(), length.tolist(), strict=True)
    )
    out[: len(joined)] = bytearray(joined)
    return len(joined)
