"""``tcpweave audit`` on crafted captures whose every figure is known from how they were built.

One capture holds nine sessions, each planted with one property (see
``planted``): an IP-fragmented segment, a bad TCP checksum then its good
retransmission, a packet cut short by the snap length, a handshake-only
session, a 4-tuple reused after FIN with a new ISN, a hole, a payload sent
twice, and a session picked up mid-stream. Expected values are counted from
that construction, never read back from tcpweave.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import craft
import tcpweave
from sessions import Sent, Session, Trace
from tcpweave.audit import birthday_probability
from tcpweave.cli.app import app

CLIENT, SERVER = "10.0.0.1", "10.0.0.2"


def write_trace(trace: Trace, path: Path, fragment: list[Sent]) -> Path:
    """Like Trace.write, but each frame in ``fragment`` goes out as two IPv4 fragments."""
    packets: list[tuple[int, bytes, int | None]] = []
    for f in trace.frames:
        if f in fragment:
            s = f.session
            src, dst = (s.client, s.server) if f.from_client else (s.server, s.client)
            total = f.tcp.header_len + len(f.tcp.payload)
            pieces = craft.split(total, [16])
            for i, frag in enumerate(craft.ipv4_fragments(src, dst, f.tcp, pieces, ident=77)):
                packets.append((f.ts_ns + i, craft.ethernet(frag), None))
        else:
            packets.append((f.ts_ns, f.captured, len(f.data)))
    return craft.write_pcap(path, packets, craft.LINKTYPE_ETHERNET, nano=True)


def planted(tmp_path: Path) -> tuple[Path, Trace]:
    t = Trace()

    def sess(cport: int, cisn: int = 1000) -> Session:
        return t.session(client=CLIENT, server=SERVER, cport=cport, sport=80, cisn=cisn)

    a = sess(40001).handshake()  # stream 0: exact, one segment IP-fragmented
    frag = a.c(0, b"fragmented-data-0123")
    a.c(20, b"more")
    a.s(0, b"reply-A")
    a.close()
    b = sess(40002).handshake()  # stream 1: bad checksum, then the good retransmission
    b.c(0, b"checksum!!", checksum="bad")
    b.c(0, b"checksum!!")
    b.close()
    c = sess(40003).handshake()  # stream 2: 4 payload bytes cut off by the capture
    c.c(0, b"0123456789", snap=14 + 20 + 20 + 6)
    c.close()
    sess(40004).handshake().close()  # stream 3: handshake only
    e = sess(40005).handshake()  # streams 4, 5: one 4-tuple, two sessions (new ISN)
    e.c(0, b"first")
    e.close()
    f = sess(40005, cisn=900_000).handshake()
    f.c(0, b"second")
    f.close()
    g = sess(40006).handshake()  # stream 6: bytes 5..9 never captured
    g.c(0, b"hello")
    g.c(10, b"world")
    g.close()
    h = sess(40007).handshake()  # stream 7: the same 10-byte payload twice
    h.c(0, b"repeat-me!")
    h.c(10, b"repeat-me!")
    h.close()
    i = sess(40008)  # stream 8: no handshake in the capture
    i.c(0, b"midstream data")
    i.s(0, b"ok")
    i.close()
    return write_trace(t, tmp_path / "planted.pcap", [frag]), t


@pytest.fixture(scope="module")
def planted_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trace]:
    return planted(tmp_path_factory.mktemp("audit"))


@pytest.fixture(scope="module")
def report(planted_capture: tuple[Path, Trace]) -> Any:
    with tcpweave.open(planted_capture[0]) as cap:
        yield cap.audit()


EXPECTED_REASONS = [
    [], ["bad-checksum"], ["truncated"], [], [], [], ["gaps"], ["ambiguous"], ["mid-stream"],
]  # fmt: skip
#: kept bytes per stream (both directions), from the payloads above
EXPECTED_BYTES = [20 + 4 + 7, 10, 6, 0, 5, 6, 10, 20, 14 + 2]


@pytest.mark.quick
def test_packet_figures(report: Any, planted_capture: tuple[Path, Trace]) -> None:
    n = len(planted_capture[1].frames)  # the fragmented segment is one TCP packet
    pk = report.packet
    assert (pk.packets, pk.bad_checksum, pk.fragmented, pk.truncated) == (n, 1, 1, 1)
    assert pk.P_c == pk.P_f == pk.P_dH == 1 / n


@pytest.mark.quick
def test_stream_figures(report: Any) -> None:
    st = report.stream
    # E: one SYN-opened session per handshake (9 sessions, one without SYN) = 8;
    # S: 9 sessions, all with bytes but the handshake-only one = 8
    assert (st.E, st.S, st.delta, st.sessions) == (8, 8, 0, 9)
    assert st.I_p is None and st.A_p is None
    assert (st.tuples, st.reused_tuples, st.P_spec) == (8, 1, 1 / 8)
    kinds = {m["stream"]: (m["kind"], m["flag_sessions"], m["produced"])
             for m in report.mismatches()}  # fmt: skip
    assert kinds == {3: ("handshake-only", 1, 0), 8: ("mid-stream", 0, 1)}
    assert report.mismatches()[0]["client"] == f"{CLIENT}:40004"


@pytest.mark.quick
def test_verdicts(report: Any) -> None:
    assert [report.reasons_of(s) for s in range(9)] == EXPECTED_REASONS
    assert report.stream_bytes.tolist() == EXPECTED_BYTES
    exact = [s for s, r in enumerate(EXPECTED_REASONS) if not r]
    assert report.summary() == {
        "streams": 9,
        "exact_streams": len(exact),
        "bytes": sum(EXPECTED_BYTES),
        "exact_bytes": sum(EXPECTED_BYTES[s] for s in exact),
    }


@pytest.mark.quick
def test_port_reuse(report: Any) -> None:
    """Nine sessions from one client to one server port, over eight source ports."""
    ru = report.reuse
    assert ru.P_r == 2**16 - 1024 - 1
    assert (ru.groups, ru.observed) == (1, 1)
    (g,) = ru.top
    assert (g["client"], g["server"], g["port"], g["n"], g["reused"]) == (CLIENT, SERVER, 80, 9, 1)
    exact = 1 - Fraction(math.perm(ru.P_r, 9), ru.P_r**9)
    assert g["P_b"] == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.quick
def test_matrix_and_continuity(report: Any, planted_capture: tuple[Path, Trace]) -> None:
    m = report.matrix
    c = m.columns
    assert len(m) == len(planted_capture[1].frames)
    # sorted by stream, direction, sequence number
    keys = list(zip(c["stream"].tolist(), c["direction"].tolist(), c["seq_rel"].tolist(),
                    strict=True))  # fmt: skip
    assert keys == sorted(keys)
    rep = (c["stream"] == 7) & (c["payload_len"] > 0)
    assert c["occurrences"][rep].tolist() == [2, 2]
    once = (c["stream"] != 7) & (c["payload_len"] > 0) & (c["missing_len"] == 0)
    assert set(c["occurrences"][once].tolist()) == {1}
    cut = c["missing_len"] > 0
    assert c["missing_len"][cut].tolist() == [4] and c["stream"][cut].tolist() == [2]
    bad = ~c["checksum_ok"]
    assert c["stream"][bad].tolist() == [1] and c["fate"][bad].tolist() == [6]  # bad-checksum
    b = m.breaks
    got = sorted(zip(b["stream"].tolist(), b["kind"].tolist(), b["offset"].tolist(),
                     b["length"].tolist(), strict=True))  # fmt: skip
    assert got == [(1, 1, 0, 10), (6, 0, 5, 5)]  # B's retransmission overlaps; G's hole


@pytest.mark.quick
def test_json_layout(report: Any) -> None:
    d = json.loads(json.dumps(report.to_dict()))
    assert d["version"] == 1
    assert d["packets"]["bad_checksum"] == 1 and d["streams"]["E"] == 8
    assert d["continuity"] == {"gaps": 1, "overlaps": 1}
    assert d["verdicts"]["reasons"]["ambiguous"] == 1
    assert [s["verdict"] for s in d["per_stream"]][:2] == ["exact", ["bad-checksum"]]


def _two_sessions(tmp_path: Path, second: str) -> Path:
    t = Trace()
    a = t.session(cport=40001).handshake()
    a.c(0, b"payload")
    a.close()
    b = t.session(cport=40002)
    if second == "handshake-only":
        b.handshake().close()
    else:
        b.c(0, b"picked up")
        b.close()
    return t.write(tmp_path / f"{second}.pcap")


@pytest.mark.quick
@pytest.mark.parametrize(
    ("second", "e", "s", "i_p", "a_p"),
    [("handshake-only", 2, 1, 0.5, None), ("mid-stream", 1, 2, None, 0.5)],
)
def test_invisible_and_additional(
    tmp_path: Path, second: str, e: int, s: int, i_p: float | None, a_p: float | None
) -> None:
    with tcpweave.open(_two_sessions(tmp_path, second)) as cap:
        st = cap.audit().stream
    assert (st.E, st.S, st.I_p, st.A_p) == (e, s, i_p, a_p)


def test_syn_after_rst_opens_a_flag_session(tmp_path: Path) -> None:
    """SYN, RST, SYN again with the same ISN: flags count two sessions, tcpweave one stream."""
    t = Trace()
    s = t.session()
    s.syn()
    s.rst_s(seq=0, ack=s.seq_of(True, 0))
    s.syn()
    s.synack()
    s.ack_c()
    s.c(0, b"data after retry")
    s.close()
    with tcpweave.open(t.write(tmp_path / "retry.pcap")) as cap:
        st = cap.audit().stream
    assert (st.E, st.S, st.sessions, st.reused_tuples) == (2, 1, 1, 1)


# ------------------------------------------------------------------ P_b


@pytest.mark.quick
@pytest.mark.parametrize("p_r", [1, 2, 10, 28232, 64511])
def test_birthday_exact_for_small_n(p_r: int) -> None:
    for n in range(0, min(p_r, 40) + 3):
        exact = 1 - Fraction(math.perm(p_r, n), p_r**n) if n <= p_r else Fraction(1)
        assert birthday_probability(n, p_r) == pytest.approx(float(exact), rel=1e-11, abs=1e-300)


def test_birthday_against_simulation() -> None:
    """n = 250 connections over Linux's 28,232 ports: simulated reuse within 4 sigma."""
    rng = np.random.default_rng(6)
    p_r, n, trials = 28232, 250, 4000
    ports = rng.integers(0, p_r, size=(trials, n))
    ports.sort(axis=1)
    hit = (np.diff(ports, axis=1) == 0).any(axis=1).mean()
    p = birthday_probability(n, p_r)
    assert abs(hit - p) < 4 * math.sqrt(p * (1 - p) / trials)
    assert birthday_probability(p_r + 1, p_r) == 1.0
    # large n: no overflow, and still the exact value
    no_reuse = Fraction(math.perm(64511, 2000), 64511**2000)
    assert birthday_probability(2000, 64511) == pytest.approx(1 - float(no_reuse), rel=1e-12)


# ------------------------------------------------------------------ CLI


def test_cli_audit_json_and_summary(planted_capture: tuple[Path, Trace], tmp_path: Path) -> None:
    path = str(planted_capture[0])
    out = CliRunner().invoke(app, ["audit", path, "--json"])
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    assert d["streams"]["E"] == 8 and d["verdicts"]["exact_streams"] == 4
    matrix = tmp_path / "m.csv"
    out = CliRunner().invoke(app, ["audit", path, "--matrix", str(matrix), "--port-range",
                                   "32768-60999"])  # fmt: skip
    assert out.exit_code == 0, out.output
    lines = matrix.read_text().splitlines()
    assert len(lines) == 1 + len(planted_capture[1].frames)
    assert lines[0].startswith('"stream","direction","frame"')
    text = out.stdout
    for needle in ("P_c", "P_f", "P_dH", "I_p", "P_spec", "P_b", "28,232", "handshake-only",
                   "exact", "4 of 9"):  # fmt: skip
        assert needle in text, needle
