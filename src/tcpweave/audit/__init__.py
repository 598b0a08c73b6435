"""audit/: accuracy metrics of forensic reassembly, per-packet verification, cross-tool compare.

Theory of operation. The figures of the published model of forensic TCP
reassembly accuracy (see ``figures.py``) are computed from the packet table,
the flows and the plan -- nothing is re-parsed. The verification matrix
(``matrix.py``) places every packet by the plan, checks the no-hole relation
down each direction and counts where each payload occurs in the reassembled
stream. ``report.py`` turns those into per-stream verdicts and the stable JSON
of ``tcpweave audit --json``; ``compare.py`` maps another tool's output
(tcpflow, tshark, a tcpweave manifest) onto tcpweave's sessions.
``partitioned.py`` audits a big capture partition by partition in bounded
memory and merges the parts (``report.merge_parts``) into the same audit.
"""

from __future__ import annotations

from tcpweave.audit.figures import (
    DEFAULT_PORT_RANGE,
    PacketFigures,
    PortReuse,
    StreamFigures,
    birthday_probability,
)
from tcpweave.audit.matrix import MAX_OCCURRENCES, MAX_SCAN_BYTES, Matrix
from tcpweave.audit.partitioned import audit_partitioned
from tcpweave.audit.report import JSON_VERSION, Audit, Reason, audit

__all__ = [
    "DEFAULT_PORT_RANGE",
    "JSON_VERSION",
    "MAX_OCCURRENCES",
    "MAX_SCAN_BYTES",
    "Audit",
    "Matrix",
    "PacketFigures",
    "PortReuse",
    "Reason",
    "StreamFigures",
    "audit",
    "audit_partitioned",
    "birthday_probability",
]
