"""Smoke tests of the real-stack ground-truth harness (``tests/realstack.py``).

These check the harness, not the reassembler: the captures hold the sessions,
4-tuples, retransmissions and port reuse each scenario asks for, and the truth
the endpoints wrote down is consistent with what the captures show (a crude
placement of payloads by sequence number, far simpler than tcpweave's plan).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import realstack as rs
import tcpweave

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10
TSHARK = shutil.which("tshark")

SCENARIOS = {
    # IPv4 and IPv6 alternating, two sessions at a time, every way of closing.
    "mixed": rs.Scenario(
        sessions=4,
        ipv6="mixed",
        closes=("fin", "rst", "fin-client-first"),
        concurrency=2,
        c2s_writes=(300, 20_000, 7),
        s2c_writes=(1_000, 50_000, 1),
        write_pause=0.002,
    ),
    # A token bucket with a three-frame queue on the router: real drops between
    # the two capture points, real retransmissions.
    "lossy": rs.Scenario(
        sessions=2,
        ipv6="mixed",
        tbf=True,
        c2s_writes=(300, 150_000, 5),
        s2c_writes=(200, 250_000),
        closes=("fin", "rst"),
        seed=1,
    ),
    # One client port, one server port: eight sessions on the same 4-tuple.
    "reuse": rs.Scenario(
        sessions=8,
        reuse_source_port=True,
        topology="direct",
        closes=("fin", "fin", "rst"),
        c2s_writes=(100, 3_000),
        s2c_writes=(2_000, 10),
        seed=2,
    ),
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def recorded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> rs.RealCapture:
    reason = rs.available()
    if reason is not None:
        pytest.skip(reason)
    name = request.param
    return rs.record(SCENARIOS[name], tmp_path_factory.mktemp(f"realstack-{name}"))


# ----------------------------------------------------------------- packet rows


@dataclass(frozen=True)
class Row:
    frame: int
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    flags: int
    payload_len: int
    payload: bytes  # as captured


@functools.cache
def _rows(path: Path) -> tuple[Row, ...]:
    out = []
    with tcpweave.open(str(path)) as cap:
        p = cap.packets
        src, dst = p.address_strings("src"), p.address_strings("dst")
        for i in range(len(p)):
            off, n = int(p["payload_offset"][i]), int(p["payload_caplen"][i])
            buf = cap.sources[int(p["file"][i])].buffer
            out.append(
                Row(
                    frame=int(p["frame"][i]),
                    src=src[i],
                    sport=int(p["sport"][i]),
                    dst=dst[i],
                    dport=int(p["dport"][i]),
                    seq=int(p["seq"][i]),
                    flags=int(p["flags"][i]),
                    payload_len=int(p["payload_len"][i]),
                    payload=bytes(buf[off : off + n]),  # a copy: valid after close
                )
            )
    return tuple(out)


def rows(path: Path) -> list[Row]:
    """The packet table of ``path`` as plain rows (read once per capture)."""
    return list(_rows(path))


def tuple_of(r: Row) -> tuple[str, int, str, int]:
    return (r.src, r.sport, r.dst, r.dport)


def client_syns(packets: list[Row]) -> list[Row]:
    """The first copy of every client SYN (retransmitted SYNs repeat the ISN)."""
    seen: set[tuple[tuple[str, int, str, int], int]] = set()
    out = []
    for r in packets:
        if r.flags & (SYN | ACK) == SYN and (tuple_of(r), r.seq) not in seen:
            seen.add((tuple_of(r), r.seq))
            out.append(r)
    return out


def split_sessions(packets: list[Row], cap: rs.RealCapture) -> dict[int, list[Row]]:
    """Packets per session: a session of a 4-tuple runs from its SYN to the next one."""
    starts = client_syns(packets)
    out: dict[int, list[Row]] = {s.index: [] for s in cap.sessions}
    for s in cap.sessions:
        same = [x for x in cap.sessions if x.four_tuple == s.four_tuple]
        k = same.index(s)
        syns = [r.frame for r in starts if tuple_of(r) == s.four_tuple]
        lo, hi = syns[k], syns[k + 1] if k + 1 < len(syns) else 1 << 62
        out[s.index] = [
            r
            for r in packets
            if lo <= r.frame < hi
            and s.four_tuple in (tuple_of(r), (r.dst, r.dport, r.src, r.sport))
        ]
    return out


def direction_rows(session_rows: list[Row], s: rs.RealSession, direction: str) -> list[Row]:
    src = (s.client_addr, s.client_port) if direction == "c2s" else (s.server_addr, s.server_port)
    return [r for r in session_rows if (r.src, r.sport) == src]


def place(data_rows: list[Row], length: int, *, allow_truncated: bool = False) -> bytes:
    """Put every captured payload at ``seq - ISN - 1``; the result must be whole."""
    isn = next(r.seq for r in data_rows if r.flags & SYN)
    buf = bytearray(length)
    have = np.zeros(length, dtype=bool)
    for r in data_rows:
        if not r.payload:
            continue
        off = (r.seq - isn - 1) % (1 << 32)
        end = off + len(r.payload)
        assert end <= length, (r.frame, off, end, length)
        for k in np.flatnonzero(have[off:end]):  # a retransmission repeats the same bytes
            assert buf[off + k] == r.payload[k], (r.frame, off + k)
        buf[off:end] = r.payload
        have[off:end] = True
    if not allow_truncated:
        missing = np.flatnonzero(~have)
        assert missing.size == 0, f"{missing.size} bytes never captured, first at {missing[:1]}"
    return bytes(buf)


def tshark(path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    assert TSHARK is not None
    args = [TSHARK, "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        args += ["-e", f]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in res.stdout.splitlines()]


# ----------------------------------------------------------------------- tests


def test_truth_is_what_the_peer_sent(recorded: rs.RealCapture) -> None:
    specs = recorded.scenario.specs()
    assert len(recorded.sessions) == len(specs)
    assert [s.index for s in recorded.sessions] == list(range(len(specs)))
    for s, spec in zip(recorded.sessions, specs, strict=True):
        for direction, writes in (("c2s", spec.c2s_writes), ("s2c", spec.s2c_writes)):
            seed = recorded.scenario.seed
            expected = b"".join(
                rs.payload(seed, s.index, direction, k, n) for k, n in enumerate(writes)
            )
            assert len(s.truth(direction)) == sum(writes) > 0
            assert s.truth(direction) == s.sent(direction) == expected, (s.index, direction)
        assert s.ip_version == (6 if spec.ipv6 else 4)
        assert s.close == ("rst" if spec.close == "rst" else "fin")


def test_every_capture_is_complete(recorded: rs.RealCapture) -> None:
    for name, stats in recorded.tcpdump_stats.items():
        assert stats["captured"] > 0, name
        assert stats["dropped_by_kernel"] == 0, (name, stats)
    assert recorded.duration_s < 30


def test_syns_and_four_tuples(recorded: rs.RealCapture) -> None:
    expected = [s.four_tuple for s in recorded.sessions]
    for path in recorded.pcaps.values():
        packets = rows(path)
        assert [tuple_of(r) for r in client_syns(packets)] == expected, path.name
        seen = {tuple_of(r) for r in packets} | {(r.dst, r.dport, r.src, r.sport) for r in packets}
        assert {t for t in seen if t[3] == rs.SERVER_PORT} == set(expected), path.name


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_tshark_sees_the_sessions(recorded: rs.RealCapture) -> None:
    for path in recorded.pcaps.values():
        syns = tshark(path, "tcp.flags.syn==1 && tcp.flags.ack==0", "tcp.srcport", "tcp.seq_raw")
        assert len({tuple(x) for x in syns}) == len(recorded.sessions), path.name
        streams = tshark(path, "tcp", "tcp.stream")
        assert len({x[0] for x in streams}) == len(recorded.sessions), path.name


def test_tbf_forces_retransmissions(recorded: rs.RealCapture) -> None:
    if not recorded.scenario.tbf:
        pytest.skip("scenario without tbf")
    for direction in ("c2s", "s2c"):
        to_server = direction == "c2s"
        sender, receiver = (
            [r for r in rows(path) if r.payload_len and (r.dport == rs.SERVER_PORT) == to_server]
            for path in (recorded.sender_side(direction), recorded.receiver_side(direction))
        )
        repeated = Counter((tuple_of(r), r.seq) for r in sender)
        assert max(repeated.values()) > 1, f"{direction}: no segment was sent twice"
        # dropped between the two capture points: the receiver saw fewer segments
        assert len(receiver) < len(sender), direction
    if TSHARK is not None:
        assert tshark(recorded.client_pcap, "tcp.analysis.retransmission", "frame.number")


def test_reused_source_port(recorded: rs.RealCapture) -> None:
    if not recorded.scenario.reuse_source_port:
        pytest.skip("scenario without source-port reuse")
    tuples = {s.four_tuple for s in recorded.sessions}
    assert len(tuples) == 1
    for path in recorded.pcaps.values():
        syns = client_syns(rows(path))
        assert len(syns) == len(recorded.sessions) >= 5
        assert {tuple_of(r) for r in syns} == tuples
        assert len({r.seq for r in syns}) == len(syns), "every session has an ISN of its own"


@pytest.mark.parametrize("side", ["receiver", "sender"])
def test_capture_holds_the_truth(recorded: rs.RealCapture, side: str) -> None:
    for direction in ("c2s", "s2c"):
        path = (recorded.receiver_side if side == "receiver" else recorded.sender_side)(direction)
        per_session = split_sessions(rows(path), recorded)
        for s in recorded.sessions:
            got = place(direction_rows(per_session[s.index], s, direction), len(s.truth(direction)))
            assert got == s.truth(direction), (path.name, s.index, direction)


def test_snaplen_capture_is_truncated_but_consistent(recorded: rs.RealCapture) -> None:
    per_session = split_sessions(rows(recorded.snap_pcap), recorded)
    truncated = 0
    for s in recorded.sessions:
        for direction in ("c2s", "s2c"):
            data = direction_rows(per_session[s.index], s, direction)
            truncated += sum(len(r.payload) < r.payload_len for r in data)
            place(data, len(s.truth(direction)), allow_truncated=True)  # bytes agree where seen
            isn = next(r.seq for r in data if r.flags & SYN)
            for r in data:
                off = (r.seq - isn - 1) % (1 << 32)
                assert r.payload == s.truth(direction)[off : off + len(r.payload)], r.frame
    assert truncated > 0


def test_sessions_end_as_planned(recorded: rs.RealCapture) -> None:
    per_session = split_sessions(rows(recorded.server_pcap), recorded)
    for s in recorded.sessions:
        c2s = direction_rows(per_session[s.index], s, "c2s")
        s2c = direction_rows(per_session[s.index], s, "s2c")
        if s.close == "rst":
            assert any(r.flags & RST for r in c2s), s.index
            assert not any(r.flags & FIN for r in c2s + s2c), s.index
            continue
        first_c = min(r.frame for r in c2s if r.flags & FIN)
        first_s = min(r.frame for r in s2c if r.flags & FIN)
        assert (first_s < first_c) == (s.first_fin == "server"), s.index
        assert not any(r.flags & RST for r in c2s + s2c), s.index


def test_failed_recording_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = rs.available()
    if reason is not None:
        pytest.skip(reason)

    def broken(self: object) -> None:
        raise rs.RealStackError("injected failure")

    monkeypatch.setattr(rs._Tcpdump, "wait_ready", broken)
    with pytest.raises(rs.RealStackError, match="injected"):
        rs.record(rs.Scenario(sessions=1), tmp_path)
    assert not rs._live_procs
    assert not rs._live_namespaces
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    assert f"twrs-{os.getpid()}-" not in listed.stdout
