"""BPF capture filters (issue 15.5): libpcap compiles, our kernel runs, tcpdump is the oracle.

* the records a filter accepts are those ``tcpdump -r FILE EXPR`` prints (compared as
  the multiset of their timestamps), on the project's captures and the corpus's, for
  expressions covering ports, hosts, protocols, header bytes, lengths and VLANs;
* the kernel equals its plain-Python reference (hypothesis: programs libpcap compiled,
  run on random packet bytes, lengths and captured lengths);
* the CLI takes the filter as tcpdump and tcpflow do (words after the capture files),
  applies it at every partitioning, records it in the manifest, and refuses a bad one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpweave
from conftest import ROOT, corpus_captures
from tcpweave.capture import _kernels as kern
from tcpweave.capture import _reference as ref
from tcpweave.capture import open_sources
from tcpweave.capture.bpf import RecordFilter, compile_filter
from tcpweave.errors import UsageError

SAMPLE = ROOT / "examples" / "sample-http.pcap"
#: kernels whose kernel == reference property test is here (tests/test_kernels.py checks
#: that every kernel has one somewhere)
EXERCISED = {("tcpweave.capture", "bpf_match")}
TCPDUMP = shutil.which("tcpdump")
EXPRESSIONS = (
    "tcp",
    "not tcp",
    "tcp port 8000",
    "port 80 or port 443",
    "host 10.77.0.2 and tcp",
    "tcp[tcpflags] & (tcp-syn|tcp-fin) != 0",
    "ip[6:2] & 0x3fff != 0",
    "greater 1000",
    "less 80",
    "ip6",
    "vlan",
    "udp",
)


def _accepted_ts(path: Path, expression: str) -> list[int]:
    """Timestamps (ns) of the records our filter accepts."""
    out: list[int] = []
    record_filter = RecordFilter(expression)
    sources = open_sources([str(path)])
    try:
        for src in sources:
            for rec in src.record_chunks(4096):
                kept, _ = record_filter.apply(src.buffer, rec)
                out += rec.ts_ns[kept.linktype != -2].tolist()
    finally:
        for src in sources:
            src.close()
    return sorted(out)


def _tcpdump_ts(path: Path, expression: str) -> list[int] | None:
    assert TCPDUMP is not None
    done = subprocess.run(
        [TCPDUMP, "-r", str(path), "-nn", "-tt", "--time-stamp-precision=nano", expression],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:  # e.g. "vlan" on a link type without it: tcpdump refuses too
        return None
    stamps = []
    for line in done.stdout.splitlines():
        if line[:1].isdigit():
            sec, _, frac = line.split(" ", 1)[0].partition(".")
            stamps.append(int(sec) * 10**9 + int(frac.ljust(9, "0")))
    return sorted(stamps)


def _captures() -> list[Path]:
    corpus = [p for p in corpus_captures() if p.suffix in (".pcap", ".pcapng")]
    return [SAMPLE, *corpus[:: max(1, len(corpus) // 16)]]


@pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed: no oracle")
@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_accepts_what_tcpdump_prints(path: Path) -> None:
    for expression in EXPRESSIONS:
        theirs = _tcpdump_ts(path, expression)
        if theirs is None:
            with pytest.raises(UsageError):
                _accepted_ts(path, expression)
            continue
        assert _accepted_ts(path, expression) == theirs, expression


@settings(max_examples=200, deadline=None)
@given(
    expression=st.sampled_from(EXPRESSIONS[:-1]),
    packets=st.lists(
        st.tuples(st.binary(min_size=0, max_size=120), st.integers(0, 2000)),
        min_size=1,
        max_size=8,
    ),
)
def test_kernel_equals_reference(expression: str, packets: list[tuple[bytes, int]]) -> None:
    try:
        code, jt, jf, k = compile_filter(expression, 1)
    except UsageError:  # no libpcap here
        pytest.skip("libpcap is not available")
    # realistic-looking frames: an Ethernet/IPv4/TCP header template with random bytes laid
    # over it, so that the programs' branches are taken both ways
    template = (
        bytes.fromhex("0000000000020000000000010800")  # Ethernet, IPv4
        + bytes.fromhex("4500002800014000400600000a4d00020a4d0001")  # IPv4 10.77.0.2 > .1
        + bytes.fromhex("1f4089ba00000000000000005002200000000000")  # TCP 8000 > 35258 SYN
    )
    datas = [_mixed(template, raw) for raw, _ in packets]
    buf = np.frombuffer(b"".join(datas) or b"\0", np.uint8)
    offset = np.cumsum([0] + [len(d) for d in datas[:-1]]).astype(np.int64)
    caplen = np.array([len(d) for d in datas], np.int64)
    wirelen = np.array([len(d) + extra for d, (_, extra) in zip(datas, packets, strict=True)],
                       np.int64)  # fmt: skip
    rows = np.arange(len(datas), dtype=np.int64)
    a, b = np.zeros(len(rows), np.bool_), np.zeros(len(rows), np.bool_)
    kern.bpf_match(code, jt, jf, k, buf, offset, caplen, wirelen, rows, a)
    ref.bpf_match(code, jt, jf, k, buf, offset, caplen, wirelen, rows, b)
    assert a.tolist() == b.tolist()


def _mixed(template: bytes, raw: bytes) -> bytes:
    """``raw`` XORed over the template's first bytes, cut to a length ``raw`` chooses."""
    cut = len(raw) * 7 % (len(template) + 1)
    head = bytes(a ^ b for a, b in zip(template, raw, strict=False))
    return (head + template[len(head) :])[:cut]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tcpweave", *args], capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.mark.parametrize("extra", [[], ["--partition-rows", "20", "--jobs", "2"]])
def test_extract_with_a_filter(tmp_path: Path, extra: list[str]) -> None:
    out = tmp_path / "x"
    done = _cli("extract", str(SAMPLE), "tcp", "port", "8000", "-o", str(out), "-q", *extra)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (out / "streams.jsonl").read_text().splitlines()]
    assert lines and all(8000 in (d["sport"], d["dport"]) for d in lines)
    with tcpweave.open(SAMPLE) as cap:
        expected = sorted((s.c2s.bytes(), s.s2c.bytes()) for s in cap.streams()
                          if s.server[1] == 8000)  # fmt: skip
    got: dict[int, dict[str, bytes]] = {}
    for d in lines:
        if d["path"]:
            got.setdefault(d["stream"], {})[d["direction"]] = (out / d["path"]).read_bytes()
    assert sorted((v.get("c2s", b""), v.get("s2c", b"")) for v in got.values()) == expected
    manifest = json.loads((out / "manifest.json").read_text())
    assert "tcp port 8000" in json.dumps(manifest)


def test_a_bad_filter_is_a_usage_error(tmp_path: Path) -> None:
    done = _cli("streams", str(SAMPLE), "port", "eighty")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error:") and "filter" in done.stderr
    assert "Traceback" not in done.stderr


def test_info_counts_the_rejected_records() -> None:
    done = _cli("info", str(SAMPLE), "port 8001")
    assert done.returncode == 0, done.stderr
    with tcpweave.open(SAMPLE) as cap:
        frames = cap.stats.frames
    with tcpweave.open(SAMPLE, bpf="port 8001") as cap:
        assert cap.stats.filtered == frames - 2 and len(cap.packets) == 2
    assert f"{frames - 2:,}" in done.stdout
