"""Protocol framers on traffic recorded from real clients and servers, and on corpus captures.

Each recording runs in a fresh network namespace whose loopback has an Ethernet-size
MTU (1500), so that messages span segments as on a real network: tcpdump records
while Python's http.server/http.client, dnspython (client) against a small DNS
server, pymodbus client and server, or an ``openssl s_server``/``s_client`` pair
talk (tests/pdu_peers.py). The framers must cut each direction into exactly the
messages the applications sent and received: none damaged, no byte skipped, the
PDUs tiling the stream. For TLS the oracle is tshark's own record dissection.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import tcpweave
from conftest import CORPUS, NO_CORPUS

HERE = Path(__file__).resolve().parent
_COUNTER = itertools.count()


def _why_not() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "recording needs root on Linux (network namespaces, tcpdump)"
    # ethtool: with segmentation offload on, loopback hands tcpdump 64 kB segments, so no
    # message would span segments whatever the MTU
    missing = [t for t in ("ip", "tc", "tcpdump", "timeout", "ethtool") if not shutil.which(t)]
    return f"recording needs {', '.join(missing)}" if missing else None


needs_recording = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


@contextlib.contextmanager
def _namespace() -> Iterator[str]:
    name = f"twpdu-{os.getpid()}-{next(_COUNTER)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "mtu", "1500", "up"], check=True)
        # no segmentation offload: the capture shows the segments the wire would carry (at
        # most one MSS each, however loaded the machine), so the messages larger than an MSS
        # span segments
        subprocess.run(
            ["ip", "netns", "exec", name, "ethtool", "-K", "lo", "tso", "off", "gso", "off"],
            check=True, capture_output=True,
        )  # fmt: skip
        # paced (a token bucket, with a queue long enough never to drop): unpaced, loopback
        # carries a whole conversation in a few ms, ~240k packets/s, and tcpdump's ring
        # overflowed ("packets dropped by kernel") three recordings in a row on a 2-core
        # machine; 8 Mbit/s is under 10k packets/s, which tcpdump keeps up with
        subprocess.run(
            ["ip", "netns", "exec", name, "tc", "qdisc", "add", "dev", "lo", "root", "tbf",
             "rate", "8mbit", "burst", "16kb", "limit", "16mb"],
            check=True, capture_output=True,
        )  # fmt: skip
        yield name
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", name], check=False)


def _record(tmp: Path, port: int, talk: Callable[[str], None]) -> Path:
    """A recording without capture loss (tcpdump on a busy loopback can miss a packet; the
    framers flag such a loss as damage, but these tests want whole conversations)."""
    for attempt in range(3):
        path = _record_once(tmp / f"try{attempt}", port, talk)
        with tcpweave.open(path) as cap:
            if not any(d.gaps for s in cap.streams() for d in (s.c2s, s.s2c)):
                return path
    raise AssertionError("three recordings in a row lost packets")


def _record_once(tmp: Path, port: int, talk: Callable[[str], None]) -> Path:
    """Run ``talk(namespace)`` while tcpdump records TCP port ``port`` on its loopback."""
    tmp.mkdir()
    out, log = tmp / "rec.pcap", tmp / "tcpdump.log"
    with _namespace() as ns, log.open("w") as err:
        dump = subprocess.Popen(
            ["ip", "netns", "exec", ns, "timeout", "-s", "INT", "60", "tcpdump", "-i", "lo",
             "-B", "32768", "-n", "-U", "--immediate-mode", "-s", "0", "-w", str(out),
             f"tcp port {port}"],
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while "listening on" not in log.read_text():
            assert dump.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        try:
            talk(ns)
        finally:
            time.sleep(0.2)
            dump.send_signal(signal.SIGINT)
            dump.wait(10)
    return out


def _peers(ns: str, scenario: str, port: int, truth: Path) -> None:
    subprocess.run(
        ["ip", "netns", "exec", ns, "timeout", "60", sys.executable, str(HERE / "pdu_peers.py"),
         scenario, str(port), str(truth)],
        check=True, capture_output=True, timeout=90,
    )  # fmt: skip


def _one_stream(path: Path, spec: str) -> tuple[Any, Any, list[Any], list[Any]]:
    with tcpweave.open(path) as cap:
        # the one conversation that carried data (a client may first try before the server is up)
        [stream] = [s for s in cap.streams() if s.c2s.length or s.s2c.length]
        found = cap.pdus(spec, streams=stream.index)
        c2s, s2c = stream.c2s.bytes(), stream.s2c.bytes()
    assert found.skipped_bytes == 0 and not found.damaged.any()
    pdus = [[p for p in found if p.direction == d] for d in (0, 1)]
    # the PDUs tile each direction: nothing lost, nothing glued
    assert b"".join(p.data for p in pdus[0]) == c2s
    assert b"".join(p.data for p in pdus[1]) == s2c
    return c2s, s2c, pdus[0], pdus[1]


def _dechunk(body: bytes) -> bytes:
    out, at = b"", 0
    while True:
        line_end = body.index(b"\r\n", at)
        size = int(body[at:line_end].split(b";")[0], 16)
        if size == 0:
            return out
        out += body[line_end + 2 : line_end + 2 + size]
        at = line_end + 2 + size + 2


@needs_recording
def test_http_client_and_server(tmp_path: Path) -> None:
    truth = tmp_path / "truth.json"
    path = _record(tmp_path, 8080, lambda ns: _peers(ns, "http", 8080, truth))
    exchanges = json.loads(truth.read_text())["exchanges"]
    _, _, requests, responses = _one_stream(path, "http")
    assert len(requests) == len(responses) == len(exchanges)
    assert any(p.frames > 5 for p in responses)  # the 20000-byte body spans segments
    for req, resp, ex in zip(requests, responses, exchanges, strict=True):
        head, _, body = req.data.partition(b"\r\n\r\n")
        assert head.split(b"\r\n")[0] == f"{ex['method']} {ex['path']} HTTP/1.1".encode()
        assert body == bytes.fromhex(ex["request_body"])
        head, _, body = resp.data.partition(b"\r\n\r\n")
        assert int(head.split(b" ")[1]) == ex["status"]
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        assert body == bytes.fromhex(ex["body"]), ex["path"]


@needs_recording
def test_dns_over_tcp_from_dnspython(tmp_path: Path) -> None:
    pytest.importorskip("dns", reason="dnspython (test extra) not installed")
    truth = tmp_path / "truth.json"
    path = _record(tmp_path, 5353, lambda ns: _peers(ns, "dns", 5353, truth))
    log = json.loads(truth.read_text())["log"]
    _, _, queries, responses = _one_stream(path, "dns")
    assert [p.data.hex() for p in queries] == [w for kind, w in log if kind == "query"]
    assert [p.data.hex() for p in responses] == [w for kind, w in log if kind == "response"]
    assert max(p.frames for p in responses) >= 2  # the TXT response spans segments


@needs_recording
def test_modbus_tcp_from_pymodbus(tmp_path: Path) -> None:
    pytest.importorskip("pymodbus", reason="pymodbus (test extra) not installed")
    truth = tmp_path / "truth.json"
    path = _record(tmp_path, 5020, lambda ns: _peers(ns, "modbus", 5020, truth))
    calls = json.loads(truth.read_text())["calls"]
    _, _, requests, responses = _one_stream(path, "modbus")
    assert [p.data[7] for p in requests] == [fc for fc, _ in calls]
    assert [p.data[:2] for p in requests] == [p.data[:2] for p in responses]  # transaction ids
    for resp, (fc, registers) in zip(responses, calls, strict=True):
        assert resp.data[7] == fc
        if registers is not None:
            values = resp.data[9:]
            got = [int.from_bytes(values[i : i + 2], "big") for i in range(0, len(values), 2)]
            assert got == registers


def _tshark_tls(path: Path, port: int) -> tuple[list[tuple[int, int]], bool]:
    """tshark's TLS records as (frame, record length), and whether its TCP analysis flagged
    any frame (retransmission, out-of-order, window problems: a loaded machine makes them)."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-d", f"tcp.port=={port},tls", "-T", "fields",
         "-e", "frame.number", "-e", "tls.record.length", "-e", "tcp.analysis.flags"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    records, flagged = [], False
    for line in out.splitlines():
        frame, lengths, flags = [*line.split("\t"), "", ""][:3]
        records += [(int(frame), int(n)) for n in lengths.split(",") if n]
        flagged |= bool(flags)
    return records, flagged


@needs_recording
@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
@pytest.mark.skipif(not shutil.which("tshark"), reason="tshark not installed")
def test_tls_records_from_openssl(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=test"],
        check=True, capture_output=True,
    )  # fmt: skip
    message = b"".join(b"line %05d %s\n" % (i, b"x" * 60) for i in range(600))  # ~42 KB

    def talk(ns: str) -> None:
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns, "timeout", "30", "openssl", "s_server", "-accept", "4433",
             "-cert", str(cert), "-key", str(key), "-naccept", "1", "-rev"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        client = subprocess.run(
            ["ip", "netns", "exec", ns, "timeout", "30", "openssl", "s_client", "-connect",
             "127.0.0.1:4433", "-quiet", "-no_ign_eof"],
            input=message, capture_output=True, timeout=40,
        )  # fmt: skip
        server.wait(30)
        assert client.returncode == 0, client.stderr

    path = _record(tmp_path, 4433, talk)
    with tcpweave.open(path) as cap:
        found = cap.pdus("tls")
        [stream] = cap.streams()
        total = stream.c2s.length + stream.s2c.length
    assert not found.damaged.any() and found.skipped_bytes == 0
    assert sum(p.length for p in found) == total
    ours = [(f, n) for f, _, _, n in sorted(
        (p.last_frame, p.direction, p.stream_offset, p.length - 5) for p in found)]  # fmt: skip
    theirs, flagged = _tshark_tls(path, 4433)
    if not flagged:
        assert ours == theirs
    else:
        # on a loaded machine the kernel may retransmit; tshark then leaves records in (or
        # after) a frame it analysed as a retransmission or out of order undissected, so
        # only what it did decode is compared (ours is checked against the totals above)
        assert not Counter(theirs) - Counter(ours)
    first = next(p for p in found if p.direction == 0)
    assert first.data[0] == 22  # the ClientHello is a handshake record
    assert sum(p.data[0] == 23 and p.direction == 0 for p in found) >= 3  # 42 KB of data


# -------------------------------------------------------------------------------- corpus


needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)


@needs_corpus
def test_corpus_http_get_body_length() -> None:
    # MANIFEST: zeek/http/get.pcap -- GET ... 200, response_body_len 4705
    _, _, requests, responses = _one_stream(CORPUS / "zeek/http/get.pcap", "http")
    assert len(requests) == len(responses) == 1
    assert requests[0].data.startswith(b"GET /download/CHANGES.bro-aux.txt HTTP/1.")
    head, _, body = responses[0].data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and len(body) == 4705


@needs_corpus
def test_corpus_1000_pipelined_requests_one_response_lost() -> None:
    # MANIFEST: 1000 pipelined HTTP requests on one connection, one server segment dropped
    with tcpweave.open(CORPUS / "zeek/http/1000-requests-one-dropped-response.pcap.gz") as cap:
        found = cap.pdus("http")
    requests = [p for p in found if p.direction == 0]
    responses = [p for p in found if p.direction == 1]
    assert len(requests) == 1000 and not found.damaged.any()
    # the lost segment held the first 238 bytes of the first response: the rest of that
    # response cannot be framed (its start line is gone), is skipped, and framing picks up
    # at the second response; the other 999 come out whole
    assert len(responses) == 999
    assert responses[0].stream_offset == found.skipped_bytes + 238
    assert all(p.data.startswith(b"HTTP/1.1 200 OK") for p in responses)


@needs_corpus
def test_corpus_dns_tcp_messages_match_tcpdump() -> None:
    # tcpdump's expected output prints one line per DNS message it decoded over TCP
    expected = (CORPUS / "tcpdump/dns_tcp.out").read_text().splitlines()
    with tcpweave.open(CORPUS / "tcpdump/dns_tcp.pcap") as cap:
        found = cap.pdus("dns")
    assert not found.damaged.any()
    ids = [int.from_bytes(p.data[2:4], "big") for p in found]
    printed = [
        int(m.group(1)) for line in expected if (m := re.search(r"length \d+:? (\d+)[+*-]* ", line))
    ]
    assert ids == printed[: len(ids)] and len(ids) == len(printed)


def test_gzip_is_gzip() -> None:
    # the 1000-requests corpus capture is read through its gzip wrapper
    if CORPUS.is_dir():
        with gzip.open(CORPUS / "zeek/http/1000-requests-one-dropped-response.pcap.gz") as f:
            assert len(f.read(24)) == 24
