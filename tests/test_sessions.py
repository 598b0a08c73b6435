"""The session table and its Zeek-style history.

Four oracles:

* the history kernel against its plain-Python reference (tcpweave/output/_reference.py),
  on generated packet sequences (every flag combination Zeek names, sequence numbers at
  the 2^32 wrap, zero windows, truncated and bad-checksum packets, holes, retransmissions)
  and on every corpus capture;
* Zeek itself: every conn.log baseline of the corpus (the Zeek btests' output, their
  checksum option read from the btest), history letter for letter, orig/resp bytes
  against our stream lengths, missed bytes against our gap bytes, packet counts; every
  disagreement is a named expected difference (docs/sessions.md);
* crafted captures (tests/sessions.py, independent of tcpweave), one per letter rule,
  the expected history written from Zeek's documented definition;
* the plan: the table's per-direction columns are the plan's figures, and a big capture
  cut into partitions gives the whole capture's table.

``EXERCISED`` tells tests/test_kernels.py which registered kernels are covered here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpweave
from conftest import corpus_captures
from sessions import ACK, FIN, PSH, RST, SYN, Session, Trace
from tcpweave.output import _kernels as k
from tcpweave.output.sessions import (
    JSONL_ROWS,
    SESSION_SCHEMA,
    session_jsonl,
    session_records,
    session_table,
)

EXERCISED = {("tcpweave.output", "build_histories")}

ref = importlib.import_module("tcpweave.output._reference")
QUICK = settings(max_examples=15, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
FULL = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ------------------------------------------------------------------ kernel == reference


def _run_both(args: tuple[np.ndarray, ...], size: int) -> tuple[Any, ...]:
    n = len(args[1]) - 1
    results = []
    for impl in (k, ref):
        out, ends = np.full(size, 7, np.uint8), np.zeros(n, np.int64)
        states = np.full((n, 2), -1, np.int8)
        copies = [a.copy() for a in args]
        results.append((int(impl.build_histories(*copies, out, ends, states)), out, ends, states))
    return results[0], results[1]


def assert_same_histories(args: tuple[np.ndarray, ...]) -> None:
    """Same histories, ends, final endpoint states and total; with a roomy and with a
    cramped ``out``."""
    (total, out, ends, states), (r_total, r_out, r_ends, r_states) = _run_both(
        args, 64 + 40 * len(args[0])
    )
    assert total == r_total
    assert ends.tolist() == r_ends.tolist()
    assert out.tobytes() == r_out.tobytes(), (out[:total].tobytes(), r_out[:total].tobytes())
    assert states.tolist() == r_states.tolist()
    (total, out, _, _), (r_total, r_out, _, _) = _run_both(args, 5)
    assert total == r_total and out.tobytes() == r_out.tobytes()


FLAG_CHOICES = [SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK, FIN | RST | ACK,
                SYN | FIN, SYN | RST, FIN, 0, PSH | ACK, ACK, PSH | ACK]  # fmt: skip
ISNS = [0, 1, 2**31 - 1, 2**32 - 1, 2**32 - 11, 123456]


@st.composite
def packet_walks(draw: Any) -> tuple[np.ndarray, ...]:
    """A few sessions, their packets interleaved in capture order; sequence numbers walk
    forward with repeats, holes and jumps back from a chosen ISN per direction."""
    n_sessions = draw(st.integers(1, 4))
    rows: list[tuple[int, ...]] = []
    for s in range(n_sessions):
        isn = [draw(st.sampled_from(ISNS)), draw(st.sampled_from(ISNS))]
        sent = [0, 0]
        for _ in range(draw(st.integers(0, 30))):
            d = draw(st.integers(0, 1))
            flags = draw(st.sampled_from(FLAG_CHOICES))
            n = draw(st.sampled_from([0, 0, 1, 10, 100, 1460, 9000, 20000]))
            step = draw(st.sampled_from([0, 0, 0, -n, -1, 1, 1000, -5000, 2**31, 3 * 2**20]))
            offset = max(sent[d] + step, -1)
            seq = (isn[d] + 1 + offset) % 2**32
            peer = sent[1 - d] + draw(st.sampled_from([0, 0, 0, 1, -1, 500, 70000]))
            ack = (isn[1 - d] + 1 + peer) % 2**32 if draw(st.integers(0, 5)) else 0
            cap = n if draw(st.integers(0, 6)) else draw(st.integers(0, n))
            window = draw(st.sampled_from([65535, 65535, 0, 512]))
            bad = draw(st.integers(0, 12)) == 0
            sent[d] = max(sent[d], offset + n)
            rows.append((s, d, flags, seq, ack, window, n, cap, bad))
    draw(st.randoms()).shuffle(rows)  # sessions interleaved; each keeps its own order below
    rows.sort(key=lambda r: r[0])
    perm = draw(st.permutations(list(range(len(rows)))))
    table = [rows[i] for i in perm]  # capture order: any interleaving of the sessions
    stream = np.array([r[0] for r in table], np.int64)
    order = np.argsort(stream, kind="stable")
    counts = np.bincount(stream, minlength=n_sessions)
    bounds = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    col = list(zip(*table, strict=True)) if table else [()] * 9
    types = [np.uint8, np.uint16, np.uint32, np.uint32, np.uint16, np.int64, np.int64, np.bool_]
    arrays = [np.array(c, t) for c, t in zip(col[1:], types, strict=True)]
    flipped = np.array([draw(st.booleans()) for _ in range(n_sessions)], np.bool_)
    return (order, bounds, *arrays, flipped)


@pytest.mark.quick
@QUICK
@given(packet_walks())
def test_build_histories_quick(args: tuple[np.ndarray, ...]) -> None:
    assert_same_histories(args)


@FULL
@given(packet_walks())
def test_build_histories_matches_reference(args: tuple[np.ndarray, ...]) -> None:
    assert_same_histories(args)


def _one_session(rows: list[tuple[int, ...]]) -> tuple[np.ndarray, ...]:
    """Kernel arguments for one session of (direction, flags, seq, ack, window, len, caplen)."""
    cols = list(zip(*rows, strict=True))
    types = [np.uint8, np.uint16, np.uint32, np.uint32, np.uint16, np.int64, np.int64]
    arrays = [np.array(c, t) for c, t in zip(cols, types, strict=True)]
    n = len(rows)
    return (np.arange(n), np.array([0, n]), *arrays, np.zeros(n, np.bool_),
            np.zeros(1, np.bool_))  # fmt: skip


def test_many_holes_make_the_reassembler_give_up_in_both() -> None:
    """More undelivered blocks than ``MAX_BLOCKS``: kernel and reference give up alike (no
    gap is reported after that), whatever the capture order."""
    rows = [(0, SYN, 0, 0, 65535, 0, 0), (1, SYN | ACK, 0, 1, 65535, 0, 0)]
    rows += [(0, ACK, 1 + 20 * i, 1, 65535, 10, 10) for i in range(700, 0, -1)]
    rows += [(1, ACK, 1, 20 * 700 + 11, 65535, 0, 0)]
    assert_same_histories(_one_session(rows))
    got = _history_of(_one_session(rows))
    assert got == "ShDTTTa", got  # gave up: the final ACK's holes are not reported


def _history_of(args: tuple[np.ndarray, ...]) -> str:
    n = len(args[1]) - 1
    out, ends, states = np.zeros(1000, np.uint8), np.zeros(n, np.int64), np.zeros((n, 2), np.int8)
    total = k.build_histories(*args, out, ends, states)
    return out[:total].tobytes().decode()


def _capture_args(cap: Any, checksums: str = "auto") -> tuple[np.ndarray, ...]:
    """The kernel's arguments for a capture, built as the session table builds them."""
    from tcpweave.output import sessions as module

    p, f = cap.packets, cap.flows
    order, bounds = module._by_session(f)
    facts = module._per_direction(cap.plan("first", checksums), f.n_streams)
    dropped = facts["drops_bad_checksums"].reshape(-1)[f.stream * 2 + f.direction]
    bad = dropped & (p.tcp_checksum == tcpweave.Checksum.BAD)
    return (order, bounds, f.direction, p.flags, p.seq, p.ack, p.window, p.payload_len,
            p.payload_caplen, bad, f.direction[f.first_row] != 0)  # fmt: skip


@pytest.mark.parametrize("path", corpus_captures(), ids=lambda p: p.name)
def test_corpus_histories_match_reference(path: Path) -> None:
    with tcpweave.open(path) as cap:
        assert_same_histories(_capture_args(cap))


# ------------------------------------------------------------------ Zeek's own baselines

#: conn.log baseline -> (capture, checksum mode of the btest that made it: ``zeek -C`` is
#: "ignore", Zeek's default is "strict"). The btests are zeek/zeek testing/btest/<name>.
BASELINES = {
    "zeek/ftp/Baseline/core.tcp.large-file-reassembly/conn.log":
        ("zeek/ftp/bigtransfer.pcap", "strict"),
    "zeek/tcp/Baseline/core.conn-size-flip/conn.log.one-sided":
        ("zeek/tcp/one-sided-2745.pcap", "ignore"),
    "zeek/tcp/Baseline/core.conn-size-flip/conn.log.ctu":
        ("zeek/tcp/ctu-64702-888.pcap", "ignore"),
    "zeek/tcp/Baseline/core.tcp.miss-end-data/conn.log":
        ("zeek/tcp/miss_end_data.pcap", "strict"),
    "zeek/tcp/Baseline/core.tcp.flip-without-syn/conn.log":
        ("zeek/tcp/http-on-irc-port-missing-syn.pcapng", "strict"),
    "zeek/tcp/Baseline/core.tcp.rxmit-history/conn-1.log":
        ("zeek/tcp/retransmit-fast009.pcap", "ignore"),
    "zeek/tcp/Baseline/core.tcp.rxmit-history/conn-2.log": ("zeek/wikipedia.pcap", "ignore"),
    "zeek/Baseline/core.tcp.rxmit-history/conn-1.log":
        ("zeek/tcp/retransmit-fast009.pcap", "ignore"),
    "zeek/Baseline/core.tcp.rxmit-history/conn-2.log": ("zeek/wikipedia.pcap", "ignore"),
    "zeek/tcp/Baseline/core.tcp.bad-checksum-syn/conn.log": ("zeek/tcp/syn-bad.pcap", "strict"),
    "zeek/tcp/Baseline/core.tcp.missing-syn/conn.log": ("zeek/tcp/missing-syn.pcap", "ignore"),
    "zeek/http/Baseline/core.tcp.reassembly-known-ports/conn.log":
        ("zeek/http/get.pcap", "strict"),
    "zeek/ldap/Baseline/scripts.base.protocols.ldap.gap/conn.log":
        ("zeek/ldap/gap-data-missing.pcapng", "strict"),
    "zeek/Baseline/core.vlan-mpls/conn.log": ("zeek/mixed-vlan-mpls.pcap", "ignore"),
    "zeek/Baseline/core.tcp-padding/conn.log": ("zeek/tcp-http-with-padding.pcap", "ignore"),
    # not a conn.log: tcp-dups prints the history when the connection is removed
    "zeek/tcp/Baseline/core.tcp.tcp-dups/out": ("zeek/tcp/ssh-dups.pcap", "ignore"),
}  # fmt: skip

#: conn.log files of the corpus with no TCP history to compare (VLAN fields only)
WITHOUT_HISTORY = {
    "zeek/Baseline/scripts.base.protocols.vlan.vlan-0-qinq/conn.log.cut",
    "zeek/Baseline/scripts.base.protocols.vlan.vlan-0/conn.log.cut",
}

#: (capture, Zeek uid, Zeek field) -> why our figure differs
EXPECTED_DIFFERENCES = {
    ("syn-bad.pcap", "CHhAvVGS1DHFjwGM9", "orig_pkts"): "Zeek counts no packet it dropped for "
    "its checksum; our packets_c2s counts every captured packet",
}


def _zeek_rows(path: Path) -> list[dict[str, str]]:
    """TCP rows of a Zeek log (``#fields`` header, or a zeek-cut header line)."""
    if path.name == "out":  # "REMOVE:, [orig_h=..., orig_p=.../tcp, ...], <history>"
        line = next(x for x in path.read_text().splitlines() if x.startswith("REMOVE"))
        fields = dict(kv.split("=") for kv in line.split("[")[1].split("]")[0].split(", ")[:4])
        ids = {f"id.{k}": v.split("/")[0] for k, v in fields.items()}
        return [{**ids, "history": line.rsplit(", ", 1)[1]}]
    fields: list[str] | None = None
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line.startswith("#"):
            continue
        elif fields is None:
            fields = line.split("\t")
        else:
            rows.append(dict(zip(fields, line.split("\t"), strict=True)))
    return [r for r in rows if r.get("proto", "tcp") == "tcp" and "history" in r]


def _ours(table: list[dict[str, Any]], zeek: dict[str, str]) -> dict[str, Any]:
    """Our session for a Zeek row: the one whose endpoints hold its addresses and ports."""

    def fits(s: dict[str, Any]) -> bool:
        addrs = {s["client_addr"], s["server_addr"]}
        ports = {s["client_port"], s["server_port"]}
        want_addrs = {zeek[f] for f in ("id.orig_h", "id.resp_h") if f in zeek}
        want_ports = {int(zeek[f]) for f in ("id.orig_p", "id.resp_p") if f in zeek}
        return want_addrs <= addrs and want_ports <= ports

    found = [s for s in table if fits(s)]
    assert len(found) == 1, (zeek, [(s["client_addr"], s["client_port"]) for s in table])
    return found[0]


def _comparisons(zeek: dict[str, str], ours: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Zeek field -> (Zeek's value, ours) for every field both have."""
    out: dict[str, tuple[Any, Any]] = {"history": (zeek["history"], ours["history"])}
    if "id.orig_h" in zeek:  # Zeek's originator is our client
        out["id.orig_h"] = (zeek["id.orig_h"], ours["client_addr"])
    if "id.orig_p" in zeek:
        out["id.orig_p"] = (int(zeek["id.orig_p"]), ours["client_port"])
    pairs = {"orig_bytes": "length_c2s", "resp_bytes": "length_s2c",
             "orig_pkts": "packets_c2s", "resp_pkts": "packets_s2c"}  # fmt: skip
    for field, col in pairs.items():
        if zeek.get(field, "-") != "-":
            out[field] = (int(zeek[field]), ours[col])
    if zeek.get("missed_bytes", "-") != "-":
        out["missed_bytes"] = (
            int(zeek["missed_bytes"]),
            ours["gap_bytes_c2s"] + ours["gap_bytes_s2c"],
        )
    return out


@pytest.mark.parametrize("baseline", sorted(BASELINES))
def test_history_and_sizes_as_zeek_baselines(corpus: Path, baseline: str) -> None:
    capture, checksums = BASELINES[baseline]
    with tcpweave.open(corpus / capture) as cap:
        table = cap.sessions("first", checksums).to_pylist()
    rows = _zeek_rows(corpus / baseline)
    assert rows
    for zeek in rows:
        ours = _ours(table, zeek)
        for field, (want, got) in _comparisons(zeek, ours).items():
            if (Path(capture).name, zeek.get("uid"), field) in EXPECTED_DIFFERENCES:
                assert got != want, f"{capture} {field}: the expected difference is gone"
            else:
                assert got == want, f"{capture} {field}: Zeek {want!r}, tcpweave {got!r}"


def test_every_corpus_conn_log_is_compared(corpus: Path) -> None:
    logs = {str(p.relative_to(corpus)) for p in corpus.glob("zeek/**/Baseline/**/conn*.log*")}
    assert logs == (set(BASELINES) - {"zeek/tcp/Baseline/core.tcp.tcp-dups/out"}) | WITHOUT_HISTORY


# ------------------------------------------------------------------ crafted captures


def _history(trace: Trace, tmp_path: Path, checksums: str = "auto") -> list[str]:
    path = trace.write(tmp_path / "t.pcap")
    with tcpweave.open(path) as cap:
        return cap.sessions("first", checksums).column("history").to_pylist()  # type: ignore[no-any-return]


def test_plain_session_letters_once_per_direction(tmp_path: Path) -> None:
    s = Session().handshake()
    s.c(0, b"GET / HTTP/1.0\r\n\r\n")
    s.c(18, b"more")
    s.s(0, b"HTTP/1.0 200 OK\r\n\r\n")
    s.ack_c()
    s.close()
    assert _history(s.trace, tmp_path) == ["ShADdFf"]


@pytest.mark.parametrize(
    ("flags", "want"),
    [(SYN | FIN, "Q"), (SYN | RST, "Q"), (FIN | RST, "I"), (FIN | RST | ACK, "I")],
    ids=["SYN+FIN", "SYN+RST", "FIN+RST", "FIN+RST+ACK"],
)
def test_multi_flag_packets(tmp_path: Path, flags: int, want: str) -> None:
    """Zeek: 'q' a multi-flag packet (SYN+FIN or SYN+RST), 'i' an inconsistent one
    (FIN+RST); once per direction, and no S, F or R for them."""
    s = Session()
    s.send(True, -1, b"", flags)
    s.send(True, -1, b"", flags)
    assert _history(s.trace, tmp_path) == [want]


def test_zero_windows_recorded_at_1_and_10(tmp_path: Path) -> None:
    """'w' is logarithmic: the server's 1st and 10th zero-window advertisements."""
    s = Session().handshake()
    s.c(0, b"x" * 100)
    for _ in range(12):
        s.ack_s(window=0)
    s.c(100, b"y", window=0)  # the client's too
    assert _history(s.trace, tmp_path) == ["ShADawwW"]


def test_zero_window_with_a_reset_or_after_the_peer_closed_is_not_recorded(
    tmp_path: Path,
) -> None:
    s = Session().handshake()
    s.fin_c()
    s.ack_s(window=0)  # the client closed: no window matters any more
    s.rst_s(window=0)
    assert _history(s.trace, tmp_path) == ["ShAFar"]


@pytest.mark.parametrize(("copies", "letters"), [(1, 1), (9, 1), (10, 2), (99, 2), (100, 3)])
def test_retransmissions_recorded_at_1_10_100(tmp_path: Path, copies: int, letters: int) -> None:
    s = Session().handshake()
    s.c(0, b"hello")
    for _ in range(copies):
        s.c(0, b"hello")
    assert _history(s.trace, tmp_path) == ["ShAD" + "T" * letters]


def test_bytes_below_the_highest_sequence_are_a_retransmission_to_zeek(tmp_path: Path) -> None:
    """Piece 2 arrives after piece 3: never seen before, yet below the highest end seen,
    so Zeek writes 'T' (tshark: "retransmission"); our figures say out of order, and
    retransmitted_bytes stays 0."""
    s = Session().handshake()
    s.c(0, b"one")
    s.c(6, b"three")
    s.c(3, b"two")
    path = s.write(tmp_path / "t.pcap")
    with tcpweave.open(path) as cap:
        row = cap.sessions().to_pylist()[0]
    assert row["history"] == "ShADT"
    assert (row["out_of_order_c2s"], row["retransmitted_bytes_c2s"], row["gaps_c2s"]) == (1, 0, 0)


def test_gap_letter_in_arrival_order(tmp_path: Path) -> None:
    """A hole the server acknowledges is a client gap ('G') at that ACK, before the data
    that follows, not at the end."""
    s = Session().handshake()
    s.c(0, b"aaaa")
    s.c(8, b"cccc")  # 4..7 never captured
    s.ack_s()  # acknowledges 12: the hole is behind it
    s.s(0, b"reply")
    s.close()
    assert _history(s.trace, tmp_path) == ["ShADaGdFf"]


def test_gap_never_acknowledged_has_no_letter_but_is_counted(tmp_path: Path) -> None:
    """Zeek's rule: a hole is a gap once the receiver acknowledged past it (the capture
    missed what the receiver got). Unacknowledged, it is in gaps_c2s only."""
    s = Session().handshake()
    s.c(0, b"aaaa")
    s.c(8, b"cccc")
    path = s.write(tmp_path / "t.pcap")
    with tcpweave.open(path) as cap:
        row = cap.sessions().to_pylist()[0]
    assert (row["history"], row["gaps_c2s"], row["gap_bytes_c2s"]) == ("ShAD", 1, 4)


@pytest.mark.parametrize(
    ("checksums", "want"),
    [("strict", "ShACDF"), ("auto", "ShACDF"), ("ignore", "ShADTF")],
)
def test_bad_checksum_letter_follows_the_checksum_mode(
    tmp_path: Path, checksums: str, want: str
) -> None:
    """'C' marks a packet dropped for its checksum (Zeek without -C); with ``ignore`` (Zeek
    -C) the packet counts as any other, here a retransmission of the good copy after it."""
    s = Session().handshake()
    s.c(0, b"data", checksum="bad")
    s.c(0, b"data")
    s.fin_c()
    assert _history(s.trace, tmp_path, checksums) == [want]


def test_offloaded_checksums_are_no_c_in_auto_mode(tmp_path: Path) -> None:
    """Every client data checksum bad while the server acknowledges the data: checksum
    offload at the capture point; ``auto`` keeps those segments, so they are no 'C'."""
    s = Session().handshake()
    s.c(0, b"data", checksum="bad")
    s.ack_s()
    s.c(4, b"more", checksum="bad")
    s.ack_s()
    assert _history(s.trace, tmp_path, "auto") == ["ShADa"]
    # dropped, the data is missing where the server acknowledged it: a gap
    assert _history(s.trace, tmp_path, "strict") == ["ShACaG"]


def test_syn_ack_first_is_a_flip(tmp_path: Path) -> None:
    """The capture starts at the server's SYN-ACK: the client (its receiver) did not send
    the first packet, so the history starts with '^' and the SYN-ACK is the server's 'h'."""
    s = Session()
    s.synack()
    s.ack_c()
    s.c(0, b"hi")
    s.s(0, b"yo")
    assert _history(s.trace, tmp_path) == ["^hADd"]


def test_fin_and_rst_again_only_at_a_new_sequence_number(tmp_path: Path) -> None:
    """F, R (and S, H) are recorded again when their sequence number differs from the last
    one of that kind: a retransmitted FIN is not, a second reset further on is."""
    s = Session().handshake()
    s.fin_c(0)
    s.fin_c(0)  # the same FIN again
    s.rst_s(offset=0)
    s.rst_s(offset=5)
    assert _history(s.trace, tmp_path) == ["ShAFrr"]


# ------------------------------------------------------------------ the table


def test_table_columns_are_the_plan_figures(tmp_path: Path) -> None:
    t = Trace()
    a = t.session(cport=40001).handshake()
    a.c(0, b"0123456789")
    a.c(20, b"abc")  # 10..19 missing
    a.c(5, b"56789")  # retransmission
    a.fin_c()
    b = t.session(client="2001:db8::1", server="2001:db8::2", cport=40002).handshake()
    b.s(0, b"x")
    b.rst_s()
    path = t.write(tmp_path / "t.pcap")
    with tcpweave.open(path) as cap:
        table = cap.sessions()
        rows = table.to_pylist()
    assert table.schema == SESSION_SCHEMA
    first, second = rows
    assert (first["client_addr"], first["client_port"], first["server_port"]) == (
        "10.0.0.1",
        40001,
        80,
    )
    assert (first["packets_c2s"], first["bytes_c2s"], first["length_c2s"]) == (6, 13, 23)
    assert (first["gaps_c2s"], first["gap_bytes_c2s"], first["retransmitted_bytes_c2s"]) == (
        1,
        10,
        5,
    )
    assert (first["close_c2s"], first["close_s2c"], first["close"]) == (
        "fin",
        "open",
        "half-closed",
    )
    assert second["client_addr"] == "2001:db8::1" and second["ip_version"] == 6
    assert second["client_addr_raw"] == bytes.fromhex("20010db8" + "0" * 22 + "01")
    assert (second["close_s2c"], second["close"]) == ("rst", "rst")
    assert first["first_ts"].timestamp() == t.t0_ns / 1e9
    assert first["duration_s"] == pytest.approx(6 * t.step_ns / 1e9)  # frames 1 to 7


def test_close_states() -> None:
    """A reset outranks a FIN; a session closes with both FINs, half-closes with one."""
    c = tcpweave.Close
    assert c.of_directions([0, 0, 1, 1], [0, 1, 0, 1]).tolist() == [c.OPEN, c.FIN, c.RST, c.RST]
    pairs = [(c.FIN, c.FIN), (c.FIN, c.OPEN), (c.OPEN, c.FIN), (c.OPEN, c.OPEN), (c.RST, c.FIN)]
    got = c.of_sessions([a for a, _ in pairs], [b for _, b in pairs]).tolist()
    assert got == [c.FIN, c.HALF_CLOSED, c.HALF_CLOSED, c.OPEN, c.RST]
    assert [str(x) for x in c] == ["open", "fin", "half-closed", "rst"]
    assert c.direction_name(True, True) == "rst" and c.direction_name(False, True) == "fin"


def test_capture_without_tcp_has_an_empty_table(tmp_path: Path) -> None:
    from craft import LINKTYPE_ETHERNET, write_pcap

    path = write_pcap(tmp_path / "empty.pcap", [], LINKTYPE_ETHERNET)
    with tcpweave.open(path) as cap:
        table = cap.sessions()
    assert table.num_rows == 0 and table.schema == SESSION_SCHEMA


def test_capture_at_the_epoch(tmp_path: Path) -> None:
    """Timestamps from 0 (issue 13 item 5): 0 is a time like any other, never "no value"."""
    from typer.testing import CliRunner

    from tcpweave.cli import app

    t = Trace(t0_ns=0)
    s = t.session()
    s.synack()  # the server's side first, at time 0
    s.ack_c()
    s.c(0, b"hi")
    t.session(cport=40001).syn(ts_ns=0)  # a session whose only packet is at time 0
    path = t.write(tmp_path / "epoch.pcap")
    with tcpweave.open(path) as cap:
        first, lone = cap.sessions().to_pylist()
    assert first["first_ts"].timestamp() == 0 and first["duration_s"] == 2 * t.step_ns / 1e9
    assert lone["first_ts"].timestamp() == lone["last_ts"].timestamp() == 0
    for fmt in ("jsonl", "csv", "table"):
        result = CliRunner().invoke(app, ["streams", str(path), "--format", fmt])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["streams", str(path), "--format", "jsonl"])
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["duration_s"] for r in rows] == [0.002, 0.0]
    assert [r["first_ts"] for r in rows] == [0.0, 0.0]


def test_streams_rows_have_plain_ipv6_endpoints(tmp_path: Path) -> None:
    """The jsonl/csv values carry no terminal markup: addresses and ports as their own fields."""
    from typer.testing import CliRunner

    from tcpweave.cli import app

    s = Session(client="2001:db8::1", server="2001:db8::2").handshake()
    path = s.write(tmp_path / "v6.pcap")
    result = CliRunner().invoke(app, ["streams", str(path), "--format", "jsonl"])
    row = json.loads(result.stdout)
    assert (row["client_addr"], row["client_port"]) == ("2001:db8::1", 40000)
    assert (row["server_addr"], row["server_port"]) == ("2001:db8::2", 80)


def _partition_table(part: Any) -> pa.Table:
    return session_table(part.packets, part.flows, part.plan(), part.global_index)


def test_partitions_give_the_whole_capture_table(tmp_path: Path) -> None:
    """Cut by flow into partitions, numbered globally: the same rows as the whole capture."""
    from tcpweave.run import Run, Settings

    t = Trace()
    for i in range(60):
        s = t.session(cport=41000 + i % 20, cisn=1000 * i, sisn=7 * i)  # port reuse too
        s.handshake()
        s.c(0, b"q" * (i + 1))
        s.s(0, b"r" * 3)
        s.close()
    path = str(t.write(tmp_path / "many.pcap"))
    with tcpweave.open(path) as cap:
        whole = cap.sessions()
    with Run([path], Settings(), whole=False, rows_per_partition=40) as run:
        parts = [table for _, table in run.map(_partition_table)]
    assert len(parts) > 3
    merged = pa.concat_tables(parts).sort_by("stream")
    assert merged.equals(whole)


def _dumps_per_record(table: pa.Table) -> str:
    """The JSON Lines text as ``json.dumps`` writes each record (the oracle)."""
    return "".join(json.dumps(r) + "\n" for r in session_records(table))


@pytest.mark.parametrize("path", corpus_captures()[:12], ids=lambda p: p.name)
def test_session_jsonl_is_json_dumps_of_each_record(path: Path) -> None:
    with tcpweave.open(path) as cap:
        table = cap.sessions()
    assert "".join(session_jsonl(table)) == _dumps_per_record(table)


def test_session_jsonl_escapes_and_odd_floats_as_json_dumps(tmp_path: Path) -> None:
    """Strings that need escaping, non-finite and tiny floats, nulls, and more rows than
    one chunk: the same text as ``json.dumps`` of each record."""
    t = Trace()
    for i in range(5):
        s = t.session(cport=42000 + i)
        s.handshake()
        s.c(0, b"x")
        s.close()
    with tcpweave.open(t.write(tmp_path / "five.pcap")) as cap:
        table = cap.sessions()
    odd = ['a"b', "back\\slash", "é", "\x01", "plain"]
    duration = [float("nan"), float("inf"), 1e-07, 1e16, 0.1]
    table = table.set_column(table.schema.get_field_index("history"), "history",
                             pa.array(odd, pa.string()))  # fmt: skip
    table = table.set_column(table.schema.get_field_index("duration_s"), "duration_s",
                             pa.array(duration, pa.float64()))  # fmt: skip
    nulls = pa.array([None, 1, None, 2, 3], pa.int64())
    table = table.set_column(table.schema.get_field_index("gaps_c2s"), "gaps_c2s", nulls)
    assert "".join(session_jsonl(table)) == _dumps_per_record(table)
    many = pa.concat_tables([table] * (JSONL_ROWS // 5 + 3))
    assert "".join(session_jsonl(many)) == _dumps_per_record(many)
