"""The session table: one row per TCP session, as an Arrow table.

Theory of operation. Everything per packet has already been done by the earlier stages
(flows: stream and direction of each packet; reassembly: the plan's per-direction
facts, gaps and conflicts); this module only scatters those per-direction figures into a
client->server and a server->client column per session, with numpy. Two things are
computed here: the session's time span, from its packets' timestamps (the earliest and
the latest, so a capture at the epoch is as good as any), and its Zeek-style
``history``, by the ``build_histories`` kernel, which replays Zeek's TCP endpoint model
over the session's packets in capture order (docs/sessions.md: the letters, their rules
and where tcpweave's sessions differ from Zeek's connections). Addresses are printed once
per distinct address, never per packet.

The table is the library's answer to "what sessions are there": ``tcpweave streams``
renders it, and data tools take it as is (``Capture.sessions()``). A partition of a big
capture gives the same rows for its sessions, numbered by ``global_index``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.decode.table import PacketTable, format_address
from tcpweave.enums import Checksum, Close, ConnState
from tcpweave.flows import Flows
from tcpweave.output._history import (
    CLOSED,
    ESTABLISHED,
    INACTIVE,
    PARTIAL,
    RESET,
    SYN_ACK_SENT,
    SYN_SENT,
)
from tcpweave.output._kernels import build_histories
from tcpweave.reassembly import Plan

__all__ = [
    "SESSION_RECORD_FIELDS",
    "SESSION_SCHEMA",
    "session_jsonl",
    "session_records",
    "session_table",
]

_CLOSE_TYPE = pa.dictionary(pa.int8(), pa.string())
_CONN_STATE_TYPE = pa.dictionary(pa.int8(), pa.string())
_TIME = pa.timestamp("ns", tz="UTC")

#: (plan directions column, table column stem): one ``<stem>_c2s`` and one ``<stem>_s2c``
_PER_DIRECTION = (
    ("packets", "packets"),  # packets captured in the direction
    ("bytes", "bytes"),  # stream bytes kept (gaps excluded)
    ("length", "length"),  # stream length, gaps included (offset past the last byte or FIN)
    ("retransmitted_bytes", "retransmitted_bytes"),  # bytes seen again, same content
    ("out_of_order", "out_of_order"),  # segments that filled a hole below the highest end
    ("gaps", "gaps"),  # holes in the stream (not captured, or cut short)
    (None, "gap_bytes"),  # bytes in those holes
    ("conflicts", "conflicts"),  # overlaps whose bytes differ
    (None, "ip_bytes"),  # IP-level bytes sent, as the headers claim (Zeek's orig_ip_bytes)
)

SESSION_SCHEMA = pa.schema(
    [
        ("stream", pa.int64()),  # as Wireshark's tcp.stream (order of first packet)
        ("session", pa.int64()),  # index among the sessions of the same 4-tuple
        ("ip_version", pa.uint8()),
        ("client_addr", pa.string()),
        ("client_port", pa.uint16()),
        ("server_addr", pa.string()),
        ("server_port", pa.uint16()),
        ("client_addr_raw", pa.binary(16)),  # IPv4 as IPv4-mapped IPv6, as the packet table
        ("server_addr_raw", pa.binary(16)),
        ("first_ts", _TIME),  # earliest packet
        ("last_ts", _TIME),  # latest packet
        ("duration_s", pa.float64()),
        *[(f"{stem}_{d}", pa.int64()) for _, stem in _PER_DIRECTION for d in ("c2s", "s2c")],
        ("close_c2s", _CLOSE_TYPE),  # tcpweave.Close: open, fin, rst
        ("close_s2c", _CLOSE_TYPE),
        ("close", _CLOSE_TYPE),  # open, fin, half-closed, rst
        ("history", pa.string()),  # Zeek conn.log history (docs/sessions.md)
        ("conn_state", _CONN_STATE_TYPE),  # Zeek conn.log conn_state (tcpweave.ConnState)
    ]
)


#: the session record of JSON Lines and CSV (docs/schemas/session.schema.json, version 1):
#: every column of the table but the 16-byte addresses, in the table's order
SESSION_RECORD_FIELDS = tuple(f.name for f in SESSION_SCHEMA if not f.name.endswith("_raw"))


def session_records(table: pa.Table) -> list[dict[str, Any]]:
    """The session table as records for JSON and CSV (docs/records.md): the fields
    ``SESSION_RECORD_FIELDS``, times as float epoch seconds, states as their strings."""
    cols: dict[str, list[Any]] = {}
    for name in SESSION_RECORD_FIELDS:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            cols[name] = (column.cast(pa.int64()).to_numpy() / 1e9).tolist()
        else:
            cols[name] = column.to_pylist()
    return [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(), strict=True)]


#: sessions per chunk of ``session_jsonl``'s text
JSONL_ROWS = 1 << 13
#: a string JSON writes as it is between quotes (``json.dumps``, ASCII only: no quote,
#: backslash or control character)
_PLAIN = re.compile(r"[ !#-\[\]-~]*")


def session_jsonl(table: pa.Table) -> Iterator[str]:
    """The session records as JSON Lines, the text ``json.dumps`` gives for each record of
    ``session_records`` (its separators and float forms), a chunk of JSONL_ROWS lines at a
    time. Each column of a chunk is turned into JSON texts at once, and a line is one ``%`` format:
    half the time of a dict and a ``json.dumps`` per session."""
    line = "{" + ", ".join(f"{json.dumps(name)}: %s" for name in SESSION_RECORD_FIELDS) + "}\n"
    for lo in range(0, table.num_rows, JSONL_ROWS):  # a chunk's texts at a time: bounded memory
        chunk = table.slice(lo, JSONL_ROWS)
        texts = [_json_texts(chunk.column(name)) for name in SESSION_RECORD_FIELDS]
        yield "".join([line % row for row in zip(*texts, strict=True)])


def _json_texts(column: pa.ChunkedArray) -> list[str]:
    """Each value of ``column`` as ``json.dumps`` writes it (timestamps as float epoch
    seconds, dictionary values as their strings, as ``session_records`` gives them)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    if column.null_count:
        return [json.dumps(v) for v in column.to_pylist()]
    if pa.types.is_timestamp(kind):
        return _float_texts((column.cast(pa.int64()).to_numpy() / 1e9).tolist())
    if pa.types.is_integer(kind):
        return list(map(str, column.to_numpy().tolist()))
    if pa.types.is_floating(kind):
        return _float_texts(column.to_numpy().tolist())
    if pa.types.is_string(kind):
        values = column.to_pylist()
        if _PLAIN.fullmatch("".join(values)):
            return [f'"{v}"' for v in values]
        return [json.dumps(v) for v in values]
    return [json.dumps(v) for v in column.to_pylist()]


def _float_texts(values: list[float]) -> list[str]:
    """Floats as ``json.dumps`` writes them: ``repr``, but ``NaN`` and ``Infinity``."""
    if all(map(math.isfinite, values)):
        return list(map(float.__repr__, values))
    return [json.dumps(v) for v in values]


def session_table(
    packets: PacketTable, flows: Flows, plan: Plan, global_index: np.ndarray | None = None
) -> pa.Table:
    """One row per session of ``flows`` (schema ``SESSION_SCHEMA``), in stream order.

    ``global_index`` maps the local stream numbers of a partition to the capture's.
    """
    n = flows.n_streams
    order, bounds = _by_session(flows)
    ts = packets.ts_ns[order]
    start = np.minimum.reduceat(ts, bounds[:-1]) if n else np.zeros(0, np.int64)
    end = np.maximum.reduceat(ts, bounds[:-1]) if n else np.zeros(0, np.int64)
    facts = _per_direction(plan, n)
    facts["ip_bytes"] = _ip_bytes(packets, flows, n)
    cols: dict[str, Any] = {
        "stream": np.arange(n) if global_index is None else np.asarray(global_index),
        "session": flows.session,
        "ip_version": packets.ip_version[flows.first_row],
        **_endpoints(packets, flows),
        "first_ts": pa.array(start, _TIME),
        "last_ts": pa.array(end, _TIME),
        "duration_s": (end - start) / 1e9,
    }
    for _, stem in _PER_DIRECTION:
        cols[f"{stem}_c2s"], cols[f"{stem}_s2c"] = facts[stem][:, 0], facts[stem][:, 1]
    close = Close.of_directions(facts["rst"], facts["fin"])
    cols["close_c2s"], cols["close_s2c"] = _close_array(close[:, 0]), _close_array(close[:, 1])
    cols["close"] = _close_array(Close.of_sessions(close[:, 0], close[:, 1]))
    history, states = _histories(packets, flows, order, bounds, facts["drops_bad_checksums"])
    cols["history"] = history
    cols["conn_state"] = _conn_state_array(
        conn_states(states, facts["length"], history.to_numpy(zero_copy_only=False))
    )
    arrays = [c if isinstance(c, pa.Array) else pa.array(c, f.type)
              for f, c in ((f, cols[f.name]) for f in SESSION_SCHEMA)]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=SESSION_SCHEMA)


def _by_session(flows: Flows) -> tuple[np.ndarray, np.ndarray]:
    """Packet-table rows grouped by session (capture order inside), and each group's bounds."""
    order = np.argsort(flows.stream, kind="stable")
    counts = np.bincount(flows.stream, minlength=flows.n_streams)
    return order, np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def _per_direction(plan: Plan, n: int) -> dict[str, np.ndarray]:
    """The plan's per-direction figures as (session, direction) arrays; 0 where a direction
    carried no packet."""
    d = plan.directions
    slot = np.asarray(d["stream"] * 2 + d["direction"], np.int64)
    out: dict[str, np.ndarray] = {}
    names = [(col, stem) for col, stem in _PER_DIRECTION if col]
    for col, stem in [*names, ("rst", "rst"), ("fin", "fin")]:
        out[stem] = _scatter(slot, d[col], n, np.int64)
    out["drops_bad_checksums"] = _scatter(slot, d["drops_bad_checksums"], n, np.bool_)
    g = plan.gaps
    gap_slot = np.asarray(g["stream"] * 2 + g["direction"], np.int64)
    gap_bytes = np.zeros(2 * n, np.int64)
    np.add.at(gap_bytes, gap_slot, np.asarray(g["length"], np.int64))
    out["gap_bytes"] = gap_bytes.reshape(n, 2)
    return out


def _scatter(slot: np.ndarray, values: np.ndarray, n: int, dtype: Any) -> np.ndarray:
    out = np.zeros(2 * n, dtype)
    out[slot] = values
    return out.reshape(n, 2)


def _ip_bytes(packets: PacketTable, flows: Flows, n: int) -> np.ndarray:
    """IP-level bytes per (session, direction): each packet's IP total length as its headers
    claim, taken as a minimal IP header (20 bytes for IPv4, 40 for IPv6; options and
    extension headers are not in the packet table) plus its TCP header and payload."""
    ip_header = np.where(packets.ip_version == 4, 20, 40)
    sizes = ip_header + packets.tcp_header_len.astype(np.int64) + packets.payload_len
    slot = flows.stream.astype(np.int64) * 2 + flows.direction
    return np.bincount(slot, weights=sizes, minlength=2 * n).astype(np.int64).reshape(n, 2)


#: Zeek's RSTOS0 test on the history: a SYN, no SYN-ACK, ACK, FIN, gap or odd flags, a RST
_RSTOS0_HISTORY = re.compile(r"\^?S[^HAFGIQ]*R.*")


def conn_states(states: np.ndarray, length: np.ndarray, history: np.ndarray) -> np.ndarray:
    """Each session's ``ConnState`` from its endpoints' final states in Zeek's model
    (``states``: client, server), its stream lengths (Zeek's endpoint ``size``) and its
    history: Zeek's ``conn_state`` (scripts/base/protocols/conn/main.zeek), its tests taken
    in the same order, client as originator."""
    os_, rs = states[:, 0], states[:, 1]
    o_inactive = (os_ == INACTIVE) | (os_ == PARTIAL)
    r_inactive = (rs == INACTIVE) | (rs == PARTIAL)
    no_bytes = (length[:, 0] == 0) & (length[:, 1] == 0)
    rejected = (os_ == SYN_SENT) | (os_ == SYN_ACK_SENT) | ((os_ == RESET) & no_bytes)
    rstos0 = np.zeros(len(os_), np.bool_)  # the regex only where Zeek's rule asks for it
    for i in np.flatnonzero((os_ == RESET) & (rs != RESET) & r_inactive).tolist():
        rstos0[i] = _RSTOS0_HISTORY.fullmatch(history[i]) is not None
    s = ConnState
    rules = [
        (rs == RESET, np.where(rejected, s.REJ, np.where(o_inactive, s.RSTRH, s.RSTR))),
        (os_ == RESET, np.where(r_inactive, np.where(rstos0, s.RSTOS0, s.OTH), s.RSTO)),
        ((rs == CLOSED) & (os_ == CLOSED), s.SF),
        (os_ == CLOSED, np.where(r_inactive, s.SH, s.S2)),
        (rs == CLOSED, np.where(o_inactive, s.SHR, s.S3)),
        ((os_ == SYN_SENT) & (rs == INACTIVE), s.S0),
        ((os_ == ESTABLISHED) & (rs == ESTABLISHED), s.S1),
    ]
    conds = [c for c, _ in rules]
    values = [np.broadcast_to(np.asarray(v, np.int8), os_.shape) for _, v in rules]
    return np.select(conds, values, int(s.OTH)).astype(np.int8)


def _conn_state_array(codes: np.ndarray) -> pa.DictionaryArray:
    names = pa.array([str(c) for c in ConnState])
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), names)


def _close_array(codes: np.ndarray) -> pa.DictionaryArray:
    names = pa.array([str(c) for c in Close])
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), names)


def _endpoints(packets: PacketTable, flows: Flows) -> dict[str, Any]:
    """Client and server of each session, from its first packet and the flows' roles."""
    first = flows.first_row
    by_client = (flows.direction[first] == 0)[:, None]
    src, dst = packets.src[first], packets.dst[first]
    sport, dport = packets.sport[first], packets.dport[first]
    client_raw = np.where(by_client, src, dst)
    server_raw = np.where(by_client, dst, src)
    version = packets.ip_version[first]
    printed = _printed(np.concatenate([client_raw, server_raw]), np.tile(version, 2))
    return {
        "client_addr": printed[: len(first)],
        "client_port": np.where(by_client[:, 0], sport, dport),
        "server_addr": printed[len(first) :],
        "server_port": np.where(by_client[:, 0], dport, sport),
        "client_addr_raw": _binary16(client_raw),
        "server_addr_raw": _binary16(server_raw),
    }


def _printed(raw: np.ndarray, version: np.ndarray) -> np.ndarray:
    """Printed addresses, each distinct (address, version) formatted once."""
    keyed = np.concatenate([raw, version[:, None].astype(np.uint8)], axis=1)
    keys = np.ascontiguousarray(keyed).view(np.dtype((np.void, 17)))[:, 0]
    uniq, index = np.unique(keys, return_inverse=True)
    as_bytes = np.frombuffer(uniq.tobytes(), np.uint8).reshape(-1, 17)
    text = [format_address(row[:16], int(row[16])) for row in as_bytes]
    return np.array([*text, ""], dtype=object)[:-1][index.ravel()]


def _binary16(raw: np.ndarray) -> pa.Array:
    raw = np.ascontiguousarray(raw, np.uint8)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), len(raw), [None, pa.py_buffer(raw)])


def _histories(
    packets: PacketTable,
    flows: Flows,
    order: np.ndarray,
    bounds: np.ndarray,
    drops_bad: np.ndarray,
) -> tuple[pa.Array, np.ndarray]:
    """Each session's history string, from the kernel's letters (one buffer, no per-session
    Python), and its endpoints' final states in Zeek's model (client, server). A packet
    counts as a bad checksum ('C') where the checksum mode dropped it."""
    n = flows.n_streams
    dropped = drops_bad.reshape(-1)[flows.stream * 2 + flows.direction]
    bad = dropped & (packets.tcp_checksum == Checksum.BAD)
    flipped = flows.direction[flows.first_row] != 0  # the client did not send the first packet
    args = (order, bounds, flows.direction, packets.flags, packets.seq, packets.ack,
            packets.window, packets.payload_len, packets.payload_caplen, bad, flipped)  # fmt: skip
    ends = np.zeros(n, np.int64)
    states = np.zeros((n, 2), np.int8)
    out = np.empty(16 * n + 64, np.uint8)
    total = int(build_histories(*args, out, ends, states))
    if total > out.size:  # longer than guessed: once more, at the exact size
        out = np.empty(total, np.uint8)
        build_histories(*args, out, ends, states)
    # 32-bit offsets: a table of one capture, or of one partition, stays far below 2 GiB
    offsets = np.concatenate(([0], ends)).astype(np.int32)
    history = pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out[:total])]
    )
    return history, states
