"""The one place that wraps numba.

Every kernel is declared with :func:`kernel`, which compiles it with the
project's cache policy and records it beside its plain-Python reference (a
function of the same name in the stage's ``_reference`` module). Property tests
walk :data:`REGISTRY` to check kernel == reference; with ``NUMBA_DISABLE_JIT=1``
numba hands back the Python function itself, so the whole suite also runs
without compilation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

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
