"""Tasks on this process and ``jobs - 1`` children forked for each batch of tasks.

Why not ``multiprocessing.Pool``: its workers are forked once, sit beside an idle
driver, and each loads numba's kernels and builds numba's typed-list code for itself
(about a second of CPU per process, and ~100 MB of memory per process that stays).
Here the calling process works too, and the children forked for a batch inherit
whatever it has loaded by then. Tasks are handed out one at a time through a counter
in shared memory (tasks of very different sizes balance themselves); each child sends
its results back on its own pipe (length-prefixed pickles), which a thread of the
calling process reads as they come, so that a child never waits for the caller to
finish a task before it can hand over a large result.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import pickle
import queue
import selectors
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tcpweave import _faults as fault

_HEADER = struct.Struct("<Q")


class LocalPool:
    """``map(fn, args)`` over this process and ``jobs - 1`` forked children (``jobs`` 1:
    this process alone). Children inherit this process's memory: ``args`` are not pickled."""

    shares_memory = True

    def __init__(self, jobs: int) -> None:
        self.workers = max(jobs, 1)  # processes, this one included

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def map(
        self,
        fn: Callable[..., Any],
        args: list[tuple[Any, ...]],
        warm: Callable[[], None] | None = None,
    ) -> Iterator[Any]:
        """``fn(*a)`` for every ``a`` in ``args``, results in the order they complete.

        ``warm`` runs here once the children are forked, before this process takes
        tasks: what it loads is inherited by the children of the next batches.
        """
        procs = min(self.workers, len(args))
        if procs <= 1:
            if warm is not None:
                warm()
            for a in args:
                yield fn(*a)
            return
        yield from _Batch(fn, args, procs - 1).run(warm)


class _Batch:
    def __init__(self, fn: Callable[..., Any], args: list[tuple[Any, ...]], children: int):
        self.fn, self.args = fn, args
        self.next = multiprocessing.get_context("fork").Value("q", 0)  # next task to claim
        self.children: dict[int, int] = {}  # pid -> read end of its pipe
        self.pids: dict[int, int] = {}  # read end of a pipe -> pid
        gc.freeze()  # children must not copy the heap by touching object headers
        try:
            for _ in range(children):
                self._fork()
        except BaseException:
            self._stop()
            gc.unfreeze()
            raise

    def _claim(self) -> int | None:
        with self.next.get_lock():
            i = int(self.next.value)
            if i >= len(self.args):
                return None
            self.next.value = i + 1
            return i

    def _fork(self) -> None:
        read, write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            os.close(write)
            self.children[pid] = read
            self.pids[read] = pid
            return
        os.close(read)  # the child: never returns
        code = 0
        try:
            die_with_parent(parent)
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C ends the child at once
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            fault.at("worker")  # every forked worker, before it takes a task
            for fd in self.children.values():
                os.close(fd)
            while (i := self._claim()) is not None:
                try:
                    message: tuple[Any, ...] = ("ok", self.fn(*self.args[i]))
                except Exception as exc:  # the driver raises it
                    message, code = ("error", _picklable(exc)), 1
                _send(write, message)
                if code:
                    break
        finally:
            os._exit(code)

    def run(self, warm: Callable[[], None] | None) -> Iterator[Any]:
        inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        reader = threading.Thread(target=self._read_pipes, args=(inbox,), daemon=True)
        reader.start()  # the children never wait for this process to read their results
        self.reading = True
        try:
            if warm is not None:
                warm()
            while (i := self._claim()) is not None:
                yield self.fn(*self.args[i])
                yield from self._take(inbox, block=False)
            while self.reading:
                yield from self._take(inbox, block=True)
        except BaseException:
            self._stop()
            raise
        finally:
            reader.join()  # it ends once every child's pipe is closed
            self._reap()
            gc.unfreeze()

    def _read_pipes(self, inbox: queue.SimpleQueue[tuple[str, Any]]) -> None:
        """Thread: read the children's pipes as data comes; queue each complete result, and
        each pipe's end (with whether it ended in the middle of a result)."""
        sel = selectors.DefaultSelector()
        buffers: dict[int, bytearray] = {}
        try:
            for fd in self.pids:
                sel.register(fd, selectors.EVENT_READ)
                buffers[fd] = bytearray()
            while sel.get_map():
                for key, _ in sel.select():
                    fd = int(key.fd)  # type: ignore[arg-type]
                    chunk = os.read(fd, 1 << 20)
                    buf = buffers[fd]
                    if not chunk:  # the child is done: no task left to claim, or it died
                        sel.unregister(fd)
                        inbox.put(("closed", (fd, bool(buf))))
                        continue
                    buf += chunk
                    while len(buf) >= _HEADER.size:
                        (n,) = _HEADER.unpack_from(buf)
                        if len(buf) < _HEADER.size + n:
                            break
                        inbox.put(("result", bytes(buf[_HEADER.size : _HEADER.size + n])))
                        del buf[: _HEADER.size + n]
        except BaseException as exc:  # never lose the reason
            inbox.put(("failed", exc))
        finally:
            sel.close()
            inbox.put(("done", None))

    def _take(self, inbox: queue.SimpleQueue[tuple[str, Any]], block: bool) -> Iterator[Any]:
        """Results queued by the reader (waiting for the next one if ``block``)."""
        while self.reading:
            try:  # a timeout keeps Ctrl-C prompt while waiting
                kind, value = inbox.get(timeout=0.2) if block else inbox.get_nowait()
            except queue.Empty:
                if block:
                    continue
                return
            if kind == "done":
                self.reading = False
            elif kind == "failed":
                raise value
            elif kind == "closed":
                fd, partial = value
                self._reap_one(self.pids[fd])
                if partial:
                    raise RuntimeError("a worker process ended in the middle of a result")
            else:
                status, result = pickle.loads(value)
                if status == "error":
                    raise result
                yield result
                if block:
                    return

    def _reap_one(self, pid: int) -> None:
        """Wait for a child whose pipe has closed; a child that did not end normally (killed,
        say, by the out-of-memory killer) may have lost a task: raise."""
        os.close(self.children.pop(pid))
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code not in (0, 1):  # 1: it sent the error it met, raised above
            raise RuntimeError(f"a worker process (pid {pid}) ended with status {code}")

    def _stop(self) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _reap(self) -> None:
        for pid, fd in self.children.items():
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children = {}


_PR_SET_PDEATHSIG = 1  # prctl(2)
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(parent: int) -> None:
    """In a forked worker: be killed when the process that forked it dies, however it dies
    (prctl PR_SET_PDEATHSIG; SIGKILL of the driver must not leave a worker writing)."""
    fault.mark_child()
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _send(fd: int, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
