"""``tcpweave compare`` against real tcpflow and tshark, and against planted differences.

The capture reuses a 4-tuple (FIN, then a new SYN with another ISN) and
delivers segments out of order. Where tcpflow, tshark and tcpweave agree,
compare must report nothing; then differences are planted in tcpflow's output
(a byte changed, a file deleted, two sessions merged into one file) and each
must be found, with its kind and place.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sessions import Trace
from tcpweave.cli.app import app

needs_tcpflow = pytest.mark.skipif(shutil.which("tcpflow") is None, reason="tcpflow missing")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark missing")

FIRST = b"first session on the reused port"
SECOND = b"second session, same 4-tuple"


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    t = Trace()
    a = t.session(cport=40001).handshake()
    a.c(6, b"world!")  # out of order: the second piece first
    a.c(0, b"hello ")
    a.s(0, b"reply")
    a.close()
    b = t.session(cport=40002, cisn=1000).handshake()
    b.c(0, FIRST)
    b.close()
    c = t.session(cport=40002, cisn=700_000).handshake()
    c.c(0, SECOND)
    c.s(0, b"ok")
    c.close()
    return t.write(tmp_path_factory.mktemp("compare") / "reuse_ooo.pcap")


def _compare(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = CliRunner().invoke(app, ["compare", *args, "--json"])
    assert out.exit_code in (0, 1), out.output
    return out.exit_code, json.loads(out.stdout)


@pytest.fixture(scope="module")
def tcpflow_dir(capture: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("tcpflow") is None:
        pytest.skip("tcpflow missing")
    d = tmp_path_factory.mktemp("tcpflow") / "out"
    code, result = _compare(str(capture), "--against", f"tcpflow:{d}", "--run")
    assert code == 0, result
    return d


@needs_tcpflow
def test_tcpflow_agrees(tcpflow_dir: Path, capture: Path) -> None:
    names = sorted(p.name for p in tcpflow_dir.iterdir() if p.name != "report.xml")
    assert "010.000.000.001.40002-010.000.000.002.00080c1" in names  # the reused 4-tuple
    code, result = _compare(str(capture), "--against", f"tcpflow:{tcpflow_dir}")
    assert code == 0
    assert result["totals"]["identical"] == 5 == len(result["rows"])
    assert (result["ours_streams"], result["theirs_streams"]) == (3, 3)
    assert result["I_p"] is None and result["A_p"] is None


@needs_tcpflow
def test_planted_differences_are_found(tcpflow_dir: Path, capture: Path, tmp_path: Path) -> None:
    d = tmp_path / "planted"
    shutil.copytree(tcpflow_dir, d)
    ooo = d / "010.000.000.001.40001-010.000.000.002.00080"
    data = bytearray(ooo.read_bytes())
    data[7] ^= 0x20  # "world!" -> "wOrld!"
    ooo.write_bytes(bytes(data))
    (d / "010.000.000.002.00080-010.000.000.001.40001").unlink()  # the reply
    base = d / "010.000.000.001.40002-010.000.000.002.00080"
    reuse = d / "010.000.000.001.40002-010.000.000.002.00080c1"
    base.write_bytes(base.read_bytes() + reuse.read_bytes())  # two sessions in one file
    reuse.unlink()
    code, result = _compare(str(capture), "--against", f"tcpflow:{d}")
    assert code == 1
    got = sorted((r["status"], r["stream"], r["direction"], r["first_difference"], r["mixed_with"])
                 for r in result["rows"] if r["status"] != "identical")  # fmt: skip
    assert got == [
        ("differs", 0, "c2s", 7, []),
        ("missing", 0, "s2c", None, []),
        ("missing", 2, "c2s", None, []),
        ("mixed", 1, "c2s", len(FIRST), [2]),
    ]
    assert result["totals"]["identical"] == 1  # stream 2's reply "ok"


@needs_tshark
def test_tshark_agrees(capture: Path) -> None:
    code, result = _compare(str(capture), "--against", "tshark")
    assert code == 0, result
    assert result["totals"]["identical"] == 5


def test_manifest_of_another_run(capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    res = CliRunner().invoke(app, ["extract", str(capture), "-o", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    code, result = _compare(str(capture), "--against", f"manifest:{out}")
    assert code == 0 and result["totals"]["identical"] == 5
    rec = json.loads((out / "streams.jsonl").read_text().splitlines()[0])
    target = out / rec["path"]
    target.write_bytes(target.read_bytes()[:-1])  # one byte short
    code, result = _compare(str(capture), "--against", f"manifest:{out}")
    bad = [r for r in result["rows"] if r["status"] != "identical"]
    assert code == 1 and [(r["status"], r["stream"], r["first_difference"]) for r in bad] == [
        ("prefix", rec["stream"], rec["bytes"] - 1)
    ]
