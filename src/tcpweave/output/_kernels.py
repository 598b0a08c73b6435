"""Kernels of the output stage: gathering payload bytes for the writers."""

from __future__ import annotations

from tcpweave._jit import kernel


@kernel
def gather_payloads(bufs, file, payload_start, length, out):  # type: ignore[no-untyped-def]
    """Copy the payload of each row (``bufs[file[i]][payload_start[i]:][:length[i]]``) into
    ``out``, back to back in row order; returns the number of bytes copied."""
    pos = 0
    for i in range(length.size):
        src = bufs[file[i]]
        start = payload_start[i]
        n = length[i]
        out[pos : pos + n] = src[start : start + n]
        pos += n
    return pos
