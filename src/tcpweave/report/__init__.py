"""report/: one self-contained HTML page of a capture (``tcpweave report``, ``extract --report``).

``build.collect`` gathers from one run what the page shows -- the decoder's counts, the
audit figures, the session table, and for the sessions that fit a packet budget the
columns of their time-sequence graphs and byte maps (``graph.py``); ``page.render`` writes
them, with plotly.js and the page's script, into one HTML file that opens without network.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tcpweave.run import Run

__all__ = ["write_report"]


def write_report(
    run: Run,
    path: str | os.PathLike[str],
    *,
    budget: int | None = None,
    port_range: tuple[int, int] | None = None,
    links_from: str | None = None,
) -> int:
    """Write the report of ``run`` to ``path``; links to the stream files that
    ``links_from/streams.jsonl`` lists when given (relative to the page). Returns the
    bytes written."""
    from tcpweave.audit.figures import DEFAULT_PORT_RANGE
    from tcpweave.report.build import collect, stream_links
    from tcpweave.report.graph import GRAPH_PACKETS
    from tcpweave.report.page import plotly_bundle, render

    plotly_bundle()  # a missing plotting library is said before the capture is read
    report = collect(run, GRAPH_PACKETS if budget is None else budget,
                     port_range or DEFAULT_PORT_RANGE)  # fmt: skip
    if links_from is not None:
        where = os.path.relpath(links_from, os.path.dirname(os.path.abspath(path)))
        report.links = stream_links(links_from, report.sessions.num_rows, where)
    text = render(report).encode("utf-8")
    with open(path, "wb") as f:
        f.write(text)
    return len(text)
