"""How every command ends: one line on stderr for any error, and a documented exit status.

Exit status (every command):

====  ==============================================================================
0     finished
1     failed: an unreadable capture, a capture truncated while it was read, a full disk,
      a worker process that died, a bug
2     usage: a bad option or argument, an output directory tcpweave may not touch
3     finished, but the input was damaged: records or bytes of a capture were
      skipped (each region on stderr, ``info`` lists them all; ``extract`` lists them
      in DIR/manifest.json: file, offset, length, reason, and the totals)
130   interrupted by Ctrl-C (SIGINT); 143 stopped by SIGTERM. ``extract`` leaves
      DIR/INCOMPLETE.json saying so, and ``--resume`` finishes the run
====  ==============================================================================

A traceback is printed (before the error line) only with ``--verbose`` or
``TCPWEAVE_DEBUG=1``. When numba compiles kernels (its cache, ``NUMBA_CACHE_DIR``, does not
hold them yet: a first run), a command says so on stderr, one line per kernel, unless
``--quiet``. A command with ``--json`` also prints the error as
``{"error": ..., "exit_status": N}`` on stdout.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import signal
import sys
import traceback
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from tcpweave import _compiling
from tcpweave.errors import SignalReceived, TcpweaveError, UsageError, stop_signal

__all__ = [
    "EXIT_DAMAGED",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "fail",
    "guarded",
    "note_damage",
    "verbosity",
]

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3

F = TypeVar("F", bound=Callable[..., Any])


_JSON: ContextVar[bool] = ContextVar("tcpweave_json", default=False)
_VERBOSITY: ContextVar[int] = ContextVar("tcpweave_verbosity", default=0)


def verbosity() -> int:
    """-1 with --quiet (errors only), 0 by default, 1 with --verbose."""
    return _VERBOSITY.get()


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print ``error: message`` (one line; also as JSON on stdout for a --json command) and
    return the Exit to raise."""
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False
    )
    if _JSON.get():
        sys.stdout.write(json.dumps({"error": message, "exit_status": code}) + "\n")
        sys.stdout.flush()
    return typer.Exit(code)


_DAMAGE: ContextVar[list[int] | None] = ContextVar("tcpweave_damage", default=None)


def note_damage(records: int, skipped_bytes: int = 0) -> None:
    """Called where a command reports damaged capture records (and the bytes they made it
    skip): it then ends with status 3 (once it has finished its work)."""
    seen = _DAMAGE.get()
    if seen is not None:
        seen[0] += records
        seen[1] += skipped_bytes


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only errors (no progress, no summary).")
]
VerboseOpt = Annotated[
    bool,
    typer.Option("--verbose", "-v", help="Print every damaged record and more detail."),
]


def guarded(fn: F) -> F:
    """Run a command so that it ends as the module docstring says; adds -q/--quiet and
    -v/--verbose to its options."""

    @functools.wraps(fn)
    def run(*args: Any, quiet: bool = False, verbose: bool = False, **kwargs: Any) -> Any:
        damage = [0, 0]  # damaged records, bytes skipped
        tokens = (
            _DAMAGE.set(damage),
            _JSON.set(bool(kwargs.get("json_out"))),
            _VERBOSITY.set(-1 if quiet else (1 if verbose else 0)),
        )
        try:
            with _compile_lines() as hear, _compiling.listening(hear):
                result = _run_guarded(fn, args, kwargs)
            cut = _truncated_inputs()
            if cut:  # it read zeros where the file was: its output is not the capture's
                raise fail(str(cut[0]))
            if damage[0] and verbosity() >= 0:
                Console(stderr=True, soft_wrap=True).print(
                    f"[yellow]warning:[/] input damaged: {damage[0]:,} damaged record(s), "
                    f"{damage[1]:,} bytes skipped (exit status 3)",
                    highlight=False,
                )
            if damage[0]:
                raise typer.Exit(EXIT_DAMAGED)
            return result
        finally:
            for var, token in zip((_DAMAGE, _JSON, _VERBOSITY), tokens, strict=True):
                var.reset(token)  # type: ignore[attr-defined]

    signature = inspect.signature(fn)
    hints = typing.get_type_hints(fn, include_extras=True)
    extra = [
        inspect.Parameter("quiet", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=QuietOpt),
        inspect.Parameter("verbose", inspect.Parameter.KEYWORD_ONLY, default=False,
                          annotation=VerboseOpt),
    ]  # fmt: skip
    params = [p.replace(annotation=hints.get(p.name, p.annotation))
              for p in signature.parameters.values()]  # fmt: skip
    run.__signature__ = signature.replace(parameters=params + extra)  # type: ignore[attr-defined]
    run.__annotations__ = {**hints, "quiet": QuietOpt, "verbose": VerboseOpt}
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
            signum = stop_signal(exc)
            if signum is not None:  # a signal that surfaced as another error
                raise fail(f"stopped by {signal.Signals(signum).name}", 128 + signum) from None
            if os.environ.get("TCPWEAVE_DEBUG") or verbosity() > 0:
                traceback.print_exc()
            cut = _truncated_inputs()  # the cause of whatever failed after a capture shrank
            raise fail(str(cut[0]) if cut else describe(exc), exit_code(exc)) from None


class _CompileLines:
    """Kernel compilations told on stderr: a heading before the first, each kernel's name
    as it starts, and the count and time at the end of the command. Whole lines, written
    plainly: a progress display on the terminal shows them above itself."""

    def __init__(self) -> None:
        self.started = 0
        self.seconds = 0.0

    def __call__(self, kernel: str, took: float | None) -> None:
        if took is not None:
            self.seconds += took
            return
        if not self.started:
            sys.stderr.write("compiling kernels (first run only)…\n")
        self.started += 1
        sys.stderr.write(f"  {self.started}. {kernel}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.started:
            sys.stderr.write(f"compiled {self.started} kernels in {self.seconds:.1f} s; "
                             "later runs load them from numba's cache\n")  # fmt: skip


@contextmanager
def _compile_lines() -> Iterator[_compiling.Listener | None]:
    """The listener of a command's kernel compilations: none with --quiet."""
    if verbosity() < 0:
        yield None
        return
    lines = _CompileLines()
    try:
        yield lines
    finally:
        lines.close()


def _truncated_inputs() -> list[TcpweaveError]:
    """Captures truncated while this command read them. A command that read none never
    loaded the reader's guard (nor numba behind it), and is not made to load it here."""
    guard = sys.modules.get("tcpweave.capture._mapguard")
    return [] if guard is None else list(guard.truncated())


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
