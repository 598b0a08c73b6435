"""Kernels that split 4-tuples into sessions and give every packet its stream and direction.

Packets arrive grouped by 4-tuple (``order``), each group in capture order.
Within a group a new session starts when a SYN (without ACK) carries a
sequence number other than its sender's base in the current session (the
first segment's seq if it was a SYN, else that seq minus one) -- Wireshark's
port-reuse rule (epan/dissectors/packet-tcp.c, "reused ports"; observed rules in
docs/wireshark-tcp-stream.md) -- or, optionally, after an idle gap. A SYN that
repeats the ISN after FIN or RST stays in its session, as in Wireshark. Roles: the sender of the
session's first SYN is the client; failing that the receiver of its first
SYN-ACK; failing that (a mid-stream pickup) the endpoint on the lower port is
the server, and with equal ports the first sender is the client.
"""

from __future__ import annotations

import numpy as np

from tcpweave._jit import kernel

SYN = 0x002
ACK = 0x010


@kernel
def split_sessions(order, flow, side, flags, seq, ts_ns, sport, dport, idle_ns, session, first_row):  # type: ignore[no-untyped-def]
    """Number sessions in walk order into ``session``; ``first_row[k]``: session k's first packet.

    ``side[i]`` is 0 when packet i travels from the 4-tuple's lower endpoint.
    Returns the number of sessions.
    """
    n_sessions = 0
    base = np.zeros(2, np.int64)
    have_base = np.zeros(2, np.bool_)
    current_flow = -1
    last_ts = np.int64(0)
    for j in range(order.size):
        i = order[j]
        s = side[i]
        is_syn = (flags[i] & (SYN | ACK)) == SYN
        new = flow[i] != current_flow
        if not new and is_syn and have_base[s] and seq[i] != base[s]:
            new = True
        if not new and idle_ns > 0 and ts_ns[i] - last_ts > idle_ns:
            new = True
        if new:
            current_flow = flow[i]
            have_base[0] = False
            have_base[1] = False
            first_row[n_sessions] = i
            n_sessions += 1
        if not have_base[s]:
            # a direction's base is its first segment's seq if a SYN, else seq - 1 (as Wireshark)
            base[s] = seq[i] if flags[i] & SYN else (seq[i] - 1) & 0xFFFFFFFF
            have_base[s] = True
        session[i] = n_sessions - 1
        last_ts = ts_ns[i]
    return n_sessions


@kernel
def assign_roles(order, session, side, flags, sport, dport, n_sessions, client_side):  # type: ignore[no-untyped-def]
    """``client_side[k]``: which side (0/1) of session k is the client (see module docstring)."""
    evidence = np.zeros(n_sessions, np.int8)  # 0 none, 1 SYN-ACK seen, 2 SYN seen
    for k in range(n_sessions):
        client_side[k] = -1
    for j in range(order.size):
        i = order[j]
        k = session[i]
        f = flags[i] & (SYN | ACK)
        if f == SYN and evidence[k] < 2:
            client_side[k] = side[i]
            evidence[k] = 2
        elif f == (SYN | ACK) and evidence[k] < 1:
            client_side[k] = 1 - side[i]
            evidence[k] = 1
        elif client_side[k] == -1:
            # mid-stream: the lower port serves; with equal ports the first sender is the client
            if sport[i] < dport[i]:
                client_side[k] = 1 - side[i]
            else:
                client_side[k] = side[i]
    return n_sessions


@kernel
def number_tuples(keys, flow):  # type: ignore[no-untyped-def]
    """``flow[i]``: index of row i's key (``keys[:, i]``) in order of first appearance.

    An open-addressing hash table over the 64-bit words of each key (the six of an
    order-free 4-tuple, then the tunnel's when there are tunnels): one pass, no sort.
    Returns the number of distinct keys.
    """
    n = keys.shape[1]
    words = keys.shape[0]
    size = 1
    while size < 2 * n + 2:
        size *= 2
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)  # slot -> first row with that key
    n_flows = 0
    for i in range(n):
        h = np.uint64(1469598103934665603)
        for w in range(words):
            h = (h ^ keys[w, i]) * np.uint64(1099511628211)
            h ^= h >> np.uint64(29)
        slot = h & mask
        while True:
            first = table[slot]
            if first < 0:
                table[slot] = i
                flow[i] = n_flows
                n_flows += 1
                break
            same = True
            for w in range(words):
                if keys[w, first] != keys[w, i]:
                    same = False
                    break
            if same:
                flow[i] = flow[first]
                break
            slot = (slot + np.uint64(1)) & mask
    return n_flows
