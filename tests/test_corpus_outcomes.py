"""The stated outcomes of the public corpus (../shared/corpus/MANIFEST.md) about stream content.

Each entry's stated outcome is also in tests/data/corpus-sources.json (``captures``);
scripts/fetch-corpus.py assembles the corpus.

Each test names the MANIFEST entry it checks. Upstream tools report their
reassembled streams in their own ways (Suricata ``payload_printable`` with
``[N bytes missing]`` for gaps, ``tcp-data.log`` hex dumps, file hashes; Zeek
conn.log sizes, content gaps, rexmit_inconsistency pairs); the helpers below
turn tcpweave's streams into the same form. Where tcpweave's rules rightly give
another result than the upstream tool (different defaults, or a rule of
docs/design.md), the test asserts tcpweave's behaviour and says why.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tcpweave
from conftest import CORPUS, NO_CORPUS
from tcpweave import Fate, GapReason

pytestmark = pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS)


_OPEN: dict[str, tcpweave.Capture] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_captures() -> Iterator[None]:
    yield
    for cap in _OPEN.values():
        cap.close()
    _OPEN.clear()


def streams(rel: str, **kw: Any) -> tuple[tcpweave.Capture, list[Any]]:
    """The capture (opened once per module) and its streams."""
    if rel not in _OPEN:
        _OPEN[rel] = tcpweave.open(CORPUS / rel)
    cap = _OPEN[rel]
    return cap, cap.streams(**kw)


def only(items: list[Any]) -> Any:
    assert len(items) == 1, len(items)
    return items[0]


def suricata_view(d: Any) -> bytes:
    """A direction as Suricata prints stream payloads: gaps as ``[N bytes missing]``."""
    data = d.bytes()
    out, cursor = [], 0
    for g in d.gaps:
        out += [data[cursor : g.offset], f"[{g.length} bytes missing]".encode()]
        cursor = g.offset + g.length
    out.append(data[cursor:])
    return b"".join(out)


def http_body(stream: bytes) -> bytes:
    """The body of the first HTTP response (Content-Length or chunked)."""
    head, _, rest = stream.partition(b"\r\n\r\n")
    m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if m:
        return rest[: int(m.group(1))]
    assert re.search(rb"transfer-encoding:\s*chunked", head, re.IGNORECASE), head
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body += rest[:size]
        rest = rest[size + 2 :]


def dropped_bytes(cap: tcpweave.Capture, stream: int, direction: int, **kw: Any) -> dict:
    """stream offset -> set of byte values held by plan rows of fate overlap-conflict-dropped."""
    rows = cap.plan(**kw).rows
    out: dict[int, set[int]] = {}
    for i in range(len(rows["frame"])):
        if (int(rows["stream"][i]), int(rows["direction"][i])) != (stream, direction):
            continue
        if rows["fate"][i] != Fate.OVERLAP_CONFLICT_DROPPED:
            continue
        src = cap.sources[int(rows["file"][i])].buffer
        start, n = int(rows["payload_start"][i]), int(rows["length"][i])
        for j, b in enumerate(src[start : start + n].tobytes()):
            out.setdefault(int(rows["stream_offset"][i]) + j, set()).add(b)
    return out


# --------------------------------------------------------------------------- suricata-verify


def test_eve_overlap_payload_01_good_by_default_evil_with_old_linux() -> None:
    """MANIFEST suricata-verify/eve-overlap-payload-01/tcp-overlap.pcap: default stream
    `GOOD`; with eve-overlap-payload-02-policy-oldlinux's host-os-policy the stream is
    `EVIL`. Suricata's default there is the BSD-like `windows`; tcpweave's default `first`
    gives the same bytes. The conflict is reported either way."""
    cap, (st,) = streams("suricata-verify/eve-overlap-payload-01/tcp-overlap.pcap")
    assert st.c2s.bytes() == b"GOOD"
    assert [(c.offset, c.length) for c in st.c2s.conflicts] == [(0, 4)]
    for policy in ("windows", "bsd"):
        assert only(cap.streams(policy=policy)).c2s.bytes() == b"GOOD"
    old = only(cap.streams(policy="old-linux"))
    assert old.c2s.bytes() == b"EVIL"
    assert [(c.offset, c.length) for c in old.c2s.conflicts] == [(0, 4)]
    assert {bytes(sorted(v)) for v in dropped_bytes(cap, 0, 0, policy="old-linux").values()} <= {
        bytes([b]) for b in b"GOOD"
    }


def test_eve_overlap_payload_04_partial_overlap() -> None:
    """MANIFEST ...eve-overlap-payload-04-partial-overlap/tcp-overlap2.pcap: the stream
    contains `GOOD` and not `XXX`; the differing overlap is reported."""
    _, (st,) = streams("suricata-verify/eve-overlap-payload-04-partial-overlap/tcp-overlap2.pcap")
    data = st.c2s.bytes()
    assert b"GOOD" in data and b"XXX" not in data
    assert st.c2s.conflicts, "the XXX/GOOD overlap differs and must be reported"


def test_eve_payload_05_gap() -> None:
    """MANIFEST ...eve-payload-05-tcp-data-gap: stream payload `VERY[4 bytes missing]DATA`."""
    _, (st,) = streams("suricata-verify/eve-payload-05-tcp-data-gap/tcp-simple-gap2.pcap")
    assert suricata_view(st.c2s) == b"VERY[4 bytes missing]DATA"
    assert [(g.offset, g.length, g.reason) for g in st.c2s.gaps] == [(4, 4, GapReason.NOT_CAPTURED)]
    assert b"VERYGOODDATA" not in st.c2s.bytes()
    assert st.c2s.bytes(gaps="omit") == b"VERYDATA"


def test_eve_payload_06_leading_gap() -> None:
    """MANIFEST ...eve-payload-06-tcp-data-leading-gap: `[4 bytes missing]GOODDATA`."""
    _, (st,) = streams("suricata-verify/eve-payload-06-tcp-data-leading-gap/tcp-leading-gap.pcap")
    assert suricata_view(st.c2s) == b"[4 bytes missing]GOODDATA"
    assert b"VERY" not in st.c2s.bytes()


GAP_07_REQUESTS = b"GET /1 HTTP/1.0\r\nUser-Agent: Mozilla\r\n\r\n" * 1
GAP_07_HEAD = (
    b"HTTP/1.0 200 OK\r\nDate: Mon, 31 Aug 2009 20:25:50 GMT\r\nServer: Apache\r\n"
    b"Connection: close\r\nContent-Type: text/html\r\nContent-Length: 12\r\n\r\n"
)


def test_http_gap_beyond_body_eve_payload_07() -> None:
    """MANIFEST suricata-verify/http-gap-beyond-body/input.pcap (eve-payload-07-http-gap
    test.yaml, v8 payloads): to-server is the three requests (120 bytes); to-client is
    `...Content-Length: 12\\r\\n\\r\\n[127 bytes missing]AAAA...` (324 bytes printed)."""
    _, (st,) = streams("suricata-verify/http-gap-beyond-body/input.pcap")
    requests = b"".join(
        f"GET /{n} HTTP/1.0\r\nUser-Agent: Mozilla\r\n\r\n".encode() for n in (1, 2, 3)
    )
    assert st.c2s.bytes() == requests and len(requests) == 120
    want = (
        GAP_07_HEAD
        + b"[127 bytes missing]"
        + b"A" * 56
        + b"HTTP/1.0 200 OK\r\nServer: Apache\r\nConnection: close\r\n"
        b"Content-Type: text/html\r\nContent-Length: 12\r\n\r\nHello People\r\n"
    )
    assert len(want) == 324
    assert suricata_view(st.s2c) == want
    assert len(GAP_07_HEAD) == 136
    assert [(g.offset, g.length) for g in st.s2c.gaps] == [(136, 127)]


def _tcp_data_log(path: Path) -> dict[str, bytes]:
    """Suricata's tcp-data.lua log: ``<flow>-ts:`` / ``<flow>-tc:`` then hexdump lines."""
    out: dict[str, bytes] = {"ts": b"", "tc": b""}
    side = None
    for line in path.read_text().splitlines():
        m = re.match(r"^\S+-(ts|tc):$", line.strip())
        if m:
            side = m.group(1)
            continue
        m = re.match(r"^\s*[0-9A-Fa-f]{4}\s\s((?:[0-9A-Fa-f]{2}\s{1,2}){1,16})", line)
        if m and side:
            out[side] += bytes.fromhex(m.group(1).replace(" ", ""))
    return out


def test_lua_output_http_tcp_data_log() -> None:
    """MANIFEST suricata-verify/lua-output-http/input.pcap: expected/tcp-data.log is
    Suricata's reassembled bytes of both directions, compared byte for byte."""
    log = _tcp_data_log(CORPUS / "suricata-verify/lua-output-http/expected/tcp-data.log")
    assert log["ts"].startswith(b"GET /base64-hello-world.txt") and log["tc"]
    _, (st,) = streams("suricata-verify/lua-output-http/input.pcap")
    assert st.c2s.bytes() == log["ts"]
    assert st.s2c.bytes() == log["tc"]
    assert st.c2s.gaps == st.s2c.gaps == []


def test_filestore_pdf_sha256() -> None:
    """MANIFEST suricata-verify/filestore-v2.1-forced: file sha256 48d179a2...8d62."""
    _, (st,) = streams("suricata-verify/filestore-v2.1-forced/suricata-update-pdf.pcap")
    body = http_body(st.s2c.bytes())
    assert len(body) == 177207
    assert hashlib.sha256(body).hexdigest() == (
        "48d179a2f8d17331446c7a75a082851eee9ad841705ed5fbce730f51a0598d62"
    )
    assert st.s2c.gaps == [] and st.s2c.close == "fin"


@pytest.mark.parametrize("test_dir", ["tcp-rst-unacked-stream-09", "tcp-rst-unacked-stream-10"])
def test_rst_unacked_post_gap_data(test_dir: str) -> None:
    """MANIFEST suricata-verify/tcp-rst-unacked-stream-09 and -10 (real captures, RST before
    all data is ACKed, post-gap data). The stated outcome is a fileinfo sha256 of Suricata's
    file store, whose treatment of a body with holes (Content-Length larger than what was
    captured) is Suricata's own; it cannot be derived from stream bytes, so it is not checked
    here. What is about stream content: the response has real holes (not-captured gaps),
    the bytes after them are kept at their offsets, and the RST closes the client side."""
    pcap = next((CORPUS / "suricata-verify" / test_dir).glob("*.pcap"))
    _, sts = streams(str(pcap.relative_to(CORPUS)))
    st = only(sts)
    data = st.s2c.bytes()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert st.s2c.gaps and all(g.reason == GapReason.NOT_CAPTURED for g in st.s2c.gaps)
    last_gap_end = st.s2c.gaps[-1].offset + st.s2c.gaps[-1].length
    assert last_gap_end < st.s2c.length
    assert any(c.offset >= last_gap_end for c in st.s2c.chunks())
    assert st.c2s.close == "rst" and st.c2s.gaps == []


def test_file_match_crossed_uploads_in_stream() -> None:
    """MANIFEST suricata-verify/file-match-crossed: 2 files with the stated sha256 (the
    titi.txt / toto.txt beside it); both contents are in the to-server stream."""
    d = CORPUS / "suricata-verify/file-match-crossed"
    titi, toto = (d / "titi.txt").read_bytes(), (d / "toto.txt").read_bytes()
    assert {hashlib.sha256(titi).hexdigest(), hashlib.sha256(toto).hexdigest()} == {
        "c345c434702129224a0a3e89810a7ed2556718221c0d36fdb7e52b93fa732b00",
        "0605686b5f3a54d2fe07b3b6ed039779911f43ff079d7ff6fecbf4f75bf5ee10",
    }
    _, sts = streams("suricata-verify/file-match-crossed/http-multipart-post.pcap")
    data = only(sts).c2s.bytes()
    assert titi in data and toto in data


def test_tcp_rst_with_data_is_not_stream_data() -> None:
    """MANIFEST suricata-verify/bug-6244-tcp-rst-with-data: the RST's payload `Access Denied`
    is seen per packet but not as stream data; `Please Let Me In!` is stream data."""
    cap, (st,) = streams("suricata-verify/bug-6244-tcp-rst-with-data/tcp-rst-with-data.pcap")
    assert st.server == ("2.2.2.2", 8080)
    assert st.s2c.bytes() == b"Please Let Me In!"
    assert st.c2s.bytes() == b"" and st.c2s.close == "rst"
    rows = cap.plan().rows
    rst = [(int(o), int(n)) for f, o, n, t in _rows(rows) if f == 8 and t == Fate.RST_DATA]
    assert rst == [(0, 13)]
    assert b"Access Denied" not in st.c2s.bytes() + st.s2c.bytes()


def _rows(rows: dict[str, Any]) -> list[tuple[int, int, int, int]]:
    return [
        (int(f), int(o), int(n), int(t))
        for f, o, n, t in zip(
            rows["frame"], rows["stream_offset"], rows["length"], rows["fate"], strict=True
        )
    ]


def test_rst_unacked_stream_03_gap() -> None:
    """MANIFEST suricata-verify/tcp-rst-unacked-stream-03-gap: unACKed data before the RST is
    still reassembled (`Me In` matches). Suricata counts no reassembly gap there
    (stats.tcp.reassembly_gap = 0) because it stops at the RST; the 4 bytes at offset 7 were
    really never captured, so tcpweave reports them as a not-captured gap (docs/design.md: missing
    ranges are gaps, never silently concatenated)."""
    _, (st,) = streams("suricata-verify/tcp-rst-unacked-stream-03-gap/input.pcap")
    assert suricata_view(st.s2c) == b"Please [4 bytes missing]Me In!"
    assert b"Me In" in st.s2c.bytes()


@pytest.mark.parametrize(
    "rel",
    [
        "suricata-verify/tcp-split-handshake-01-4whs/split-handshake-4whs.pcap",
        "suricata-verify/tcp-split-handshake-02-5whs/split-handshake-5whs.pcap",
    ],
)
def test_split_handshakes_evil_in_stream_once(rel: str) -> None:
    """MANIFEST tcp-split-handshake-01-4whs / -02-5whs: `EVIL` is matched once in the stream.
    The 5-way case has two tcp.stream indexes in tshark (the server's own SYN with another
    ISN starts a new conversation); tcpweave numbers them the same way, and EVIL (sent by
    1.1.1.1:12345) is in exactly one direction of one of them."""
    _, sts = streams(rel)
    holders = [
        (st.index, d.src) for st in sts for d in (st.c2s, st.s2c) if d.bytes().count(b"EVIL") == 1
    ]
    assert holders and len(holders) == 1
    assert holders[0][1] == "1.1.1.1"
    assert all(d.bytes() in (b"", b"EVIL") for st in sts for d in (st.c2s, st.s2c))


def test_tcp_fastopen_two_flows() -> None:
    """MANIFEST suricata-verify/tcp-fastopen-01/tfo.pcap: 2 TCP flows, GET /index.php -> 302
    and GET //index.php?page=../../../etc/passwd -> 200."""
    _, sts = streams("suricata-verify/tcp-fastopen-01/tfo.pcap")
    assert len(sts) == 2
    assert sts[0].c2s.bytes().startswith(b"GET /index.php HTTP/1.0\r\n")
    assert sts[0].s2c.bytes().startswith(b"HTTP/1.1 302 ")
    assert sts[1].c2s.bytes().startswith(b"GET //index.php?page=../../../etc/passwd HTTP/1.0")
    assert sts[1].s2c.bytes().startswith(b"HTTP/1.1 200 OK")
    assert b"root:x:0:0:" in sts[1].s2c.bytes()
    for st in sts:
        assert st.c2s.gaps == st.s2c.gaps == []


def test_tcpdump_tfo_syn_data() -> None:
    """MANIFEST tcpdump/tfo-5c1fa7f9ae91.pcap (tfo.out frame 13): a SYN carrying 4 bytes of
    Fast Open data (seq 936732547:936732551) -- they are the stream's first bytes."""
    cap, sts = streams("tcpdump/tfo-5c1fa7f9ae91.pcap")
    assert len(sts) == 3
    st = sts[2]
    assert st.client == ("192.168.0.100", 13048)
    assert st.c2s.bytes() == b"\xde\xad\xbe\xef"
    assert [(f, o, n) for f, o, n, t in _rows(cap.plan().rows) if f == 13] == [(13, 0, 4)]


def test_tcp_5379_payload_within_ip_length() -> None:
    """MANIFEST suricata-verify/tcp-5379: the payload is bounded by the IP total length:
    it ends with `AAA`, not `DDD`. The one segment has a bad TCP checksum and Suricata runs
    with -k none, so this uses checksums=ignore."""
    _, sts = streams("suricata-verify/tcp-5379/input.pcap", checksums="ignore")
    data = only(sts).c2s.bytes()
    assert data.endswith(b"AAA") and not data.endswith(b"DDD")


def test_tcp_async_oneside_content_crosses_packets() -> None:
    """MANIFEST suricata-verify/tcp-async-01: only server->client of an IMAP session; the
    content `C6 OK ID completed\\r\\n* 21 EXISTS\\r\\n* 6 RECENT` spans packets."""
    _, sts = streams("suricata-verify/tcp-async-01/input.pcap")
    st = only(sts)
    assert st.server == ("123.125.50.47", 143)
    assert b"C6 OK ID completed\r\n* 21 EXISTS\r\n* 6 RECENT" in st.s2c.bytes()
    assert st.c2s.bytes() == b""


def test_urgent_byte_stays_in_stream() -> None:
    """MANIFEST suricata-verify/tcp-urgp-04-2byte-XY: with urgent.policy=oob Suricata reads
    `malicXious` (the last urgent byte taken out of band, as the Linux receiver did: the
    server answers `/malicXious`). tcpweave reconstructs the bytes on the wire and has no
    urgent-pointer policy, so the to-server stream keeps `malicXYious`."""
    _, sts = streams("suricata-verify/tcp-urgp-04-2byte-XY/tcp-urgent-2byte-XY.pcap")
    st = only(sts)
    assert st.c2s.bytes().startswith(b"GET /malicXYious HTTP/1.1\r\n")
    assert st.s2c.bytes().endswith(b"You've accessed the path: /malicXious")


def test_dns_tcp_ts_gap() -> None:
    """MANIFEST suricata-verify/dns-tcp-ts-gap: one missing to-server packet (a gap); the
    responses are complete."""
    _, sts = streams("suricata-verify/dns-tcp-ts-gap/input.pcap")
    st = only(sts)
    assert len(st.c2s.gaps) == 1 and st.c2s.gaps[0].reason == GapReason.NOT_CAPTURED
    assert st.s2c.gaps == []


def test_http_pipeline_files_with_gap() -> None:
    """MANIFEST suricata-verify/http-pipeline-files-with-gap: exactly one of the three files
    has gaps, so the to-client stream has gaps and the to-server stream none."""
    _, sts = streams("suricata-verify/http-pipeline-files-with-gap/input.pcap")
    st = only(sts)
    assert st.s2c.gaps and st.c2s.gaps == []
    assert st.s2c.bytes().count(b"HTTP/1.1 200") + st.s2c.bytes().count(b"HTTP/1.0 200") >= 2


# --------------------------------------------------------------------------- zeek


@pytest.mark.parametrize(
    ("rel", "client", "orig", "resp"),
    [
        ("zeek/http/get.pcap", ("141.142.228.5", 59856), 136, 5007),
        ("zeek/tcp/handshake-reorder.pcap", ("141.142.228.5", 59856), 136, 5007),
        ("zeek/tcp/missing-syn.pcap", ("141.42.64.125", 56730), 98, 9417),
        ("zeek/tcp/http-on-irc-port-missing-syn.pcapng", ("141.142.228.5", 6669), 136, 5007),
    ],
)
def test_zeek_conn_sizes_and_roles(rel: str, client: tuple, orig: int, resp: int) -> None:
    """MANIFEST zeek/http/get.pcap (orig_bytes 136, resp_bytes 5007, body 4705),
    zeek/tcp/handshake-reorder.pcap (roles flipped back to 141.142.228.5:59856),
    zeek/tcp/missing-syn.pcap (98 / 9417, no SYN), zeek/tcp/http-on-irc-port-missing-syn
    (141.142.228.5:6669 -> 192.150.187.43:80: the lower port serves)."""
    _, sts = streams(rel)
    st = only(sts)
    assert st.client == client
    assert (st.c2s.length, st.s2c.length) == (orig, resp)
    assert (st.c2s.kept_bytes, st.s2c.kept_bytes) == (orig, resp)
    assert st.c2s.gaps == st.s2c.gaps == []
    if orig == 136:
        assert st.c2s.bytes().startswith(b"GET /download/CHANGES.bro-aux.txt")
        assert len(http_body(st.s2c.bytes())) == 4705


def test_zeek_mixed_vlan_mpls() -> None:
    """MANIFEST zeek/mixed-vlan-mpls.pcap: telnet 26/0, HTTP 98/9417, HTTP 9/3429 bytes;
    http bodies 9130 and 3429 bytes... (the second is response_body_len of a 3429-byte
    stream only if headers are absent, so only the sizes are checked here)."""
    _, sts = streams("zeek/mixed-vlan-mpls.pcap")
    assert [(s.c2s.length, s.s2c.length) for s in sts] == [(26, 0), (98, 9417), (9, 3429)]
    assert all(s.c2s.gaps == s.s2c.gaps == [] for s in sts)


def test_zeek_tcp_padding_is_not_data() -> None:
    """MANIFEST zeek/tcp-http-with-padding.pcap: orig_bytes 16, resp_bytes 191, body 6 bytes;
    Ethernet padding is not TCP data. The server's segments carry bad checksums (offload at
    the capture point) and Zeek's baseline shows no `C` in the history, i.e. checksums were
    not enforced; tcpweave is run with checksums=ignore to match."""
    _, sts = streams("zeek/tcp-http-with-padding.pcap", checksums="ignore")
    st = only(sts)
    assert (st.c2s.length, st.s2c.length) == (16, 191)
    assert st.s2c.gaps == []
    assert len(http_body(st.s2c.bytes())) == 6


def test_zeek_miss_end_data() -> None:
    """MANIFEST zeek/tcp/miss_end_data.pcap: content_gap(is_orig=F, seq 1, length 2902);
    resp_bytes 2902, missed_bytes 2902: the whole response is one gap ending at the FIN."""
    _, sts = streams("zeek/tcp/miss_end_data.pcap")
    st = only(sts)
    assert [(g.offset, g.length, g.reason) for g in st.s2c.gaps] == [
        (0, 2902, GapReason.NOT_CAPTURED)
    ]
    assert (st.s2c.length, st.s2c.kept_bytes) == (2902, 0)
    assert st.s2c.close == "fin"


def test_zeek_quantum_insert_conflict() -> None:
    """MANIFEST zeek/tcp/qi_internet_SYNACK_curl_jsonip.pcap: one rexmit_inconsistency,
    t1 `HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nBANG!` (first seen, injected) vs t2
    `HTTP/1.1 200 OK\\r\\nServer: nginx/1.4.4\\r\\nDate:` (the real response). tcpweave
    (policy first) keeps t1, reports the conflict, and keeps t2 reachable in the plan."""
    cap, sts = streams("zeek/tcp/qi_internet_SYNACK_curl_jsonip.pcap")
    st = only(sts)
    t1 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nBANG!"
    t2 = b"HTTP/1.1 200 OK\r\nServer: nginx/1.4.4\r\nDate:"
    assert st.s2c.bytes().startswith(t1)
    differ = {i for i in range(len(t2)) if t1[i] != t2[i]}
    reported = {i for c in st.s2c.conflicts for i in range(c.offset, c.offset + c.length)}
    assert differ <= reported
    dropped = dropped_bytes(cap, 0, 1)
    for i, b in enumerate(t2):
        if t1[i : i + 1] != bytes([b]):
            assert b in dropped[i], i
    last = only(cap.streams(policy="last"))
    assert last.s2c.bytes().startswith(t2)


REXMIT = re.compile(r"^rexmit_inconsistency, \[.*ctx=\[\]\], ([^,]+), ([^,]+), (\w+)$")


def test_zeek_reassembly_rexmit_inconsistencies() -> None:
    """MANIFEST zeek/tcp/reassembly.pcap (run with -C): every rexmit_inconsistency pair
    (old, new) of the Baseline is a reported conflict: tcpweave (policy first) holds `old` in
    the stream and `new` in overlap-conflict-dropped plan rows at the same offsets."""
    baseline = CORPUS / "zeek/tcp/Baseline/core.reassembly/output"
    pairs = []
    for line in baseline.read_text().split("----------------------")[-1].splitlines():
        m = REXMIT.match(line.strip())
        if m:
            old, new = (
                m.group(k).encode().decode("unicode_escape").encode("latin-1") for k in (1, 2)
            )
            if len(old) == len(new):
                pairs.append((old, new))
    assert pairs
    cap, sts = streams("zeek/tcp/reassembly.pcap", checksums="ignore")
    st = only(sts)
    data = st.c2s.bytes()
    dropped = dropped_bytes(cap, 0, 0, checksums="ignore")
    assert st.c2s.conflicts
    for old, new in pairs:
        hits = [m.start() for m in re.finditer(re.escape(old), data)]
        ok = any(
            all(new[j] == old[j] or new[j] in dropped.get(o + j, ()) for j in range(len(new)))
            for o in hits
        )
        assert ok, (old, new, hits)


def test_zeek_bigtransfer_64bit_offsets_and_window() -> None:
    """MANIFEST zeek/ftp/bigtransfer.pcap: a 5.4 GB ftp-data transfer, mostly cut out; Zeek's
    `out` lists each file_chunk at its 64-bit offset (past 2^32). tcpweave unwraps every
    segment to exactly those offsets and places every chunk: the client acknowledges the
    server's segments (FIN included), so none is outside the receiver's window
    (docs/reassembly-rules.md). As conn.log: resp_bytes 5416666670, missed_bytes
    5416642848; as files.log: seen_bytes 23822; the stream closes with the FIN."""
    out = CORPUS / "zeek/ftp/Baseline/core.tcp.large-file-reassembly/out"
    chunks = []
    for line in out.read_text().splitlines():
        m = re.match(r"^file_chunk, (\d+), (\d+), (.*)$", line)
        if m:
            data = m.group(3).encode().decode("unicode_escape").encode("latin-1")
            chunks.append((int(m.group(2)), int(m.group(1)), data))
    big = [c for c in chunks if c[1] != 270]  # the 270-byte chunk is the directory listing
    cap, sts = streams("zeek/ftp/bigtransfer.pcap")
    st = sts[2]
    assert st.server == ("192.168.56.101", 37150)
    plan = cap.plan().rows
    rows = [r for r, k in zip(_rows(plan), plan["stream"].tolist(), strict=True) if k == 2]
    assert [(o, n) for _, o, n, _ in rows] == [(o, n) for o, n, _ in big]
    assert {fate for _, _, _, fate in rows} == {Fate.NEW}
    for chunk in st.s2c.chunks():  # the kept bytes, read without filling 5.4 GB of gaps
        assert (chunk.offset, chunk.data) in {(o, data[:n]) for o, n, data in big}
    assert st.s2c.length == 5416666670
    assert st.s2c.kept_bytes == 23822
    assert sum(g.length for g in st.s2c.gaps) == 5416642848
    assert st.s2c.close == "fin"


def test_zeek_rst_inject_after_syn() -> None:
    """MANIFEST zeek/tcp/rst-inject-rae.pcap: an RST (seq 0, ack = the SYN's own seq) is
    injected right after the SYN; the connection goes on (SYN-ACK, 25 + 150 client bytes;
    Zeek: orig size 175). That RST does not acknowledge the SYN, so the client must drop it
    (RFC 9293 §3.10.7.3) and it cannot close the session: the 25 bytes sent before the
    server's own in-window RST (frame 7) are stream data. The 150 bytes of frame 8 come after
    that RST: fate after-close (docs/design.md), where Zeek still counts them."""
    cap, sts = streams("zeek/tcp/rst-inject-rae.pcap")
    st = only(sts)
    assert st.client == ("1.2.0.2", 2527)
    assert _rows(cap.plan().rows) == [(5, 0, 25, Fate.NEW), (8, 25, 150, Fate.AFTER_CLOSE)]
    assert st.c2s.kept_bytes == 25


def test_zeek_retransmit_fast009_all_truncated() -> None:
    """MANIFEST zeek/tcp/retransmit-fast009.pcap: orig_bytes 474, resp_bytes 23783,
    missed_bytes 24257 (= all of it): the capture kept headers only, so every byte is a
    `truncated` gap in tcpweave, at the same sizes."""
    _, sts = streams("zeek/tcp/retransmit-fast009.pcap")
    st = only(sts)
    assert (st.c2s.length, st.s2c.length) == (474, 23783)
    assert st.c2s.kept_bytes == st.s2c.kept_bytes == 0
    for d in (st.c2s, st.s2c):
        assert sum(g.length for g in d.gaps) == d.length
        assert {g.reason for g in d.gaps} == {GapReason.TRUNCATED}


def test_zeek_ssh_dups_retransmissions_only() -> None:
    """MANIFEST zeek/tcp/ssh-dups.pcap: many duplicate segments both ways (history
    `ShADTadtTtFf`: retransmissions, no gap): no gaps and no conflicts."""
    cap, sts = streams("zeek/tcp/ssh-dups.pcap")
    st = only(sts)
    assert st.c2s.gaps == st.s2c.gaps == []
    assert st.c2s.conflicts == st.s2c.conflicts == []
    assert st.c2s.bytes().startswith(b"SSH-") and st.s2c.bytes().startswith(b"SSH-")
    fates = {t for *_, t in _rows(cap.plan().rows)}
    assert Fate.RETRANSMISSION in fates


def test_zeek_ctu_roles_from_synack() -> None:
    """MANIFEST zeek/tcp/ctu-64702-888.pcap: the capture starts at the SYN-ACK; roles flip to
    192.168.1.108:64702 -> 185.33.86.224:888."""
    _, sts = streams("zeek/tcp/ctu-64702-888.pcap")
    st = only(sts)
    assert st.client == ("192.168.1.108", 64702)
    assert st.server == ("185.33.86.224", 888)
