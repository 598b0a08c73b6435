"""Inlined byte readers shared by kernels (numba helpers, plain Python when the JIT is off)."""

from __future__ import annotations

import numpy as np

from tcpweave._jit import helper


@helper
def u16be(buf, i):  # type: ignore[no-untyped-def]
    return (np.int64(buf[i]) << 8) | np.int64(buf[i + 1])


@helper
def u32be(buf, i):  # type: ignore[no-untyped-def]
    return (
        (np.int64(buf[i]) << 24)
        | (np.int64(buf[i + 1]) << 16)
        | (np.int64(buf[i + 2]) << 8)
        | np.int64(buf[i + 3])
    )


@helper
def u16le(buf, i):  # type: ignore[no-untyped-def]
    return np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)


@helper
def u32le(buf, i):  # type: ignore[no-untyped-def]
    return (
        np.int64(buf[i])
        | (np.int64(buf[i + 1]) << 8)
        | (np.int64(buf[i + 2]) << 16)
        | (np.int64(buf[i + 3]) << 24)
    )


@helper
def u16(buf, i, swapped):  # type: ignore[no-untyped-def]
    """A 16-bit field in the file's byte order (``swapped`` = big-endian)."""
    return u16be(buf, i) if swapped else u16le(buf, i)


@helper
def u32(buf, i, swapped):  # type: ignore[no-untyped-def]
    """A 32-bit field in the file's byte order (``swapped`` = big-endian)."""
    return u32be(buf, i) if swapped else u32le(buf, i)
