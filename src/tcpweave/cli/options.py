"""Options shared by several subcommands (one definition, one help text), and the run a
command line asks for."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tcpweave.enums import ChecksumMode, Policy
from tcpweave.errors import UsageError
from tcpweave.run.settings import ROWS_PER_PARTITION

if TYPE_CHECKING:
    from tcpweave.run import Run

__all__ = [
    "JOBS_DEFAULT",
    "ROWS_PER_PARTITION",
    "Captures",
    "ChecksumOpt",
    "JobsOpt",
    "PartitionRowsOpt",
    "PolicyOpt",
    "open_run",
    "split_filter",
]

#: worker processes by default: all cores
JOBS_DEFAULT = os.cpu_count() or 1

Captures = Annotated[
    list[Path],
    typer.Argument(
        metavar="CAPTURE... [FILTER]",
        help="Capture file(s); several files are read as one capture; - is standard input. "
        "Words after them that are not files are a BPF filter, as tcpdump takes it "
        "('port 80', 'host 10.0.0.1 and tcp'): records it rejects are not read.",
    ),
]
PolicyOpt = Annotated[
    str,
    typer.Option(
        "--policy",
        metavar="POLICY",
        help="Overlap policy: " + ", ".join(str(p) for p in Policy) + ".",
    ),
]
ChecksumOpt = Annotated[
    str,
    typer.Option(
        "--checksums",
        metavar="MODE",
        help="Bad TCP checksums: "
        + ", ".join(str(m) for m in ChecksumMode)
        + " (auto: dropped unless their sender is checksum-offloaded, judged over the"
        " whole capture: docs/reassembly-rules.md).",
    ),
]
JobsOpt = Annotated[
    int,
    typer.Option("--jobs", metavar="N", help="Worker processes (default: all cores).", min=1),
]
PartitionRowsOpt = Annotated[
    int,
    typer.Option(
        "--partition-rows",
        metavar="N",
        help="Packets per partition: a larger capture is cut by flow into partitions "
        "spilled to disk (bounds each worker's memory).",
        min=1,
    ),
]


def split_filter(captures: list[Path]) -> tuple[list[str], str]:
    """The capture files, and the BPF filter: the trailing words that name no file (the
    first word is always a capture). A filter libpcap cannot compile is a usage error that
    also says the words were not files."""
    names = [str(c) for c in captures]
    words: list[str] = []
    while len(names) > 1 and names[-1] != "-" and not os.path.exists(names[-1]):
        words.insert(0, names.pop())
    expression = " ".join(words)
    if expression:
        from tcpweave.capture.bpf import RecordFilter

        try:
            RecordFilter(expression).check()
        except UsageError as exc:
            raise UsageError(f"no capture file {words[0]!r}, nor a filter: {exc}") from None
    return names, expression


@contextmanager
def open_run(
    captures: list[Path],
    policy: str = "first",
    checksums: str = "auto",
    jobs: int = 1,
    partition_rows: int = ROWS_PER_PARTITION,
    *,
    idle_timeout: float = 0.0,
    progress: Callable[[str, int, int, int], None] | None = None,
    client: Any = None,
) -> Iterator[Run]:
    """The run of a command: the capture decoded whole when it is small, else spilled into
    partitions; ``-`` reads it from standard input; damaged records reported on stderr
    (and in the exit status). Closed (its files removed) when the block ends."""
    from rich.console import Console

    from tcpweave.capture.inputs import stdin_spooled
    from tcpweave.cli import render
    from tcpweave.run import Run, Settings, executor_for

    files, bpf = split_filter(captures)
    settings = Settings.of(policy, checksums, idle_timeout, bpf)
    with stdin_spooled(files) as paths:
        run = Run(paths, settings, executor_for(jobs, client),
                  rows_per_partition=partition_rows, progress=progress)  # fmt: skip
        with run:
            stats = run.decode_stats()
            render.report_error_list(Console(stderr=True, soft_wrap=True), run.capture_errors(),
                                     stats.corrupt_records, stats.skipped_bytes)  # fmt: skip
            yield run
