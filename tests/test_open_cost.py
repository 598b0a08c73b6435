"""``tcpweave.open`` builds the packet table and nothing else: sessions are numbered (and
checksum-offload evidence gathered) only when something asks for them. Issue 16 found
that numbering them inside ``open()`` had cost the packet table 130 ns/record since the
one engine landed; this pins the cause, not a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tcpweave
from tcpweave.run import partition

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample-http.pcap"


def test_open_numbers_no_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    assign = partition.assign

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return assign(*args, **kwargs)

    monkeypatch.setattr(partition, "assign", counted)
    with tcpweave.open(SAMPLE) as cap:
        assert len(cap.packets) > 0
        assert cap.stats.tcp_packets == len(cap.packets)
        assert calls == []
        flows = cap.flows  # asked for: numbered once, then kept
        assert flows.n_streams > 0
        assert len(flows.stream) == len(cap.packets)
        assert cap.flows is flows
        cap.streams()
        assert calls == [1]
