"""``extract --stream N[,M...]``: only those streams, the same bytes as a whole extraction,
at every partitioning; a stream the capture lacks is a usage error (issue 15.5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SAMPLE = ROOT / "examples" / "sample-http.pcap"
EXE = [sys.executable, "-m", "tcpweave"]


def _extract(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, "extract", str(SAMPLE), "-o", str(out), "-q", *extra],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _files(out: Path) -> dict[tuple[int, str], bytes]:
    lines = [json.loads(x) for x in (out / "streams.jsonl").read_text().splitlines()]
    return {(d["stream"], d["direction"]): (out / d["path"]).read_bytes()
            for d in lines if d["path"] is not None}  # fmt: skip


@pytest.fixture(scope="module")
def whole(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], bytes]:
    out = tmp_path_factory.mktemp("whole") / "x"
    assert _extract(out).returncode == 0
    return _files(out)


@pytest.mark.parametrize("extra", [[], ["--partition-rows", "20", "--jobs", "2"]])
def test_only_the_streams_asked_for(
    whole: dict[tuple[int, str], bytes], tmp_path: Path, extra: list[str]
) -> None:
    out = tmp_path / "x"
    done = _extract(out, "--stream", "2,0", *extra)
    assert done.returncode == 0, done.stderr
    got = _files(out)
    assert got == {k: v for k, v in whole.items() if k[0] in (0, 2)}
    assert got  # the sample has streams 0 and 2 with bytes
    written = {p.relative_to(out) for p in out.rglob("*.bin")}
    assert len(written) == len(got)


@pytest.mark.parametrize("value", ["99", "1,x", "-1", ""])
def test_a_stream_not_in_the_capture_is_a_usage_error(tmp_path: Path, value: str) -> None:
    done = _extract(tmp_path / "x", "--stream", value)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error:") and "--stream" in done.stderr
    assert "Traceback" not in done.stderr
