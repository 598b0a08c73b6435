"""Fault injection points, so that tests can stop a run at a chosen place, deterministically.

``TCPWEAVE_FAULT="<point>[@<n>]=<action>[,...]"`` makes the ``n``-th call (default 1)
of ``fault.at("<point>")`` in a process perform ``<action>``:

- ``sigint``, ``sigterm``, ``sigkill``: the process sends itself that signal;
- ``ctrl-c``: SIGINT to the whole process group, as a terminal's Ctrl-C;
- ``enospc``: raises ``OSError(ENOSPC)``, as a full disk would;
- ``raise``: raises ``RuntimeError`` (any unexpected failure);
- ``exit``: the process ends at once with status 70 (a crashed process);
- ``truncate``: the file the point names is cut to 0 bytes, as another process
  truncating a capture while it is read would.

An action prefixed ``child:`` (``child:sigkill``) fires only in a forked worker, one
prefixed ``driver:`` only in the process that started the run. Points are named after
the phases of a run, and each is passed by the driver at a fixed place, whatever the
workers do: ``decode`` (each chunk routed), ``sessions`` (before the sessions are
numbered), ``rank``, ``write`` (each partition reported written), ``merge``, ``finish``;
``worker`` is passed by every forked worker as it starts; ``read`` by whichever process
walks a capture file, after each chunk of its records (naming the file). Unset (always, outside
tests), ``at`` costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

__all__ = ["at", "mark_child"]

_ENV = "TCPWEAVE_FAULT"
_counts: dict[str, int] = {}
_in_child = [False]


def _plan() -> dict[str, tuple[int, str]]:
    plan: dict[str, tuple[int, str]] = {}
    for item in os.environ.get(_ENV, "").split(","):
        if "=" not in item:
            continue
        where, action = item.split("=", 1)
        point, _, nth = where.partition("@")
        plan[point.strip()] = (int(nth) if nth else 1, action.strip())
    return plan


_PLAN = _plan()


def mark_child() -> None:
    """Called in a forked worker: ``child:`` actions fire here, ``driver:`` ones do not."""
    _in_child[0] = True


def at(point: str, target: str | None = None) -> None:
    """A fault injection point (see the module docstring); ``target`` is the file it is
    about, if any."""
    if not _PLAN or point not in _PLAN:
        return
    nth, action = _PLAN[point]
    scope, _, action = action.rpartition(":")
    if (scope == "child" and not _in_child[0]) or (scope == "driver" and _in_child[0]):
        return
    _counts[point] = _counts.get(point, 0) + 1
    if _counts[point] != nth:
        return
    if action in ("sigint", "sigterm", "sigkill"):
        os.kill(os.getpid(), getattr(signal, action.upper()))  # handled before this returns
    elif action == "ctrl-c":
        os.killpg(os.getpgid(0), signal.SIGINT)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (injected at {point})")
    elif action == "raise":
        raise RuntimeError(f"injected fault at {point}")
    elif action == "exit":
        os._exit(70)
    elif action == "truncate" and target is not None:
        os.truncate(target, 0)
