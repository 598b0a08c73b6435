"""What the report draws for a session: its time-sequence graph and its byte map.

Theory of operation. ``graph_partition`` runs on one partition (like each command's
per-partition function, run/commands.py) for the sessions chosen to be drawn, and returns
numpy columns, streams numbered as the capture's ``tcp.stream``:

* one row per packet of a chosen session, grouped by session, in capture order: ``t``
  (seconds since the session's first packet), ``dir`` (0 client->server), ``seq`` (the
  stream offset of the packet's first payload byte, unwrapped as the plan unwraps:
  offset 0 is the byte after the SYN), ``len`` (payload length as the headers claim, as
  tshark's ``tcp.len``), ``mark`` (``Mark``: what the plan did with the bytes), ``ack``
  (the acknowledged offset of the other direction; NaN without the ACK flag), ``win``
  (the advertised window, scaled as RFC 7323 §2.2-2.3 say when both SYNs carried the
  option; unscaled when a SYN was not captured), ``frame`` and ``flags``;
* the byte map: one row per range of a direction (``Span``: kept, gap, truncated,
  conflict, bad checksum), merged where kept ranges touch.

Which sessions: ``choose`` walks the session table in stream order and takes each session
whose packets still fit the budget; the page lists how many were left out (never silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from tcpweave.decode.table import ACK, SYN, PacketTable
from tcpweave.enums import Fate, GapReason
from tcpweave.reassembly import Plan
from tcpweave.run.partition import Partition

__all__ = ["GRAPH_PACKETS", "Graphs", "Mark", "Span", "choose", "graph_partition", "merge"]

#: packets of drawn sessions embedded in a report by default (about 40 bytes each)
GRAPH_PACKETS = 250_000

_MOD = 1 << 32
_HALF = 1 << 31


class Mark(IntEnum):
    """How a data segment is drawn: what the plan did with its bytes, the first that applies
    in this order (a segment partly new and partly a retransmission is new data)."""

    CONFLICT = 0  # some bytes differ from another copy of the same offsets
    BAD_CHECKSUM = 1  # dropped for its TCP checksum
    TRUNCATED = 2  # the capture cut some of its bytes off
    OUT_OF_ORDER = 3  # new bytes below the highest end placed before it
    NEW = 4  # new bytes, in order
    RETRANSMISSION = 5  # every byte held already, same content
    OTHER = 6  # not stream data: outside the window, after a reset or FIN, keep-alive...
    NO_DATA = 7  # no payload (not a segment of the graph)

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


class Span(IntEnum):
    """A range of the byte map of a direction."""

    KEPT = 0
    GAP = 1  # not captured
    TRUNCATED = 2  # carried on the wire, cut off by the capture
    CONFLICT = 3  # overlapping copies with different bytes (one kept, by the policy)
    BAD_CHECKSUM = 4  # a segment dropped for its checksum

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


# what each plan fate says about a segment, as bits (the order of ``Mark`` decides)
_CONFLICT, _BAD, _TRUNC, _NEW, _SAME, _OTHER = (1 << i for i in range(6))
_FATE_BITS = np.zeros(max(Fate) + 1, np.uint8)
for _f, _bit in (
    (Fate.NEW, _NEW),
    (Fate.RETRANSMISSION, _SAME),
    (Fate.OVERLAP_SAME, _SAME),
    (Fate.OVERLAP_CONFLICT_KEPT, _CONFLICT),
    (Fate.OVERLAP_CONFLICT_DROPPED, _CONFLICT),
    (Fate.BAD_CHECKSUM, _BAD),
    (Fate.TRUNCATED, _TRUNC),
):
    _FATE_BITS[_f] = _bit
for _f in Fate:
    _FATE_BITS[_f] = _FATE_BITS[_f] or _OTHER

PACKET_COLUMNS = {
    "session": np.int64,  # the capture's stream index
    "t": np.float64,
    "dir": np.uint8,
    "seq": np.float64,  # exact below 2**53 bytes
    "len": np.uint32,
    "mark": np.uint8,
    "ack": np.float64,
    "win": np.float64,
    "frame": np.uint32,
    "flags": np.uint16,
}
SPAN_COLUMNS = {
    "session": np.int64,
    "dir": np.uint8,
    "kind": np.uint8,
    "offset": np.float64,
    "length": np.float64,
}


@dataclass
class Graphs:
    """Packet and byte-map columns of the drawn sessions (one partition's, or merged), and
    each direction's stream length (``lengths``: session, dir, length)."""

    packets: dict[str, np.ndarray]
    spans: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray] = field(default_factory=dict)


def choose(packets_per_session: np.ndarray, budget: int) -> np.ndarray:
    """The sessions (stream indexes) drawn: in stream order, each whose packets still fit
    ``budget`` once the earlier ones taken are counted."""
    taken = np.zeros(len(packets_per_session), np.bool_)
    left = int(budget)
    # a running sum is exact while every session fits; only then does it need the walk below
    total = np.cumsum(packets_per_session)
    cut = int(np.searchsorted(total, left, side="right"))
    taken[:cut] = True
    left -= int(total[cut - 1]) if cut else 0
    for s in range(cut, len(packets_per_session)):
        n = int(packets_per_session[s])
        if n <= left:
            taken[s] = True
            left -= n
    return np.flatnonzero(taken)


def graph_partition(part: Partition, chosen: np.ndarray) -> Graphs:
    """The graph columns of the partition's sessions among ``chosen`` (global indexes)."""
    local = np.flatnonzero(np.isin(part.global_index, chosen))
    if not len(local):
        return _empty()
    the_plan = part.plan()
    p, flows = part.packets, part.flows
    wanted = np.zeros(flows.n_streams, np.bool_)
    wanted[local] = True
    rows = np.flatnonzero(wanted[flows.stream])
    rows = rows[np.lexsort((rows, flows.direction[rows], flows.stream[rows]))]
    stream, direction = flows.stream[rows], flows.direction[rows]
    slot = stream * 2 + direction
    base = _bases(the_plan, slot)
    flags = p.flags[rows]
    seq = _unwrap(p.seq[rows], base, _starts(slot)) + ((flags & SYN) != 0)
    ack, win = _acks(p, rows, slot, flags, _bases(the_plan, slot ^ 1))
    mark = _marks(p, the_plan, rows, slot, seq)
    capture_order = np.lexsort((rows, stream))  # by session, then as captured
    first_ts = np.full(flows.n_streams, np.iinfo(np.int64).max)
    np.minimum.at(first_ts, stream, p.ts_ns[rows])
    cols = {
        "session": part.global_index[stream],
        "t": (p.ts_ns[rows] - first_ts[stream]) / 1e9,
        "dir": direction,
        "seq": seq,
        "len": p.payload_len[rows],
        "mark": mark,
        "ack": ack,
        "win": win,
        "frame": np.minimum(p.frame[rows], np.iinfo(np.uint32).max),
        "flags": flags,
    }
    packets = {k: np.asarray(v, PACKET_COLUMNS[k])[capture_order] for k, v in cols.items()}
    spans, lengths = _spans(the_plan, wanted, part.global_index)
    return Graphs(packets, spans, lengths)


def _empty() -> Graphs:
    return Graphs(
        {k: np.zeros(0, t) for k, t in PACKET_COLUMNS.items()},
        {k: np.zeros(0, t) for k, t in SPAN_COLUMNS.items()},
        {"session": np.zeros(0, np.int64), "dir": np.zeros(0, np.uint8),
         "length": np.zeros(0, np.float64)},
    )  # fmt: skip


def merge(shares: list[Graphs]) -> Graphs:
    """The shares' columns in stream order (a session lies in one share)."""
    out = _empty()
    for table in ("packets", "spans", "lengths"):
        merged = getattr(out, table)
        for name in merged:
            merged[name] = np.concatenate(
                [merged[name], *(getattr(s, table)[name] for s in shares)]
            )
        order = np.argsort(merged["session"], kind="stable")
        setattr(out, table, {k: v[order] for k, v in merged.items()})
    return out


def _starts(key: np.ndarray) -> np.ndarray:
    """Mask of the rows where a run of equal keys starts."""
    out = np.ones(len(key), np.bool_)
    out[1:] = key[1:] != key[:-1]
    return out


def _bases(the_plan: Plan, slot: np.ndarray) -> np.ndarray:
    """The 32-bit seq of offset 0 of direction ``slot`` (stream * 2 + direction); -1 where the
    plan has no such direction."""
    d = the_plan.directions
    keys = np.asarray(d["stream"] * 2 + d["direction"], np.int64)
    if not len(keys):
        return np.full(len(slot), -1, np.int64)
    i = np.minimum(np.searchsorted(keys, slot), len(keys) - 1)
    return np.where(keys[i] == slot, np.asarray(d["base_seq"], np.int64)[i], -1)


def _unwrap(value: np.ndarray, base: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """32-bit ``value - base`` unwrapped along each run (``starts``): the first of a run is
    taken within 2**31 of 0, each next within 2**31 of the one before (RFC 9293 §3.4
    sequence arithmetic), as 64-bit integers."""
    rel = (value.astype(np.int64) - base) % _MOD
    step = np.empty(len(rel), np.int64)
    step[1:] = (np.diff(rel) + _HALF) % _MOD - _HALF
    first = np.flatnonzero(starts)
    step[first] = (rel[first] + _HALF) % _MOD - _HALF
    total = np.cumsum(step)
    before = np.concatenate(([0], total))[first]  # the sum up to each run's start
    return np.asarray(total - np.repeat(before, np.diff(np.append(first, len(rel)))))


def _acks(
    p: PacketTable, rows: np.ndarray, slot: np.ndarray, flags: np.ndarray, peer_base: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the offset of the other direction it acknowledges (NaN without ACK or without
    a peer), and that plus its scaled window."""
    has = ((flags & ACK) != 0) & (peer_base >= 0)
    ack = np.full(len(rows), np.nan)
    win = np.full(len(rows), np.nan)
    idx = np.flatnonzero(has)
    if not len(idx):
        return ack, win
    raw_ack = p.ack[rows[idx]]
    ack[idx] = _unwrap(raw_ack, peer_base[idx], _starts(slot[idx]))
    window = p.window[rows[idx]].astype(np.int64)
    shift = _shifts(p, rows, slot, flags)[idx]
    is_syn = (flags[idx] & SYN) != 0  # a SYN's own window is never scaled (RFC 7323 §2.2)
    win[idx] = ack[idx] + np.where(is_syn, window, window << shift)
    return ack, win


def _shifts(p: PacketTable, rows: np.ndarray, slot: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Per row: the Window Scale shift its sender announced in its SYN, where both SYNs of the
    session were captured with the option (RFC 7323 §2.2-2.3); else 0."""
    wscale = p.wscale[rows].astype(np.int64)
    syn = np.flatnonzero((flags & SYN) != 0)
    first_syn = np.full(int(slot.max()) + 2 if len(slot) else 0, -2, np.int64)  # -2: no SYN
    if len(syn):
        keys, at = np.unique(slot[syn], return_index=True)  # rows are in capture order per slot
        first_syn[keys] = wscale[syn[at]]  # -1: SYN without the option
    own, peer = first_syn[slot], first_syn[slot ^ 1]
    return np.where((own >= 0) & (peer >= 0), np.minimum(own, 14), 0)


def _marks(
    p: PacketTable, the_plan: Plan, rows: np.ndarray, slot: np.ndarray, seq: np.ndarray
) -> np.ndarray:
    """Each row's ``Mark``, from the fates of its plan rows."""
    payload = p.payload_len[rows]
    bits = np.zeros(len(p), np.uint8)
    r = the_plan.rows
    np.bitwise_or.at(bits, r["row"], _FATE_BITS[r["fate"]])
    b = bits[rows]
    ooo = _out_of_order(slot, seq, seq + payload, (b & _NEW) != 0)
    mark = np.select(
        [payload == 0, (b & _CONFLICT) != 0, (b & _BAD) != 0, (b & _TRUNC) != 0,
         ((b & _NEW) != 0) & ooo, (b & _NEW) != 0, (b & _SAME) != 0],
        [Mark.NO_DATA, Mark.CONFLICT, Mark.BAD_CHECKSUM, Mark.TRUNCATED, Mark.OUT_OF_ORDER,
         Mark.NEW, Mark.RETRANSMISSION],
        Mark.OTHER,
    )  # fmt: skip
    return np.asarray(mark, np.uint8)


def _out_of_order(
    slot: np.ndarray, start: np.ndarray, end: np.ndarray, new: np.ndarray
) -> np.ndarray:
    """Rows with new bytes that start below the highest end of the new bytes before them in
    their direction (the plan's out-of-order count, per segment). Rows are grouped by
    ``slot`` in capture order: a running maximum of ``run * size + end`` restarts at each
    run, its values above every earlier run's."""
    out = np.zeros(len(slot), np.bool_)
    if not new.any():
        return out
    lo = int(end[new].min())
    size = int(end[new].max()) - lo + 2
    run = np.cumsum(_starts(slot)) - 1
    if (int(run[-1]) + 1) * size >= 1 << 62:  # too wide to key by run: one run at a time
        return _out_of_order_by_run(slot, start, end, new)
    key = run * size + np.where(new, end - lo + 1, 0)
    before = np.maximum.accumulate(key)
    same = ~_starts(slot)
    high = before[:-1] - run[1:] * size  # 0: no new bytes before in the run
    out[1:] = new[1:] & same[1:] & (high > 0) & (start[1:] - lo + 1 < high)
    return out


def _out_of_order_by_run(
    slot: np.ndarray, start: np.ndarray, end: np.ndarray, new: np.ndarray
) -> np.ndarray:
    out = np.zeros(len(slot), np.bool_)
    first = np.flatnonzero(_starts(slot))
    for a, b in zip(first.tolist(), np.append(first[1:], len(slot)).tolist(), strict=True):
        ends = np.where(new[a:b], end[a:b], np.iinfo(np.int64).min)
        before = np.maximum.accumulate(ends)
        out[a + 1 : b] = new[a + 1 : b] & (start[a + 1 : b] < before[:-1])
    return out


def _spans(
    the_plan: Plan, wanted: np.ndarray, global_index: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The byte map of the wanted sessions, and each direction's length."""
    r = the_plan.rows
    take = wanted[r["stream"]]
    fate = r["fate"][take]
    stream, direction = r["stream"][take], r["direction"][take]
    offset, length = r["stream_offset"][take], r["length"][take]
    kept = Fate.kept_in(fate)
    parts = [_merged(stream[kept], direction[kept], offset[kept], length[kept])]
    bad = fate == Fate.BAD_CHECKSUM
    parts.append((stream[bad], direction[bad], np.full(int(bad.sum()), Span.BAD_CHECKSUM),
                  offset[bad], length[bad]))  # fmt: skip
    g = the_plan.gaps
    gt = wanted[g["stream"]]
    kind = np.where(g["reason"][gt] == GapReason.TRUNCATED, Span.TRUNCATED, Span.GAP)
    parts.append((g["stream"][gt], g["direction"][gt], kind, g["offset"][gt], g["length"][gt]))
    c = the_plan.conflicts
    ct = wanted[c["stream"]]
    parts.append((c["stream"][ct], c["direction"][ct], np.full(int(ct.sum()), Span.CONFLICT),
                  c["offset"][ct], c["length"][ct]))  # fmt: skip
    cols = [np.concatenate([np.asarray(part[i]) for part in parts]) for i in range(5)]
    spans = {name: np.asarray(col, SPAN_COLUMNS[name]) for name, col in
             zip(SPAN_COLUMNS, [global_index[cols[0]], *cols[1:]], strict=True)}  # fmt: skip
    d = the_plan.directions
    dt = wanted[d["stream"]]
    lengths: dict[str, np.ndarray] = {
        "session": np.asarray(global_index[d["stream"][dt]], np.int64),
        "dir": np.asarray(d["direction"][dt], np.uint8),
        "length": np.asarray(d["length"][dt], np.float64),
    }
    return spans, lengths


def _merged(
    stream: np.ndarray, direction: np.ndarray, offset: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Kept ranges (sorted by direction and offset, disjoint) merged where they touch."""
    end = offset + length
    start = np.ones(len(offset), np.bool_)
    start[1:] = (
        (stream[1:] != stream[:-1]) | (direction[1:] != direction[:-1]) | (offset[1:] != end[:-1])
    )
    first = np.flatnonzero(start)
    last = np.append(first[1:], len(offset)) - 1
    return (stream[first], direction[first], np.full(len(first), Span.KEPT), offset[first],
            end[last] - offset[first])  # fmt: skip
