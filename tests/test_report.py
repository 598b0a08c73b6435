"""``tcpweave report`` and ``extract --report``: the page's data against tshark, and the page
itself in a real headless Chromium (Debian's package) driven by Playwright.

Oracles: tshark's ``tcp.stream`` and ``tcp.len`` (one graph mark per packet with payload,
as ``tcp.len > 0`` counts them; the corpus's tshark views where the corpus is there, tshark
itself on the sample), the public corpus's stated outcomes (an overlap whose bytes differ
is a conflict; a capture with a hole has a gap), and a generated capture whose every
session is known (bench/report.py: 100,000 sessions). The browser tests skip, saying why,
without /usr/bin/chromium or the playwright package; they never download a browser.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import CORPUS, ROOT

sys.path.insert(0, str(ROOT / "bench"))
import report as bench

SAMPLE = ROOT / "examples" / "sample-http.pcap"
HAVE_PLOTLY = importlib.util.find_spec("plotly") is not None
NO_BROWSER = (
    "no /usr/bin/chromium (apt-get install chromium; make system-tools)"
    if not os.path.exists(bench.CHROMIUM)
    else "no playwright package (pip install playwright; it is in the test extras)"
    if importlib.util.find_spec("playwright") is None
    else ""
)
needs_plotly = pytest.mark.skipif(not HAVE_PLOTLY, reason="no plotly package (the report extra)")
needs_browser = pytest.mark.skipif(
    bool(NO_BROWSER) or not HAVE_PLOTLY, reason=NO_BROWSER or "no plotly package"
)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache")),
    }


def _tcpweave(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tcpweave", *args],
        env=_env(),
        capture_output=True,
        text=True,
        check=True,
    )


def _collect(path: Path, **kw: Any) -> Any:
    from tcpweave.report.build import collect
    from tcpweave.run import Run, Settings

    with Run([str(path)], Settings()) as run:
        return collect(run, **kw)


def _segments_by_stream(report: Any) -> Counter[int]:
    p = report.graphs.packets
    return Counter(p["session"][p["len"] > 0].tolist())


def _tshark_segments(path: Path) -> Counter[int]:
    """Packets with payload per tcp.stream, as tshark counts them."""
    if shutil.which("tshark") is None:
        pytest.skip("no tshark (make system-tools)")
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.stream"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Counter(int(x) for x in out.stdout.split())


# -- the data: one mark per segment, fates, budget ---------------------------------------------


@needs_plotly
def test_sample_one_mark_per_segment_as_tshark_counts() -> None:
    report = _collect(SAMPLE)
    assert _segments_by_stream(report) == _tshark_segments(SAMPLE)
    assert len(report.drawn) == report.sessions.num_rows  # all fit the default budget


def _corpus_view(rel: str) -> Counter[int]:
    """Packets with payload per tcp.stream from the corpus's tshark view of ``rel``."""
    tsv = CORPUS / "expected_tshark" / (rel.replace("/", "__") + ".streams.tsv")
    with open(tsv, encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t") if len(r) >= 4 and r[1]]
    return Counter(int(r[1]) for r in rows if r[3] and int(r[3]) > 0)


@pytest.mark.skipif(not CORPUS.is_dir(), reason="no corpus")
@pytest.mark.parametrize(
    ("rel", "mark", "span"),
    [
        # MANIFEST: "same seq range sent twice with different bytes (GOOD then EVIL)"
        ("suricata-verify/eve-overlap-payload-01/tcp-overlap.pcap", "conflict", "conflict"),
        # MANIFEST: a data gap in the stream
        ("suricata-verify/eve-payload-05-tcp-data-gap/tcp-simple-gap2.pcap", "new", "gap"),
    ],
)
def test_corpus_marks_and_spans(rel: str, mark: str, span: str) -> None:
    from tcpweave.report.graph import Mark, Span

    report = _collect(CORPUS / rel)
    assert _segments_by_stream(report) == _corpus_view(rel)
    marks = {str(Mark(m)) for m in report.graphs.packets["mark"].tolist()}
    assert mark in marks
    assert span in {str(Span(k)) for k in report.graphs.spans["kind"].tolist()}


@needs_plotly
def test_out_of_order_marks_add_up_to_the_plans_count(tmp_path: Path) -> None:
    """Per direction, the segments drawn out of order are the plan's ``out_of_order``."""
    from tcpweave.report.graph import Mark

    report = _collect(SAMPLE)
    p = report.graphs.packets
    drawn = Counter(
        zip(
            p["session"][p["mark"] == Mark.OUT_OF_ORDER].tolist(),
            p["dir"][p["mark"] == Mark.OUT_OF_ORDER].tolist(),
            strict=True,
        )
    )
    t = report.sessions
    for s in range(t.num_rows):
        for d, name in enumerate(("c2s", "s2c")):
            assert drawn[(s, d)] == t.column(f"out_of_order_{name}")[s].as_py()


def test_choose_takes_sessions_in_stream_order_within_the_budget() -> None:
    from tcpweave.report.graph import choose

    assert choose(np.array([3, 4, 2, 10, 1]), 10).tolist() == [0, 1, 2, 4]
    assert choose(np.array([11, 2]), 10).tolist() == [1]
    assert choose(np.array([5, 5]), 10).tolist() == [0, 1]
    assert choose(np.array([], np.int64), 10).tolist() == []


@pytest.mark.parametrize("isn", [0, 1, 2**32 - 1, 2**32 - 11])
def test_unwrap_across_the_sequence_wrap(isn: int) -> None:
    """RFC 9293 §3.4: offsets keep growing where the 32-bit sequence number wraps."""
    from tcpweave.report.graph import _unwrap

    offsets = np.array([0, 1000, 5, 2**31 - 1, 2**32 - 100, 2**32 + 7, 2**32 + 2**31, 2**33 - 5])
    steps = np.diff(offsets)
    assert np.all(np.abs(steps) < 2**31)
    seq = ((isn + offsets) % 2**32).astype(np.uint32)
    starts = np.zeros(len(seq), np.bool_)
    starts[0] = True
    base = np.full(len(seq), isn, np.int64)
    assert _unwrap(seq, base, starts).tolist() == offsets.tolist()


# -- the page in Chromium -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = bench.launch(p)
        yield b
        b.close()


class Visit:
    """A page opened from a file, with what it logged and asked for."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.resolve().as_uri(), timeout=120_000)
        self.page.wait_for_selector("body[data-ready='1']", timeout=120_000)

    def show(self, stream: int) -> None:
        self.page.evaluate(f"window.tcpweaveReport.show({stream})")
        self.page.wait_for_selector("#session-section[data-rendered='1']")
        assert self.page.get_attribute("#session-section", "data-stream") == str(stream)

    def marks(self) -> int:
        """Points drawn in the two time-sequence graphs (SVG: one path.point each)."""
        return int(self.page.locator("#graph-c2s path.point, #graph-s2c path.point").count())

    def filter(self, text: str) -> int:
        before = self.page.get_attribute("#match-count", "data-count")
        self.page.fill("#filter", text)
        if text:
            self.page.wait_for_function(
                f"document.querySelector('#match-count').dataset.count !== '{before}'"
            )
        return int(self.page.get_attribute("#match-count", "data-count") or -1)

    def table_streams(self) -> list[int]:
        return [
            int(x) for x in self.page.locator("#sessions tbody td:first-child").all_inner_texts()
        ]


def _not_blank(png: bytes) -> bool:
    """Whether a PNG's pixel rows hold many distinct byte values (a blank page holds a few)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat = 8, b""
    while at < len(png):
        length = int.from_bytes(png[at : at + 4], "big")
        if png[at + 4 : at + 8] == b"IDAT":
            idat += png[at + 8 : at + 8 + length]
        at += 12 + length
    return len(set(zlib.decompress(idat))) > 32


@needs_browser
def test_sample_page(browser: Any, tmp_path: Path) -> None:
    page_path = tmp_path / "report.html"
    _tcpweave("report", str(SAMPLE), "-o", str(page_path))
    visit = Visit(browser, page_path)
    segments = _tshark_segments(SAMPLE)
    for stream in range(4):
        visit.show(stream)
        assert visit.marks() == segments[stream], stream
    # the byte map of stream 0: a bar per kept range of each direction, drawn with a width
    visit.show(0)
    bars = visit.page.locator("#bytemap .barlayer .point path").evaluate_all(
        "ps => ps.map(p => p.getAttribute('d'))"
    )
    assert len(bars) >= 2 and all(d.startswith("M") for d in bars)
    # filtering: the IPv6 session only (tshark: the streams over IPv6)
    assert visit.filter("fd00:77") == 1
    assert visit.table_streams() == [2]
    assert visit.filter("") == 4
    visit.page.click("#sessions th[data-key='bytes_s2c']")  # sort by bytes sent back
    visit.page.click("#sessions th[data-key='bytes_s2c']")  # descending
    shown = visit.table_streams()
    assert len(shown) == 4 and shown[0] == 0  # stream 0 carries the 29,417-byte response
    png = visit.page.screenshot(full_page=True)
    assert _not_blank(png)
    assert visit.errors == []
    assert all(u.startswith(("file:", "data:", "blob:", "about:")) for u in visit.requests)


@needs_browser
def test_extract_report_links_to_the_stream_files(browser: Any, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _tcpweave("extract", str(SAMPLE), "-o", str(out), "--report", "-q")
    assert (out / "manifest.json").exists() and not (out / "INCOMPLETE.json").exists()
    visit = Visit(browser, out / "report.html")
    visit.show(0)
    hrefs = visit.page.locator("#session-files a").evaluate_all("a => a.map(x => x.href)")
    assert len(hrefs) == 2
    for href in hrefs:
        assert Path(href.removeprefix("file://")).is_file()
    assert visit.errors == []


@needs_browser
def test_hundred_thousand_sessions(browser: Any, tmp_path: Path) -> None:
    """bench/report.py's capture: session s is client 10.0.0.1 + s, one 16-byte segment."""
    capture = tmp_path / "tiny.pcap"
    bench.tiny_sessions(capture, 100_000)
    page_path = tmp_path / "report.html"
    _tcpweave("report", str(capture), "-o", str(page_path), "--graph-packets", "200000")
    visit = Visit(browser, page_path)
    assert visit.page.get_attribute("#match-count", "data-count") == "100000"
    assert visit.filter("10.0.1.2:") == 1  # 10.0.0.1 + 257
    assert visit.table_streams() == [257]
    visit.show(257)
    assert visit.marks() == 1
    # 5 packets a session: 40,000 sessions fit 200,000 packets; the page says so
    note = visit.page.inner_text("#graph-note")
    assert "40,000 of 100,000 sessions" in note and "60,000 sessions did not fit" in note
    visit.show(99_999)
    assert "did not fit the report's budget" in visit.page.inner_text("#session-missing")
    assert visit.marks() == 0
    assert visit.errors == []


def test_cli_default_budget_matches_the_library() -> None:
    from tcpweave.cli.report import GRAPH_PACKETS as CLI
    from tcpweave.report.graph import GRAPH_PACKETS

    assert CLI == GRAPH_PACKETS
