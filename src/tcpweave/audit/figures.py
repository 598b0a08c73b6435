"""The published accuracy figures of forensic TCP reassembly, computed from the tables.

The model is that of the forensic evaluations of TCP reassembly tools (Jäger
et al.-style accuracy figures): packet-level shares P_c (bad checksum), P_f (IP
fragments) and P_dH (captured short of the wire length); stream-level E
(sessions counted from TCP flags alone), S (streams the tool produced), their
difference and the shares I_p (invisible streams) and A_p (additional streams);
P_spec (4-tuples carrying several sessions); and the birthday bound P_b on a
client reusing a source port for one server. Each ratio is given with the
counts behind it, and None where its denominator is zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from tcpweave.decode.table import SYN, PacketTable, format_address
from tcpweave.enums import Checksum
from tcpweave.flows import Flows
from tcpweave.reassembly import Plan

from . import _kernels as k

#: Ephemeral port range size used by the published model: 2^16 - 1024 - 1
#: (every port above the well-known ones, as the model states it).
DEFAULT_PORT_RANGE = (1024, 65534)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass
class PacketFigures:
    """Over all captured TCP packets."""

    packets: int
    bad_checksum: int  # IPv4 header or TCP checksum bad
    fragmented: int  # rebuilt from IP fragments
    truncated: int  # caplen < wire length

    @property
    def P_c(self) -> float | None:
        return _ratio(self.bad_checksum, self.packets)

    @property
    def P_f(self) -> float | None:
        return _ratio(self.fragmented, self.packets)

    @property
    def P_dH(self) -> float | None:
        return _ratio(self.truncated, self.packets)


def packet_figures(packets: PacketTable) -> PacketFigures:
    bad = (packets.ip_checksum == Checksum.BAD) | (packets.tcp_checksum == Checksum.BAD)
    return PacketFigures(
        len(packets),
        int(np.count_nonzero(bad)),
        int(np.count_nonzero(packets.fragmented)),
        int(np.count_nonzero(packets.caplen < packets.wirelen)),
    )


@dataclass
class StreamFigures:
    """E against S, and 4-tuple reuse."""

    E: int  # sessions from flags alone
    S: int  # streams tcpweave produced (at least one byte in a direction)
    sessions: int  # every session tcpweave found, with or without bytes
    tuples: int
    reused_tuples: int  # 4-tuples with more than one flag-counted session
    #: per stream: flag-sessions opened by its packets (E's share) and produced (S's share)
    opened: np.ndarray = field(repr=False)
    produced: np.ndarray = field(repr=False)

    @property
    def delta(self) -> int:
        return self.E - self.S

    @property
    def I_p(self) -> float | None:
        return 1 - self.S / self.E if self.delta > 0 else None

    @property
    def A_p(self) -> float | None:
        return 1 - self.E / self.S if self.delta < 0 else None

    @property
    def P_spec(self) -> float | None:
        return _ratio(self.reused_tuples, self.tuples)

    def mismatches(self) -> np.ndarray:
        """Streams where E's and S's shares differ (they explain delta)."""
        return np.flatnonzero(self.opened != self.produced)


def stream_figures(packets: PacketTable, flows: Flows, plan: Plan) -> StreamFigures:
    n = len(packets)
    tuple_of_row = flows.tuple_index[flows.stream] if n else np.zeros(0, np.int64)
    order = np.argsort(tuple_of_row, kind="stable")
    opens = np.zeros(n, np.uint8)
    e_total = int(k.count_flag_sessions(order, tuple_of_row, packets.flags, opens))
    opened = np.bincount(flows.stream, weights=opens, minlength=flows.n_streams).astype(np.int64)
    produced = stream_has_bytes(flows, plan).astype(np.int64)
    n_tuples = len(np.unique(flows.tuple_index))
    per_tuple = np.bincount(tuple_of_row, weights=opens) if n else np.zeros(0)
    return StreamFigures(
        e_total,
        int(produced.sum()),
        flows.n_streams,
        n_tuples,
        int(np.count_nonzero(per_tuple > 1)),
        opened,
        produced,
    )


def stream_has_bytes(flows: Flows, plan: Plan) -> np.ndarray:
    """Per stream: does some direction have a stream length above zero (a file in extract)?"""
    out = np.zeros(flows.n_streams, np.bool_)
    d = plan.directions
    out[d["stream"][d["length"] > 0]] = True
    return out


def stream_kind(has_syn: bool, has_bytes: bool) -> str:
    """How a mismatching stream looks: handshake-only, mid-stream (no SYN), empty, or data."""
    if has_syn:
        return "data" if has_bytes else "handshake-only"
    return "mid-stream" if has_bytes else "no-syn-no-data"


def streams_with_syn(packets: PacketTable, flows: Flows) -> np.ndarray:
    syn = (packets.flags & SYN) != 0
    return np.bincount(flows.stream[syn], minlength=flows.n_streams) > 0


# ------------------------------------------------------------------ port reuse (P_b)


def port_range_size(port_range: tuple[int, int]) -> int:
    lo, hi = port_range
    return hi - lo + 1


@lru_cache(maxsize=8)
def _log_no_collision(p_r: int) -> np.ndarray:
    """``table[n]`` = log(P_r! / (P_r^n (P_r - n)!)) = sum_{i<n} log1p(-i/P_r), n = 0..P_r.

    Summed term by term with log1p, which stays exact to rounding where the
    quotient of factorials (or a difference of log-gammas) would cancel.
    """
    terms = np.log1p(-np.arange(p_r, dtype=np.float64) / p_r)
    return np.concatenate(([0.0], np.cumsum(terms)))


def birthday_probability(n: int, p_r: int) -> float:
    """P_b = 1 - P_r! / (P_r^n (P_r - n)!): chance that n connections drawn uniformly from
    P_r ephemeral ports reuse at least one port (1 when n > P_r)."""
    if n <= 1:
        return 0.0
    if n > p_r:
        return 1.0
    return float(-math.expm1(float(_log_no_collision(p_r)[n])))


@dataclass
class PortReuse:
    """Sessions grouped by (client address, server address, server port)."""

    port_range: tuple[int, int]
    groups: int
    expected: float  # expected number of groups where a client port repeats: sum of P_b
    observed: int  # groups where a client port does repeat
    top: list[dict[str, Any]]  # the largest groups: client, server, port, n, P_b, reused

    @property
    def P_r(self) -> int:
        return port_range_size(self.port_range)


#: bytes of a group key: client address (16), server address (16), server port (2, big-endian)
GROUP_KEY_BYTES = 34


@dataclass
class PortGroups:
    """The P_b groups of some sessions (the whole capture, or one partition of it), sorted by key.

    A group (client address, server address, server port) may span partitions, but a
    (group, client port) pair is one directed 4-tuple, which lies in one partition: the
    distinct client ports of a group therefore add up over partitions.
    """

    key: np.ndarray  # (groups, GROUP_KEY_BYTES) uint8
    sessions: np.ndarray  # int64 per group
    ports: np.ndarray  # int64 per group: distinct client ports
    first: np.ndarray  # int64 per group: (global) stream index of its first session
    version: np.ndarray  # IP version of that session


def port_groups(
    packets: PacketTable, flows: Flows, global_index: np.ndarray | None = None
) -> PortGroups:
    """Group the sessions of ``flows``; ``global_index`` renumbers them (default: as they are)."""
    first = flows.first_row
    by_client = (flows.direction[first] == 0)[:, None]
    c_addr = np.where(by_client, packets.src[first], packets.dst[first])
    s_addr = np.where(by_client, packets.dst[first], packets.src[first])
    c_port = np.where(by_client[:, 0], packets.sport[first], packets.dport[first])
    s_port = np.where(by_client[:, 0], packets.dport[first], packets.sport[first])
    port_bytes = s_port.astype(">u2").view(np.uint8).reshape(-1, 2)
    key = np.ascontiguousarray(np.concatenate([c_addr, s_addr, port_bytes], axis=1))
    _, rep, group_of = np.unique(_rows_as_void(key), return_index=True, return_inverse=True)
    group_of = group_of.reshape(-1)
    sizes = np.bincount(group_of, minlength=len(rep))
    pairs = np.unique(group_of.astype(np.int64) << 16 | c_port.astype(np.int64))
    streams = np.arange(flows.n_streams) if global_index is None else global_index
    return PortGroups(
        key[rep],
        sizes.astype(np.int64),
        np.bincount(pairs >> 16, minlength=len(rep)).astype(np.int64),
        np.asarray(streams, np.int64)[rep],  # sessions are numbered in order: rep is the first
        packets.ip_version[first[rep]].astype(np.uint8),
    )


def _rows_as_void(key: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(key).view(np.dtype((np.void, GROUP_KEY_BYTES))).reshape(-1)


def merge_port_groups(parts: list[PortGroups]) -> PortGroups:
    """The groups of all the parts' sessions together (as if grouped at once)."""
    if len(parts) == 1:
        return parts[0]
    if not parts:
        none = np.zeros(0, np.int64)
        return PortGroups(np.zeros((0, GROUP_KEY_BYTES), np.uint8), none, none, none, none)
    key = np.concatenate([p.key for p in parts])
    cat = {name: np.concatenate([getattr(p, name) for p in parts])
           for name in ("sessions", "ports", "first", "version")}  # fmt: skip
    _, group_of = np.unique(_rows_as_void(key), return_inverse=True)
    group_of = group_of.reshape(-1)
    n = int(group_of.max()) + 1 if len(group_of) else 0
    order = np.lexsort((cat["first"], group_of))  # per group, its earliest session first
    lead = order[np.flatnonzero(np.r_[True, np.diff(group_of[order]) != 0])] if n else order
    return PortGroups(
        key[lead],
        np.bincount(group_of, weights=cat["sessions"], minlength=n).astype(np.int64),
        np.bincount(group_of, weights=cat["ports"], minlength=n).astype(np.int64),
        cat["first"][lead].astype(np.int64),
        cat["version"][lead].astype(np.uint8),
    )


def port_reuse_of(groups: PortGroups, port_range: tuple[int, int], top: int = 10) -> PortReuse:
    """Per group: n sessions, P_b(n), and how many sessions reused a client port."""
    p_r = port_range_size(port_range)
    sizes = groups.sessions
    reused = sizes - groups.ports
    table = _log_no_collision(p_r)
    p_b = np.where(sizes > p_r, 1.0, -np.expm1(table[np.minimum(sizes, p_r)]))
    listed = []
    for g in np.argsort(-sizes, kind="stable")[:top].tolist():
        if sizes[g] < 2:
            break
        key, v = groups.key[g], int(groups.version[g])
        listed.append({
            "client": format_address(key[:16], v),
            "server": format_address(key[16:32], v),
            "port": int(key[32]) << 8 | int(key[33]),
            "n": int(sizes[g]),
            "P_b": float(p_b[g]),
            "reused": int(reused[g]),
        })  # fmt: skip
    return PortReuse(
        port_range, len(sizes), float(p_b.sum()), int(np.count_nonzero(reused)), listed
    )


def port_reuse(
    packets: PacketTable, flows: Flows, port_range: tuple[int, int], top: int = 10
) -> PortReuse:
    """Per group: n sessions, P_b(n), and how many sessions reused a client port."""
    return port_reuse_of(port_groups(packets, flows), port_range, top)
