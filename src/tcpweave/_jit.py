"""The one place that wraps numba.

Every kernel is declared with :func:`kernel`, which compiles it with the
project's cache policy and records it beside its plain-Python reference (a
function of the same name in the stage's ``_reference`` module). Property tests
walk :data:`REGISTRY` to check kernel == reference; with ``NUMBA_DISABLE_JIT=1``
numba hands back the Python function itself, so the whole suite also runs
without compilation. Compilations (numba's cache missed) are told to the listener of
``tcpweave._compiling``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import numba
import numba.core.event
import numba.typed
import numpy as np

from tcpweave import _compiling

F = TypeVar("F", bound=Callable[..., Any])

#: (stage module, kernel name) -> compiled kernel
REGISTRY: dict[tuple[str, str], Any] = {}


def kernel(func: F) -> F:
    """Compile ``func`` as a serial, cached nopython kernel and register it."""
    compiled = numba.njit(cache=True, nogil=True, boundscheck=False)(func)
    stage = func.__module__.rsplit(".", 1)[0]
    REGISTRY[(stage, func.__name__)] = compiled
    return compiled  # type: ignore[no-any-return]


def helper(func: F) -> F:
    """Compile a small inlined building block used by kernels (not registered)."""
    return numba.njit(cache=True, nogil=True, inline="always")(func)  # type: ignore[no-any-return]


class _CompileEvents(numba.core.event.Listener):  # type: ignore[misc]
    """Forwards numba's outermost ``"numba:compile"`` events of tcpweave's functions (not
    numba's own small ones): a kernel's helpers compile while it does (the compiler lock
    makes compilations one at a time, so one depth counter serves all threads)."""

    def __init__(self) -> None:
        self.depth = 0
        self.started = 0.0

    def on_start(self, event: Any) -> None:
        self.depth += 1
        if self.depth == 1:
            self.started = time.perf_counter()
            self._tell(event, None)

    def on_end(self, event: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self._tell(event, time.perf_counter() - self.started)

    @staticmethod
    def _tell(event: Any, seconds: float | None) -> None:
        hear = _compiling.listener()
        func = event.data["dispatcher"].py_func
        if hear is not None and func.__module__.startswith("tcpweave."):
            hear(func.__name__, seconds)


numba.core.event.register("numba:compile", _CompileEvents())


def callee(func: F) -> F:
    """Compile a large building block that kernels call rather than inline: numba's
    IR-level inlining copies it into every call site, and a kernel with many such copies
    takes minutes and gigabytes to compile (LLVM still inlines it where that pays). Also for
    blocks that run seldom -- once per direction or section, on damaged records, for rare
    headers -- where a call costs nothing measurable."""
    return numba.njit(cache=True, nogil=True)(func)  # type: ignore[no-any-return]


def _prefetch_intrinsic() -> Any:
    """``prefetch(array, index)``: hint the CPU to pull ``array[index]`` into cache.

    Why: decoding touches each frame's headers once, ~1 KB apart, across
    gigabytes; every first touch is a DRAM round trip that the hardware
    prefetcher does not predict across 4 KiB pages. Prefetching a few frames
    ahead overlaps those round trips (measured: 2x on the decode pass). It is a
    hint only: an address past the end is harmless to prefetch but we never
    form one.
    """
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic  # type: ignore[misc]
    def prefetch(typingctx: Any, arr: Any, idx: Any) -> Any:
        sig = types.void(arr, idx)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
            fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
            # read access, high temporal locality, data cache
            builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return sig, codegen

    return prefetch


if numba.config.DISABLE_JIT:

    def prefetch(arr: Any, idx: int) -> None:
        """No-op without the JIT (kernels run as plain Python)."""
else:
    prefetch = _prefetch_intrinsic()


@numba.njit(cache=True)  # type: ignore[misc]
def _list_of(buffer: Any) -> Any:
    out = numba.typed.List()
    out.append(buffer)
    return out


@numba.njit(cache=True)  # type: ignore[misc]
def _append(buffers: Any, buffer: Any) -> None:
    buffers.append(buffer)


def buffer_list(buffers: list[np.ndarray]) -> Any:
    """Byte buffers as a numba typed list (what kernels take for "the sources"), read-only.

    Why not ``numba.typed.List(buffers)``: built from Python, a typed list compiles
    numba's list code for its item type in every process (about 0.25 s, not cached);
    these two small functions are compiled once into numba's cache. Every buffer is
    handed over read-only, so that kernels see one item type whatever the sources are
    (mapped files are read-only, decompressed captures and test arrays are not).
    """
    if not buffers:
        return numba.typed.List()
    views = []
    for b in buffers:
        v = b.view()
        v.flags.writeable = False
        views.append(v)
    out = _list_of(views[0])
    for v in views[1:]:
        _append(out, v)
    return out
