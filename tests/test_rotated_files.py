"""Rotated captures read as one: the same streams as the single file they were cut from.

``editcap -c N`` cuts a capture into files of N packets each (as ``tcpdump -C``/``-G``
rotation does by size or time); tcpweave must read the pieces, given in any order,
as one capture: frames continue across files, and every stream -- including those
whose packets, handshakes and retransmissions straddle file boundaries -- is the
same byte for byte, with the same gaps and conflicts.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

import tcpweave
from conftest import CORPUS, ROOT

EDITCAP = shutil.which("editcap")
pytestmark = pytest.mark.skipif(EDITCAP is None, reason="editcap (wireshark-common) is missing")

CAPTURES = [
    ROOT / "examples/sample-http.pcap",
    CORPUS / "zeek/tcp/reassembly.pcap",
    CORPUS / "suricata-verify/http-pipeline-files-with-gap/input.pcap",
]


def _fingerprint(cap: tcpweave.Capture) -> list[tuple[object, ...]]:
    out = []
    for s in cap.streams():
        for d in (s.c2s, s.s2c):
            out.append(
                (s.index, s.session, s.client, s.server, d.name, d.bytes(), d.packets,
                 tuple(d.gaps), tuple(d.conflicts), d.close)
            )  # fmt: skip
    return out


@pytest.mark.parametrize("path", [p for p in CAPTURES if p.is_file()], ids=lambda p: p.name)
def test_pieces_read_as_one_capture(path: Path, tmp_path: Path) -> None:
    assert EDITCAP is not None
    subprocess.run([EDITCAP, "-c", "2", str(path), str(tmp_path / "piece.pcap")], check=True)
    pieces = sorted(tmp_path.glob("piece*.pcap"))
    assert len(pieces) > 10
    random.Random(7).shuffle(pieces)  # the order files are named in must not matter
    with tcpweave.open(path) as whole, tcpweave.open(pieces) as rotated:
        assert rotated.stats.frames == whole.stats.frames
        assert list(rotated.packets.frame) == list(whole.packets.frame)
        assert _fingerprint(rotated) == _fingerprint(whole)


def test_two_hundred_files(tmp_path: Path) -> None:
    """The issue's scenario: 200 rotated files of one capture (1000 HTTP requests)."""
    path = CORPUS / "zeek/http/1000-requests-one-dropped-response.pcap.gz"
    if not path.is_file():
        pytest.skip("corpus capture missing")
    assert EDITCAP is not None
    with tcpweave.open(path) as whole:
        frames = whole.stats.frames
        expected = _fingerprint(whole)
    per_file = frames // 200
    subprocess.run([EDITCAP, "-c", str(per_file), str(path), str(tmp_path / "r.pcap")], check=True)
    pieces = sorted(tmp_path.glob("r*.pcap"))
    assert len(pieces) >= 200
    with tcpweave.open(pieces) as rotated:
        assert _fingerprint(rotated) == expected
