"""Streams longer than 4 GiB: sequence numbers unwrapped to 64 bits.

The capture is small because every data segment is captured short (as with a
snaplen), yet the segments claim 64000 bytes each on the wire: 70,000 of them carry a
4.48 GB stream whose sequence numbers wrap around 2^32 once. Offsets must keep
growing past 2^32, every captured byte must sit at its true offset, and the
bytes cut off by the snaplen must be reported as truncated gaps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import craft
import tcpweave

SEGMENT = 64_000
SEGMENTS = 70_000
CAPTURED = 8  # payload bytes kept per segment
ISN = 2**32 - 5_000


def _capture(path: Path) -> Path:
    client, server = "10.1.0.1", "10.1.0.2"
    frames = []
    ts = 1_700_000_000_000_000_000

    def add(tcp: craft.Tcp, src: str, dst: str, claimed: int = 0) -> None:
        """A frame; with ``claimed``, the IP header claims that much payload that was cut off."""
        nonlocal ts
        total = 20 + tcp.header_len + len(tcp.payload) + claimed if claimed else None
        data = craft.ethernet(craft.tcp4(tcp, src, dst, total_length=total).data)
        frames.append((ts, data, len(data) + claimed))
        ts += 1000

    syn = craft.SYN
    add(craft.Tcp(40000, 80, ISN, 0, syn), client, server)
    add(craft.Tcp(80, 40000, 7, ISN + 1, syn | craft.ACK), server, client)
    for i in range(SEGMENTS):
        seq = (ISN + 1 + i * SEGMENT) % 2**32
        payload = i.to_bytes(4, "big") * (CAPTURED // 4)  # the captured start of the segment
        add(
            craft.Tcp(40000, 80, seq, 8, craft.ACK, payload=payload),
            client,
            server,
            claimed=SEGMENT - CAPTURED,
        )
    fin_seq = (ISN + 1 + SEGMENTS * SEGMENT) % 2**32
    add(craft.Tcp(40000, 80, fin_seq, 8, craft.FIN | craft.ACK), client, server)
    return craft.write_pcap(path, frames, craft.LINKTYPE_ETHERNET, snaplen=0)


def test_offsets_grow_past_4_gib(tmp_path: Path) -> None:
    path = _capture(tmp_path / "long.pcap")
    with tcpweave.open(path) as cap:
        [stream] = cap.streams()
        d = stream.c2s
        assert d.length == SEGMENTS * SEGMENT > 2**32
        chunks = d.chunks()
        assert [c.offset for c in chunks] == [i * SEGMENT for i in range(SEGMENTS)]
        for i in (0, 1, SEGMENTS // 2, SEGMENTS - 1):
            assert chunks[i].data == i.to_bytes(4, "big") * (CAPTURED // 4)
        assert all(g.reason == tcpweave.GapReason.TRUNCATED for g in d.gaps)
        assert sum(g.length for g in d.gaps) == SEGMENTS * (SEGMENT - CAPTURED)
        assert d.close == "fin"
        assert np.all(np.diff([c.offset for c in chunks]) == SEGMENT)
