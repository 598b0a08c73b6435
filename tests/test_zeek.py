"""Zeek's conn.log from ``tcpweave streams --format zeek`` and ``--format zeek-json``.

Oracles:

* Zeek itself: every conn.log baseline of the corpus (the same baselines and checksum
  options as tests/test_sessions.py), read from our TSV by a zeek-cut-like reader written
  here from zeek-cut's documented behaviour (the ``#separator`` line, then columns chosen
  by the names of ``#fields``): conn_state, sizes, missed bytes, packet and IP byte counts,
  history and duration, with the named expected differences of docs/zeek.md;
* Zeek's documented meaning of each conn_state (docs.zeek.org ``Conn::Info``), on one
  crafted capture per state;
* the format: Zeek's header lines in Zeek's order, a type per field, unset fields as ``-``,
  and the JSON writer's field names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from sessions import FIN, RST, Session, Trace
from tcpweave.cli import app
from tcpweave.output.zeek import CONN_FIELDS
from test_sessions import BASELINES


def _streams(path: Path | str, fmt: str, *more: str) -> str:
    result = CliRunner().invoke(app, ["streams", str(path), "--format", fmt, *more])
    assert result.exit_code == 0, result.output
    return result.stdout


def zeek_cut(text: str, *fields: str) -> list[list[str]]:
    """What ``zeek-cut FIELD...`` prints, as lists: the separator from the ``#separator``
    line (written as ``\\xNN``), the columns named by ``#fields``, data lines only."""
    sep = "\t"
    names: list[str] = []
    out = []
    for line in text.splitlines():
        if line.startswith("#separator "):
            sep = bytes.fromhex(line.split(" ", 1)[1].replace("\\x", "")).decode()
        elif line.startswith("#fields"):
            names = line.split(sep)[1:]
        elif line and not line.startswith("#"):
            values = line.split(sep)
            assert len(values) == len(names)
            out.append([values[names.index(f)] for f in fields])
    return out


def _rows(text: str) -> list[dict[str, str]]:
    names = [n for n, _ in CONN_FIELDS]
    return [dict(zip(names, row, strict=True)) for row in zeek_cut(text, *names)]


def _zeek_log(path: Path) -> list[dict[str, str]]:
    """TCP rows of a corpus baseline (a ``#fields`` header, or zeek-cut's header line)."""
    text = path.read_text()
    if "#fields" not in text:  # a zeek-cut -c/-m output: its first line names the fields
        lines = text.splitlines()
        names = next(x for x in lines if not x.startswith("#")).split("\t")
        body = [x.split("\t") for x in lines[lines.index("\t".join(names)) + 1 :] if x]
        rows = [dict(zip(names, row, strict=True)) for row in body]
    else:
        names = [n for n in text.split("#fields\t")[1].splitlines()[0].split("\t")]
        cut = zeek_cut(text, *names)
        rows = [dict(zip(names, row, strict=True)) for row in cut]
    return [r for r in rows if r.get("proto", "tcp") == "tcp"]


def _same_connection(ours: list[dict[str, str]], zeek: dict[str, str]) -> dict[str, str]:
    keys = [k for k in ("id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p") if k in zeek]
    found = [r for r in ours if all(r[k] == zeek[k] for k in keys)]
    assert len(found) == 1, (zeek, keys)
    return found[0]


COMPARED = ("conn_state", "orig_bytes", "resp_bytes", "missed_bytes", "history", "orig_pkts",
            "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "duration", "proto", "id.orig_h",
            "id.orig_p", "id.resp_h", "id.resp_p")  # fmt: skip

#: (capture, field) -> why ours differs from Zeek's (docs/zeek.md)
EXPECTED = {
    ("syn-bad.pcap", "orig_pkts"): "Zeek counts no packet it dropped for its checksum",
    ("syn-bad.pcap", "orig_ip_bytes"): "nor its IP bytes",
}


@pytest.mark.parametrize("baseline", sorted(b for b in BASELINES if b.endswith(".log") or
                                            ".log." in b))  # fmt: skip
def test_conn_log_as_zeek_baselines(corpus: Path, baseline: str) -> None:
    capture, checksums = BASELINES[baseline]
    ours = _rows(_streams(corpus / capture, "zeek", "--checksums", checksums))
    zeek_rows = _zeek_log(corpus / baseline)
    assert zeek_rows
    for zeek in zeek_rows:
        mine = _same_connection(ours, zeek)
        for field in (f for f in COMPARED if f in zeek):
            want, got = zeek[field], mine[field]
            if (Path(capture).name, field) in EXPECTED:
                assert got != want, f"{capture} {field}: the expected difference is gone"
            elif field == "duration" and zeek["conn_state"] == "SF":
                # Zeek stops a connection's clock once both sides have closed (its
                # TCPSessionAdapter::Process: no SetLastTime after both did_close): the
                # last ACK is not in Zeek's duration, it is in ours
                assert float(got) > float(want), (capture, got, want)
            else:
                assert got == want, f"{capture} {field}: Zeek {want!r}, tcpweave {got!r}"


def test_tsv_header_as_zeek_writes_it(corpus: Path) -> None:
    text = _streams(corpus / "zeek/http/get.pcap", "zeek")
    lines = text.splitlines()
    assert lines[0] == "#separator \\x09"
    assert lines[1:5] == ["#set_separator\t,", "#empty_field\t(empty)", "#unset_field\t-",
                          "#path\tconn"]  # fmt: skip
    assert re.fullmatch(r"#open\t\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", lines[5])
    fields, types = lines[6].split("\t"), lines[7].split("\t")
    assert fields[0] == "#fields" and types[0] == "#types" and len(fields) == len(types)
    assert fields[1:] == [n for n, _ in CONN_FIELDS]
    assert re.fullmatch(r"#close\t\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d", lines[-1])
    (row,) = _rows(text)
    assert re.fullmatch(r"\d+\.\d{6}", row["ts"]) and re.fullmatch(r"\d+\.\d{6}", row["duration"])
    assert (row["service"], row["local_orig"], row["tunnel_parents"]) == ("-", "-", "-")
    assert (row["proto"], row["ip_proto"]) == ("tcp", "6")


def test_zeek_json_has_zeek_field_names_and_leaves_unset_fields_out(corpus: Path) -> None:
    path = corpus / "zeek/tcp/retransmit-fast009.pcap"
    tsv = _rows(_streams(path, "zeek"))
    objs = [json.loads(line) for line in _streams(path, "zeek-json").splitlines()]
    assert len(objs) == len(tsv) > 0
    names = [n for n, _ in CONN_FIELDS]
    for obj, row in zip(objs, tsv, strict=True):
        assert list(obj) == [n for n in names if row[n] != "-"]  # Zeek's order, unset left out
        for name, value in obj.items():
            if isinstance(value, float):
                assert f"{value:.6f}" == row[name]
            else:
                assert str(value) == row[name], name


def test_uid_is_deterministic_and_distinct(corpus: Path) -> None:
    path = corpus / "zeek/wikipedia.pcap"
    whole = _rows(_streams(path, "zeek"))
    parts = _rows(_streams(path, "zeek", "--partition-rows", "20"))
    uids = [r["uid"] for r in whole]
    assert uids == [r["uid"] for r in parts]
    assert len(set(uids)) == len(uids) > 5
    assert all(re.fullmatch(r"C[0-9A-Za-z]{17}", u) for u in uids)


# ---------------------------------------------------------------- conn_state, one by one


def _syn_rst(s: Session) -> None:
    s.syn()
    s.c(0, b"", RST)


def _synack_then(flags: int) -> Any:
    def build(s: Session) -> None:
        s.synack()
        s.s(0, b"", flags)

    return build


def _established(*then: str) -> Any:
    def build(s: Session) -> None:
        s.handshake()
        s.c(0, b"hello")
        s.s(0, b"hi")
        for step in then:
            getattr(s, step)()

    return build


#: state -> (a capture made from Zeek's description of the state, the expected history)
STATES = {
    "S0": (lambda s: s.syn(), "S"),  # connection attempt seen, no reply
    "REJ": (lambda s: (s.syn(), s.rst_s()), "Sr"),  # connection attempt rejected
    "SF": (_established("close"), "ShADdFf"),  # normal establishment and termination
    "S1": (_established(), "ShADd"),  # established, not terminated
    "S2": (_established("fin_c"), "ShADdF"),  # established, the originator's close only
    "S3": (_established("fin_s"), "ShADdf"),  # established, the responder's close only
    "RSTO": (_established("rst_c"), "ShADdR"),  # established, the originator aborted
    "RSTR": (_established("rst_s"), "ShADdr"),  # established, the responder sent a RST
    "RSTOS0": (_syn_rst, "SR"),  # a SYN then a RST, no SYN-ACK seen
    "RSTRH": (_synack_then(RST), "^hr"),  # a SYN-ACK then a RST, no SYN seen
    "SH": (lambda s: (s.syn(), s.c(0, b"", FIN)), "SF"),  # a SYN then a FIN, no SYN-ACK
    "SHR": (_synack_then(FIN), "^hf"),  # a SYN-ACK then a FIN, no SYN seen
    "OTH": (lambda s: (s.c(0, b"mid"), s.s(0, b"stream")), "Dd"),  # midstream only
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_conn_state_from_zeeks_description(tmp_path: Path, state: str) -> None:
    build, history = STATES[state]
    s = Trace().session(cport=40000, sport=80)
    build(s)
    text = _streams(s.write(tmp_path / "t.pcap"), "zeek")
    assert zeek_cut(text, "conn_state", "history") == [[state, history]]


def test_every_conn_state_is_crafted() -> None:
    import tcpweave

    assert set(STATES) == {str(c) for c in tcpweave.ConnState}
