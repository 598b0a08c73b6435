"""The output directory protocol: tcpweave touches only what it created, and an
unfinished run always says so.

Theory of operation. A run *claims* its output directory DIR before it writes a
byte there:

- ``DIR/.tcpweave/`` is tcpweave's own area. Making it (``mkdir``, atomic) is the
  claim; a fresh claim is given up at once when DIR holds anything else, so every
  entry of a claimed DIR was made by tcpweave. ``lock`` in it is held (``flock``)
  for the whole run by the driver and, inherited, by its forked workers: a second
  run into DIR is refused while any of them lives. ``run.json`` names the run
  (command, input files, options) so that ``--resume`` continues only the same run.
- ``DIR/INCOMPLETE.json`` -- the unfinished marker -- is written before anything
  else and removed only after ``DIR/manifest.json`` (inputs, options, counts, input
  damage, the files written) has been renamed into place: a directory is finished
  exactly when it holds ``manifest.json`` and no ``INCOMPLETE.json``. The marker
  says why a run stopped (``running`` -- the process died --, ``interrupted``,
  ``failed``) and what the work directory kept for ``--resume`` holds.
- ``DIR/.tcpweave/ledger/`` lists, before they are created, the files the writers
  are about to make (one ledger file per writer task). The ledger and the manifest
  are the list of what tcpweave may remove: ``--force`` (another run's output) and
  a fresh run over this run's own output remove exactly the files listed, and
  nothing when DIR also holds a file tcpweave did not list (the run is refused).
- The work directory (partition spill files) is ``DIR/.tcpweave/work``, or a
  directory made by tcpweave inside the one given with ``--workdir`` (never that
  directory itself).

Stream files are created with ``O_EXCL`` (output/extract.py): a file that exists
is never overwritten, so a name the claim did not account for fails loudly
instead of being truncated.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tcpweave.errors import UsageError

__all__ = [
    "INCOMPLETE_FILE",
    "MANIFEST_FILE",
    "OBJECTS_FILE",
    "OWN_DIR",
    "OutputDir",
    "RunIdentity",
    "input_identity",
]

OWN_DIR = ".tcpweave"
INCOMPLETE_FILE = "INCOMPLETE.json"
MANIFEST_FILE = "manifest.json"
STREAMS_FILE = "streams.jsonl"
OBJECTS_FILE = "objects.jsonl"
REPORT_FILE = "report.html"  # extract --report
_RUN_FILE = "run.json"
_LOCK_FILE = "lock"
_LEDGER_DIR = "ledger"
_WORK_DIR = "work"
#: marks a work directory made inside a user's ``--workdir`` as tcpweave's own
WORK_MARK = ".tcpweave-work-dir"
#: files any run may leave at the top of DIR besides the ledger's
_TOP_FILES = (STREAMS_FILE, OBJECTS_FILE, MANIFEST_FILE, INCOMPLETE_FILE, "packets.parquet",
              "plan.parquet", "index.parquet", REPORT_FILE)  # fmt: skip
#: entries named in a refusal
_SHOWN = 5


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same: the command, its input files and its options."""

    command: str
    inputs: tuple[tuple[str, int, int], ...]  # (absolute path, size, mtime_ns)
    options: tuple[tuple[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "inputs": [list(i) for i in self.inputs],
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RunIdentity:
        return cls(
            str(raw["command"]),
            tuple((str(p), int(s), int(m)) for p, s, m in raw["inputs"]),
            tuple(sorted((str(k), v) for k, v in raw["options"].items())),
        )

    def describe(self) -> str:
        names = ", ".join(os.path.basename(p) for p, _, _ in self.inputs)
        return f"`{self.command}` of {names}"


def input_identity(paths: list[str]) -> tuple[tuple[str, int, int], ...]:
    """(absolute path, size, mtime_ns) of every input file."""
    out = []
    for p in paths:
        st = os.stat(p)
        out.append((os.path.abspath(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, value: Any) -> None:
    """Write ``value`` to ``path`` atomically (a temporary name, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


@dataclass
class _Previous:
    """What a claimed DIR holds from an earlier run."""

    identity: RunIdentity | None
    finished: bool
    marker: dict[str, Any] | None
    owned: set[str] = field(default_factory=set)  # files (relative to DIR) tcpweave made


class OutputDir:
    """A claimed output directory (see the module docstring). Use ``claim``."""

    def __init__(self, path: Path, identity: RunIdentity, lock_fd: int) -> None:
        self.path = path
        self.own = path / OWN_DIR
        self.identity = identity
        self._lock_fd = lock_fd
        self.workdir = str(self.own / _WORK_DIR)
        self.resumed = False  # continuing the unfinished run of the same identity
        self.previous_finished = False

    # -- claiming ---------------------------------------------------------------------

    @classmethod
    def claim(
        cls,
        path: str | os.PathLike[str],
        identity: RunIdentity,
        *,
        force: bool = False,
        resume: bool = False,
        workdir: str | None = None,
    ) -> OutputDir:
        """Claim ``path`` for a run of ``identity``; raises UsageError when it may not.

        An absent or empty directory is claimed as it is. A directory holding an earlier
        tcpweave run is taken when that run is the same one (``resume`` continues it when
        it is unfinished; otherwise its files are replaced), or with ``force``; anything
        else is refused, and so is a directory holding files tcpweave did not make.
        """
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"{out}: not writable")
        own = out / OWN_DIR
        try:
            own.mkdir()
            fresh = True
        except FileExistsError:
            fresh = False
        if fresh:
            foreign = sorted(n for n in os.listdir(out) if n != OWN_DIR)
            if foreign:
                own.rmdir()
                raise UsageError(
                    f"{out} is not empty and holds no tcpweave run ({_names(foreign)}); "
                    "choose an empty or new directory"
                )
        elif not own.is_dir():
            raise UsageError(f"{own}: exists and is not a directory")
        fd = _lock(own, out)
        try:
            this = cls(out, identity, fd)
            if not fresh:
                this._take_over(_previous(out), force=force, resume=resume)
            this._start(workdir)
        except BaseException:
            os.close(fd)
            raise
        return this

    def _take_over(self, prev: _Previous, *, force: bool, resume: bool) -> None:
        same = prev.identity == self.identity
        state = "finished" if prev.finished else "unfinished"
        what = prev.identity.describe() if prev.identity else "an unidentified run"
        if resume and not same and prev.identity is not None:
            raise UsageError(
                f"--resume: {self.path} holds an {state} run of {what} with other "
                f"{_difference(prev.identity, self.identity)}; --resume continues only the same run"
            )
        if not same and not force:
            raise UsageError(
                f"{self.path} holds the {state} tcpweave run {what}; give --force to replace "
                "it, or choose another directory"
            )
        foreign = _foreign(self.path, prev.owned)
        if foreign:
            raise UsageError(
                f"{self.path} holds files tcpweave did not write ({_names(foreign)}); "
                "not touching it: move them away or choose another directory"
            )
        self.previous_finished = prev.finished and same
        if resume and same and not prev.finished:
            self.resumed = True
            return
        self._remove(prev.owned)

    def _remove(self, owned: set[str]) -> None:
        """Remove the earlier run's files (those listed), then the directories they leave
        empty, its ledger and its work directory."""
        _write_json(self.path / INCOMPLETE_FILE, {"state": "replacing", "since": _now()})
        dirs: set[str] = set()
        for rel in owned:
            if rel == INCOMPLETE_FILE:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path / rel)
            parent = os.path.dirname(rel)
            while parent:
                dirs.add(parent)
                parent = os.path.dirname(parent)
        for d in sorted(dirs, key=len, reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(self.path / d)
        shutil.rmtree(self.own / _LEDGER_DIR, ignore_errors=True)
        _remove_work(self.own, _read_json(self.own / _RUN_FILE))

    def _start(self, workdir: str | None) -> None:
        """Mark the directory unfinished, name the run, and make its work directory."""
        os.ftruncate(self._lock_fd, 0)  # the lock names its holder (for a refused run)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        old = _read_json(self.own / _RUN_FILE) if self.resumed else None
        if self.resumed and old and old.get("workdir") and os.path.isdir(old["workdir"]):
            self.workdir = old["workdir"]
        elif workdir is not None:
            self.workdir = _make_work_in(workdir)
        _write_json(
            self.path / INCOMPLETE_FILE,
            {"state": "running", "pid": os.getpid(), "since": _now(),
             "resume": "run the same command again with --resume"},
        )  # fmt: skip
        (self.own / _LEDGER_DIR).mkdir(exist_ok=True)
        _write_json(self.own / _RUN_FILE, {**self.identity.to_json(), "workdir": self.workdir})
        os.makedirs(self.workdir, exist_ok=True)

    # -- during the run -----------------------------------------------------------------

    def ledger(self, name: str) -> str:
        """Path of the ledger file of writer task ``name`` (one name per line, appended
        before the files are made)."""
        return str(self.own / _LEDGER_DIR / name)

    def forget(self, names: list[str]) -> None:
        """Remove files this run made and listed (a partition rewritten on --resume)."""
        for rel in names:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path / rel)

    def ledger_names(self, name: str) -> list[str]:
        return _read_ledger(Path(self.ledger(name)))

    # -- ending -------------------------------------------------------------------------

    def finish(self, manifest: dict[str, Any]) -> None:
        """Commit the run: the manifest renamed into place, then the marker removed, then
        the ledger and the work directory."""
        _write_json(self.path / MANIFEST_FILE, {
            "tool": "tcpweave", **self.identity.to_json(), "finished": _now(), **manifest,
        })  # fmt: skip
        os.remove(self.path / INCOMPLETE_FILE)
        shutil.rmtree(self.own / _LEDGER_DIR, ignore_errors=True)
        _remove_work(self.own, {"workdir": self.workdir})
        self.release()

    def stopped(self, state: str, reason: str, *, keep_work: bool, **extra: Any) -> dict[str, Any]:
        """Record why the run stopped in the marker. The work directory is kept (and its size
        reported) for ``--resume`` when ``keep_work``, else removed. Returns the marker."""
        marker: dict[str, Any] = {"state": state, "reason": reason, "since": _now(), **extra}
        if keep_work and os.path.isdir(self.workdir):
            marker["work"] = {"path": self.workdir, "bytes": _tree_size(self.workdir)}
            marker["resume"] = "run the same command again with --resume"
        else:
            _remove_work(self.own, {"workdir": self.workdir})
        with contextlib.suppress(OSError):  # the disk may be full: keep the older marker
            _write_json(self.path / INCOMPLETE_FILE, marker)
        self.release()
        return marker

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _lock(own: Path, out: Path) -> int:
    """Hold ``own/lock`` (exclusive, not waiting); once the claim holds, it names the pid
    of the run holding it."""
    fd = os.open(own / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UsageError(
                f"{out}: another tcpweave run (pid {holder}) is writing into it"
            ) from None
        raise
    return fd


def _previous(out: Path) -> _Previous:
    own = out / OWN_DIR
    raw = _read_json(own / _RUN_FILE)
    identity = None
    if isinstance(raw, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            identity = RunIdentity.from_json(raw)
    marker = _read_json(out / INCOMPLETE_FILE)
    finished = (out / MANIFEST_FILE).exists() and not (out / INCOMPLETE_FILE).exists()
    owned = {n for n in _TOP_FILES if (out / n).exists()}
    owned |= {n + ".tmp" for n in _TOP_FILES if (out / (n + ".tmp")).exists()}
    ledger = own / _LEDGER_DIR
    if ledger.is_dir():
        for name in os.listdir(ledger):
            owned.update(_read_ledger(ledger / name))
    owned.update(_listed_paths(out / STREAMS_FILE))
    manifest = _read_json(out / MANIFEST_FILE)  # a store's part files (output/store.py)
    with contextlib.suppress(AttributeError, TypeError):
        owned.update(str(n) for n in manifest.get("store", {}).get("files", []))
    owned.update(_listed_paths(out / OBJECTS_FILE))
    return _Previous(identity, finished, marker if isinstance(marker, dict) else None, owned)


def _read_ledger(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line for line in f.read().split("\n") if line]
    except FileNotFoundError:
        return []


def _listed_paths(streams: Path) -> Iterator[str]:
    """The ``path`` of every line of a streams.jsonl or objects.jsonl (a finished run's
    files)."""
    try:
        f = open(streams, "rb")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                for rel in (record.get("path"), record.get("pcap")):  # pcap: extract --pcap
                    if isinstance(rel, str):
                        yield rel


def _foreign(out: Path, owned: set[str]) -> list[str]:
    """Entries under ``out`` that are neither listed files nor directories holding them."""
    dirs = {os.path.dirname(rel) for rel in owned}
    for rel in list(dirs):
        while rel:
            rel = os.path.dirname(rel)
            dirs.add(rel)
    found: list[str] = []
    for root, subdirs, files in os.walk(out):
        rel_root = os.path.relpath(root, out)
        rel_root = "" if rel_root == "." else rel_root
        if not rel_root:
            subdirs[:] = [d for d in subdirs if d != OWN_DIR]
        for d in list(subdirs):
            rel = os.path.join(rel_root, d)
            if rel not in dirs:
                found.append(rel + "/")
                subdirs.remove(d)
        found += [
            os.path.join(rel_root, n) for n in files if os.path.join(rel_root, n) not in owned
        ]
        if len(found) > _SHOWN:
            break
    return sorted(found)


def _names(entries: list[str]) -> str:
    shown = ", ".join(entries[:_SHOWN])
    return shown + (f", and {len(entries) - _SHOWN} more" if len(entries) > _SHOWN else "")


def _difference(a: RunIdentity, b: RunIdentity) -> str:
    if a.inputs != b.inputs:
        return "capture files (or the files changed since)"
    if a.command != b.command:
        return "command"
    return "options (" + ", ".join(f"{k}={v}" for k, v in a.options) + ")"


def _make_work_in(parent: str) -> str:
    """A new work directory inside ``parent`` (made if missing), marked as tcpweave's."""
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise UsageError(f"--workdir {parent}: exists and is not a directory")
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix="tcpweave-work-", dir=parent)
    Path(path, WORK_MARK).touch()
    return path


def _remove_work(own: Path, run: Any) -> None:
    """Remove a run's work directory: the default one under ``own``, or one tcpweave made
    (and marked) inside a ``--workdir``. Never anything else."""
    default = own / _WORK_DIR
    shutil.rmtree(default, ignore_errors=True)
    path = run.get("workdir") if isinstance(run, dict) else None
    if (
        isinstance(path, str)
        and Path(path) != default
        and os.path.exists(os.path.join(path, WORK_MARK))
    ):
        shutil.rmtree(path, ignore_errors=True)


def _tree_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for n in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, n)).st_size
    return total
