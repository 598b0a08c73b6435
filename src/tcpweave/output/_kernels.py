"""Kernels of the output stage: gathering payload bytes for the writers."""

from __future__ import annotations

from tcpweave._jit import kernel


@kernel
def gather_ranges(buf, start, length, at, out):  # type: ignore[no-untyped-def]
    """Copy ``buf[start[i]:start[i] + length[i]]`` to ``out[at[i]:at[i] + length[i]]`` for
    every row i; returns the number of bytes copied."""
    total = 0
    for i in range(length.size):
        n = length[i]
        out[at[i] : at[i] + n] = buf[start[i] : start[i] + n]
        total += n
    return total
