"""Run tshark on a capture and compare its TCP fields with tcpweave's packet table.

tshark (Wireshark's dissectors, with TCP checksum validation on) is the oracle
nobody here wrote. Every difference is either a failure or one of the named,
explained reasons in ``EXPECTED_DIFFERENCES``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import tcpweave

TSHARK = shutil.which("tshark")

FIELDS = (
    "frame.number",
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
    "tcp.len",
    "tcp.checksum.status",
    "frame.protocols",
)

#: tcp.checksum.status values -> tcpweave Checksum names
TSHARK_CHECKSUM = {"0": "bad", "1": "ok", "2": "unknown"}


@dataclass(frozen=True)
class Row:
    frame: int
    ts_ns: int
    src: str
    dst: str
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    payload_len: int
    tcp_checksum: str


#: tunnels that tshark opens and tcpweave does not (docs/encapsulations.md): TCP inside them
#: is not a TCP packet for tcpweave
TUNNELS_NOT_OPENED = frozenset({"l2tp", "nsh", "capwap", "openvpn", "wg"})


def _unopened_tunnel(before_tcp: list[str]) -> bool:
    """Whether the layers before TCP pass through a tunnel tcpweave does not open."""
    return bool(TUNNELS_NOT_OPENED.intersection(before_tcp))


def tshark_rows(path: Path) -> tuple[list[Row], dict[int, str]]:
    """tshark's TCP rows, and the frames it shows as TCP that tcpweave must not (with why).

    Skipped: a TCP header quoted inside an ICMP error (not a TCP packet), and
    TCP inside a tunnel tcpweave does not open.
    """
    assert TSHARK is not None
    cmd = [
        TSHARK,
        "-n",
        "-r",
        str(path),
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "tcp.desegment_tcp_streams:FALSE",
        "-Y",
        "tcp",
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False).stdout
    rows, skipped = [], {}
    for line in out.splitlines():
        v = dict(zip(FIELDS, line.split("\t"), strict=True))
        frame = int(v["frame.number"])
        layers = v["frame.protocols"].split(":")
        before_tcp = layers[: layers.index("tcp")] if "tcp" in layers else layers
        if "icmp" in before_tcp or "icmpv6" in before_tcp:
            skipped[frame] = "TCP header quoted in an ICMP error"
            continue
        if _unopened_tunnel(before_tcp):
            skipped[frame] = (
                "TCP inside a tunnel tcpweave does not open (" + ":".join(before_tcp) + ")"
            )
            continue
        family = next(x for x in reversed(before_tcp) if x in ("ip", "ipv6"))
        nth = before_tcp.count(family) - 1  # the IP layer that directly carries the TCP
        prefix = "ip" if family == "ip" else "ipv6"
        rows.append(
            Row(
                frame,
                _epoch_ns(v["frame.time_epoch"]),
                _nth(v[f"{prefix}.src"], nth),
                _nth(v[f"{prefix}.dst"], nth),
                int(_nth(v["tcp.srcport"], 0)),
                int(_nth(v["tcp.dstport"], 0)),
                int(_nth(v["tcp.seq_raw"], 0)),
                int(_nth(v["tcp.ack_raw"], 0)),
                int(_nth(v["tcp.flags"], 0), 16),
                int(_nth(v["tcp.len"], 0) or 0),
                TSHARK_CHECKSUM.get(_nth(v["tcp.checksum.status"], 0), "unknown"),
            )
        )
    return rows, skipped


def _epoch_ns(value: str) -> int:
    # A Simple Packet Block carries no timestamp: tshark prints nothing, tcpweave uses 0.
    return int(Decimal(value) * 1_000_000_000) if value else 0


def _nth(value: str, n: int) -> str:
    """The n-th value of a field that several protocol layers set (occurrence=a)."""
    values = value.split(",")
    return values[n] if n < len(values) else ""


def tcpweave_rows(path: Path | list[Path]) -> list[Row]:
    with tcpweave.open(path) as cap:
        p = cap.packets
        src, dst = p.address_strings("src"), p.address_strings("dst")
        return [
            Row(
                int(p.frame[i]),
                int(p.ts_ns[i]),
                src[i],
                dst[i],
                int(p.sport[i]),
                int(p.dport[i]),
                int(p.seq[i]),
                int(p.ack[i]),
                int(p.flags[i]),
                int(p.payload_len[i]),
                str(tcpweave.Checksum(int(p.tcp_checksum[i]))),
            )
            for i in range(len(p))
        ]


def first_difference(ours: list[Row], theirs: list[Row]) -> str | None:
    """A readable description of the first disagreement, or None."""
    by_frame = {r.frame: r for r in ours}
    for t in theirs:
        o = by_frame.pop(t.frame, None)
        if o is None:
            return f"frame {t.frame}: tshark has a TCP packet, tcpweave none ({t})"
        if o != t:
            diffs = {
                name: (getattr(o, name), getattr(t, name))
                for name in Row.__dataclass_fields__
                if getattr(o, name) != getattr(t, name)
            }
            return f"frame {t.frame}: tcpweave vs tshark differ in {diffs}"
    if by_frame:
        frame = min(by_frame)
        return f"frame {frame}: tcpweave has a TCP packet tshark does not show ({by_frame[frame]})"
    return None
