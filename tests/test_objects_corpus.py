"""HTTP objects of the corpus's HTTP captures against tshark's ``--export-objects http``
and the file hashes the corpus MANIFEST states.

Both directions are checked: every object tcpweave finds whole (state ok, its request
surely its own) is byte-equal to a file tshark exports, and every file tshark exports is
one of tcpweave's objects; each exception is named below with the reason.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import tcpweave
from conftest import CORPUS

TSHARK = shutil.which("tshark")

HTTP_CAPTURES = [
    "suricata-verify/http-gap-beyond-body/input.pcap",
    "suricata-verify/lua-output-http/input.pcap",
    "suricata-verify/filestore-v2.1-forced/suricata-update-pdf.pcap",
    "suricata-verify/http-pipeline-files-with-gap/input.pcap",
    "suricata-verify/file-match-crossed/http-multipart-post.pcap",
    "suricata-verify/tcp-stream-after-swap/http-start-from-response.pcap",
    "suricata-verify/bug-3286-01-no-evasion/without_evasion.pcap",
    "suricata-verify/http-ipv6/input.pcap",
    "tcpdump/ipv4_tcp_http_xml_tso.pcap",
    "zeek/tcp/reassembly.pcap",
    "zeek/tcp/missing-syn.pcap",
    "zeek/tcp/http-on-irc-port-missing-syn.pcapng",
    "zeek/tcp/qi_internet_SYNACK_curl_jsonip.pcap",
    "zeek/tcp-http-with-padding.pcap",
    "zeek/http/get.pcap",
    "zeek/http-qinq-0.pcap",
    "zeek/http-vlan-0.pcap",
    "zeek/mixed-vlan-mpls.pcap",
    "zeek/http/1000-requests-one-dropped-response.pcap.gz",
    "zeek/http/iso-download.pcap.gz",
]

#: objects tcpweave has whole and tshark 4.0 does not export
OURS_ONLY = {
    "suricata-verify/http-pipeline-files-with-gap/input.pcap": "after the gap in the "
    "server's direction tshark dissects no further response; tcpweave resynchronises on "
    "the next status line and the JPEG after it is whole",
}
#: files tshark 4.0 exports that are none of tcpweave's objects
TSHARK_ONLY = {
    "zeek/tcp/reassembly.pcap": "the request's header section has gaps inside: tcpweave "
    "makes no object of a message whose header section was not captured whole",
    "zeek/mixed-vlan-mpls.pcap": "HTTP/0.9 ('GET /' without a version, a response without "
    "a status line): tshark exports each continuation segment, tcpweave reads HTTP/1.x only",
    "suricata-verify/http-gap-beyond-body/input.pcap": "a response vanished in the gap: "
    "tshark writes the bytes after the gap (the tail of /2's body and /3's response) as "
    "/3's body; tcpweave writes /1's body with its gap, and the next whole response "
    "marked paired_surely false",
}
#: sha256 of bodies stated by the corpus MANIFEST
STATED = {
    "suricata-verify/filestore-v2.1-forced/suricata-update-pdf.pcap":
        "48d179a2f8d17331446c7a75a082851eee9ad841705ed5fbce730f51a0598d62",
}  # fmt: skip


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("name", HTTP_CAPTURES)
def test_objects_equal_tsharks_export(corpus: Path, tmp_path: Path, name: str) -> None:
    path = corpus / name
    if not path.exists():
        pytest.skip(f"{name} not in the corpus at {CORPUS}")
    subprocess.run([TSHARK, "-r", str(path), "-q", "--export-objects", f"http,{tmp_path}"],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    theirs = Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir())
    with tcpweave.open(path) as cap:
        found = cap.http_objects()
    ours = {o.sha256 for o in found}
    whole = [o for o in found if o.state == tcpweave.ObjectState.OK and o.paired_surely]
    missing = [(o.stream, o.target, o.size) for o in whole if o.sha256 not in theirs]
    extra = sorted(h for h in theirs if h not in ours)
    assert bool(missing) == (name in OURS_ONLY), missing
    assert bool(extra) == (name in TSHARK_ONLY), extra
    if name in STATED:
        assert STATED[name] in ours


def test_a_gap_is_kept_in_place(corpus: Path) -> None:
    """suricata-verify http-gap-beyond-body: the 12-byte body of /1 was never captured
    (MANIFEST: "1 fileinfo size 12 TRUNCATED gaps=true")."""
    with tcpweave.open(corpus / HTTP_CAPTURES[0]) as cap:
        first, second = cap.http_objects()
    assert (first.target, first.size, str(first.state)) == ("/1", 12, "gap")
    assert first.gaps == ((0, 12),)
    assert first.data == bytes(12)
    assert second.data == b"Hello People" and not second.paired_surely
