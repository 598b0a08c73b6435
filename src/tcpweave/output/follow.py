"""The follow view: what ``tshark -q -z follow,tcp,<mode>,<stream>`` prints, byte for byte.

Theory of operation: the frames of one ``tcp.stream`` are replayed in capture
order through an emulation of Wireshark's Follow TCP tap (TShark 4.0.17; rules in
docs/wireshark-follow-tcp.md, the few found since are marked "observed" below),
which yields chunks (node, frame, time, bytes) in the order the tap accepts them;
``render_follow`` prints them in one of the four modes. Sequence numbers are made
relative as the TCP dissector does, because the tap's "not started yet" test
(next expected == 0) is made on relative numbers.

This view reproduces Wireshark's output *with its quirks*, and so differs on
purpose from ``extract`` / ``Capture.streams()`` (tcpweave's own reassembly):

* node 0 is the source of the first frame the tap sees, not the SYN sender; a
  frame cut by the snap length inside its TCP options is never seen (observed);
* a direction starts at its first frame's sequence number: earlier data arriving
  later is dropped as old; a direction whose first frame has relative seq 0 (its
  base taken from the peer's ack - 1) starts again at its next frame (observed);
* a SYN-ACK with a new ISN moves the relative base of its direction (observed);
* FIN consumes no sequence number; data after FIN, on RST and after RST is shown;
* the first copy of a byte wins, silently; a partly new retransmission adds
  only its new tail;
* out-of-order segments are held back and released in arrival order (the first
  held segment that reaches the expected number wins, not the lowest);
* a hole hides everything after it in that direction unless the peer
  acknowledges past the start of the held data; then the text
  ``[N bytes missing in capture file]`` plus a NUL (its own length, unrelated to
  N, so later hex offsets shift) stands for the hole, with time 0;
* bad TCP checksums are ignored; a truncated segment advances by its wire
  length but shows only its captured bytes;
* consecutive segments are separate chunks, never merged.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tcpweave.capture import Source
from tcpweave.decode.table import ACK, SYN, PacketTable, format_address
from tcpweave.enums import FollowMode
from tcpweave.flows import Flows

__all__ = ["FollowChunk", "FollowMode", "FollowStream", "Node", "follow", "render_follow"]

_MOD = 1 << 32
_HALF = 1 << 31
SEPARATOR = "=" * 67 + "\n"
_PRINTABLE = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))
_ASCII_VIEW = bytes(b if b in (0x0A, 0x0D) else _PRINTABLE[b] for b in range(256))


@dataclass(frozen=True)
class Node:
    """One end of the followed conversation, as Wireshark names it."""

    host: str
    port: int
    ipv6: bool


@dataclass(frozen=True)
class FollowChunk:
    """Bytes Wireshark's follow tap accepted, in acceptance order.

    ``ts_ns`` is None for a "bytes missing" placeholder (shown as time 0); its
    ``frame`` is then the frame whose acknowledgement released it.
    """

    node: int
    frame: int
    ts_ns: int | None
    data: bytes


@dataclass(frozen=True)
class FollowStream:
    """Everything the follow output shows: the stream index, its nodes, its chunks."""

    stream: int
    nodes: tuple[Node, Node] | None  # None: the stream index does not exist
    chunks: list[FollowChunk] = field(default_factory=list)


def _lt(a: int, b: int) -> bool:
    """Wireshark's LT_SEQ: a before b in 32-bit sequence space."""
    return a != b and (a - b) % _MOD >= _HALF


@dataclass
class _Held:
    seq: int
    data: bytes
    frame: int
    ts_ns: int | None


@dataclass
class _Direction:
    """Follow-tap state of one direction (``seq``, ``bytes_written``, ``fragments``)."""

    next_seq: int = 0
    written: int = 0
    held: list[_Held] = field(default_factory=list)


class _Tap:
    """Replays one stream's segments through the rules of Wireshark's follow tap."""

    def __init__(self) -> None:
        self.dirs = (_Direction(), _Direction())
        self.chunks: list[FollowChunk] = []

    def _emit(self, node: int, frame: int, ts_ns: int | None, data: bytes) -> None:
        self.chunks.append(FollowChunk(node, frame, ts_ns, data))

    def segment(
        self, node: int, seq: int, ack: int, seg_len: int, data: bytes, frame: int, ts_ns: int
    ) -> None:
        """One frame, with relative ``seq`` (+1 on SYN) and ``ack`` as the tap receives them."""
        peer = self.dirs[1 - node]
        if peer.held:
            while self._release(1 - node, ack, frame, use_ack=True):
                pass
        d = self.dirs[node]
        if d.written == 0 and d.next_seq == 0:  # Wireshark's "not initialised yet" test
            d.next_seq = seq
        if _lt(seq, d.next_seq):
            end = (seq + seg_len) % _MOD
            if _lt(d.next_seq, end):  # a retransmission with new bytes at its end
                cut = (d.next_seq - seq) % _MOD
                data = data[cut:]
                seq, seg_len = d.next_seq, (end - d.next_seq) % _MOD
        if not data or _lt(seq, d.next_seq):
            return
        if seq == d.next_seq:
            d.next_seq = (d.next_seq + seg_len) % _MOD
            d.written += len(data)
            self._emit(node, frame, ts_ns, data)
            while self._release(node, 0, frame, use_ack=False):
                pass
        else:
            d.held.append(_Held(seq, data, frame, ts_ns))

    def _release(self, node: int, ack: int, frame: int, use_ack: bool) -> bool:
        """Take the first held segment (arrival order) that reaches ``next``; True if one went.

        With ``use_ack``, a peer acknowledgement past the lowest held segment stands in
        for the missing bytes with Wireshark's placeholder text.
        """
        d = self.dirs[node]
        if not d.held:
            return False
        lowest = d.held[0].seq
        for i, h in enumerate(d.held):
            if _lt(h.seq, lowest):
                lowest = h.seq
            if _lt(h.seq, d.next_seq):
                end = (h.seq + len(h.data)) % _MOD
                if _lt(d.next_seq, end):
                    cut = (d.next_seq - h.seq) % _MOD
                    if len(h.data) > cut:
                        self._emit(node, h.frame, h.ts_ns, h.data[cut:])
                    d.next_seq = (d.next_seq + len(h.data) - cut) % _MOD
                del d.held[i]
                return True
            if h.seq == d.next_seq:
                self._emit(node, h.frame, h.ts_ns, h.data)
                d.next_seq = (d.next_seq + len(h.data)) % _MOD
                del d.held[i]
                return True
        if use_ack and _lt(lowest, ack):
            missing = (lowest - d.next_seq) % _MOD
            missing = missing - _MOD if missing >= _HALF else missing  # printed as a C int
            self._emit(node, frame, None, f"[{missing} bytes missing in capture file]\0".encode())
            d.next_seq = lowest
            return True
        return False


def _node(packets: PacketTable, row: int, src: bool) -> Node:
    p = packets
    v = int(p.ip_version[row])
    addr = p.src[row] if src else p.dst[row]
    port = p.sport[row] if src else p.dport[row]
    return Node(format_address(addr, v), int(port), v == 6)


def follow(
    packets: PacketTable,
    flows: Flows,
    sources: Sequence[Source],
    stream: int,
    header_cut: np.ndarray | None = None,
) -> FollowStream:
    """The chunks Wireshark's Follow TCP Stream shows for ``stream``, in its order.
    ``header_cut`` marks the rows whose frame the capture cut inside the TCP header (by
    default worked out from the capture files in ``sources``)."""

    if not 0 <= stream < flows.n_streams:
        return FollowStream(stream, None)
    p = packets
    rows = np.flatnonzero(flows.stream == stream)
    if header_cut is None:
        cut = {r: _header_cut(p, sources, r) for r in rows.tolist()}
    else:
        cut = dict(zip(rows.tolist(), header_cut[rows].tolist(), strict=True))
    tapped = [r for r in rows.tolist() if not cut[r]]
    if not tapped:  # no frame reached the tap: tshark knows no endpoints
        return FollowStream(stream, None)
    first = tapped[0]  # node 0 is the source of the first frame the tap sees
    nodes = (_node(p, first, True), _node(p, first, False))
    # node of each row as the tap decides it: source equal to node 0's endpoint or not
    is_node0 = (p.src[rows] == p.src[first]).all(axis=1) & (p.sport[rows] == p.sport[first])
    node_of = np.where(is_node0, 0, 1)
    tap = _Tap()
    rel = _RelativeSeq()
    for row, node in zip(rows.tolist(), node_of.tolist(), strict=True):
        flags = int(p.flags[row])
        rel_seq, rel_ack = rel.segment(node, int(p.seq[row]), int(p.ack[row]), flags)
        if cut[row]:  # tshark gives up on the options: no tap
            continue
        start = int(p.payload_offset[row])
        buf = sources[int(p.file[row])].buffer
        data = buf[start : start + int(p.payload_caplen[row])].tobytes()
        seq = (rel_seq + 1) % _MOD if flags & SYN else rel_seq
        frame, ts_ns, seg_len = int(p.frame[row]), int(p.ts_ns[row]), int(p.payload_len[row])
        tap.segment(node, seq, rel_ack, seg_len, data, frame, ts_ns)
    return FollowStream(stream, nodes, tap.chunks)


class _RelativeSeq:
    """Relative seq/ack of one conversation, as Wireshark's TCP dissector computes them.

    A direction's base is its first segment's seq (seq - 1 without SYN), or the
    peer's first ack - 1 if that comes first; a SYN-ACK with another seq resets it
    (observed with TShark 4.0.17).
    """

    def __init__(self) -> None:
        self.base: list[int | None] = [None, None]

    def segment(self, node: int, seq: int, ack: int, flags: int) -> tuple[int, int]:
        base = self.base
        if base[node] is None:
            base[node] = seq if flags & SYN else (seq - 1) % _MOD
        elif flags & (SYN | ACK) == SYN | ACK and seq != base[node]:
            base[node] = seq
        if base[1 - node] is None and flags & ACK:
            base[1 - node] = (ack - 1) % _MOD
        rel_seq = (seq - (base[node] or 0)) % _MOD
        rel_ack = (ack - (base[1 - node] or 0)) % _MOD if flags & ACK else ack
        return rel_seq, rel_ack


def _header_cut(p: PacketTable, sources: Sequence[Source], row: int) -> bool:
    """True when the capture cut the frame inside the TCP header (options)."""
    if sources[int(p.file[row])].format == "defrag":
        return False
    return int(p.payload_offset[row]) > int(p.offset[row]) + int(p.caplen[row])


def _endpoint(node: Node | None) -> str:
    if node is None:
        return ":0"
    return f"[{node.host}]:{node.port}" if node.ipv6 else f"{node.host}:{node.port}"


def _hex_lines(prefix: str, offset: int, data: bytes) -> list[str]:
    lines = []
    for i in range(0, len(data), 16):
        row = data[i : i + 16]
        hexes = " ".join(f"{b:02x}" for b in row[:8])
        if len(row) > 8:
            hexes += "  " + " ".join(f"{b:02x}" for b in row[8:])
        text = row[:8].translate(_PRINTABLE).decode()
        if len(row) >= 8:
            text += " " + row[8:].translate(_PRINTABLE).decode()
        if text.endswith(" "):  # tshark drops one trailing space, even a data byte's
            text = text[:-1]
        lines.append(f"{prefix}{offset + i:08X}  {hexes:<50}{text}\n")
    return lines


def _timestamp(ts_ns: int | None) -> str:
    """``%.9f`` of the time as a C double (secs + nsecs / 1e9), as tshark prints it."""
    if ts_ns is None:
        return "0.000000000"
    secs, nsecs = divmod(ts_ns, 1_000_000_000)
    return f"{float(secs) + nsecs / 1e9:.9f}"


def _render_yaml(view: FollowStream) -> str:
    out = ["peers:\n"]
    for i in range(2):
        node = view.nodes[i] if view.nodes else None
        host, port = (node.host, node.port) if node else ("", 0)
        out += [f"  - peer: {i}\n", f"    host: {host}\n", f"    port: {port}\n"]
    out.append("packets:\n")
    for c in view.chunks:
        out += [
            f"  - packet: {c.frame}\n",
            f"    peer: {c.node}\n",
            f"    timestamp: {_timestamp(c.ts_ns)}\n",
            "    data: !!binary |\n",
        ]
        b64 = base64.b64encode(c.data).decode()
        out += [f"      {b64[i : i + 76]}\n" for i in range(0, len(b64), 76)]
    return "".join(out)


def render_follow(view: FollowStream, mode: FollowMode | str) -> str:
    """The text tshark prints for ``-q -z follow,tcp,<mode>,<stream>`` (all ASCII)."""
    mode = FollowMode(mode)
    if mode is FollowMode.YAML:
        return _render_yaml(view)
    nodes = view.nodes or (None, None)
    out = [
        "\n",
        SEPARATOR,
        f"Follow: tcp,{mode}\n",
        f"Filter: tcp.stream eq {view.stream}\n",
        f"Node 0: {_endpoint(nodes[0])}\n",
        f"Node 1: {_endpoint(nodes[1])}\n",
    ]
    offsets = [0, 0]
    for c in view.chunks:
        tab = "\t" if c.node else ""
        if mode is FollowMode.ASCII:
            out += [f"{tab}{len(c.data)}\n", c.data.translate(_ASCII_VIEW).decode(), "\n"]
        elif mode is FollowMode.RAW:
            out.append(f"{tab}{c.data.hex()}\n")
        else:
            out += _hex_lines(tab, offsets[c.node], c.data)
        offsets[c.node] += len(c.data)
    out.append(SEPARATOR)
    return "".join(out)
