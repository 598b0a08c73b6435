"""Rendering of library objects for the terminal, CSV and JSON Lines."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

import tcpweave
from tcpweave.cli.guard import note_damage, verbosity
from tcpweave.decode.table import (
    PACKET_COLUMNS,
    flag_string,
    format_address,
    format_tunnel_address,
)

_MAX_ERRORS_SHOWN = 20


PACKET_FIELDS = [name for name, _, _ in PACKET_COLUMNS] + ["stream", "session", "direction"]
_ADDRESSES = ("src", "dst", "tunnel_src", "tunnel_dst")
#: packet columns read as Python values (the addresses' bytes, the checksum states' names)
_STRINGS = (*_ADDRESSES, "ip_checksum", "tcp_checksum")


def limited(windows: Iterable[pa.Table], limit: int | None) -> Iterator[pa.Table]:
    """The windows of a table, cut after ``limit`` rows in all (all when None)."""
    left = limit
    for window in windows:
        if left is not None:
            if left <= 0:
                return
            window = window.slice(0, left)
            left -= len(window)
        yield window


def _rows(windows: Iterable[pa.Table]) -> Iterator[dict[str, Any]]:
    """Packet rows as plain values: addresses printed, enums as their strings."""
    for window in windows:
        cols = {name: window.column(name).to_numpy(zero_copy_only=False) for name in PACKET_FIELDS
                if name not in (*_STRINGS, "ts_ns")}  # fmt: skip
        cols["ts_ns"] = window.column("ts_ns").cast(pa.int64()).to_numpy()
        raw = {name: window.column(name).to_pylist() for name in _STRINGS}
        for i in range(len(window)):
            row: dict[str, Any] = {name: values[i].item() for name, values in cols.items()}
            version = row["ip_version"]
            row["src"] = format_address(np.frombuffer(raw["src"][i], np.uint8), version)
            row["dst"] = format_address(np.frombuffer(raw["dst"][i], np.uint8), version)
            tunnel = tcpweave.Encapsulation(row["tunnel"])
            row["tunnel"] = str(tunnel) if tunnel else ""
            for name in ("tunnel_src", "tunnel_dst"):
                row[name] = format_tunnel_address(raw[name][i]) if tunnel else ""
            row["ip_checksum"] = raw["ip_checksum"][i]  # the states' names (dictionary)
            row["tcp_checksum"] = raw["tcp_checksum"][i]
            row["direction"] = "c2s" if row["direction"] == 0 else "s2c"
            yield {name: row[name] for name in PACKET_FIELDS}


def write_packets_jsonl(out: TextIO, windows: Iterable[pa.Table]) -> None:
    for row in _rows(windows):
        out.write(json.dumps(row) + "\n")


def write_packets_csv(out: TextIO, windows: Iterable[pa.Table]) -> None:
    write_csv(out, PACKET_FIELDS, _rows(windows))


def write_parquet(path: Any, windows: Iterable[pa.Table]) -> None:
    """The windows of one table into one Parquet file (a row group or more each)."""
    import pyarrow.parquet as pq

    writer = None
    try:
        for window in windows:
            if writer is None:
                writer = pq.ParquetWriter(str(path), window.schema)
            writer.write_table(window)
    finally:
        if writer is not None:
            writer.close()


def packet_table(windows: Iterable[pa.Table], total: int) -> Table:
    table = Table(title=f"{total:,} TCP packet{'' if total == 1 else 's'}", title_justify="left")
    for head, justify in (
        ("frame", "right"),
        ("time", "right"),
        ("source", "left"),
        ("destination", "left"),
        ("flags", "left"),
        ("seq", "right"),
        ("ack", "right"),
        ("win", "right"),
        ("len", "right"),
        ("ip", "left"),
        ("tcp", "left"),
        ("stream", "right"),
    ):
        table.add_column(head, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in _rows(windows):
        table.add_row(
            str(row["frame"]),
            f"{row['ts_ns'] / 1e9:.6f}",
            endpoint(row["src"], row["sport"]),
            endpoint(row["dst"], row["dport"]),
            flag_string(row["flags"]),
            str(row["seq"]),
            str(row["ack"]),
            str(row["window"]),
            f"{row['payload_len']}"
            + (
                ""
                if row["payload_caplen"] == row["payload_len"]
                else f" ({row['payload_caplen']} captured)"
            ),
            row["ip_checksum"],
            row["tcp_checksum"],
            f"{row['stream']} {row['direction']}",
        )
    return table


def _endpoint_text(addr: str, port: int) -> str:
    """``addr:port`` as people write it (``[v6]:port``, RFC 3986 §3.2.2): for data formats."""
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def endpoint(addr: str, port: int) -> str:
    """``addr:port`` escaped for a rich table cell: for terminal tables only, never for data
    formats."""
    return escape(_endpoint_text(addr, port))


def damage_table(errors: list[Any]) -> Table:
    """Every damaged region the readers reported: file, byte offset, bytes skipped, reason."""
    table = Table(title="damaged input", title_justify="left")
    for name, justify in (("file", "left"), ("offset", "right"), ("skipped", "right"),
                          ("reason", "left")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for e in errors:
        skipped = "" if e.skipped is None else f"{e.skipped:,}"
        offset = "" if e.offset is None else str(e.offset)
        table.add_row(escape(e.path), offset, skipped, escape(e.reason))
    return table


def stats_summary(s: Any, files: int) -> Table:
    """The decoder's counts (``DecodeStats``) of a capture of ``files`` files."""
    table = Table(title="capture", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("files", str(files))
    for label, value in s.summary_rows():
        table.add_row(label, f"{value:,}")
    return table


def report_errors(console: Console, cap: tcpweave.Capture) -> None:
    """Damaged records go to stderr, one line each (file, byte offset, what was wrong)."""
    report_error_list(console, cap.errors, cap.stats.corrupt_records, cap.stats.skipped_bytes)


def report_error_list(
    console: Console, errors: list[Any], corrupt_records: int, skipped_bytes: int = 0
) -> None:
    """Each damaged record on a line (the first few), and the command's exit status 3."""
    note_damage(corrupt_records, skipped_bytes)
    if verbosity() < 0:
        return
    shown = len(errors) if verbosity() > 0 else _MAX_ERRORS_SHOWN
    for err in errors[:shown]:
        console.print(f"[yellow]warning:[/] {err}", highlight=False)
    hidden = corrupt_records - min(len(errors), shown)
    if hidden > 0:
        console.print(f"[yellow]warning:[/] … and {hidden} more damaged records", highlight=False)


@contextmanager
def progress(console: Console, label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on long runs (shown only on a terminal); yields the advance callback."""
    if total < 2000 or not console.is_terminal or verbosity() < 0:
        yield lambda n: None
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def phased_progress(console: Console) -> Iterator[Callable[[str, int, int, int], None]]:
    """Progress of a partitioned extraction: bytes decoded (with packets/s), then streams written.

    The callback takes (phase, advance, total, packets); nothing is drawn off a terminal.
    """
    if not console.is_terminal or verbosity() < 0:
        yield lambda phase, n, total, packets: None
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} {task.fields[unit]}"),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}
        started = time.perf_counter()
        packets = [0]

        def tick(phase: str, n: int, total: int, n_packets: int) -> None:
            if phase not in tasks:
                unit = "bytes" if phase == "decode" else "streams"
                tasks[phase] = bar.add_task(phase, total=total, unit=unit, rate="")
            packets[0] += n_packets
            rate = packets[0] / max(time.perf_counter() - started, 1e-9)
            bar.update(tasks[phase], advance=n, rate=f"{rate:,.0f} pkt/s" if packets[0] else "")

        yield tick


def extract_summary(stats: Any, summary: Any, out: Any, seconds: float) -> Table:
    table = Table(title=f"extracted to {out}", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    s = stats
    for label, value in (
        ("frames read", f"{s.frames:,}"),
        ("TCP packets", f"{s.tcp_packets:,}"),
        ("sessions", f"{summary.streams:,}"),
        ("directions", f"{summary.directions:,}"),
        ("files written", f"{summary.files:,}"),
        ("stream bytes", f"{summary.bytes:,}"),
        ("gaps", f"{summary.gaps:,} ({summary.gap_bytes:,} bytes)"),
        ("overlap conflicts", f"{summary.conflicts:,}"),
        ("bad TCP checksums", f"{s.bad_tcp_checksum:,}"),
        ("truncated packets", f"{s.truncated:,}"),
        ("time", f"{seconds:.2f} s"),
    ):
        table.add_row(label, value)
    return table


def streams_table(records: list[dict[str, Any]]) -> Table:
    """Session records (``session_records``) as a table for people: endpoints as
    ``addr:port``, the start as ISO-8601 UTC, one figure per direction or both summed."""
    n = len(records)
    table = Table(title=f"{n:,} TCP session{'' if n == 1 else 's'}", title_justify="left")
    heads = ("stream", "start (UTC)", "client", "server", "pkts →", "pkts ←", "bytes →",
             "bytes ←", "retx", "ooo", "gaps", "confl", "secs", "close", "state",
             "history")  # fmt: skip
    for h in heads:
        left = h in ("start (UTC)", "client", "server", "close", "state", "history")
        table.add_column(h, no_wrap=True, justify="left" if left else "right")
    for r in records:
        both = {k: r[f"{k}_c2s"] + r[f"{k}_s2c"] for k in _SUMMED}
        table.add_row(
            str(r["stream"]),
            iso_utc(r["first_ts"]),
            endpoint(r["client_addr"], r["client_port"]),
            endpoint(r["server_addr"], r["server_port"]),
            str(r["packets_c2s"]),
            str(r["packets_s2c"]),
            f"{r['bytes_c2s']:,}",
            f"{r['bytes_s2c']:,}",
            f"{both['retransmitted_bytes']:,}",
            str(both["out_of_order"]),
            str(both["gaps"]),
            str(both["conflicts"]),
            f"{r['duration_s']:.3f}",
            r["close"],
            r["conn_state"],
            r["history"],
        )
    return table


_SUMMED = ("retransmitted_bytes", "out_of_order", "gaps", "conflicts")


def iso_utc(epoch_s: float) -> str:
    """Epoch seconds as ISO-8601 UTC to the microsecond (``2023-11-14T22:13:20.000000Z``),
    the form of times in tables meant for people."""
    when = datetime.fromtimestamp(epoch_s, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_rows_jsonl(out: TextIO, rows: Iterable[dict[str, Any]]) -> None:
    for r in rows:
        out.write(json.dumps(r) + "\n")


def _csv_cell(value: Any) -> Any:
    """One convention for every CSV tcpweave writes: booleans as JSON writes them
    (``true``/``false``, as pyarrow's CSV writer does), nothing as an empty cell."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def write_csv(out: TextIO, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Rows as CSV with a header: ``\n`` line endings (as pyarrow's CSV writer, which
    writes the audit matrix), booleans ``true``/``false``, quoting only where needed."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([_csv_cell(row[name]) for name in fields])
