"""Ground truth from real Linux TCP stacks: every direction of every session byte-exact.

Clients and servers in network namespaces exchange known bytes (tests/realstack.py);
what each receiving application got from recv() is the truth. A tbf qdisc with a
tiny queue on the router between the two capture points forces real drops and
retransmissions; one client source port is reused by many short sessions; a
third capture has a 96-byte snaplen. tcpweave must reproduce the truth from the
capture at either end, and from the truncated capture everywhere outside the gaps
it reports as truncated.
"""

from __future__ import annotations

from typing import Any

import pytest

import realstack
import tcpweave

REASON = realstack.available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"real stacks unavailable: {REASON}")

SCENARIOS = {
    "mixed-v4-v6-fin-rst": realstack.Scenario(
        sessions=4, ipv6="mixed", closes=("fin", "fin-client-first", "rst"), concurrency=2
    ),
    "lossy-tbf": realstack.Scenario(
        sessions=2, c2s_writes=(150_000,), s2c_writes=(250_000, 3), tbf=True
    ),
    "reused-source-port": realstack.Scenario(
        sessions=8,
        reuse_source_port=True,
        topology="direct",
        c2s_writes=(500, 3000),
        s2c_writes=(9000,),
        tbf=True,
    ),
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def recorded(request: Any, tmp_path_factory: Any) -> Any:
    workdir = tmp_path_factory.mktemp(request.param)
    return realstack.record(SCENARIOS[request.param], workdir)


def _by_session(streams: list[Any], sessions: list[Any]) -> dict[int, Any]:
    """Match tcpweave streams to the harness's sessions: same 4-tuple, same order."""
    out = {}
    for sess in sessions:
        key = (sess.client_addr, sess.client_port, sess.server_addr, sess.server_port)
        candidates = [s for s in streams if (*s.client, *s.server) == key]
        nth = sum(
            1
            for other in sessions[: sess.index]
            if (other.client_addr, other.client_port, other.server_addr, other.server_port) == key
        )
        assert nth < len(candidates), f"session {sess.index} {key}: no stream found"
        out[sess.index] = candidates[nth]
    return out


@pytest.mark.parametrize("side", ["client", "server"])
def test_every_direction_is_byte_exact(recorded: Any, side: str) -> None:
    path = recorded.client_pcap if side == "client" else recorded.server_pcap
    with tcpweave.open(path) as cap:
        streams = cap.streams()
        matched = _by_session(streams, recorded.sessions)
        for sess in recorded.sessions:
            st = matched[sess.index]
            for name, truth in (("c2s", sess.c2s_bytes), ("s2c", sess.s2c_bytes)):
                d = getattr(st, name)
                assert d.gaps == [], (sess.index, name, d.gaps)
                assert d.bytes() == truth, (sess.index, name, len(d.bytes()), len(truth))


def test_reused_port_sessions_are_split(recorded: Any) -> None:
    with tcpweave.open(recorded.server_pcap) as cap:
        streams = cap.streams()
    tuples = [(*s.client, *s.server) for s in streams]
    for sess in recorded.sessions:
        key = (sess.client_addr, sess.client_port, sess.server_addr, sess.server_port)
        expected = sum(
            1
            for o in recorded.sessions
            if (o.client_addr, o.client_port, o.server_addr, o.server_port) == key
        )
        assert tuples.count(key) == expected


def test_truncated_capture_is_exact_outside_reported_gaps(recorded: Any) -> None:
    with tcpweave.open(recorded.snap_pcap) as cap:
        matched = _by_session(cap.streams(), recorded.sessions)
        for sess in recorded.sessions:
            st = matched[sess.index]
            for name, truth in (("c2s", sess.c2s_bytes), ("s2c", sess.s2c_bytes)):
                d = getattr(st, name)
                got = d.bytes()
                if truth:
                    assert len(got) == len(truth), (sess.index, name)
                hidden = bytearray(truth)
                for g in d.gaps:
                    hidden[g.offset : g.offset + g.length] = bytes(g.length)
                assert got == bytes(hidden), (sess.index, name)
                big_payload = len(truth) > 200
                if big_payload:
                    assert any(g.reason == tcpweave.GapReason.TRUNCATED for g in d.gaps)


def test_lossy_capture_really_retransmitted(recorded: Any) -> None:
    """The oracle is only worth something if the stacks really lost and resent data."""
    if recorded.scenario is not SCENARIOS["lossy-tbf"]:
        pytest.skip("only the lossy scenario is sure to drop segments")
    with tcpweave.open(recorded.client_pcap) as cap:
        fates = cap.plan().rows["fate"]
    resent = (fates == tcpweave.Fate.RETRANSMISSION) | (fates == tcpweave.Fate.OVERLAP_SAME)
    assert resent.sum() > 0
    with tcpweave.open(recorded.server_pcap) as cap:
        ooo = cap.plan().directions["out_of_order"].sum()
    assert ooo > 0  # the receiver saw holes filled later
