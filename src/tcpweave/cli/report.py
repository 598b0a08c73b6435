"""``tcpweave report``: the capture as one self-contained HTML page (tcpweave.report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tcpweave.cli.audit import parse_port_range
from tcpweave.cli.guard import verbosity
from tcpweave.cli.options import (
    JOBS_DEFAULT,
    Captures,
    ChecksumOpt,
    JobsOpt,
    PartitionRowsOpt,
    PolicyOpt,
    open_run,
)
from tcpweave.run.settings import ROWS_PER_PARTITION

__all__ = ["GraphPacketsOpt", "report_cmd"]

#: the default of ``--graph-packets`` (tcpweave.report.graph.GRAPH_PACKETS, kept in step by
#: tests/test_report.py: the command line does not import the engine to read it)
GRAPH_PACKETS = 250_000

GraphPacketsOpt = Annotated[
    int,
    typer.Option(
        "--graph-packets",
        metavar="N",
        min=0,
        help="Embed graph data for sessions in stream order while their packets add up to "
        "at most N (about 40 bytes each); the page says how many were left out.",
    ),
]


def report_cmd(
    captures: Captures,
    out: Annotated[Path, typer.Option("-o", "--output", metavar="FILE", help="The HTML file.")],
    graph_packets: GraphPacketsOpt = GRAPH_PACKETS,
    streams_dir: Annotated[
        Path | None,
        typer.Option(
            "--streams-dir",
            metavar="DIR",
            help="Link each session to its stream files as DIR/streams.jsonl lists them "
            "(an extract output directory; links are relative to the page).",
        ),
    ] = None,
    port_range: Annotated[
        str,
        typer.Option(metavar="LOW-HIGH", help="Ephemeral port range for the audit's P_b."),
    ] = "1024-65534",
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
) -> None:
    """Write one self-contained HTML page: capture summary, audit figures, the session
    table, and per session a time-sequence graph and a byte map of each direction."""
    from tcpweave.report import write_report

    ports = parse_port_range(port_range)
    with open_run(captures, policy, checksums, jobs, partition_rows) as run:
        links = None if streams_dir is None else str(streams_dir)
        size = write_report(run, out, budget=graph_packets, port_range=ports, links_from=links)
    if verbosity() >= 0:
        Console(stderr=True, soft_wrap=True).print(f"wrote {escape(str(out))} ({size:,} bytes)")
