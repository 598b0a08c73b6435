"""tcpweave's stream index of every TCP packet equals tshark's ``tcp.stream``.

Three sources of truth:

* ``../shared/corpus/expected_tshark/*.streams.tsv`` (TShark 4.0.17 output stored with
  the corpus: frame, tcp.stream, tcp.seq_raw, tcp.len) -- no tshark needed;
* live tshark on the project's own captures (examples/, tests/data/follow/);
* live tshark on crafted port-reuse captures (tests/sessions.py), one per rule of
  docs/wireshark-tcp-stream.md.

Expected differences are named with their reason: TCP inside tunnels tcpweave does not
open (none in the corpus today) and TCP headers quoted in ICMP errors (tshark gives them
a tcp.stream; for tcpweave they are not TCP packets).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import tcpweave
from conftest import CORPUS, NO_CORPUS, ROOT, corpus_captures
from sessions import ACK, FIN, RST, SYN, Session, Trace

TSHARK = shutil.which("tshark")
EXPECTED_DIR = CORPUS / "expected_tshark"

#: captures whose TCP packets all ride in a tunnel tcpweave does not open (reason)
TUNNELED: dict[str, str] = {}


def _tsv_for(path: Path) -> Path:
    return EXPECTED_DIR / (str(path.relative_to(CORPUS)).replace("/", "__") + ".streams.tsv")


def _parse(text: str) -> dict[int, tuple[int, bool]]:
    """frame -> (tcp.stream, quoted-in-ICMP); an ICMP-quoted header has no tcp.seq_raw."""
    out = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = line.split("\t")
        frame, stream = int(cols[0]), int(cols[1].split(",")[0])
        seq_raw = cols[2] if len(cols) > 2 else ""
        out[frame] = (stream, seq_raw == "")
    return out


def _ours(path: Path | list[Path]) -> dict[int, int]:
    with tcpweave.open(path) as cap:
        return dict(zip(cap.packets.frame.tolist(), cap.flows.stream.tolist(), strict=True))


def _compare(theirs: dict[int, tuple[int, bool]], ours: dict[int, int], key: str) -> None:
    problems = []
    tunneled = key in TUNNELED
    for frame, (stream, quoted) in sorted(theirs.items()):
        if quoted or tunneled:  # named differences: tcpweave has no TCP packet here
            assert frame not in ours, (frame, "ICMP-quoted" if quoted else TUNNELED[key])
            continue
        if frame not in ours:
            problems.append(f"frame {frame}: tshark tcp.stream {stream}, tcpweave no packet")
        elif ours[frame] != stream:
            problems.append(f"frame {frame}: tshark tcp.stream {stream}, tcpweave {ours[frame]}")
    extra = sorted(set(ours) - set(theirs))
    if extra:
        problems.append(f"frames tcpweave has as TCP and tshark does not: {extra[:10]}")
    assert not problems, "\n".join(problems[:20])


def _with_tsv() -> list[Path]:
    return [p for p in corpus_captures() if _tsv_for(p).is_file()]


@pytest.mark.parametrize("path", _with_tsv(), ids=lambda p: str(p.relative_to(CORPUS)))
def test_corpus_streams_match_stored_tshark(path: Path) -> None:
    theirs = _parse(_tsv_for(path).read_text())
    _compare(theirs, _ours(path), str(path.relative_to(CORPUS)))


def test_every_stored_tsv_has_its_capture() -> None:
    if not EXPECTED_DIR.is_dir():
        pytest.skip(NO_CORPUS)
    known = {_tsv_for(p).name for p in corpus_captures()}
    assert sorted(p.name for p in EXPECTED_DIR.glob("*.streams.tsv") if p.name not in known) == []


def test_tunnelled_tcp_is_numbered_like_tshark() -> None:
    """The geneve capture's TCP rides in Geneve (UDP 6081, RFC 8926): tcpweave opens it and
    numbers its streams as tshark does."""
    path = CORPUS / "tcpdump/geneve.pcap"
    if not path.is_file():
        pytest.skip(NO_CORPUS)
    theirs = _parse(_tsv_for(path).read_text())
    assert theirs
    assert _ours(path) == {frame: stream for frame, (stream, _) in theirs.items()}


# --------------------------------------------------------------------------- live tshark

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")


FIELDS = ("-e", "frame.number", "-e", "tcp.stream", "-e", "tcp.seq_raw", "-e", "tcp.len")


def _tshark(path: Path) -> dict[int, tuple[int, bool]]:
    assert TSHARK is not None
    out = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "fields", *FIELDS, "-Y", "tcp"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return _parse(out)


def _own_captures() -> list[Path]:
    return sorted((ROOT / "examples").glob("*.pcap*")) + sorted(
        (ROOT / "tests/data/follow").glob("*.pcap")
    )


@needs_tshark
@pytest.mark.parametrize("path", _own_captures(), ids=lambda p: p.name)
def test_own_captures_match_live_tshark(path: Path) -> None:
    _compare(_tshark(path), _ours(path), path.name)


@needs_tshark
@pytest.mark.parametrize("path", _own_captures(), ids=lambda p: p.name)
def test_stored_follow_tsv_still_matches(path: Path) -> None:
    tsv = path.with_suffix(".streams.tsv")
    if not tsv.is_file():
        pytest.skip("no stored tsv")
    assert _parse(tsv.read_text()) == _tshark(path)


# --------------------------------------------------------------------------- crafted rules
# Each builder returns a trace for one scenario of docs/wireshark-tcp-stream.md (section 2
# unless said otherwise) and the tcp.stream of each frame that the doc states.


def per_session(t: Trace, streams: list[int]) -> list[int]:
    """Expected tcp.stream per frame from one expected index per session (creation order)."""
    order: list[Session] = []
    for f in t.frames:
        if f.session not in order:
            order.append(f.session)
    return [streams[order.index(f.session)] for f in t.frames]


def _conn(t: Trace, **kw: object) -> Session:
    return t.session(**{"cisn": 1000, "sisn": 5000, "cport": 1234, **kw})  # type: ignore[arg-type]


def _full(s: Session, data: bytes = b"hello", close: str = "fin") -> None:
    s.handshake()
    s.c(0, data)
    s.s(0, b"reply")
    if close == "fin":
        s.close()
    elif close == "rst_c":
        s.rst_c()
    elif close == "rst_s":
        s.rst_s()


def newisn_after_fin() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    _full(_conn(t, cisn=2000))
    return t, per_session(t, [0, 1])


def newisn_no_close() -> tuple[Trace, list[int] | None]:
    t = Trace()
    a = _conn(t)
    a.handshake()
    a.c(0, b"data")
    _full(_conn(t, cisn=2000))
    return t, per_session(t, [0, 1])


def sameisn_after_fin() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    _full(_conn(t))
    return t, per_session(t, [0, 0])


def sameisn_after_rst_c() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t), close="rst_c")
    _full(_conn(t), close="rst_c")
    return t, per_session(t, [0, 0])


def sameisn_after_rst_s() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t), close="rst_s")
    _full(_conn(t), close="rst_s")
    return t, per_session(t, [0, 0])


def newisn_after_rst() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t), close="rst_c")
    _full(_conn(t, cisn=70000), close="rst_s")
    return t, per_session(t, [0, 1])


def retrans_syn() -> tuple[Trace, list[int] | None]:
    t = Trace()
    s = _conn(t)
    s.syn()
    s.syn()
    s.synack()
    s.ack_c()
    return t, [0, 0, 0, 0]


def syn_only_then_syn_new() -> tuple[Trace, list[int] | None]:
    t = Trace()
    for isn in (1000, 2000, 3000, 1000):
        _conn(t, cisn=isn).syn()
    return t, [0, 1, 2, 3]


def midstream_then_syn(seq: int, expected_last: int) -> Callable[[], tuple[Trace, list[int]]]:
    def build() -> tuple[Trace, list[int]]:
        t = Trace()
        s = _conn(t)
        s.send(True, 0, b"mid", seq=1001)
        s.send(False, 0, b"rep", seq=5001, ack=1004)
        s.send(True, -1, b"", SYN, seq=seq)
        return t, [0, 0, expected_last]

    build.__name__ = f"midstream_then_syn_{seq}"
    return build


def ack_zero_first() -> tuple[Trace, list[int] | None]:
    t = Trace()
    s = _conn(t)
    s.send(True, 0, b"", ACK, seq=1)
    s.send(True, -1, b"", SYN, seq=0)
    s.send(True, -1, b"", SYN, seq=7)
    return t, [0, 0, 1]


def rst_first() -> tuple[Trace, list[int] | None]:
    t = Trace()
    s = _conn(t)
    s.send(True, 0, b"", RST | ACK, seq=1006)
    s.send(True, -1, b"", SYN, seq=1000)
    return t, [0, 1]


def synfin_counts() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    _conn(t, cisn=4000).send(True, -1, b"", SYN | FIN, seq=4000)
    return t, per_session(t, [0, 1])


def syn_with_data_newisn() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    _conn(t, cisn=4000).syn(b"abc")
    return t, per_session(t, [0, 1])


def badsyn() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    _conn(t, cisn=4000).syn(checksum="bad")
    return t, per_session(t, [0, 1])


def synack_new_isn() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    _conn(t, sisn=7000).synack()
    return t, per_session(t, [0, 0])


def syn_from_other_side() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    s = _conn(t, client="10.0.0.2", server="10.0.0.1", cport=80, sport=1234, cisn=9000)
    s.syn()
    s.synack()
    return t, per_session(t, [0, 1])


def other_side_syn_same_isn() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t))
    _conn(t, client="10.0.0.2", server="10.0.0.1", cport=80, sport=1234, cisn=5000).syn()
    return t, per_session(t, [0, 0])


def peer_syn_base_unset() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _conn(t).syn()
    b = _conn(t, client="10.0.0.2", server="10.0.0.1", cport=80, sport=1234, cisn=9000)
    b.syn()
    _conn(t, client="10.0.0.2", server="10.0.0.1", cport=80, sport=1234, cisn=9100).syn()
    return t, [0, 0, 1]


def synack_first() -> tuple[Trace, list[int] | None]:
    t = Trace()
    s = _conn(t)
    s.synack()
    s.ack_c()
    s.c(0, b"x")
    _conn(t, cisn=3000).syn()
    return t, [0, 0, 0, 1]


def interleaved() -> tuple[Trace, list[int] | None]:
    t = Trace()
    a = _conn(t)
    a.handshake()
    b = _conn(t, cport=1235)
    b.handshake()
    c = _conn(t, cisn=2000)
    c.handshake()
    b.c(0, b"still one")
    return t, [0, 0, 0, 1, 1, 1, 2, 2, 2, 1]


def rst_then_data_no_syn() -> tuple[Trace, list[int] | None]:
    t = Trace()
    s = _conn(t)
    _full(s, close="rst_c")
    s.c(5, b"late")
    s.fin_c()
    return t, per_session(t, [0])


def ipv6_port_reuse() -> tuple[Trace, list[int] | None]:
    t = Trace()
    _full(_conn(t, client="2001:db8::1", server="2001:db8::2"))
    _full(_conn(t, client="2001:db8::1", server="2001:db8::2", cisn=2**32 - 5))
    _full(_conn(t))  # the same ports over IPv4: another key
    return t, per_session(t, [0, 1, 2])


def reuse_many_times() -> tuple[Trace, list[int] | None]:
    t = Trace()
    for k in range(5):
        _full(_conn(t, cisn=1000 + 100_000 * k))
    return t, per_session(t, list(range(5)))


SCENARIOS = [
    newisn_after_fin,
    newisn_no_close,
    sameisn_after_fin,
    sameisn_after_rst_c,
    sameisn_after_rst_s,
    newisn_after_rst,
    retrans_syn,
    syn_only_then_syn_new,
    midstream_then_syn(1000, 0),
    midstream_then_syn(1001, 1),
    midstream_then_syn(3000, 1),
    ack_zero_first,
    rst_first,
    synfin_counts,
    syn_with_data_newisn,
    badsyn,
    synack_new_isn,
    syn_from_other_side,
    other_side_syn_same_isn,
    peer_syn_base_unset,
    synack_first,
    interleaved,
    rst_then_data_no_syn,
    ipv6_port_reuse,
    reuse_many_times,
]


@pytest.mark.parametrize("build", SCENARIOS, ids=lambda f: f.__name__)
def test_crafted_rule_matches_documented_index(tmp_path: Path, build: Callable) -> None:
    """tcpweave numbers each crafted scenario as docs/wireshark-tcp-stream.md states."""
    trace, expected = build()
    path = trace.write(tmp_path / f"{build.__name__}.pcap")
    ours = _ours(path)
    assert [ours[f.frame] for f in trace.frames] == expected


@needs_tshark
@pytest.mark.parametrize("build", SCENARIOS, ids=lambda f: f.__name__)
def test_crafted_rule_matches_live_tshark(tmp_path: Path, build: Callable) -> None:
    trace, expected = build()
    path = trace.write(tmp_path / f"{build.__name__}.pcap")
    theirs = _tshark(path)
    assert [theirs[f.frame][0] for f in trace.frames] == expected, "the doc's rule vs tshark"
    _compare(theirs, _ours(path), path.name)
