"""Plain-Python references for the flow kernels: same names, arguments, outputs and return.

They are the readable statement of the session and role rules (docs/design.md, "Rules of
reassembly": sessions on one 4-tuple are split on a new SYN; Wireshark's port-reuse
rule in epan/dissectors/packet-tcp.c), written from those rules rather than from
``_kernels``. They fill the same ``session``, ``first_row`` and ``client_side``
columns and return the same count, so the property tests can compare them
exactly. Nothing but the tests calls them.
"""

from __future__ import annotations

from itertools import groupby

SYN, ACK = 0x002, 0x010


def _is_syn(flags: int) -> bool:
    """An opening SYN: SYN set, ACK clear (a SYN-ACK is the answer, not an opening)."""
    return flags & (SYN | ACK) == SYN


def _is_syn_ack(flags: int) -> bool:
    return flags & (SYN | ACK) == SYN | ACK


def _sender_base(flags: int, seq: int) -> int:
    """Where a sender's sequence space starts, judged from its first segment in a session.

    Wireshark: the ISN when that segment is a SYN, else the segment's seq minus one.
    """
    return seq if flags & SYN else (seq - 1) % 2**32


def split_sessions(order, flow, side, flags, seq, ts_ns, sport, dport, idle_ns, session, first_row):  # type: ignore[no-untyped-def]
    """Number sessions in walk order; return how many there are."""
    n_sessions = 0
    walk = [int(i) for i in order]
    for _, group in groupby(walk, key=lambda i: int(flow[i])):
        base: dict[int, int] = {}  # sender side -> base of its sequence space in this session
        previous_ts = None
        for i in group:
            s, f, q = int(side[i]), int(flags[i]), int(seq[i])
            # "a new session starts when a SYN (without ACK) carries a sequence number other
            # than its sender's base in the current session -- or, optionally, after an idle gap"
            reused = _is_syn(f) and s in base and q != base[s]
            idle = previous_ts is not None and idle_ns > 0 and int(ts_ns[i]) - previous_ts > idle_ns
            if previous_ts is None or reused or idle:
                first_row[n_sessions] = i
                n_sessions += 1
                base = {}
            base.setdefault(s, _sender_base(f, q))
            session[i] = n_sessions - 1
            previous_ts = int(ts_ns[i])
    return n_sessions


def _client_of(packets: list[int], side, flags, sport, dport) -> int:  # type: ignore[no-untyped-def]
    """Which side of one session (its packets in walk order) is the client."""
    # "the sender of the session's first SYN is the client"
    for i in packets:
        if _is_syn(int(flags[i])):
            return int(side[i])
    # "failing that the receiver of its first SYN-ACK"
    for i in packets:
        if _is_syn_ack(int(flags[i])):
            return 1 - int(side[i])
    # "failing that (a mid-stream pickup) the endpoint on the lower port is the server,
    # and with equal ports the first sender is the client"
    first = packets[0]
    sender_is_server = int(sport[first]) < int(dport[first])
    return 1 - int(side[first]) if sender_is_server else int(side[first])


def assign_roles(order, session, side, flags, sport, dport, n_sessions, client_side):  # type: ignore[no-untyped-def]
    """``client_side[k]``: which side (0/1) of session k is the client; returns n_sessions."""
    packets_of: list[list[int]] = [[] for _ in range(n_sessions)]
    for i in order:
        packets_of[int(session[i])].append(int(i))
    for k, packets in enumerate(packets_of):
        client_side[k] = _client_of(packets, side, flags, sport, dport) if packets else -1
    return n_sessions


def number_tuples(keys, flow):  # type: ignore[no-untyped-def]
    """``flow[i]``: index of row i's 4-tuple (``keys[:, i]``) in order of first appearance.

    Returns the number of distinct 4-tuples (Wireshark numbers tcp.stream by first packet).
    """
    index_of: dict[tuple[int, ...], int] = {}
    for i in range(keys.shape[1]):
        four_tuple = tuple(int(word) for word in keys[:, i])
        flow[i] = index_of.setdefault(four_tuple, len(index_of))
    return len(index_of)
