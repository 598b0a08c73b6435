"""Who hears that kernels are being compiled.

numba compiles a kernel the first time it is called with new argument types, unless its
on-disk cache (``NUMBA_CACHE_DIR``) already holds it: on a new machine, or after a kernel
changed, a command can sit for seconds per kernel before it prints anything. ``_jit``
forwards numba's ``"numba:compile"`` events -- sent when numba compiles, never when it
loads a kernel from its cache (numba's Event API) -- to the listener set here for the
current context; the command line sets one that prints on stderr. This module imports
nothing heavy, so that the command line sets the listener before numba is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["Listener", "listener", "listening"]

#: called with a kernel's name when numba starts compiling it (``seconds`` None), and again
#: when it is done (``seconds`` it took); the kernel's helpers compile inside it, unheard
Listener = Callable[[str, float | None], None]

_LISTENER: ContextVar[Listener | None] = ContextVar("tcpweave_compile_listener", default=None)


def listener() -> Listener | None:
    """The listener of the current context, if any."""
    return _LISTENER.get()


@contextmanager
def listening(hear: Listener | None) -> Iterator[None]:
    """Within the block, kernel compilations in this context are told to ``hear``."""
    token = _LISTENER.set(hear)
    try:
        yield
    finally:
        _LISTENER.reset(token)
