"""Partition tasks on Dask distributed workers (``extract --scheduler tcp://HOST:PORT``).

The driver walks the capture's record headers, the workers decode the files (or
record ranges of a big pcap file, mapped by path: ``Settings.buffer_paths``) into
partition spill files -- rows and payload bytes -- under a work directory that
every worker can read, and then number, plan and write partitions from those
files alone. Every packet of a direction is in one partition, so every direction
is reassembled on one worker. Kernels are compiled by the driver (numba's on-disk
cache) and loaded by each worker before the fan-out, so that workers do not
compile them in parallel.

Dask is an optional dependency (``pip install tcpweave[dask]``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["DaskPool"]


def _run(job: tuple[Callable[..., Any], tuple[Any, ...]]) -> Any:
    fn, args = job
    return fn(*args)


def _load_kernels() -> int:
    """On a worker: import every stage so that numba loads the cached kernels once."""
    from tcpweave import run  # noqa: F401 -- imports every stage
    from tcpweave._jit import REGISTRY

    return len(REGISTRY)


class DaskPool:
    """An executor over a ``dask.distributed.Client`` (or a scheduler address to connect to):
    tasks and their results are pickled; the workers share no memory with this process."""

    shares_memory = False

    def __init__(self, client: Any) -> None:
        self._given = client
        self.workers = 1
        self.client: Any = None
        self._owned = False

    def __enter__(self) -> DaskPool:
        if self.client is not None:  # entered already (by the run and by its caller)
            return self
        try:
            from dask.distributed import Client
        except ImportError as exc:  # pragma: no cover - depends on the installation
            from tcpweave.errors import UsageError

            raise UsageError("--scheduler needs Dask: pip install 'tcpweave[dask]'") from exc
        if isinstance(self._given, str):
            self.client = Client(self._given)  # type: ignore[no-untyped-call]
            self._owned = True
        else:
            self.client = self._given
        self.client.run(_load_kernels)
        self.workers = sum(self.client.nthreads().values()) or 1
        return self

    def map(
        self,
        fn: Callable[..., Any],
        args: list[tuple[Any, ...]],
        warm: Callable[[], None] | None = None,
    ) -> Iterator[Any]:
        """Results in the order they complete (``warm`` is for local pools: the kernels
        were loaded on the workers when the pool was entered)."""
        from dask.distributed import as_completed

        futures = self.client.map(_run, [(fn, a) for a in args], pure=False)
        try:
            for fut in as_completed(futures):  # type: ignore[no-untyped-call]
                yield fut.result()
        finally:
            for fut in futures:
                fut.release()

    def __exit__(self, *exc: object) -> None:
        if self._owned and self.client is not None:
            self.client.close()
            self.client = None
