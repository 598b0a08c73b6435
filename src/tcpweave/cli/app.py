"""The ``tcpweave`` command and its subcommands: parse, run (``tcpweave.run``), render.

Every command opens one run of the capture -- decoded whole when it is small, cut by flow
into partitions spilled to disk when it is not -- and calls one library function on it;
nothing here chooses a code path by size. What a command runs on is imported inside
it (cli/__init__.py says why).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

import tcpweave
from tcpweave.cli.carve import carve as carve_command
from tcpweave.cli.guard import fail, guarded, verbosity
from tcpweave.cli.objects import objects as objects_command
from tcpweave.cli.options import (
    JOBS_DEFAULT,
    Captures,
    ChecksumOpt,
    JobsOpt,
    PartitionRowsOpt,
    PolicyOpt,
    open_run,
    split_filter,
)
from tcpweave.cli.pdus import pdus as pdus_command
from tcpweave.enums import FollowMode
from tcpweave.errors import Interrupted, UsageError
from tcpweave.run.settings import ROWS_PER_PARTITION

if TYPE_CHECKING:
    from rich.console import Console

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
command("carve")(carve_command)
command("objects")(objects_command)


class PacketFormat(StrEnum):
    table = "table"
    csv = "csv"
    jsonl = "jsonl"


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
    zeek = "zeek"
    zeek_json = "zeek-json"


def _stdout() -> Console:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: do not squeeze tables into 80 columns
        console = Console(width=200)
    return console


def _stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # one line per message, however long


@command()
def packets(
    captures: Captures,
    limit: Annotated[
        int | None, typer.Option(metavar="N", help="Show at most N packets.", min=0)
    ] = None,
    fmt: Annotated[
        PacketFormat, typer.Option("--format", metavar="FORMAT", help="table, csv or jsonl.")
    ] = PacketFormat.table,
    parquet: Annotated[
        Path | None,
        typer.Option(
            "--parquet", metavar="FILE", help="Write the rows to FILE as Parquet instead."
        ),
    ] = None,
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
) -> None:
    """List the TCP packets of a capture (the packet table), with each packet's stream
    (as tshark's tcp.stream), session and direction."""
    from tcpweave.cli import render
    from tcpweave.run import packet_rows

    with open_run(captures, jobs=jobs, partition_rows=partition_rows) as run:
        windows = render.limited(packet_rows(run), limit)
        if parquet is not None:
            render.write_parquet(parquet, windows)
        elif fmt is PacketFormat.table:
            console = _stdout()
            console.print(render.packet_table(windows, run.decode_stats().tcp_packets))
        elif fmt is PacketFormat.csv:
            render.write_packets_csv(sys.stdout, windows)
        else:
            render.write_packets_jsonl(sys.stdout, windows)


@command()
def extract(
    captures: Captures,
    out: Annotated[
        Path | None, typer.Option("-o", "--output", metavar="DIR", help="Output directory.")
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(
            "--store",
            metavar="DIR",
            help="Write the streams as a Parquet dataset in DIR instead (a row per direction "
            "with its bytes; docs/store.md).",
        ),
    ] = None,
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    gaps: Annotated[
        GapMode,
        typer.Option(metavar="fill|omit", help="fill: keep stream offsets; omit: concatenate."),
    ] = GapMode.fill,
    layout: Annotated[
        Layout, typer.Option(metavar="tcpweave|tcpflow", help="File naming.")
    ] = Layout.tcpweave,
    jobs: JobsOpt = JOBS_DEFAULT,
    parquet: Annotated[
        bool,
        typer.Option("--parquet", help="Also write DIR/packets.parquet and DIR/plan.parquet."),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue an interrupted extraction of the same captures and options."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an earlier tcpweave run in DIR (only the files it lists as its own).",
        ),
    ] = False,
    workdir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Where to make the spill directory for partitions (default: inside "
            "DIR/.tcpweave); tcpweave makes and removes only its own directory there.",
        ),
    ] = None,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
    idle_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Silence after which a 4-tuple's next packet starts a new session "
            "(0: only the SYN rules split sessions).",
            min=0,
        ),
    ] = 0.0,
    scheduler: Annotated[
        str | None,
        typer.Option(
            metavar="tcp://HOST:PORT",
            help="Dask scheduler: run the partitions on its workers; DIR and the work "
            "directory must be on storage all workers see.",
        ),
    ] = None,
    stream: Annotated[
        str | None,
        typer.Option(
            "--stream",
            metavar="N[,M...]",
            help="Write only these streams (tcp.stream indexes); --parquet still covers all.",
        ),
    ] = None,
    pcap: Annotated[
        bool,
        typer.Option(
            "--pcap",
            help="Also each session's original records as a capture file "
            "beside its stream files (as `tcpweave carve` writes it).",
        ),
    ] = False,
    report: Annotated[
        bool,
        typer.Option(
            "--report",
            help="Also write DIR/report.html (tcpweave report), linked to the stream files.",
        ),
    ] = False,
) -> None:
    """Write each direction of each TCP session to a file, with DIR/streams.jsonl.

    A capture larger than one partition is cut by flow into partitions spilled to a work
    directory, so memory stays bounded whatever the capture's size.
    """
    from tcpweave.capture.inputs import stdin_spooled
    from tcpweave.cli import render

    started = time.perf_counter()
    if (out is None) == (store is None):
        raise UsageError("extract: give one of -o DIR (stream files) and --store DIR (Parquet)")
    out = out or store
    assert out is not None
    chosen = _stream_list(stream)
    files, bpf = split_filter(captures)
    if resume and "-" in files:
        raise UsageError("--resume: a capture read from standard input cannot be read again")
    try:
        with (
            render.phased_progress(_stderr()) as tick,
            stdin_spooled(files, str(workdir) if workdir else None) as paths,
        ):
            summary, run = tcpweave.extract(
                paths, out, policy=policy, checksums=checksums, layout=str(layout),
                gaps=str(gaps), jobs=jobs, workdir=str(workdir) if workdir else None,
                resume=resume, partition_rows=partition_rows, progress=tick, client=scheduler,
                idle_timeout=idle_timeout, force=force, parquet=parquet, streams=chosen, bpf=bpf,
                store=store is not None,
                pcap=pcap,
                report=report,
            )  # fmt: skip
    except Interrupted as exc:
        name = "SIGINT" if exc.signum == 2 else "SIGTERM" if exc.signum == 15 else exc.signum
        raise fail(
            f"interrupted by {name}: {exc.done} of {exc.total} partitions written; "
            f"{out}/{'index.parquet' if store else 'streams.jsonl'} lists the finished "
            f"streams, {out}/INCOMPLETE.json the "
            "partial ones; run again with --resume to finish",
            128 + exc.signum,
        ) from None
    stats = run.decode_stats()
    render.report_error_list(_stderr(), run.capture_errors(), stats.corrupt_records,
                             stats.skipped_bytes)  # fmt: skip
    if verbosity() >= 0:
        _stdout().print(render.extract_summary(stats, summary, out, time.perf_counter() - started))


def _stream_list(text: str | None) -> list[int] | None:
    """``--stream 3,7,9`` as indexes."""
    if text is None:
        return None
    try:
        chosen = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        msg = f"--stream: expected stream numbers separated by commas, not {text!r}"
        raise UsageError(msg) from None
    if not chosen or min(chosen) < 0:
        raise UsageError(f"--stream: expected stream numbers (0 or more), not {text!r}")
    return chosen


@command("streams")
def streams_cmd(
    captures: Captures,
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
    fmt: Annotated[
        StreamFormat,
        typer.Option(
            "--format",
            metavar="FORMAT",
            help="table, jsonl or csv (the session record, docs/records.md), zeek (Zeek's "
            "conn.log, TSV) or zeek-json (conn.log as Zeek's JSON writer).",
        ),
    ] = StreamFormat.table,
) -> None:
    """One row per session: packets, bytes, retransmissions, gaps, conflicts, close, history."""
    from tcpweave.cli import render
    from tcpweave.output.sessions import SESSION_RECORD_FIELDS, session_jsonl, session_records
    from tcpweave.output.zeek import write_conn_json, write_conn_tsv
    from tcpweave.run import sessions as run_sessions

    opened = datetime.now(UTC)
    with open_run(captures, policy, checksums, jobs, partition_rows) as run:
        table = run_sessions(run)
    if fmt is StreamFormat.zeek:
        write_conn_tsv(sys.stdout, table, opened, datetime.now(UTC))
    elif fmt is StreamFormat.zeek_json:
        write_conn_json(sys.stdout, table)
    elif fmt is StreamFormat.table:
        _stdout().print(render.streams_table(session_records(table)))
    elif fmt is StreamFormat.csv:
        render.write_csv(sys.stdout, SESSION_RECORD_FIELDS, session_records(table))
    else:
        sys.stdout.writelines(session_jsonl(table))


@command()
def info(
    captures: Captures,
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
) -> None:
    """Summarise a capture: files, frames, TCP packets and the decoder's counts."""
    from tcpweave.cli import render

    with open_run(captures, jobs=jobs, partition_rows=partition_rows) as run:
        console = _stdout()
        console.print(render.stats_summary(run.decode_stats(), len(run.paths)))
        if run.capture_errors():
            console.print(render.damage_table(run.capture_errors()))


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
def follow_cmd(
    capture: Annotated[Path, typer.Argument(metavar="CAPTURE", help="Capture file.")],
    stream: Annotated[
        int, typer.Argument(metavar="STREAM", help="Stream index, as tshark's tcp.stream.")
    ],
    fmt: Annotated[
        FollowMode,
        typer.Option("--format", metavar="FORMAT", help="ascii, hex, raw or yaml."),
    ] = FollowMode.ASCII,
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
) -> None:
    """Print one stream as `tshark -q -z follow,tcp,FORMAT,STREAM` does, byte for byte."""
    from tcpweave.output.follow import render_follow
    from tcpweave.run import follow_stream

    with open_run([capture], jobs=jobs, partition_rows=partition_rows) as run:
        found = follow_stream(run, stream)
    sys.stdout.write(render_follow(found, fmt))
    sys.stdout.flush()


from tcpweave.cli.audit import audit_cmd, compare_cmd  # noqa: E402 (registered after app exists)

command("audit")(audit_cmd)
command("compare")(compare_cmd)

from tcpweave.cli.report import report_cmd  # noqa: E402

command("report")(report_cmd)
