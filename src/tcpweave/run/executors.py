"""Where the tasks of a run go: one protocol, three executors.

- ``InProcess``: this process, task after task (a small capture, or ``--jobs 1``);
- ``LocalPool(jobs)``: this process and ``jobs - 1`` children forked for each batch of
  tasks, which inherit what this process has loaded (``_local.py``);
- ``DaskPool(client)``: the workers of a Dask cluster (``_dask.py``; optional dependency).

``map(fn, args, warm)`` calls ``fn(*a)`` for every ``a`` and yields the results in the
order they complete; ``warm``, when given, runs in this process before it takes tasks
(kernels it loads are inherited by forked children). ``shares_memory`` says whether a
task may use objects of this process (forked children, this process) or only what can be
pickled and files every worker can read (Dask).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from tcpweave.run._dask import DaskPool
from tcpweave.run._local import LocalPool

__all__ = ["DaskPool", "Executor", "InProcess", "LocalPool", "executor_for"]


class Executor(Protocol):
    """What a run needs of an executor."""

    workers: int
    shares_memory: bool

    def map(
        self,
        fn: Callable[..., Any],
        args: list[tuple[Any, ...]],
        warm: Callable[[], None] | None = None,
    ) -> Iterator[Any]: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


class InProcess(LocalPool):
    """Every task in this process, one after another."""

    def __init__(self) -> None:
        super().__init__(1)


def executor_for(jobs: int = 1, client: Any = None) -> Executor:
    """The executor a command line asks for: Dask when ``client`` (a Client or a scheduler
    address) is given, else this process and ``jobs - 1`` forked workers."""
    if client is not None:
        return DaskPool(client)
    return InProcess() if jobs <= 1 else LocalPool(jobs)
