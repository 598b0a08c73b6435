"""Rendering of library objects for the terminal, CSV and JSON Lines."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

import tcpweave
from tcpweave.decode.table import PACKET_COLUMNS, format_address

_FLAG_LETTERS = "FSRPAUECN"  # FIN SYN RST PSH ACK URG ECE CWR AE, bit 0 upwards
_MAX_ERRORS_SHOWN = 20


def flag_string(flags: int) -> str:
    """Flags as letters in bit order (e.g. ``SA`` for SYN+ACK), ``.`` when none is set."""
    return "".join(c for i, c in enumerate(_FLAG_LETTERS) if flags >> i & 1) or "."


def _rows(cap: tcpweave.Capture, n: int) -> Iterator[dict[str, Any]]:
    """Packet-table rows as plain values: addresses printed, enums as their strings."""
    p = cap.packets
    cols = {name: getattr(p, name)[:n] for name, _, shape in PACKET_COLUMNS if not shape}
    versions = p.ip_version[:n]
    src, dst = p.src[:n], p.dst[:n]
    for i in range(n):
        row: dict[str, Any] = {}
        for name, values in cols.items():
            row[name] = values[i].item()
        row["src"] = format_address(src[i], int(versions[i]))
        row["dst"] = format_address(dst[i], int(versions[i]))
        row["ip_checksum"] = str(tcpweave.Checksum(row["ip_checksum"]))
        row["tcp_checksum"] = str(tcpweave.Checksum(row["tcp_checksum"]))
        yield row


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name, _, _ in PACKET_COLUMNS}


def write_jsonl(out: TextIO, cap: tcpweave.Capture, n: int) -> None:
    for row in _rows(cap, n):
        out.write(json.dumps(_ordered(row)) + "\n")


def write_csv(out: TextIO, cap: tcpweave.Capture, n: int) -> None:
    writer = csv.DictWriter(out, fieldnames=[name for name, _, _ in PACKET_COLUMNS])
    writer.writeheader()
    for row in _rows(cap, n):
        writer.writerow(_ordered(row))


def packet_table(cap: tcpweave.Capture, n: int) -> Table:
    table = Table(title=f"{len(cap.packets)} TCP packets", title_justify="left")
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
    ):
        table.add_column(head, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in _rows(cap, n):
        table.add_row(
            str(row["frame"]),
            f"{row['ts_ns'] / 1e9:.6f}",
            _endpoint(row["src"], row["sport"]),
            _endpoint(row["dst"], row["dport"]),
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
        )
    return table


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def stats_summary(cap: tcpweave.Capture) -> Table:
    s = cap.stats
    table = Table(title="capture", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    files = [src for src in cap.sources if src.format != "defrag"]
    table.add_row("files", str(len(files)))
    for label, value in (
        ("frames", s.frames),
        ("TCP packets", s.tcp_packets),
        ("not IP", s.non_ip),
        ("IP but not TCP", s.non_tcp),
        ("IP fragments", s.fragmented),
        ("datagrams reassembled", s.reassembled),
        ("fragment overlaps", s.fragment_overlaps),
        ("fragments dropped", s.fragments_dropped),
        ("truncated TCP packets", s.truncated),
        ("bad IPv4 header checksums", s.bad_ip_checksum),
        ("bad TCP checksums", s.bad_tcp_checksum),
        ("malformed headers", s.malformed),
        ("headers cut short", s.truncated_headers),
        ("corrupt records", s.corrupt_records),
    ):
        table.add_row(label, f"{value:,}")
    for lt, count in sorted(s.unknown_link_types.items()):
        table.add_row(f"unknown link type {lt}", f"{count:,}")
    return table


def report_errors(console: Console, cap: tcpweave.Capture) -> None:
    """Damaged records go to stderr, one line each (file, byte offset, what was wrong)."""
    for err in cap.errors[:_MAX_ERRORS_SHOWN]:
        console.print(f"[yellow]warning:[/] {err}", highlight=False)
    hidden = cap.stats.corrupt_records - min(len(cap.errors), _MAX_ERRORS_SHOWN)
    if hidden > 0:
        console.print(f"[yellow]warning:[/] … and {hidden} more damaged records", highlight=False)
