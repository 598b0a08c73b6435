"""The exported Wireshark Lua dissector, run by tshark, finds the PDUs tcpweave finds.

Captures are crafted (tests/sessions.py) with PDUs that span several segments,
share segments, start mid-segment and have headers split across segments, in
both directions of two sessions. tshark loads the dissector written by
``tcpweave pdus --export-lua`` and decodes the port as it; each PDU it dissects
shows as one ``<proto>.length`` value in the frame where Wireshark reassembled
it, which must be tcpweave's ``last_frame`` for the same PDU, in the same order.
"""

from __future__ import annotations

import itertools
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tcpweave
from sessions import Trace
from tcpweave.cli import app

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")

PORT = 7777
PROTO = "twtest"


def _length_pdu(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.choice([0, 1, 5, 60, 700, 2500]))
    return struct.pack("!H", len(body)) + body


def _magic_pdu(rng: random.Random) -> bytes:
    body = rng.randbytes(rng.choice([0, 3, 90, 1800])).replace(b"\xca", b"\xcb")
    return b"\xca\xfe" + struct.pack("<I", len(body) + 6) + body


def _fixed_pdu(rng: random.Random) -> bytes:
    return b"\x7f" + rng.randbytes(9)


CASES = {
    "length:size=2,adjust=2": _length_pdu,
    "magic:magic=0xcafe,offset=2,size=4,endian=little,max=100000": _magic_pdu,
    "fixed:size=10,magic=0x7f": _fixed_pdu,
}


def _segments(rng: random.Random, stream: bytes) -> list[tuple[int, int]]:
    cuts = {0, len(stream)}
    while len(cuts) < len(stream) // 300 + 4:
        cuts.add(rng.randrange(1, len(stream)))
    cuts.add(1)  # a header split over two segments
    bounds = sorted(c for c in cuts if c <= len(stream))
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def _capture(path: Path, make: object, seed: int) -> Path:
    rng = random.Random(seed)
    trace = Trace()
    for i in range(2):
        s = trace.session(cport=40000 + i, sport=PORT, cisn=rng.randrange(2**32))
        s.handshake()
        c2s = b"".join(make(rng) for _ in range(12))  # type: ignore[operator]
        s2c = b"".join(make(rng) for _ in range(12))  # type: ignore[operator]
        for c, r in itertools.zip_longest(_segments(rng, c2s), _segments(rng, s2c)):
            if c:
                s.c(c[0], c2s[c[0] : c[1]])
            if r:
                s.s(r[0], s2c[r[0] : r[1]])
        s.close()
    return trace.write(path)


def _tshark_pdus(lua: Path, capture: Path) -> list[tuple[int, int]]:
    out = subprocess.run(
        ["tshark", "-X", f"lua_script:{lua}", "-r", str(capture), "-d",
         f"tcp.port=={PORT},{PROTO}", "-T", "fields", "-e", "frame.number", "-e",
         f"{PROTO}.length"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    pdus = []
    for line in out.splitlines():
        frame, _, lengths = line.partition("\t")
        pdus += [(int(frame), int(n)) for n in lengths.split(",") if n]
    return pdus


@pytest.mark.parametrize("spec", list(CASES))
def test_tshark_with_exported_dissector_sees_the_same_pdus(spec: str, tmp_path: Path) -> None:
    lua = tmp_path / "twtest.lua"
    result = CliRunner().invoke(
        app,
        ["pdus", "--export-lua", str(lua), "--framer", spec, "--port", str(PORT),
         "--proto", PROTO],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = lua.read_text()
    assert "DESEGMENT_ONE_MORE_SEGMENT" in text and "desegment_offset" in text
    capture = _capture(tmp_path / "c.pcap", CASES[spec], seed=len(spec))
    with tcpweave.open(capture) as cap:
        found = cap.pdus(spec)
    assert not found.damaged.any() and found.skipped_bytes == 0
    ours = sorted((p.last_frame, p.stream, p.direction, p.stream_offset, p.length) for p in found)
    theirs = _tshark_pdus(lua, capture)
    assert len(theirs) == len(found) == 2 * 2 * 12
    assert theirs == [(frame, n) for frame, _, _, _, n in ours]
    assert any(p.frames > 2 for p in found) or spec.startswith("fixed")  # spans segments
