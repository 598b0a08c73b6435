"""TCP through encapsulations: crafted captures (tests/craft.py, built from the specs) of
two connections through each encapsulation of docs/encapsulations.md, held against tshark
(per-packet TCP fields, ``tcp.stream``, follow output byte for byte, tunnel ids and outer
addresses) and against how they were built (the tunnel columns, the counters).

One named difference: tshark numbers one inner 4-tuple in two tunnels as one stream;
tcpweave keys flows by tunnel too (two streams, sessions 0 and 1 of the 4-tuple), on one
partition or many.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import craft
import tcpweave
from conftest import CORPUS
from tcpweave import run as engine
from tcpweave.decode.table import format_tunnel_address
from tcpweave.output.follow import FollowMode
from test_follow import MODES, _ours, _tshark_follow
from test_tcp_stream_diff import _compare as compare_streams
from test_tcp_stream_diff import _tshark as tshark_streams
from tshark_oracle import first_difference, tcpweave_rows, tshark_rows

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
NAMES = craft.tunnel_kind_names()

#: what each capture must count in ``stats.encapsulations`` per frame (16 frames each)
COUNTED = {
    "gre_teb": ["gre"],
    "erspan1": ["erspan"],
    "erspan2": ["erspan"],
    "erspan3": ["erspan"],
    "vxlan_v6": ["vxlan"],
    "gre_v6": ["gre"],
    "gre_key_seq_csum": ["gre"],
    "pptp": ["gre"],
    "geneve_ip": ["geneve"],
    "fddi": ["llc_snap"],
    "atm_rfc1483": ["llc_snap"],
    "llc_snap": ["llc_snap"],
    "ppp_hdlc": [],
    "cisco_hdlc": [],
}

#: tshark fields holding each tunnel's id
ID_FIELDS = {
    "vxlan": "vxlan.vni",
    "geneve": "geneve.vni",
    "gre": "gre.key",
    "gtpu": "gtp.teid",
    "erspan": "erspan.spanid",
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, craft.TunnelCapture]:
    return craft.build_tunnels(tmp_path_factory.mktemp("tunnels"))


def _counted(name: str) -> dict[str, int]:
    kinds = COUNTED.get(name, [name.split("_")[0]])
    return dict.fromkeys(kinds, 16)


@pytest.mark.parametrize("name", NAMES)
def test_tunnel_columns_match_construction(built: dict[str, Any], name: str) -> None:
    """Every frame is a TCP row with the tunnel it was built with, and each encapsulation
    met is counted once per frame."""
    c = built[name]
    with tcpweave.open(c.path) as cap:
        p = cap.packets
        assert p.frame.tolist() == list(range(1, len(c.tunnels) + 1))
        ours = []
        for i in range(len(p)):
            kind = tcpweave.Encapsulation(int(p.tunnel[i]))
            if kind == tcpweave.Encapsulation.NONE:
                ours.append(None)
                continue
            src, dst = (format_tunnel_address(p[n][i]) for n in ("tunnel_src", "tunnel_dst"))
            ours.append((str(kind), src, dst, int(p.tunnel_id[i])))
        assert ours == c.tunnels
        assert cap.stats.encapsulations == _counted(name)
        assert {cap.stats.non_ip, cap.stats.non_tcp, cap.stats.malformed} == {0}


@needs_tshark
@pytest.mark.parametrize("name", NAMES)
def test_tunnelled_packets_match_tshark(built: dict[str, Any], name: str) -> None:
    """Addresses, ports, seq/ack, flags, length, checksum verdict of the inner TCP: tshark's."""
    path = built[name].path
    theirs, skipped = tshark_rows(path)
    assert not skipped
    assert len(theirs) == 16
    assert first_difference(tcpweave_rows(path), theirs) is None


@needs_tshark
@pytest.mark.parametrize("name", NAMES)
def test_tunnelled_streams_match_tshark(built: dict[str, Any], name: str) -> None:
    path = built[name].path
    theirs = tshark_streams(path)
    assert sorted({s for s, _ in theirs.values()}) == [0, 1]
    with tcpweave.open(path) as cap:
        ours = dict(zip(cap.packets.frame.tolist(), cap.flows.stream.tolist(), strict=True))
    compare_streams(theirs, ours, name)


@needs_tshark
@pytest.mark.parametrize("name", NAMES)
def test_tunnelled_follow_is_byte_equal_to_tshark(built: dict[str, Any], name: str) -> None:
    path = built[name].path
    with tcpweave.open(path) as cap:
        theirs = _tshark_follow(path, (0, 1))
        for stream in (0, 1):
            for mode in MODES:
                assert _ours(cap, stream, mode) == theirs[mode, stream], (stream, str(mode))


def _tshark_fields(path: Path, fields: list[str]) -> list[list[str]]:
    assert TSHARK is not None
    cmd = [TSHARK, "-n", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    return [line.split("\t") for line in out.splitlines()]


@needs_tshark
@pytest.mark.parametrize("name", NAMES)
def test_tunnel_id_and_outer_addresses_match_tshark(built: dict[str, Any], name: str) -> None:
    """The outer addresses are the first IP layer's, the id tshark's VNI / key / TEID / span
    id (GRE without a key, IP-in-IP, Teredo and AYIYA have none: 0)."""
    c = built[name]
    if c.tunnels[0] is None:
        pytest.skip("a link-layer encapsulation: no tunnel columns")
    kind = c.tunnels[0][0]
    id_field = "gre.key.call_id" if name == "pptp" else ID_FIELDS.get(kind)  # RFC 2637 §4.1
    fields = ["ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "frame.protocols"]
    fields += [id_field] if id_field else []
    rows = _tshark_fields(c.path, fields)
    with tcpweave.open(c.path) as cap:
        p = cap.packets
        for i, row in enumerate(rows):
            v = dict(zip(fields, row, strict=True))
            outer = (
                "ip" if v["frame.protocols"].split(":ethertype:")[1].startswith("ip:") else "ipv6"
            )
            assert format_tunnel_address(p.tunnel_src[i]) == v[f"{outer}.src"]
            assert format_tunnel_address(p.tunnel_dst[i]) == v[f"{outer}.dst"]
            their_id = int(v[id_field], 0) if id_field and v[id_field] else 0
            assert int(p.tunnel_id[i]) == their_id


def _engine_rows(path: Path, rows_per_partition: int) -> list[tuple[int, int, str]]:
    """(stream, tunnel id, outer source) per frame, through the engine (spilled partitions
    when ``rows_per_partition`` is small)."""
    with engine.Run([str(path)], engine.Settings(), rows_per_partition=rows_per_partition) as run:
        out: dict[int, tuple[int, int, str]] = {}
        for window in engine.packet_rows(run):
            cols = [window.column(n).to_pylist() for n in ("frame", "stream", "tunnel_id")]
            sources = [format_tunnel_address(a) for a in window.column("tunnel_src").to_pylist()]
            for frame, stream, ident, source in zip(*cols, sources, strict=True):
                out[frame] = (stream, ident, source)
    return [out[f] for f in sorted(out)]


@pytest.mark.parametrize("rows", [1 << 30, 2], ids=["one-partition", "many-partitions"])
def test_one_inner_tuple_in_two_tunnels_is_two_flows(tmp_path: Path, rows: int) -> None:
    """VXLAN 10 and VXLAN 20 carry the same inner 4-tuple with the same ISNs, interleaved:
    two streams, on one partition or many, with their tunnel columns."""
    c = craft.two_tunnels_one_tuple(tmp_path)
    tunnels = [t for t in c.tunnels if t is not None]
    assert _engine_rows(c.path, rows) == [(0 if t[3] == 10 else 1, t[3], t[1]) for t in tunnels]


@needs_tshark
def test_tshark_merges_one_inner_tuple_in_two_tunnels(tmp_path: Path) -> None:
    """The named difference: tshark 4.0 keys conversations by addresses and ports only."""
    c = craft.two_tunnels_one_tuple(tmp_path)
    assert {s for s, _ in tshark_streams(c.path).values()} == {0}


def test_gtpu_directions_are_one_flow_though_their_teids_differ(built: dict[str, Any]) -> None:
    """A GTP-U TEID names the receiving endpoint (3GPP TS 29.281 §5.1): each direction has its
    own, so the TEID is kept per packet but does not key the flow."""
    with tcpweave.open(built["gtpu"].path) as cap:
        assert len(set(cap.packets.tunnel_id.tolist())) == 2
        assert cap.flows.n_streams == 2


def test_follow_modes_are_all_checked() -> None:
    assert set(MODES) == set(FollowMode)


@pytest.mark.parametrize("rows", [1 << 30, 2], ids=["one-partition", "many-partitions"])
@pytest.mark.parametrize("layout", ["tcpweave", "tcpflow"])
def test_two_tunnels_one_tuple_extract_apart(tmp_path: Path, rows: int, layout: str) -> None:
    """The two streams are sessions 0 and 1 of their 4-tuple, and their files are apart in
    both layouts (the tcpflow layout names files by 4-tuple and session)."""
    c = craft.two_tunnels_one_tuple(tmp_path)
    out = tmp_path / "out"
    tcpweave.extract(c.path, out, partition_rows=rows, jobs=1, layout=layout)
    records = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
    assert sorted((r["stream"], r["session"], r["direction"]) for r in records) == [
        (0, 0, "c2s"), (0, 0, "s2c"), (1, 1, "c2s"), (1, 1, "s2c")
    ]  # fmt: skip
    assert len({r["path"] for r in records}) == 4
    sent = {(r["stream"], r["direction"]): (out / r["path"]).read_bytes() for r in records}
    assert sent[0, "c2s"] == sent[1, "c2s"] and len(sent[0, "c2s"]) == 40


def test_streams_jsonl_names_each_direction_s_tunnel(tmp_path: Path, built: dict[str, Any]) -> None:
    """streams.jsonl gives the tunnel of each direction's first packet (a GTP-U TEID is each
    receiver's own, so the two directions differ); an untunnelled stream has no key."""
    out = tmp_path / "gtpu"
    tcpweave.extract(built["gtpu"].path, out, jobs=1)
    records = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
    expected = {
        t[1:3]: {"encapsulation": t[0], "id": t[3], "src": t[1], "dst": t[2]}
        for t in built["gtpu"].tunnels
        if t is not None
    }
    assert len(records) == 4
    for r in records:
        outer = (
            ("192.0.2.1", "192.0.2.2") if r["direction"] == "c2s" else ("192.0.2.2", "192.0.2.1")
        )
        assert r["tunnel"] == expected[outer]
    plain = tmp_path / "plain"
    tcpweave.extract(built["llc_snap"].path, plain, jobs=1)
    lines = (plain / "streams.jsonl").read_text().splitlines()
    assert lines and all("tunnel" not in json.loads(line) for line in lines)


@needs_tshark
def test_corpus_geneve_frames_are_counted_as_tshark_sees_them() -> None:
    """tcpdump/geneve.pcap: every frame tshark dissects as Geneve is counted once."""
    path = CORPUS / "tcpdump/geneve.pcap"
    if not path.is_file():
        pytest.skip("corpus not found")
    layers = [row[0].split(":") for row in _tshark_fields(path, ["frame.protocols"])]
    with tcpweave.open(path) as cap:
        assert cap.stats.encapsulations == {"geneve": sum("geneve" in x for x in layers)}
        assert set(cap.packets.tunnel.tolist()) == {tcpweave.Encapsulation.GENEVE}
