"""The ``tcpweave`` command and its subcommands."""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

import tcpweave
from tcpweave.capture.inputs import check_distinct
from tcpweave.cli import render
from tcpweave.cli.guard import describe, fail, guarded, verbosity
from tcpweave.cli.options import JOBS_DEFAULT, JobsOpt, PartitionRowsOpt, fits_whole
from tcpweave.cli.pdus import pdus as pdus_command
from tcpweave.errors import TcpweaveError, UsageError
from tcpweave.output.extract import extract as write_streams
from tcpweave.output.follow import FollowMode, follow, render_follow
from tcpweave.output.outdir import OutputDir, RunIdentity, input_identity
from tcpweave.output.partitions import (
    ROWS_PER_PARTITION,
    Interrupted,
    PartitionedRun,
    map_partitions,
)

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="tcpweave",
    help="Packet captures to the exact TCP byte streams the endpoints exchanged.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def command(name: str | None = None) -> Callable[[F], F]:
    """Register a subcommand that ends as cli/guard.py says (one-line errors, exit codes)."""

    def register(fn: F) -> F:
        app.command(name)(guarded(fn))
        return fn

    return register


command("pdus")(pdus_command)


class PacketFormat(StrEnum):
    table = "table"
    csv = "csv"
    jsonl = "jsonl"


Captures = Annotated[
    list[Path], typer.Argument(help="Capture file(s); several files are read as one capture.")
]


def _stdout() -> Console:
    console = Console()
    if not console.is_terminal:  # piped: do not squeeze tables into 80 columns
        console = Console(width=200)
    return console


def _stderr() -> Console:
    return Console(stderr=True)


def _open(paths: list[Path]) -> tcpweave.Capture:
    cap = tcpweave.open(paths)
    render.report_errors(_stderr(), cap)
    return cap


@command()
def packets(
    captures: Captures,
    limit: Annotated[int | None, typer.Option(help="Show at most N packets.", min=0)] = None,
    fmt: Annotated[PacketFormat, typer.Option("--format", help="Output format.")] = (
        PacketFormat.table
    ),
) -> None:
    """List the TCP packets of a capture (the packet table)."""
    with _open(captures) as cap:
        n = len(cap.packets) if limit is None else min(limit, len(cap.packets))
        if fmt is PacketFormat.table:
            console = _stdout()
            console.print(render.packet_table(cap, n))
            console.print(render.stats_summary(cap))
        elif fmt is PacketFormat.csv:
            render.write_csv(sys.stdout, cap, n)
        else:
            render.write_jsonl(sys.stdout, cap, n)


class GapMode(StrEnum):
    fill = "fill"
    omit = "omit"


class Layout(StrEnum):
    tcpweave = "tcpweave"
    tcpflow = "tcpflow"


class StreamFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"
    csv = "csv"


PolicyOpt = Annotated[
    str,
    typer.Option(
        "--policy",
        help="Overlap policy: first, last, bsd, linux, windows, solaris, hpux10, hpux11, irix, "
        "macos, vista, old-linux.",
    ),
]
ChecksumOpt = Annotated[
    str,
    typer.Option("--checksums", help="Bad TCP checksums: auto (offload-aware), strict, ignore."),
]


@command()
def extract(
    captures: Captures,
    out: Annotated[Path, typer.Option("-o", "--output", help="Output directory.")],
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    gaps: Annotated[GapMode, typer.Option(help="fill: keep stream offsets; omit: concatenate.")] = (
        GapMode.fill
    ),
    layout: Annotated[Layout, typer.Option(help="File naming.")] = Layout.tcpweave,
    jobs: Annotated[
        int, typer.Option(help="Worker processes (default: all cores).", min=1)
    ] = os.cpu_count() or 1,
    parquet: Annotated[
        bool,
        typer.Option(
            help="Also write DIR/packets.parquet and DIR/plan.parquet (holds the whole capture's "
            "tables in memory)."
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(help="Continue an interrupted extraction of the same captures and options."),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="Replace an earlier tcpweave run in DIR (only the files it lists as its own)."
        ),
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="Where to make the spill directory for partitions (default: inside "
            "DIR/.tcpweave); tcpweave makes and removes only its own directory there."
        ),
    ] = None,
    partition_rows: Annotated[
        int, typer.Option(help="Packets per partition (bounds each worker's memory).", min=1)
    ] = ROWS_PER_PARTITION,
    idle_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds of silence after which a 4-tuple's next packet starts a new session "
            "(0: only the SYN rules split sessions).",
            min=0,
        ),
    ] = 0.0,
    scheduler: Annotated[
        str | None,
        typer.Option(
            help="Dask scheduler address (tcp://HOST:PORT): run the partitions on its workers; "
            "DIR and the work directory must be on storage all workers see."
        ),
    ] = None,
) -> None:
    """Write each direction of each TCP session to a file, with DIR/streams.jsonl.

    The capture is cut by flow into partitions spilled under the work directory, so
    memory stays bounded whatever the capture's size (see tcpweave.output.partitions).
    """
    started = time.perf_counter()
    if parquet:
        _extract_whole(captures, out, policy, checksums, gaps, layout, jobs, force, started)
        return
    try:
        with render.phased_progress(_stderr()) as tick:
            summary, run = tcpweave.extract(
                captures,
                out,
                policy=policy,
                checksums=checksums,
                layout=str(layout),
                gaps=str(gaps),
                jobs=jobs,
                workdir=str(workdir) if workdir else None,
                resume=resume,
                partition_rows=partition_rows,
                progress=tick,
                client=scheduler,
                idle_timeout=idle_timeout,
                force=force,
            )
    except Interrupted as exc:
        raise fail(
            f"interrupted by {signal.Signals(exc.signum).name}: {exc.done} of {exc.total} "
            f"partitions written; {out}/streams.jsonl lists the finished streams, "
            f"{out}/INCOMPLETE.json the partial ones; run again with --resume to finish",
            128 + exc.signum,
        ) from None
    except TcpweaveError:
        raise  # the run marked DIR failed; guarded() prints the error
    stats = run.decode_stats()
    render.report_error_list(_stderr(), run.capture_errors(), stats.corrupt_records)
    if verbosity() >= 0:
        _stdout().print(render.extract_summary(stats, summary, out, time.perf_counter() - started))


def _extract_whole(
    captures: list[Path],
    out: Path,
    policy: str,
    checksums: str,
    gaps: GapMode,
    layout: Layout,
    jobs: int,
    force: bool,
    started: float,
) -> None:
    """Extraction with the whole capture's tables in memory (needed for the Parquet export)."""
    paths = [str(c) for c in captures]
    check_distinct(paths)
    options = (("checksums", checksums), ("gaps", str(gaps)), ("layout", str(layout)),
               ("parquet", True), ("policy", policy))  # fmt: skip
    identity = RunIdentity("extract", input_identity(paths), options)
    with _open(captures) as cap:
        streams = cap.stream_views(policy, checksums)
        claim = OutputDir.claim(out, identity, force=force)
        try:
            with render.progress(_stderr(), "writing streams", len(streams)) as tick:
                summary = write_streams(streams, out, str(layout), str(gaps), jobs, tick,
                                        claim.ledger(""))  # fmt: skip
            cap.packets.to_parquet(str(out / "packets.parquet"))
            cap.plan(policy, checksums).to_parquet(str(out / "plan.parquet"))
            damage = [{"file": e.path, "offset": e.offset, "reason": e.reason} for e in cap.errors]
            claim.finish({"summary": asdict(summary), "decode": asdict(cap.stats),
                          "input_damage": {"records": cap.stats.corrupt_records,
                                           "regions": damage}})  # fmt: skip
        except KeyboardInterrupt:
            claim.stopped("interrupted", "stopped by a signal", keep_work=False)
            raise
        except BaseException as exc:
            claim.stopped("failed", describe(exc), keep_work=False)
            raise
        if verbosity() >= 0:
            _stdout().print(
                render.extract_summary(cap.stats, summary, out, time.perf_counter() - started)
            )


@command("streams")
def streams_cmd(
    captures: Captures,
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
    fmt: Annotated[StreamFormat, typer.Option("--format", help="Output format.")] = (
        StreamFormat.table
    ),
) -> None:
    """One row per session: packets, bytes, retransmissions, gaps, conflicts, close, history.

    Captures larger than ``--partition-rows`` packets are cut by flow into partitions
    (as for extract), so memory stays bounded; only the rows themselves are kept.
    """
    rows = _stream_rows([str(c) for c in captures], policy, checksums, jobs, partition_rows)
    if fmt is StreamFormat.table:
        _stdout().print(render.streams_table(rows))
    elif fmt is StreamFormat.csv:
        render.write_rows_csv(sys.stdout, rows)
    else:
        render.write_rows_jsonl(sys.stdout, rows)


def _stream_rows(
    paths: list[str], policy: str, checksums: str, jobs: int, partition_rows: int
) -> list[dict[str, Any]]:
    """Rows of the whole capture at once when it is small (by its files' size, at the
    smallest plausible frame size), else partition by partition."""
    if fits_whole(paths, partition_rows):
        with _open([Path(p) for p in paths]) as cap:
            return render.stream_rows(cap, policy, checksums)
    task = functools.partial(render.partition_stream_rows, policy=policy, checksums=checksums)

    def report(run: PartitionedRun) -> None:
        errors = run.capture_errors()
        render.report_error_list(_stderr(), errors, run.decode_stats().corrupt_records)

    parts = map_partitions(paths, task, jobs, None, partition_rows, report)
    rows = [r for part in parts for r in part]
    rows.sort(key=lambda r: r["stream"])
    return rows


@command()
def info(captures: Captures) -> None:
    """Summarise a capture: files, frames, TCP packets and the decoder's counts."""
    with _open(captures) as cap:
        _stdout().print(render.stats_summary(cap))


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tcpweave {tcpweave.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """Packet captures to the exact TCP byte streams the endpoints exchanged."""


@command("follow")
def follow_stream(
    capture: Annotated[Path, typer.Argument(help="Capture file.")],
    stream: Annotated[int, typer.Argument(help="Stream index, as tshark's tcp.stream.")],
    fmt: Annotated[FollowMode, typer.Option("--format", help="Output format.")] = (
        FollowMode.ASCII
    ),
) -> None:
    """Print one stream as `tshark -q -z follow,tcp,<format>,STREAM` does, byte for byte."""
    with _open([capture]) as cap:
        n = cap.flows.n_streams
        if not 0 <= stream < n:
            have = f"streams 0 to {n - 1}" if n else "no TCP stream"
            raise UsageError(f"{capture}: no stream {stream} (the capture has {have})")
        sys.stdout.write(render_follow(follow(cap.packets, cap.flows, cap.sources, stream), fmt))
        sys.stdout.flush()


from tcpweave.cli.audit import audit_cmd, compare_cmd  # noqa: E402 (registered after app exists)

command("audit")(audit_cmd)
command("compare")(compare_cmd)
