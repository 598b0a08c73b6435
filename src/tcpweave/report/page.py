"""The report as one self-contained HTML file: data, script, style and plotting library inline.

The page needs no network: plotly.js (the maintained plotting library, MIT) is read from
the ``plotly`` Python package's wheel (``plotly/package_data/plotly.min.js``) and embedded
as is. The data is one JSON document in a ``<script type="application/json">`` element:
numeric columns as base64 of little-endian typed arrays (the narrowest of Uint8, Uint16,
Int32 that holds the values, else Float64; a page of 100,000 sessions parses in well under
a second), text columns as a dictionary and integer codes. ``page.js`` draws the tables
and the graphs from it.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import importlib.util
import json
import os
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa

import tcpweave
from tcpweave.audit.report import Reason
from tcpweave.errors import UsageError
from tcpweave.report.build import Report
from tcpweave.report.graph import Mark, Span

__all__ = ["plotly_bundle", "render"]

_INT32 = (-(1 << 31), (1 << 31) - 1)


def plotly_bundle() -> str:
    """plotly.js from the installed ``plotly`` package (the ``report`` extra), without
    importing the Python package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("report: the plotting library is missing; install it with "
                         "pip install 'tcpweave[report]' (or pip install plotly)")  # fmt: skip
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "package_data", "plotly.min.js")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
    raise UsageError("report: the plotly package has no package_data/plotly.min.js")


def render(report: Report) -> str:
    """The page's HTML text."""
    data = json.dumps(_document(report), separators=(",", ":")).replace("</", "<\\/")
    assets = resources.files("tcpweave.report")
    title = "tcpweave report: " + ", ".join(os.path.basename(c) for c in report.captures)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        f"<style>{assets.joinpath('page.css').read_text(encoding='utf-8')}</style>"
        f"<script>{plotly_bundle()}</script></head>\n<body>"
        f"{assets.joinpath('page.html').read_text(encoding='utf-8')}"
        f'<script id="report-data" type="application/json">{data}</script>'
        f"<script>{assets.joinpath('page.js').read_text(encoding='utf-8')}</script>"
        "</body></html>\n"
    )


def _document(r: Report) -> dict[str, Any]:
    g = r.graphs
    n_drawn_packets = len(g.packets["session"])
    return {
        "version": tcpweave.__version__,
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "captures": r.captures,
        "policy": r.policy,
        "checksums": r.checksums,
        "capture": [["files", len(r.captures)], *r.stats.summary_rows()],
        "audit": [list(row) for row in r.audit.figure_rows()],
        "sessions": _session_columns(r),
        "graphs": {
            "budget": r.budget,
            "drawn": len(r.drawn),
            "packets": n_drawn_packets,
            "marks": [str(m) for m in Mark],
            "spans": [str(s) for s in Span],
            "packet": {k: _numbers(v) for k, v in g.packets.items()},
            "span": {k: _numbers(v) for k, v in g.spans.items()},
            "length": {k: _numbers(v) for k, v in g.lengths.items()},
        },
    }


def _session_columns(r: Report) -> dict[str, Any]:
    t = r.sessions

    def col(name: str) -> np.ndarray:
        return np.asarray(t.column(name).to_numpy(zero_copy_only=False))

    def both(stem: str) -> np.ndarray:
        return np.asarray(col(f"{stem}_c2s") + col(f"{stem}_s2c"))

    cols: dict[str, Any] = {
        "stream": _numbers(col("stream")),
        "client": _text(col("client_addr")),
        "cport": _numbers(col("client_port")),
        "server": _text(col("server_addr")),
        "sport": _numbers(col("server_port")),
        "start": _numbers(t.column("first_ts").cast(pa.int64()).to_numpy() / 1e9),
        "duration": _numbers(col("duration_s")),
        "pkts_c2s": _numbers(col("packets_c2s")),
        "pkts_s2c": _numbers(col("packets_s2c")),
        "bytes_c2s": _numbers(col("bytes_c2s")),
        "bytes_s2c": _numbers(col("bytes_s2c")),
        "retrans": _numbers(both("retransmitted_bytes")),
        "ooo": _numbers(both("out_of_order")),
        "gaps": _numbers(both("gaps")),
        "conflicts": _numbers(both("conflicts")),
        "close": _text(np.asarray(t.column("close").cast(pa.string()).to_pylist(), object)),
        "state": _text(np.asarray(t.column("conn_state").cast(pa.string()).to_pylist(), object)),
        "history": _text(col("history")),
        "verdict": _text(_verdicts(r.audit.reasons, t.num_rows)),
    }
    if r.links is not None:
        cols["file_c2s"] = _text(np.asarray([p or "" for p in r.links[0]], object))
        cols["file_s2c"] = _text(np.asarray([p or "" for p in r.links[1]], object))
    return {"n": t.num_rows, "columns": cols}


def _verdicts(reasons: np.ndarray, n: int) -> np.ndarray:
    """Each stream's audit verdict: ``exact``, or its reasons joined by spaces."""
    masks, codes = np.unique(np.asarray(reasons[:n], np.int64), return_inverse=True)
    names = ["exact" if not m else " ".join(str(x) for x in Reason if m >> x & 1)
             for m in masks.tolist()]  # fmt: skip
    return np.asarray([*names, ""], object)[:-1][codes.ravel()] if n else np.zeros(0, object)


def _numbers(values: np.ndarray) -> dict[str, str]:
    """A numeric column as base64 of the narrowest little-endian array that holds it: Uint8,
    Uint16 or Int32 for integers that fit, else Float64 (integers exact below 2**53)."""
    a = np.asarray(values)
    if a.dtype.kind in "iub":
        lo, hi = (int(a.min()), int(a.max())) if len(a) else (0, 0)
        for name, dtype, top in (("u8", "<u1", 0xFF), ("u16", "<u2", 0xFFFF)):
            if lo >= 0 and hi <= top:
                return {name: _b64(a.astype(dtype))}
        if _INT32[0] <= lo and hi <= _INT32[1]:
            return {"i32": _b64(a.astype("<i4"))}
    return {"f64": _b64(a.astype("<f8"))}


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def _text(values: np.ndarray) -> dict[str, Any]:
    """A text column as its distinct values and one Int32 code per row."""
    uniq, codes = np.unique(np.asarray(values, object).astype(str), return_inverse=True)
    return {"dict": uniq.tolist(), **_numbers(codes.ravel())}
