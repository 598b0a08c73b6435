"""A capture truncated by another process while it is read: a clear error, never SIGBUS.

Theory of operation. Capture files are memory-mapped (``source.py``). When another
process truncates a file while it is mapped, touching a page beyond the file's new end
raises SIGBUS (mmap(2): "Attempted access to a page of the buffer that lies beyond the
end of the mapped file"), which kills the process -- exit 135, no message. So every
capture mapping is registered here, and a native SIGBUS handler (a numba ``cfunc``: it
runs no Python, as a signal handler must not) looks the faulting address up among the
registered ranges. Inside one, it maps a private zero page over the faulting page
(``MAP_FIXED``), counts the fault and returns: the read resumes, over zeros. Outside
any, it restores the default action and returns, so the fault recurs and ends the
process as it always did. The readers look at the count after each chunk of records,
and the commands before they finish (``truncated``): a fault, or a file now shorter
than its mapping, is a ``CaptureError`` naming the file -- whatever was computed from
those zeros is thrown away with the run.

The handler is installed on first use, only on Linux with the JIT on (with
``NUMBA_DISABLE_JIT`` a truncated file still ends the process with SIGBUS).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import carray, types  # type: ignore[attr-defined]
from numba.core import cgutils
from numba.extending import intrinsic

from tcpweave.errors import CaptureError

__all__ = ["register", "truncated", "unregister"]

#: mappings watched at once (a slot is 4 words: start, end, faults, first fault's offset)
SLOTS = 4096
_START, _END, _FAULTS, _FIRST = 0, 1, 2, 3
_TABLE_SYMBOL = "tcpweave_mapguard_table"
SIGBUS = 7
SA_SIGINFO = 4
MAP_FIXED = 0x10
PAGE = mmap.PAGESIZE

_table = np.zeros(4 * SLOTS, np.int64)
_files: dict[int, tuple[str, int, int]] = {}  # slot -> (path, fd, size)
_lost: list[CaptureError] = []  # truncations found in mappings closed since
_installed: list[bool] = []  # [] not tried yet, [True] installed, [False] not available


def register(buffer: np.ndarray, path: str, fd: int) -> int:
    """Watch the mapping behind ``buffer`` (of the file ``path``, open as ``fd``); returns its
    slot, or -1 when it is not watched (no handler on this platform, or every slot taken)."""
    if not _install() or buffer.size == 0:
        return -1
    free = np.flatnonzero(_table[_END::4] == 0)
    if not len(free):
        return -1
    slot = int(free[0])
    start = buffer.ctypes.data
    _table[4 * slot + _FAULTS] = _table[4 * slot + _FIRST] = 0
    _table[4 * slot + _START] = start
    _table[4 * slot + _END] = start + buffer.size
    _files[slot] = (path, fd, int(buffer.size))
    return slot


def unregister(slot: int) -> None:
    """Stop watching ``slot`` (its mapping is about to be closed); a truncation found in it
    is kept for ``truncated``."""
    if slot < 0 or slot not in _files:
        return
    _lost.extend(_check(slot))
    _table[4 * slot : 4 * slot + 4] = 0
    del _files[slot]


def faults(slot: int) -> int:
    """Pages of ``slot``'s mapping found missing so far (cheap: one read)."""
    return int(_table[4 * slot + _FAULTS]) if slot >= 0 else 0


def truncated(slot: int | None = None) -> list[CaptureError]:
    """Capture files truncated while they were read (one error each): every watched one
    (and those closed since the last call), or only ``slot``'s. A file counts as truncated
    once a page of its mapping was found missing or once it is shorter than when mapped."""
    if slot is not None:
        return _check(slot)
    found = _lost + [e for s in sorted(_files) for e in _check(s)]
    _lost.clear()
    return found


def _check(slot: int) -> list[CaptureError]:
    if slot not in _files:
        return []
    path, fd, size = _files[slot]
    try:
        now = os.fstat(fd).st_size
    except OSError:
        now = size
    if not _table[4 * slot + _FAULTS] and now >= size:
        return []
    where = int(_table[4 * slot + _FIRST]) if _table[4 * slot + _FAULTS] else min(now, size)
    return [CaptureError(path, where, f"file truncated while being read (now {now} bytes of "
                                      f"{size}); the run's results are incomplete")]  # fmt: skip


# -- the handler ------------------------------------------------------------------------------


class _Sigaction(ctypes.Structure):
    """``struct sigaction`` as glibc lays it out on Linux (x86-64, aarch64)."""

    _fields_ = [
        ("sa_sigaction", ctypes.c_void_p),
        ("sa_mask", ctypes.c_ulong * 16),
        ("sa_flags", ctypes.c_int),
        ("sa_restorer", ctypes.c_void_p),
    ]


def _install() -> bool:
    if _installed:
        return _installed[0]
    ok = sys.platform.startswith("linux") and not numba.config.DISABLE_JIT  # type: ignore[attr-defined]
    if ok:
        import llvmlite.binding as llvm

        llvm.add_symbol(_TABLE_SYMBOL, _table.ctypes.data)  # before the handler is loaded
        action = _Sigaction(sa_sigaction=_handler().address, sa_flags=SA_SIGINFO)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        ok = libc.sigaction(SIGBUS, ctypes.byref(action), None) == 0
    _installed.append(ok)
    return ok


def _handler() -> Any:
    """The SIGBUS handler, compiled (or loaded from numba's cache) on first use."""
    import numba
    from numba import types

    sig = types.void(types.int32, types.voidptr, types.voidptr)
    return numba.cfunc(sig, cache=True)(_on_sigbus)


def _on_sigbus(signum, info, context):  # type: ignore[no-untyped-def]
    t = carray(_slot_table(), (4 * SLOTS,), np.int64)  # type: ignore[call-arg]
    # siginfo_t: si_signo, si_errno, si_code (3 ints, padded to 16 bytes), then si_addr
    addr = carray(info, (4,), np.int64)[2]
    for s in range(SLOTS):
        if t[4 * s] <= addr < t[4 * s + 1]:
            _zero_page(addr - addr % PAGE, PAGE)
            if t[4 * s + 2] == 0:
                t[4 * s + 3] = addr - t[4 * s]
            t[4 * s + 2] += 1
            return
    _default_action(signum)


# Three LLVM-level helpers for the handler: the slot table (an external symbol, bound per
# process with ``llvm.add_symbol``, so that the compiled handler can be cached), mmap(2) of
# a private zero page over a page, and signal(2) back to the default action.

_I8P, _I32, _I64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)


@intrinsic  # type: ignore[misc]
def _slot_table(typingctx: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        g = cgutils.add_global_variable(builder.module, ir.IntType(8), _TABLE_SYMBOL)  # type: ignore[no-untyped-call]
        g.linkage = "external"
        return builder.bitcast(g, _I8P)

    return types.voidptr(), codegen


@intrinsic  # type: ignore[misc]
def _zero_page(typingctx: Any, addr: Any, size: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fnty = ir.FunctionType(_I8P, [_I8P, _I64, _I32, _I32, _I32, _I64])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "mmap")  # type: ignore[no-untyped-call]
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_FIXED
        where = builder.inttoptr(args[0], _I8P)
        builder.call(fn, [where, args[1], _I32(mmap.PROT_READ), _I32(flags), _I32(-1), _I64(0)])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@intrinsic  # type: ignore[misc]
def _default_action(typingctx: Any, signum: Any) -> Any:
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        fnty = ir.FunctionType(_I8P, [_I32, _I8P])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "signal")  # type: ignore[no-untyped-call]
        builder.call(fn, [args[0], ir.Constant(_I8P, None)])  # SIG_DFL
        return context.get_dummy_value()

    return types.void(types.int32), codegen
