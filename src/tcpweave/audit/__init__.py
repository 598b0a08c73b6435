"""audit/: accuracy metrics of forensic reassembly, per-packet verification, cross-tool compare.

Theory of operation. The figures of the published model of forensic TCP
reassembly accuracy (see ``figures.py``) are computed from the packet table,
the flows and the plan -- nothing is re-parsed. The verification matrix
(``matrix.py``) places every packet by the plan, checks the no-hole relation
down each direction and counts where each payload occurs in the reassembled
stream. ``report.py`` turns those into per-stream verdicts and the stable JSON
of ``tcpweave audit --json``; ``compare.py`` maps another tool's output
(tcpflow, tshark, a tcpweave manifest) onto tcpweave's sessions.
A capture is audited partition by partition (``run/commands.py``: each
partition's ``audit_part``, merged by ``merge_parts`` into exactly the audit of the
whole capture: counts add up, per-stream facts are scattered to their global
stream, the P_b groups are merged by key and summed in key order).
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
from tcpweave.audit.report import JSON_VERSION, Audit, AuditPart, Reason, audit_part, merge_parts

__all__ = [
    "DEFAULT_PORT_RANGE",
    "JSON_VERSION",
    "MAX_OCCURRENCES",
    "MAX_SCAN_BYTES",
    "Audit",
    "AuditPart",
    "Matrix",
    "PacketFigures",
    "PortReuse",
    "Reason",
    "StreamFigures",
    "audit_part",
    "birthday_probability",
    "merge_parts",
]
