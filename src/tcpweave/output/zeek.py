"""Zeek's conn.log from the session table: the same sessions, in Zeek's words.

Theory of operation. The session table already holds everything a conn.log line says
(Zeek's history and conn_state are replayed by the history kernel, docs/sessions.md), so
this module only renames and formats: ``conn_records`` maps each session row onto Zeek's
``Conn::Info`` fields (client as originator), leaving unset what Zeek would leave unset,
and the two writers print those records as Zeek's ASCII writer does (TSV with its ``#``
header, which ``zeek-cut`` reads) or as its JSON writer does (``LogAscii::use_json``:
Zeek's field names, unset fields left out). The field list, types and the rules for
unset fields are Zeek's (scripts/base/protocols/conn/main.zeek, ``Conn::Info`` and
``set_conn``); docs/zeek.md says where the figures come from and how ``uid`` is made.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

__all__ = ["CONN_FIELDS", "conn_records", "conn_uid", "write_conn_json", "write_conn_tsv"]

#: conn.log's fields and Zeek types, in Zeek's order (Zeek 7: ``ip_proto`` last)
CONN_FIELDS: tuple[tuple[str, str], ...] = (
    ("ts", "time"),
    ("uid", "string"),
    ("id.orig_h", "addr"),
    ("id.orig_p", "port"),
    ("id.resp_h", "addr"),
    ("id.resp_p", "port"),
    ("proto", "enum"),
    ("service", "string"),
    ("duration", "interval"),
    ("orig_bytes", "count"),
    ("resp_bytes", "count"),
    ("conn_state", "string"),
    ("local_orig", "bool"),
    ("local_resp", "bool"),
    ("missed_bytes", "count"),
    ("history", "string"),
    ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"),
    ("resp_pkts", "count"),
    ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
    ("ip_proto", "count"),
)

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_UID_DIGITS = 17  # 62**17 > 2**96: every 96-bit number fits, so every uid has 18 characters
_IPPROTO_TCP = 6
_UID_KEY = ("client_addr_raw", "client_port", "server_addr_raw", "server_port", "first_ts",
            "session")  # fmt: skip
_COLUMNS = (
    "session", "client_addr", "client_port", "server_addr", "server_port", "client_addr_raw",
    "server_addr_raw", "first_ts", "last_ts", "length_c2s", "length_s2c", "gap_bytes_c2s",
    "gap_bytes_s2c", "packets_c2s", "packets_s2c", "ip_bytes_c2s", "ip_bytes_s2c", "history",
    "conn_state",
)  # fmt: skip


def conn_uid(client_raw: bytes, client_port: int, server_raw: bytes, server_port: int,
             start_ns: int, session: int) -> str:  # fmt: skip
    """A session's ``uid``: ``C`` and 17 base-62 digits of the first 96 bits of a BLAKE2b
    hash of its 16-byte client and server addresses, their ports, its first packet's time
    in nanoseconds and its index on the 4-tuple. The same session gets the same uid in any
    run, on any partitioning; Zeek's own uids are random, so they never match Zeek's."""
    key = b"".join((client_raw, client_port.to_bytes(2, "big"), server_raw,
                    server_port.to_bytes(2, "big"), start_ns.to_bytes(8, "big", signed=True),
                    session.to_bytes(8, "big")))  # fmt: skip
    value = int.from_bytes(hashlib.blake2b(key, digest_size=12).digest(), "big")
    digits = []
    for _ in range(_UID_DIGITS):
        value, d = divmod(value, 62)
        digits.append(_BASE62[d])
    return "C" + "".join(reversed(digits))


def _micro(ns: int) -> int:
    """Nanoseconds to microseconds, rounded (Zeek prints times and intervals to the µs)."""
    return (ns + 500) // 1000


def conn_records(sessions: pa.Table) -> Iterator[dict[str, Any]]:
    """One conn.log record per session row: Zeek's field names (``CONN_FIELDS``) in Zeek's
    order; a field Zeek would leave unset is None. Times (``ts``) and intervals
    (``duration``) are microseconds, as integers (the writers format them)."""
    col = {name: _values(sessions.column(name)) for name in _COLUMNS}
    for i in range(sessions.num_rows):
        row = {name: values[i] for name, values in col.items()}
        start, end = row["first_ts"], row["last_ts"]
        lasted = end > start  # set_conn: duration and sizes only for a duration above 0
        yield {
            "ts": _micro(start),
            "uid": conn_uid(*(row[k] for k in _UID_KEY)),
            "id.orig_h": row["client_addr"],
            "id.orig_p": row["client_port"],
            "id.resp_h": row["server_addr"],
            "id.resp_p": row["server_port"],
            "proto": "tcp",
            "service": None,  # tcpweave detects no application protocol
            "duration": _micro(end - start) if lasted else None,
            "orig_bytes": row["length_c2s"] if lasted else None,
            "resp_bytes": row["length_s2c"] if lasted else None,
            "conn_state": row["conn_state"],
            "local_orig": None,  # Site::local_nets is empty by default
            "local_resp": None,
            "missed_bytes": row["gap_bytes_c2s"] + row["gap_bytes_s2c"],
            "history": row["history"] or None,
            "orig_pkts": row["packets_c2s"],
            "orig_ip_bytes": row["ip_bytes_c2s"],
            "resp_pkts": row["packets_s2c"],
            "resp_ip_bytes": row["ip_bytes_s2c"],
            "tunnel_parents": None,
            "ip_proto": _IPPROTO_TCP,
        }


def _values(column: pa.ChunkedArray) -> list[Any]:
    """A column as plain Python values (timestamps as integer nanoseconds)."""
    if pa.types.is_timestamp(column.type):
        values: list[Any] = np.asarray(column.cast(pa.int64()).to_numpy()).tolist()
        return values
    return list(column.to_pylist())


def _micro_text(us: int) -> str:
    """Microseconds as Zeek's ASCII writer prints a time or an interval (``%.6f``)."""
    sign = "-" if us < 0 else ""
    whole, frac = divmod(abs(us), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"


def _tsv_value(value: Any, kind: str) -> str:
    if value is None:
        return "-"  # #unset_field
    if kind in ("time", "interval"):
        return _micro_text(value)
    if kind == "bool":
        return "T" if value else "F"
    text = str(value)
    return text if text else "(empty)"  # #empty_field


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d-%H-%M-%S")


def write_conn_tsv(out: TextIO, sessions: pa.Table, opened: datetime, closed: datetime) -> None:
    """conn.log as Zeek's ASCII writer writes it: the ``#`` header (separator, set
    separator, empty and unset markers, path, open time, fields, types), one tab-separated
    line per session, and the ``#close`` line. ``opened`` and ``closed`` are the times
    written on ``#open`` and ``#close``."""
    out.write("#separator \\x09\n")
    out.write("#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n")
    out.write(f"#open\t{_stamp(opened)}\n")
    out.write("#fields\t" + "\t".join(name for name, _ in CONN_FIELDS) + "\n")
    out.write("#types\t" + "\t".join(kind for _, kind in CONN_FIELDS) + "\n")
    for rec in conn_records(sessions):
        out.write("\t".join(_tsv_value(rec[n], k) for n, k in CONN_FIELDS) + "\n")
    out.write(f"#close\t{_stamp(closed)}\n")


def write_conn_json(out: TextIO, sessions: pa.Table) -> None:
    """conn.log as Zeek's JSON writer writes it: one object per line, Zeek's field names,
    unset fields left out, times and intervals as seconds (``JSON::TS_EPOCH``)."""
    for rec in conn_records(sessions):
        obj = {}
        for name, kind in CONN_FIELDS:
            value = rec[name]
            if value is None:
                continue
            obj[name] = value / 1e6 if kind in ("time", "interval") else value
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
