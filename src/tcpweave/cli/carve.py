"""``tcpweave carve``: the records of chosen sessions, as a capture file of their own."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tcpweave.cli.guard import verbosity
from tcpweave.cli.options import JOBS_DEFAULT, Captures, JobsOpt, PartitionRowsOpt, open_run
from tcpweave.run.settings import ROWS_PER_PARTITION

__all__ = ["carve"]


class CarveFormat(StrEnum):
    auto = "auto"
    pcap = "pcap"
    pcapng = "pcapng"


def carve(
    captures: Captures,
    stream: Annotated[
        str,
        typer.Option("--stream", metavar="N[,M...]",
                     help="The sessions to carve (tcp.stream indexes).", show_default=False),
    ],
    out: Annotated[Path, typer.Option("-o", "--output", metavar="FILE", help="Capture to write.")],
    fmt: Annotated[
        CarveFormat,
        typer.Option("--format", metavar="FORMAT",
                     help="auto (pcapng for a .pcapng name, or when the records' link types "
                     "differ; else pcap), pcap or pcapng."),
    ] = CarveFormat.auto,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    idle_timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", min=0,
                     help="Silence after which a 4-tuple's next packet starts a new session "
                     "(as extract's)."),
    ] = 0.0,
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
) -> None:  # fmt: skip
    """Write every record of the chosen sessions -- handshake, retransmissions, each
    fragment of their datagrams -- to FILE, verbatim, in capture order, with the original
    timestamps and link types; tshark's follow of the carved file is that of the stream in
    the capture."""
    from tcpweave.cli.app import _stream_list
    from tcpweave.run.carving import carve as run_carve

    chosen = _stream_list(stream) or []
    with open_run(captures, jobs=jobs, partition_rows=partition_rows,
                  idle_timeout=idle_timeout) as run:  # fmt: skip
        done = run_carve(run, chosen, out, fmt=str(fmt), force=force)
    if verbosity() >= 0:
        typer.echo(f"{out}: {done.records} records of {done.streams} "
                   f"session{'s' * (done.streams != 1)} ({done.format})")  # fmt: skip
