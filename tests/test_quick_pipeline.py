"""The whole pipeline on a few small corpus captures, cheap enough to run with the JIT off.

Marked ``quick``: ``make test`` also runs these with ``NUMBA_DISABLE_JIT=1``, so every
kernel's plain-Python path (numba hands back the function itself) is exercised end to
end, from the capture file to extracted stream files. The expectations are the outcomes
stated in the corpus MANIFEST.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tcpweave
from conftest import CORPUS, NO_CORPUS
from tcpweave.cli import app

pytestmark = [
    pytest.mark.quick,
    pytest.mark.skipif(not CORPUS.is_dir(), reason=NO_CORPUS),
]


def test_exact_overlap_keeps_the_first_copy_and_reports_the_other() -> None:
    # MANIFEST: eve-overlap-payload-01 -- default policy GOOD, old-linux EVIL
    path = CORPUS / "suricata-verify/eve-overlap-payload-01/tcp-overlap.pcap"
    with tcpweave.open(path) as cap:
        [s] = cap.streams()
        assert s.c2s.bytes() == b"GOOD"
        assert [(c.offset, c.length) for c in s.c2s.conflicts] == [(0, 4)]
        [old_linux] = cap.streams(policy="old-linux")
        assert old_linux.c2s.bytes() == b"EVIL"


def test_missing_segment_is_a_gap_not_glued() -> None:
    # MANIFEST: eve-payload-05-tcp-data-gap -- VERY[4 bytes missing]DATA
    path = CORPUS / "suricata-verify/eve-payload-05-tcp-data-gap/tcp-simple-gap2.pcap"
    with tcpweave.open(path) as cap:
        [s] = cap.streams()
        assert s.c2s.bytes() == b"VERY" + bytes(4) + b"DATA"
        assert s.c2s.bytes(gaps="omit") == b"VERYDATA"
        assert [(g.offset, g.length, str(g.reason)) for g in s.c2s.gaps] == [(4, 4, "not-captured")]


def test_extract_writes_the_pdf_download_byte_exact(tmp_path: Path) -> None:
    # MANIFEST: filestore-v2.1-forced -- the PDF's sha256 is 48d179a2...
    path = CORPUS / "suricata-verify/filestore-v2.1-forced/suricata-update-pdf.pcap"
    result = CliRunner().invoke(app, ["extract", str(path), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "streams.jsonl").read_text().splitlines()]
    [response] = [r for r in records if r["direction"] == "s2c"]
    data = (tmp_path / response["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == response["sha256"]
    body = data[data.index(b"\r\n\r\n") + 4 :]
    assert (
        hashlib.sha256(body).hexdigest()
        == "48d179a2f8d17331446c7a75a082851eee9ad841705ed5fbce730f51a0598d62"
    )
