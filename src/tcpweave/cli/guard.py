"""How every command ends: one line on stderr for any error, and a documented exit status.

Exit status (every command):

====  ==============================================================================
0     finished
1     failed: an unreadable capture, a full disk, a worker process that died, a bug
2     usage: a bad option or argument, an output directory tcpweave may not touch
3     finished, but the input was damaged: records or bytes of a capture were
      skipped (each region on stderr; ``extract`` lists them in DIR/manifest.json)
130   interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM. ``extract`` leaves
      DIR/INCOMPLETE.json saying so, and ``--resume`` finishes the run
====  ==============================================================================

A traceback is printed only with ``TCPWEAVE_DEBUG=1``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tcpweave.errors import SignalReceived, TcpweaveError, UsageError

__all__ = [
    "EXIT_DAMAGED",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "fail",
    "guarded",
    "note_damage",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` (one line) and return the Exit to raise."""
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False
    )
    return typer.Exit(code)


_DAMAGE: ContextVar[list[int] | None] = ContextVar("tcpweave_damage", default=None)


def note_damage(records: int) -> None:
    """Called where a command reports damaged capture records: it then ends with status 3
    (once it has finished its work)."""
    seen = _DAMAGE.get()
    if seen is not None:
        seen[0] += records


def guarded(fn: F) -> F:
    """Run a command so that it ends as the module docstring says."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        damage = [0]
        token = _DAMAGE.set(damage)
        try:
            result = _run_guarded(fn, args, kwargs)
        finally:
            _DAMAGE.reset(token)
        if damage[0]:
            Console(stderr=True).print(
                f"[yellow]warning:[/] input damaged: {damage[0]:,} damaged record(s) skipped "
                "(exit status 3)",
                highlight=False,
            )
            raise typer.Exit(EXIT_DAMAGED)
        return result

    return run  # type: ignore[return-value]


def _run_guarded(fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    with _stop_signals():
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except BrokenPipeError:  # the reader went away (`| head`): end quietly
            _silence_stdout()
            raise typer.Exit(128 + signal.SIGPIPE) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            raise fail(f"stopped by {signal.Signals(signum).name}", 128 + signum) from None
        except Exception as exc:
            if os.environ.get("TCPWEAVE_DEBUG"):
                raise
            raise fail(describe(exc), exit_code(exc)) from None


def exit_code(exc: BaseException) -> int:
    return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED


def describe(exc: BaseException) -> str:
    """One line for any error: tcpweave's own as they are, a system error with its file."""
    if isinstance(exc, TcpweaveError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def _stop_signals() -> Iterator[None]:
    """SIGTERM unwinds the command as Ctrl-C does (SignalReceived is a KeyboardInterrupt)."""

    def stop(signum: int, frame: Any) -> None:
        raise SignalReceived(signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (a test calling the command): leave it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
