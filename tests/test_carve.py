"""``tcpweave carve``: a session's original records as a capture file of its own.

Oracles: tshark and tcpdump. For a stream N of a capture, tshark names its records (the
frames whose tcp.stream is N, and the IP fragments reassembled into them); the carved
file must hold exactly those, with equal frame.time_epoch, frame.len, frame.cap_len and
raw bytes (tshark's frame_raw), tcpdump must read it without error, and tshark's
``follow,tcp,raw,0`` on it must equal ``follow,tcp,raw,N`` on the capture.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

import craft
from conftest import CORPUS, corpus_captures
from tcpweave.run import Run, Settings
from tcpweave.run.carving import carve

TSHARK = shutil.which("tshark")
TCPDUMP = shutil.which("tcpdump")
needs_tools = pytest.mark.skipif(
    TSHARK is None or TCPDUMP is None, reason="tshark and tcpdump are the oracles"
)

#: libpcap (and so tcpdump) reads a pcapng only while its interfaces share one link type
SEVERAL_LINK_TYPES = "different from the type of the first interface"
#: crafted captures carved stream by stream (fragments, overlaps, ns and µs pcaps, pcapng
#: of several interfaces and link types, compressed inputs)
#: tshark 4.0 gives frame 9 of frag_v6.pcap (the same 4-tuple, its sequence numbers
#: continuing) a tcp.stream of its own, tcpweave keeps it in the one session: the carved
#: file holds the session tcpweave numbers, so tshark's stream 0 has two frames fewer
SPLIT_BY_TSHARK = "tshark numbers a datagram of the session as another tcp.stream"
CRAFTED = ("eth_le_nsec.pcap", "eth_be_usec.pcap", "frag_v4.pcap",
           pytest.param("frag_v6.pcap", marks=pytest.mark.xfail(strict=True,
                                                                 reason=SPLIT_BY_TSHARK)),
           "frag_v4_overlap.pcap", "frag_v6_overlap.pcap", "linux_sll2.pcap", "eth_le.pcapng",
           "multi_section.pcapng", "eth_be_nsec.pcap.zst", "multi_section.pcapng.gz",
           "truncated.pcap")  # fmt: skip
#: corpus captures carved stream by stream
CORPUS_SAMPLE = ("tcpdump/dns_tcp.pcap", "zeek/http/get.pcap",
                 "zeek/http/1000-requests-one-dropped-response.pcap.gz",
                 "suricata-verify/defrag/bug-6887-defrag-ipv6-tcp/frag-ip-tcp.pcap",
                 "suricata-verify/defrag/bug-6887-defrag-ipv4-tcp-syn/"
                 "frag-ip-tcp-syn.pcap")  # fmt: skip
#: a simple packet block carries no timestamp (tshark shows 0); the carved record is an
#: EPB with the time tcpweave gave it: multi_section.pcapng's streams are carved into one
#: pcapng (four link types) that tcpdump must read, with the records' bytes and lengths
TIMELESS_SPB = "simple packet block: no timestamp in the original"


def _tshark(*args: str) -> str:
    assert TSHARK is not None
    done = subprocess.run([TSHARK, *args], capture_output=True, text=True, check=True)
    return done.stdout


def _frames(path: Path) -> list[dict[str, str]]:
    """Every frame of ``path`` as tshark dissects it."""
    names = ("frame.number", "frame.time_epoch", "frame.len", "frame.cap_len", "tcp.stream",
             "ip.reassembled_in", "ipv6.reassembled.in")  # fmt: skip
    args = ["-2", "-r", str(path), "-T", "fields", "-E", "occurrence=f"]
    for n in names:
        args += ["-e", n]
    out = []
    for line in _tshark(*args).splitlines():
        out.append(dict(zip(names, line.split("\t"), strict=True)))
    return out


def _raw(path: Path) -> dict[int, str]:
    """frame number -> the frame's bytes (hex), as tshark reads them."""
    frames = json.loads(_tshark("-r", str(path), "-T", "json", "-x", "-j", "frame"))
    out = {}
    for f in frames:
        layers = f["_source"]["layers"]
        out[int(layers["frame"]["frame.number"])] = layers["frame_raw"][0]
    return out


def _follow(path: Path, stream: int) -> str:
    text = _tshark("-r", str(path), "-q", "-z", f"follow,tcp,raw,{stream}")
    return text.replace(f"Filter: tcp.stream eq {stream}", "Filter: tcp.stream eq N")


def _stream_frames(frames: list[dict[str, str]], stream: int) -> list[int]:
    """The frames tshark puts in ``stream``, and the IP fragments reassembled into them."""
    own = {int(f["frame.number"]) for f in frames if f["tcp.stream"] == str(stream)}
    for f in frames:
        into = f["ip.reassembled_in"] or f["ipv6.reassembled.in"]
        if into and int(into) in own:
            own.add(int(f["frame.number"]))
    return sorted(own)


def _row(f: dict[str, str]) -> tuple[Decimal, str, str]:
    return Decimal(f["frame.time_epoch"]), f["frame.len"], f["frame.cap_len"]


def _check_stream(original: Path, run: Run, stream: int, out: Path, frames: list[dict[str, str]],
                  raw: dict[int, str]) -> None:  # fmt: skip
    carve(run, [stream], out)
    assert TCPDUMP is not None
    read = subprocess.run([TCPDUMP, "-n", "-r", str(out)], capture_output=True, text=True)
    assert read.returncode == 0, read.stderr
    want = _stream_frames(frames, stream)
    got = _frames(out)
    by_number = {int(f["frame.number"]): f for f in frames}
    assert len(got) == len(want), f"stream {stream}: frames {want}"
    assert [f["frame.len"] for f in got] == [by_number[n]["frame.len"] for n in want]
    assert [f["frame.cap_len"] for f in got] == [by_number[n]["frame.cap_len"] for n in want]
    times = [_row(f)[0] for f in got]
    assert times == [_row(by_number[n])[0] for n in want], f"stream {stream}"
    carved_raw = _raw(out)
    assert [carved_raw[i + 1] for i in range(len(got))] == [raw[n] for n in want]
    assert _follow(out, 0) == _follow(original, stream)


def _every_stream(path: Path, tmp_path: Path, **run_args: object) -> int:
    frames = _frames(path)
    raw = _raw(path)
    with Run([str(path)], Settings(), **run_args) as run:  # type: ignore[arg-type]
        n = sum(len(r) for r in run.ranks())
        for s in range(n):
            _check_stream(path, run, s, tmp_path / f"s{s}.pcap", frames, raw)
    return n


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, craft.Crafted]:
    return craft.build_catalog(tmp_path_factory.mktemp("crafted"))


@needs_tools
@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_every_stream_carved_as_tshark_sees_it(
    name: str, tmp_path: Path, catalog: dict[str, craft.Crafted]
) -> None:
    c = catalog[name]
    if name.startswith("multi_section"):
        _all_streams_read_back(c.path, tmp_path / "all.pcapng")
        return
    assert _every_stream(c.path, tmp_path) > 0


def _reuse_and_retransmit(path: Path) -> Path:
    """Client port 40000 used by two sessions in turn (SYN after FIN), with a
    retransmitted data segment and an out-of-order one in the first."""
    T = craft.Tcp
    pkts: list[craft.Pkt] = []
    for isn in (1000, 900_000):
        pkts += [
            craft.tcp4(T(40000, 80, isn, 0, 0x002)),
            craft.tcp4(T(80, 40000, 5000, isn + 1, 0x012), "10.0.0.2", "10.0.0.1"),
            craft.tcp4(T(40000, 80, isn + 1, 5001, 0x010)),
            craft.tcp4(T(40000, 80, isn + 4, 5001, 0x018, payload=b"def")),
            craft.tcp4(T(40000, 80, isn + 1, 5001, 0x018, payload=b"abc")),
            craft.tcp4(T(40000, 80, isn + 1, 5001, 0x018, payload=b"abc")),  # retransmission
            craft.tcp4(T(40000, 80, isn + 7, 5001, 0x011)),
            craft.tcp4(T(80, 40000, 5001, isn + 8, 0x011), "10.0.0.2", "10.0.0.1"),
            craft.tcp4(T(40000, 80, isn + 8, 5002, 0x010)),
        ]
    frames = [(1_700_000_000_000_000_000 + i * 1_000_123, craft.ethernet(p.data), None)
              for i, p in enumerate(pkts)]  # fmt: skip
    return craft.write_pcap(path, frames, craft.LINKTYPE_ETHERNET, nano=True)


@needs_tools
def test_port_reuse_and_retransmissions(tmp_path: Path) -> None:
    path = _reuse_and_retransmit(tmp_path / "reuse.pcap")
    assert _every_stream(path, tmp_path) == 2


@needs_tools
def test_spilled_partitions_carve_the_same_bytes(
    tmp_path: Path, catalog: dict[str, craft.Crafted]
) -> None:
    c = catalog["frag_v4_overlap.pcap"]
    outs = {}
    for whole in (True, False):
        with Run([str(c.path)], Settings(), whole=whole, rows_per_partition=2) as run:
            assert run.in_memory is whole
            n = sum(len(r) for r in run.ranks())
            out = tmp_path / f"all-{whole}.pcap"
            carve(run, range(n), out)
            outs[whole] = out.read_bytes()
    assert outs[True] == outs[False]


@needs_tools
@pytest.mark.skipif(not CORPUS.is_dir(), reason="no corpus")
@pytest.mark.parametrize("name", CORPUS_SAMPLE)
def test_corpus_every_stream_carved_as_tshark_sees_it(name: str, tmp_path: Path) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"{name} not in the corpus")
    assert _every_stream(path, tmp_path) > 0


@needs_tools
@pytest.mark.skipif(not CORPUS.is_dir(), reason="no corpus")
def test_corpus_all_streams_read_back(tmp_path: Path) -> None:
    """Every capture of the corpus: all its streams carved into one file that tcpdump
    reads, holding as many frames as tshark puts in those streams."""
    for path in corpus_captures()[:: max(len(corpus_captures()) // 12, 1)]:
        _all_streams_read_back(path, tmp_path / (path.name + ".carved.pcapng"))


def _all_streams_read_back(path: Path, out: Path) -> None:
    """All streams of ``path`` carved into ``out``: tcpdump reads it, and it holds the
    frames tshark puts in those streams, with their lengths and bytes."""
    with Run([str(path)], Settings()) as run:
        n = sum(len(r) for r in run.ranks())
        if not n:
            return
        carve(run, range(n), out)
    assert TCPDUMP is not None
    read = subprocess.run([TCPDUMP, "-n", "-r", str(out)], capture_output=True, text=True)
    assert read.returncode == 0 or SEVERAL_LINK_TYPES in read.stderr, read.stderr
    frames = _frames(path)
    by_number = {int(f["frame.number"]): f for f in frames}
    want = sorted({f for s in range(n) for f in _stream_frames(frames, s)})
    got = _frames(out)
    lengths = [(f["frame.len"], f["frame.cap_len"]) for f in got]
    assert lengths == [(by_number[k]["frame.len"], by_number[k]["frame.cap_len"]) for k in want]
    raw, carved = _raw(path), _raw(out)
    assert [carved[i + 1] for i in range(len(got))] == [raw[k] for k in want], path


def _extract(path: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import sys

    cmd = [sys.executable, "-m", "tcpweave", "extract", str(path), "-o", str(out), "-q", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


@needs_tools
def test_extract_pcap_one_file_per_session_at_every_size(
    tmp_path: Path, catalog: dict[str, craft.Crafted]
) -> None:
    """extract --pcap in memory and spilled (2 rows a partition): the same files, named by
    the records, each what tshark follows as that stream and listed as tcpweave's own."""
    path = _reuse_and_retransmit(tmp_path / "reuse.pcap")
    trees = []
    for name, args in (("whole", ()), ("spilled", ("--partition-rows", "2", "--jobs", "2"))):
        out = tmp_path / name
        done = _extract(path, out, "--pcap", *args)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
        named = sorted({(r["stream"], r["pcap"]) for r in records})
        assert [s for s, _ in named] == [0, 1]
        for stream, rel in named:
            assert _follow(out / rel, 0) == _follow(path, stream)
        trees.append({rel: (out / rel).read_bytes() for _, rel in named})
    assert trees[0] == trees[1]
    again = _extract(path, tmp_path / "whole", "--pcap", "--force")  # its own files: replaced
    assert again.returncode == 0, again.stderr


def test_unknown_stream_and_existing_file_are_usage_errors(tmp_path: Path) -> None:
    import sys

    path = _reuse_and_retransmit(tmp_path / "reuse.pcap")
    out = tmp_path / "one.pcap"
    cmd = [sys.executable, "-m", "tcpweave", "carve", str(path), "-o", str(out), "--stream"]
    bad = subprocess.run([*cmd, "0,7"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no stream 7" in bad.stderr
    assert not out.exists()
    assert subprocess.run([*cmd, "1"], capture_output=True).returncode == 0
    first = out.read_bytes()
    exists = subprocess.run([*cmd, "0"], capture_output=True, text=True)
    assert exists.returncode == 2 and "exists" in exists.stderr
    assert out.read_bytes() == first
    assert subprocess.run([*cmd, "0", "--force"], capture_output=True).returncode == 0
    assert out.read_bytes() != first
    ng = tmp_path / "one.pcapng"
    assert subprocess.run([*cmd[:-2], str(ng), "--stream", "0"]).returncode == 0
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # a pcapng section header
    assert first[:4] == b"\x4d\x3c\xb2\xa1"  # nanosecond pcap, as the source
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
