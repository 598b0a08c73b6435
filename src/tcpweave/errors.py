"""Errors tcpweave raises.

Bad input is a :class:`CaptureError` naming the file, the byte offset and what
was wrong; misuse of the API or CLI is a :class:`UsageError`. Traffic anomalies
(bad checksums, overlaps, gaps) are never exceptions: they are data.
"""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "Interrupted",
    "SignalReceived",
    "TcpweaveError",
    "UsageError",
    "stop_signal",
]


class TcpweaveError(Exception):
    """Base class of every error tcpweave raises on purpose."""


class CaptureError(TcpweaveError):
    """A capture file is unreadable or damaged at a known place.

    ``offset`` is the byte offset in the (decompressed) file where the problem
    was found, or ``None`` when it concerns the file as a whole. ``skipped`` is, for
    damage a reader went past, how many bytes from ``offset`` on it did not use (0 when
    the record was still read); ``None`` when it is not known or does not apply.
    """

    def __init__(
        self, path: str, offset: int | None, reason: str, skipped: int | None = None
    ) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        self.skipped = skipped
        where = f"{path}" if offset is None else f"{path} @ byte {offset}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple[type[CaptureError], tuple[str, int | None, str, int | None]]:
        return (CaptureError, (self.path, self.offset, self.reason, self.skipped))


class UsageError(TcpweaveError):
    """The caller asked for something that cannot be done as asked."""


class SignalReceived(KeyboardInterrupt):
    """SIGTERM (or another stop signal) turned into an exception by the command line, so
    that a run stopped by ``kill`` unwinds -- and marks its output unfinished -- exactly as
    Ctrl-C does. ``signum`` is the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class Interrupted(TcpweaveError):
    """A run stopped by Ctrl-C or a stop signal (``signum``) after it had marked its output
    directory unfinished: ``done`` of ``total`` partitions were written, ``partial`` lists
    the streams whose files may be incomplete. ``extract --resume`` finishes it."""

    def __init__(
        self, done: int, total: int, partial: list[int] | None = None, signum: int = 2
    ) -> None:
        super().__init__(f"interrupted: {done} of {total} partitions written")
        self.done, self.total, self.signum = done, total, signum
        self.partial = partial or []

    def __reduce__(self) -> tuple[type[Interrupted], tuple[int, int, list[int], int]]:
        return (Interrupted, (self.done, self.total, self.partial, self.signum))


def stop_signal(exc: BaseException | None) -> int | None:
    """The signal behind ``exc`` when it is, or was raised while handling, a Ctrl-C or a
    stop signal (a signal landing inside a C extension can surface as another error --
    numpy raises SystemError -- with the KeyboardInterrupt as its context); else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KeyboardInterrupt):
            return getattr(exc, "signum", 2)
        exc = exc.__cause__ or exc.__context__
    return None
