"""``tcpweave pdus``: cut streams into PDUs with a framer, or export a Wireshark Lua dissector."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from tcpweave.cli.options import (
    JOBS_DEFAULT,
    ChecksumOpt,
    JobsOpt,
    PartitionRowsOpt,
    PolicyOpt,
    open_run,
)
from tcpweave.errors import UsageError
from tcpweave.run.settings import ROWS_PER_PARTITION

if TYPE_CHECKING:
    from rich.table import Table

    from tcpweave.framing import Framer, Pdus

__all__ = ["pdus"]

PREVIEW_BYTES = 24


class PduFormat(StrEnum):
    table = "table"
    jsonl = "jsonl"


def pdus(
    captures: Annotated[
        list[Path] | None, typer.Argument(help="Capture file(s), read as one capture.")
    ] = None,
    framer: Annotated[
        str,
        typer.Option(
            "--framer",
            show_default=False,
            help="length:offset=O,size=S,endian=big|little,adjust=A,max=M,min=N,magic=0x..; "
            "magic:...; delimiter:delim=\\r\\n,max=M; fixed:size=N; varint:adjust=A; "
            "http; tls; dns; modbus; or module:Class.  [required]",
        ),
    ] = "",
    stream: Annotated[
        list[int] | None, typer.Option("--stream", help="Only this stream (repeatable).")
    ] = None,
    fmt: Annotated[PduFormat, typer.Option("--format", help="Output format.")] = PduFormat.table,
    data: Annotated[bool, typer.Option("--data", help="jsonl: add each PDU's bytes (hex).")] = (
        False
    ),
    policy: PolicyOpt = "first",
    checksums: ChecksumOpt = "auto",
    jobs: JobsOpt = JOBS_DEFAULT,
    partition_rows: PartitionRowsOpt = ROWS_PER_PARTITION,
    export: Annotated[
        Path | None,
        typer.Option("--export-lua", help="Write a Wireshark Lua dissector for the framer."),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="TCP port (with --export-lua).")] = (
        None
    ),
    proto: Annotated[
        str, typer.Option("--proto", help="Protocol name in the Lua dissector.")
    ] = "tcpweave",
) -> None:
    """Cut each direction of each TCP session into PDUs (messages) with a framer."""
    from tcpweave.framing.spec import parse_framer
    from tcpweave.run import pdu_windows
    from tcpweave.run import pdus as run_pdus

    if not framer:
        raise UsageError("pdus: give --framer (for example --framer http, or length:size=2)")
    chosen = parse_framer(framer)
    if export is not None:
        _export(chosen, export, port, proto, framer)
        return
    if not captures:
        raise typer.BadParameter("give a capture file (or --export-lua)")
    with open_run(captures, policy, checksums, jobs, partition_rows) as run:
        if fmt is PduFormat.table:
            console = Console() if Console().is_terminal else Console(width=200)
            console.print(pdu_table(run_pdus(run, chosen, stream, data=True)))
            return
        for window in pdu_windows(run, chosen, stream, data=data):  # bounded memory
            write_jsonl(sys.stdout, window, data)


def _export(framer: Framer, out: Path, port: int | None, proto: str, spec: str) -> None:
    from tcpweave.framing.lua import export_lua

    if port is None:
        raise typer.BadParameter("--export-lua needs --port")
    out.write_text(export_lua(framer, port, proto, spec))
    note = f"wrote {escape(str(out))} (decode TCP port {port} as {proto})"
    Console(stderr=True, soft_wrap=True).print(note)


def _preview(data: bytes) -> str:
    text = data[:PREVIEW_BYTES].decode("latin-1")
    shown = "".join(c if 32 <= ord(c) < 127 else "." for c in text)
    return escape(shown + ("…" if len(data) > PREVIEW_BYTES else ""))


def pdu_table(found: Pdus) -> Table:
    from rich.table import Table

    damaged = int(found.damaged.sum())
    table = Table(
        title=f"{len(found)} PDUs ({found.framer}), {damaged} damaged, "
        f"{found.skipped_bytes} bytes skipped",
        title_justify="left",
    )
    for head, justify in (
        ("stream", "right"),
        ("dir", "left"),
        ("offset", "right"),
        ("length", "right"),
        ("frames", "right"),
        ("time", "right"),
        ("state", "left"),
        ("data", "left"),
    ):
        table.add_column(head, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for p in found:
        frames = str(p.last_frame) if p.first_frame == p.last_frame else (
            f"{p.first_frame}-{p.last_frame} ({p.frames})"
        )  # fmt: skip
        table.add_row(
            str(p.stream),
            "c2s" if p.direction == 0 else "s2c",
            str(p.stream_offset),
            str(p.length),
            frames,
            f"{p.last_ts_ns / 1e9:.6f}",
            str(p.state),
            _preview(p.data),
        )
    return table


def write_jsonl(out: TextIO, found: Pdus, with_data: bool) -> None:
    for p in found:
        record: dict[str, Any] = {
            "stream": p.stream,
            "direction": "c2s" if p.direction == 0 else "s2c",
            "stream_offset": p.stream_offset,
            "length": p.length,
            "first_frame": p.first_frame,
            "last_frame": p.last_frame,
            "frames": p.frames,
            "first_ts": p.first_ts_ns / 1e9,
            "last_ts": p.last_ts_ns / 1e9,
            "state": str(p.state),
            "damaged": p.damaged,
        }
        if with_data:
            record["data"] = p.data.hex()
        out.write(orjson.dumps(record).decode() + "\n")
