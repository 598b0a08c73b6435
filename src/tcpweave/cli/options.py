"""Options shared by several subcommands (one definition, one help text)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from tcpweave.output.partitions import MIN_FRAME_BYTES, ROWS_PER_PARTITION

__all__ = ["JOBS_DEFAULT", "ROWS_PER_PARTITION", "JobsOpt", "PartitionRowsOpt", "fits_whole"]

#: worker processes by default: all cores
JOBS_DEFAULT = os.cpu_count() or 1

JobsOpt = Annotated[
    int, typer.Option(help="Worker processes for big captures (default: all cores).", min=1)
]
PartitionRowsOpt = Annotated[
    int, typer.Option(help="Packets per partition (bounds each worker's memory).", min=1)
]


def fits_whole(paths: list[str], partition_rows: int) -> bool:
    """Can the capture be processed whole? Its files' size at the smallest plausible frame
    size says it holds no more packets than one partition."""
    return sum(os.path.getsize(p) for p in paths) // MIN_FRAME_BYTES <= partition_rows
