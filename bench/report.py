"""The HTML report: how fast a page of many sessions becomes interactive in a browser.

Generates a capture of N tiny sessions (default 100,000: SYN, SYN-ACK, one 16-byte data
segment, FIN from each side; valid IPv4 and TCP checksums; built with numpy, about a
second), writes ``tcpweave report`` of it, then opens the page in Debian's Chromium
driven by Playwright (never a downloaded browser) several times and reports the median
of:

* ``ready_s``: from navigation until the session table has drawn its first page;
* ``interactive_s``: that, plus one filter round trip (a word typed into the filter, the
  table redrawn with the matching rows) -- the page is usable;
* ``graph_s``: that, plus drawing one session's graphs.

Target: interactive within 3 s on a page of 100,000 sessions. With ``--screenshot PNG``
the sample capture's report is photographed (docs/report.png in the README).

Usage::

    .venv/bin/python bench/report.py                   # 100k sessions, 5 rounds
    .venv/bin/python bench/report.py --sessions 10000 --rounds 3
    .venv/bin/python bench/report.py --screenshot docs/report.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
#: Chromium's flags for a headless run as root with no network activity of its own
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET_INTERACTIVE_S = 3.0

DATA_LEN = 16  # payload bytes of each session's one data segment
FRAME = 14 + 20 + 20 + DATA_LEN  # every frame this long: shorter IP packets carry a trailer
_SYN, _ACK, _PSH, _FIN = 0x02, 0x10, 0x08, 0x01
#: per session: (direction, flags, seq step from the ISN, ack step from the peer's ISN, data)
PLAN = (
    (0, _SYN, 0, None, False),
    (1, _SYN | _ACK, 0, 1, False),
    (0, _PSH | _ACK, 1, 1, True),
    (1, _FIN | _ACK, 1, 1 + DATA_LEN, False),
    (0, _FIN | _ACK, 1 + DATA_LEN, 2, False),
)


def tiny_sessions(path: Path, sessions: int, seed: int = 1) -> int:
    """Write a pcap of ``sessions`` tiny sessions (``PLAN``), one after the other, clients
    10.<a>.<b>.<c>:<port> to 192.0.2.1:80; returns the packet count."""
    rng = np.random.default_rng(seed)
    n = sessions * len(PLAN)
    s = np.repeat(np.arange(sessions), len(PLAN))
    k = np.tile(np.arange(len(PLAN)), sessions)
    isn = rng.integers(0, 1 << 32, (sessions, 2), dtype=np.int64)
    client = (10 << 24) + 1 + s
    cport = (1024 + s % 60000).astype(np.int64)
    plan = np.array(
        [(d, f, sq, -1 if a is None else a, dat) for d, f, sq, a, dat in PLAN], np.int64
    )
    d, flags, seq_step, ack_step, data = (plan[k, i] for i in range(5))
    seq = (isn[s, d] + seq_step) % (1 << 32)
    ack = np.where(ack_step >= 0, (isn[s, 1 - d] + ack_step) % (1 << 32), 0)
    src = np.where(d == 0, client, 0xC0000201)
    dst = np.where(d == 0, 0xC0000201, client)
    sport = np.where(d == 0, cport, 80)
    dport = np.where(d == 0, 80, cport)
    payload = np.where(data == 1, DATA_LEN, 0)
    ip_len = 40 + payload
    buf = np.zeros((n, FRAME), np.uint8)
    buf[:, 12:14] = (8, 0)  # EtherType IPv4
    ip = buf[:, 14:34]
    ip[:, 0] = 0x45
    _put(ip, 2, ip_len, 2)
    _put(ip, 4, np.arange(n) & 0xFFFF, 2)
    ip[:, 8], ip[:, 9] = 64, 6
    _put(ip, 12, src, 4)
    _put(ip, 16, dst, 4)
    _put(ip, 10, _checksum(ip, np.zeros(n, np.int64)), 2)
    tcp = buf[:, 34:]
    _put(tcp, 0, sport, 2)
    _put(tcp, 2, dport, 2)
    _put(tcp, 4, seq, 4)
    _put(tcp, 8, ack, 4)
    tcp[:, 12] = 5 << 4
    tcp[:, 13] = flags
    _put(tcp, 14, np.full(n, 64240), 2)
    tcp[:, 20:] = np.where(data[:, None] == 1, rng.integers(32, 127, (n, DATA_LEN)), 0)
    # RFC 9293 §3.1: the checksum covers a pseudo-header (addresses, protocol, TCP length)
    pseudo = (src >> 16) + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF) + 6 + 20 + payload
    _put(tcp, 16, _checksum(tcp, pseudo), 2)
    ts_us = 1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 100
    records = np.zeros((n, 16), np.uint8)
    for i, v in enumerate(
        (ts_us // 1_000_000, ts_us % 1_000_000, np.full(n, FRAME), np.full(n, FRAME))
    ):
        records[:, 4 * i : 4 * i + 4] = np.asarray(v, "<u4").view(np.uint8).reshape(n, 4)
    # pcap: magic, version 2.4 (two u16), zone, sigfigs, snaplen, LINKTYPE_ETHERNET
    header = np.array([0xA1B2C3D4, 0x00040002, 0, 0, 65535, 1], "<u4").tobytes()
    with open(path, "wb") as f:
        f.write(header)
        f.write(np.concatenate([records, buf], axis=1).tobytes())
    return n


def _put(cols: np.ndarray, at: int, values: np.ndarray, width: int) -> None:
    """Big-endian ``values`` into bytes ``at .. at + width`` of each row."""
    v = np.asarray(values, np.int64)
    for i in range(width):
        cols[:, at + i] = (v >> (8 * (width - 1 - i))) & 0xFF


def _checksum(rows: np.ndarray, extra: np.ndarray) -> np.ndarray:
    """RFC 1071 one's-complement sum of each row's 16-bit words (the checksum field zero)
    plus ``extra``, complemented. Rows of trailing zero bytes add nothing."""
    words = rows[:, 0::2].astype(np.int64) << 8 | rows[:, 1::2]
    total = words.sum(axis=1) + extra
    while np.any(total >> 16):
        total = (total & 0xFFFF) + (total >> 16)
    return np.asarray(~total & 0xFFFF)


def make_report(capture: Path, page: Path, extra: list[str] | None = None) -> float:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(REPO / ".numba_cache")),
    }
    t0 = time.perf_counter()
    subprocess.run(  # from the checkout: a relative capture path is named as given
        [
            sys.executable,
            "-m",
            "tcpweave",
            "report",
            str(capture),
            "-o",
            str(page),
            "-q",
            *(extra or []),
        ],
        check=True,
        cwd=REPO,
        env=env,
    )
    return time.perf_counter() - t0


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def time_page(browser: Any, page_path: Path, word: str) -> dict[str, float]:
    """One visit: seconds to the table, to a filter round trip, to one session's graphs."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    t0 = time.perf_counter()
    page.goto(page_path.resolve().as_uri(), timeout=120_000)
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    ready = time.perf_counter() - t0
    before = page.get_attribute("#match-count", "data-count")
    page.fill("#filter", word)
    page.wait_for_function(f"document.querySelector('#match-count').dataset.count !== '{before}'")
    interactive = time.perf_counter() - t0
    page.wait_for_selector("#session-section[data-rendered='1']")
    graph = time.perf_counter() - t0
    page.close()
    if errors:
        raise RuntimeError(f"console errors: {errors[:3]}")
    return {"ready_s": ready, "interactive_s": interactive, "graph_s": graph}


def screenshot(out: Path) -> None:
    """The sample capture's report, photographed with its first session's graphs."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "report.html"
        make_report(Path("examples") / "sample-http.pcap", page_path)
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_path.as_uri())
            page.wait_for_selector("#session-section[data-rendered='1']")
            page.evaluate("window.tcpweaveReport.show(0)")
            page.wait_for_selector("#session-section[data-rendered='1']")
            page.screenshot(path=str(out), full_page=True)
            browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--screenshot", type=Path, help="photograph the sample's report instead")
    args = ap.parse_args()
    if args.screenshot:
        screenshot(args.screenshot)
        print(f"wrote {args.screenshot}")
        return 0
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="tcpweave-bench-report-"))
    try:
        capture = work / "tiny.pcap"
        t0 = time.perf_counter()
        packets = tiny_sessions(capture, args.sessions)
        generate_s = time.perf_counter() - t0
        page_path = work / "report.html"
        report_s = make_report(capture, page_path)
        rounds = []
        with sync_playwright() as p:
            browser = launch(p)
            time_page(browser, page_path, "10.0.2.")  # warm-up (disk cache)
            for _ in range(args.rounds):
                rounds.append(time_page(browser, page_path, "10.0.3."))
            browser.close()
        result: dict[str, Any] = {
            "sessions": args.sessions,
            "packets": packets,
            "generate_s": round(generate_s, 2),
            "report_command_s": round(report_s, 2),
            "page_bytes": page_path.stat().st_size,
            "rounds": args.rounds,
            **{k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]},
            "target_interactive_s": TARGET_INTERACTIVE_S,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:22} {value}")
    return 0 if result["interactive_s"] <= TARGET_INTERACTIVE_S else 1


if __name__ == "__main__":
    sys.exit(main())
