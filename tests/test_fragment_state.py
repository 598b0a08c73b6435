"""Pending IP fragments: the timeout and the cap on held fragments, counted exactly.

The timeout is Linux's ipfrag_time (30 s, Documentation/networking/ip-sysctl.rst);
fragments belong together when version, addresses, identification and protocol match
(RFC 791 §3.2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import craft
import tcpweave
from tcpweave.decode import fragments

SECOND = 1_000_000_000


def _capture(tmp_path: Path, arrivals: list[tuple[int, int, int]]) -> Path:
    """Fragments (time, identification, piece 0 or 1) of two-piece datagrams, in order."""
    frames = []
    for ts_ns, ident, half in arrivals:
        seg = craft.Tcp(40000 + ident, 80, 1000 * ident, payload=bytes(range(ident, ident + 32)))
        pieces = craft.split(20 + 32, [24])
        [frag] = craft.ipv4_fragments("10.0.0.1", "10.0.0.2", seg, [pieces[half]], ident=ident)
        frames.append((ts_ns, craft.ethernet(frag), None))
    return craft.write_pcap(tmp_path / "frags.pcap", frames, linktype=1)


def _stats(path: Path) -> tcpweave.DecodeStats:
    with tcpweave.open(str(path)) as cap:
        return cap.stats


def test_first_fragment_30s_old_is_dropped_and_its_last_fragment_waits_alone(
    tmp_path: Path,
) -> None:
    # 1a at 0 s; 2a 2b at 31 s complete; 1b at 31 s finds 1a expired and never completes
    path = _capture(tmp_path, [(0, 1, 0), (31 * SECOND, 2, 0), (31 * SECOND, 2, 1),
                               (31 * SECOND, 1, 1)])  # fmt: skip
    stats = _stats(path)
    assert (stats.reassembled, stats.fragments_dropped) == (1, 2)


def test_fragments_within_30s_complete(tmp_path: Path) -> None:
    path = _capture(tmp_path, [(0, 1, 0), (30 * SECOND, 1, 1)])
    stats = _stats(path)
    assert (stats.reassembled, stats.fragments_dropped) == (1, 0)


def test_oldest_datagram_is_dropped_when_too_many_fragments_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fragments, "MAX_PENDING_FRAGMENTS", 2)
    # 1a 2a 3a: three held, 1 (the oldest) dropped; 2 and 3 complete; 1b then waits alone
    path = _capture(tmp_path, [(0, 1, 0), (1, 2, 0), (2, 3, 0), (3, 2, 1), (4, 3, 1),
                               (5, 1, 1)])  # fmt: skip
    stats = _stats(path)
    assert (stats.reassembled, stats.fragments_dropped) == (2, 2)
