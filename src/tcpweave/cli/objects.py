"""``tcpweave objects``: HTTP/1.x message bodies to files, with DIR/objects.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tcpweave.cli.options import (
    JOBS_DEFAULT,
    Captures,
    ChecksumOpt,
    JobsOpt,
    PartitionRowsOpt,
    PolicyOpt,
    split_filter,
)
from tcpweave.run.settings import ROWS_PER_PARTITION

__all__ = ["objects"]

#: --max-decoded's default (framing/objects.py DEFAULT_MAX_DECODED: not imported here,
#: so that building the command line loads no engine)
MAX_DECODED = 256 << 20


def objects(
    captures: Captures,
    out: Annotated[Path, typer.Option("-o", "--output", metavar="DIR", help="Output directory.")],
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
    max_decoded: Annotated[
        int,
        typer.Option(
            "--max-decoded",
            metavar="BYTES",
            min=1,
            help="Largest decoded object: content decoding stops there and the object is "
            "marked truncated-decoding (bounds what a decompression bomb costs).",
        ),
    ] = MAX_DECODED,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replace an earlier tcpweave run in DIR (only the files it lists as its own).",
        ),
    ] = False,
) -> None:
    """Write the body of every HTTP/1.x message (de-chunked, content-decoded) to a file,
    with DIR/objects.jsonl: one line per object (docs/objects.md)."""
    from rich.console import Console

    from tcpweave.capture.inputs import stdin_spooled
    from tcpweave.run import Settings, executor_for
    from tcpweave.run.objects import write_objects

    files, bpf = split_filter(captures)
    settings = Settings.of(policy, checksums, 0.0, bpf)
    with stdin_spooled(files) as paths:
        summary = write_objects(paths, out, settings, max_decoded=max_decoded, force=force,
                                rows_per_partition=partition_rows,
                                executor=executor_for(jobs))  # fmt: skip
    states = ", ".join(f"{n} {s}" for s, n in summary["states"].items()) or "none"
    Console(soft_wrap=True).print(
        f"{summary['objects']} objects ({summary['bytes']} bytes) in {out}: {states}",
        markup=False, highlight=False,
    )  # fmt: skip
