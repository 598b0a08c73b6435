"""The overlap policy table: geometry case × policy -> does the new segment win?

Rules and sources: docs/overlap-policies.md (Novak & Sturges 2007 test; Suricata
stream-tcp-list.c tests; Snort 3 tcp_overlap_resolver.cc). Where Snort 3 and
Suricata disagree (HP-UX 10 and IRIX when the new segment starts with the old
one and ends after it), we follow Snort 3, written by the authors of the
target-based study: the new data wins there, as on Linux.
"""

from __future__ import annotations

import numpy as np

from tcpweave.enums import Policy

# geometry cases: where the new segment N starts relative to the old O, then where it ends
BEFORE, SAME, AFTER = 0, 1, 2


def _table() -> np.ndarray:
    """NEW_WINS[policy, start case, end case] (1: the new bytes are kept)."""
    t = np.zeros((len(Policy), 3, 3), np.uint8)
    t[Policy.LAST] = 1
    for p in (Policy.BSD, Policy.WINDOWS, Policy.MACOS):
        t[p, BEFORE, :] = 1  # new wins only where it starts before the old segment
    for p in (Policy.LINUX, Policy.HPUX10, Policy.IRIX, Policy.OLD_LINUX):
        t[p, BEFORE, :] = 1
        t[p, SAME, AFTER] = 1  # ...or starts with it and ends after it
    t[Policy.OLD_LINUX, SAME, SAME] = 1  # old Linux also took an exact same-extent copy
    for p in (Policy.SOLARIS, Policy.HPUX11):
        t[p, BEFORE, SAME] = 1  # new wins whenever it reaches or passes the old end
        t[p, BEFORE, AFTER] = 1
        t[p, SAME, SAME] = 1
        t[p, SAME, AFTER] = 1
        t[p, AFTER, AFTER] = 1
    # FIRST and VISTA: the old bytes always stay
    return t


NEW_WINS = _table()
