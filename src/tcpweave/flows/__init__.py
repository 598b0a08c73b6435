"""flows/: conversation, session and direction of every packet.

The 4-tuple of each packet is made order-free (its two endpoints sorted) and, for a
packet that came through an IP tunnel, joined by the tunnel's identity (``tunnel_key``:
kind, the id where it is the same both ways, the outer addresses as an unordered pair),
so that one inner 4-tuple in two tunnels is two flows (docs/encapsulations.md). The
packets of each key are walked in capture order and split into sessions,
and sessions are numbered by their first packet, as Wireshark numbers
``tcp.stream``. ``direction`` is 0 from client to server, 1 back. ``session`` numbers
the streams of one 4-tuple, whatever tunnel each came through (file names of the
tcpflow layout are made from it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tcpweave.decode.table import PacketTable, tunnel_key
from tcpweave.flows import _kernels as k

__all__ = ["Flows", "assign"]


@dataclass
class Flows:
    """Per-packet ``stream`` and ``direction``, and per-stream facts."""

    stream: np.ndarray  # int64 per packet-table row
    direction: np.ndarray  # uint8 per row: 0 client->server
    first_row: np.ndarray  # per stream: packet-table row of its first packet
    client_side: np.ndarray  # per stream: which endpoint side is the client
    session: np.ndarray  # per stream: index among the sessions of its 4-tuple (any tunnel)
    tuple_index: np.ndarray  # per stream: index of its flow key (order-free 4-tuple, tunnel)

    @property
    def n_streams(self) -> int:
        return len(self.first_row)


def _endpoint_keys(addr: np.ndarray, port: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    words = np.ascontiguousarray(addr).view(">u8")  # big-endian: numeric order = byte order
    return words[:, 0], words[:, 1], port.astype(np.uint64)


def assign(packets: PacketTable, idle_timeout_ns: int = 0) -> Flows:
    """Give every packet its stream (session index) and direction."""
    n = len(packets)
    a = _endpoint_keys(packets.src, packets.sport)
    b = _endpoint_keys(packets.dst, packets.dport)
    a_gt_b = (a[0] > b[0]) | ((a[0] == b[0]) & ((a[1] > b[1]) | ((a[1] == b[1]) & (a[2] > b[2]))))
    side = a_gt_b.astype(np.uint8)  # 0: sent by the lower endpoint
    tunnel = tunnel_key(packets.columns)
    keys = np.empty((6 if tunnel is None else 6 + len(tunnel), n), np.uint64)
    for i in range(3):
        keys[i] = np.where(a_gt_b, b[i], a[i])
        keys[i + 3] = np.where(a_gt_b, a[i], b[i])
    if tunnel is not None:
        keys[6:] = tunnel
    flow = np.empty(n, np.int64)
    bare = None  # sessions are counted per 4-tuple, whatever tunnel they are in
    with np.errstate(over="ignore"):  # the hash multiplies modulo 2^64 on purpose
        k.number_tuples(keys, flow)
        if tunnel is not None:
            bare = np.empty(n, np.int64)
            k.number_tuples(keys[:6], bare)
    del keys, a, b, a_gt_b  # before the per-packet arrays of the sessions are made
    order = np.argsort(flow, kind="stable")
    session = np.empty(n, np.int64)
    first_row = np.empty(n, np.int64)
    n_sessions = k.split_sessions(
        order,
        flow,
        side,
        packets.flags,
        packets.seq.astype(np.int64),
        packets.ts_ns,
        packets.sport,
        packets.dport,
        idle_timeout_ns,
        session,
        first_row,
    )
    first_row = first_row[:n_sessions]
    client_side = np.empty(n_sessions, np.int8)
    k.assign_roles(
        order, session, side, packets.flags, packets.sport, packets.dport, n_sessions, client_side
    )
    # streams are numbered by their first packet, like tcp.stream
    by_first = np.argsort(first_row, kind="stable")
    rank = np.empty(n_sessions, np.int64)
    rank[by_first] = np.arange(n_sessions)
    stream = rank[session]
    direction = (side != client_side[session]).astype(np.uint8)
    first_row = first_row[by_first]
    client_side = client_side[by_first]
    tuple_index = flow[first_row]
    four_tuple = tuple_index if bare is None else bare[first_row]
    return Flows(
        stream, direction, first_row, client_side, _session_numbers(four_tuple), tuple_index
    )


def _session_numbers(tuple_index: np.ndarray) -> np.ndarray:
    """Index of each stream among the streams of its 4-tuple (0, 1, ... in stream order)."""
    order = np.argsort(tuple_index, kind="stable")
    sorted_t = tuple_index[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_t)) + 1]
    counter = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    out = np.empty(len(order), np.int64)
    out[order] = counter
    return out
