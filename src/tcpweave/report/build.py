"""Everything a report shows, gathered from one run (the one engine, run/).

Two passes over the run's partitions: the session table first (``run.sessions``), which
says how many packets each session has and so which sessions fit the graph budget
(``graph.choose``); then one per-partition function that returns the partition's share of
the audit and the graph columns of its chosen sessions, merged as ``tcpweave audit``
merges them. A capture read whole is planned once (the partition keeps its plan); a
spilled one is planned once per pass.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.audit.figures import DEFAULT_PORT_RANGE
from tcpweave.audit.report import Audit, AuditPart, merge_parts
from tcpweave.decode import DecodeStats
from tcpweave.report.graph import GRAPH_PACKETS, Graphs, choose, graph_partition, merge
from tcpweave.run.commands import MATRIX_BATCH_STREAMS, audit_partition, sessions
from tcpweave.run.driver import Run
from tcpweave.run.partition import Partition

__all__ = ["Report", "collect", "stream_links"]


@dataclass
class Report:
    """What the page shows (``page.render``)."""

    captures: list[str]
    policy: str
    checksums: str
    stats: DecodeStats
    audit: Audit
    sessions: pa.Table  # output/sessions.py's table, in stream order
    graphs: Graphs
    budget: int  # packets of drawn sessions at most
    drawn: np.ndarray  # the sessions drawn (stream indexes)
    #: per session, the stream files' paths relative to the page (c2s, s2c; None: no file)
    links: tuple[list[str | None], list[str | None]] | None = None


def report_partition(part: Partition, chosen: np.ndarray) -> tuple[AuditPart, Graphs]:
    graphs = graph_partition(part, chosen)  # before the audit drops the payload pages
    return audit_partition(part, None, MATRIX_BATCH_STREAMS), graphs


def collect(
    run: Run,
    budget: int = GRAPH_PACKETS,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
    links: tuple[list[str | None], list[str | None]] | None = None,
) -> Report:
    """The report of the run's capture; graphs for the sessions whose packets fit
    ``budget`` (in stream order)."""
    table = sessions(run)
    per_session = table.column("packets_c2s").to_numpy() + table.column("packets_s2c").to_numpy()
    drawn = choose(per_session, budget)
    found = sorted(run.map(report_partition, drawn), key=lambda share: share[0])
    s = run.settings
    audit = merge_parts([a for _, (a, _) in found], list(run.paths), str(s.policy),
                        str(s.checksums), port_range)  # fmt: skip
    graphs = merge([g for _, (_, g) in found])
    return Report(list(run.paths), str(s.policy), str(s.checksums), run.decode_stats(), audit,
                  table, graphs, budget, drawn, links)  # fmt: skip


def stream_links(
    out_dir: str, n_sessions: int, where: str = "."
) -> tuple[list[str | None], list[str | None]]:
    """Each session's stream files as ``streams.jsonl`` in ``out_dir`` lists them, as paths
    from the page's directory (``where``: ``out_dir`` seen from there)."""
    c2s: list[str | None] = [None] * n_sessions
    s2c: list[str | None] = [None] * n_sessions
    with open(os.path.join(out_dir, "streams.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec: dict[str, Any] = json.loads(line)
            path, stream = rec.get("path"), int(rec["stream"])
            if path and 0 <= stream < n_sessions:
                link = posixpath.normpath(posixpath.join(where.replace(os.sep, "/"), path))
                (c2s if rec["direction"] == "c2s" else s2c)[stream] = link
    return c2s, s2c
