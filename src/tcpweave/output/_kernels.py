"""Kernels of the output stage: gathering payload bytes, and each session's Zeek history.

``build_histories`` replays Zeek's TCP endpoint model (zeek/zeek a13de64: the state
machine of TCPSessionAdapter.cc, the letters of update_history, the content gaps of
TCP_Reassembler.cc) over each session's packets in capture order, and writes the
``history`` letters as ASCII into one byte buffer. The state lives in small int64
arrays whose layout is ``_history``'s; ``_reference.build_histories`` is the same
model as Python classes. The rules, and where tcpweave departs from Zeek, are in
docs/sessions.md.
"""

from __future__ import annotations

import numpy as np

from tcpweave._jit import helper, kernel
from tcpweave.output._history import (
    ACK,
    C_FIRST_SEEN,
    C_OUT,
    C_PARTIAL,
    C_SEEN,
    CLOSED,
    E_ACK,
    E_ACK_WRAPS,
    E_BLOCKS,
    E_COUNT,
    E_FIN_CNT,
    E_FIN_SEQ,
    E_HIST_FIN,
    E_HIST_RST,
    E_HIST_SYN,
    E_LAST,
    E_PREV,
    E_REASSEM,
    E_SEQ_WRAPS,
    E_SKIP,
    E_START,
    E_STATE,
    E_THRESH,
    E_TRIM,
    ESTABLISHED,
    EXCESSIVE_DATA_WITHOUT_ACKS,
    FIN,
    INACTIVE,
    L_ACK,
    L_BAD_CHECKSUM,
    L_DATA,
    L_FIN,
    L_FIN_RST,
    L_FLIPPED,
    L_GAP,
    L_MULTI_FLAG,
    L_RETRANSMIT,
    L_RST,
    L_SYN,
    L_SYN_ACK,
    L_ZERO_WINDOW,
    LOG_C,
    LOG_G,
    LOG_T,
    LOG_W,
    LOWER,
    M_ACK,
    M_DATA,
    M_FIN,
    M_FIN_RST,
    M_MULTI,
    M_RST,
    M_SYN,
    MAX_ABOVE_HOLE_WITHOUT_ACKS,
    MAX_BLOCKS,
    MAX_INITIAL_WINDOW,
    N_CONN,
    N_EP,
    PARTIAL,
    RESET,
    RST,
    SCALE_BASE,
    SYN,
    SYN_ACK_SENT,
    SYN_SENT,
    TOO_LARGE_SEQ_DELTA,
)

MASK = np.int64(0xFFFFFFFF)
TWO32 = np.int64(1) << 32
HALF = np.int64(1) << 31


@kernel
def gather_ranges(buf, start, length, at, out):  # type: ignore[no-untyped-def]
    """Copy ``buf[start[i]:start[i] + length[i]]`` to ``out[at[i]:at[i] + length[i]]`` for
    every row i; returns the number of bytes copied."""
    total = 0
    for i in range(length.size):
        n = length[i]
        out[at[i] : at[i] + n] = buf[start[i] : start[i] + n]
        total += n
    return total


# ------------------------------------------------------------------ letters


@helper
def _add(out, conn, e, letter):  # type: ignore[no-untyped-def]
    pos = conn[C_OUT]
    if pos < out.size:
        out[pos] = letter + (LOWER if e else 0)
    conn[C_OUT] = pos + 1


@helper
def _check(out, conn, e, mask, letter):  # type: ignore[no-untyped-def]
    """Session::CheckHistory: record the letter the first time; True if seen before."""
    bit = np.int64(mask) << (16 * e)
    if conn[C_SEEN] & bit:
        return True
    conn[C_SEEN] |= bit
    _add(out, conn, e, letter)
    return False


@helper
def _scaled(out, conn, ep, e, which):  # type: ignore[no-untyped-def]
    """Session::ScaledHistoryEntry: the letter at counts 1, 10, 100, ..."""
    ep[e, E_COUNT + which] += 1
    if ep[e, E_COUNT + which] == ep[e, E_THRESH + which]:
        letter = L_BAD_CHECKSUM
        if which == LOG_G:
            letter = L_GAP
        elif which == LOG_T:
            letter = L_RETRANSMIT
        elif which == LOG_W:
            letter = L_ZERO_WINDOW
        _add(out, conn, e, letter)
        ep[e, E_THRESH + which] *= SCALE_BASE


# ------------------------------------------------------------------ sequence numbers


@helper
def _seq_delta(a, b):  # type: ignore[no-untyped-def]
    d = (a - b) & MASK
    return d - TWO32 if d >= HALF else d


@helper
def _relative(ep, e, value, last, wraps):  # type: ignore[no-untyped-def]
    """get_relative_seq: ``value`` relative to the start, and whether it lies before it."""
    d = _seq_delta(value, last)
    if d < 0 and wraps != 0 and value > last:
        wraps -= 1
    elif d > 0 and value < last:
        wraps += 1
    if wraps == 0:
        d = _seq_delta(value, ep[e, E_START])
        return d, d < 0
    return (wraps << 32) + value - ep[e, E_START], False


@helper
def _init_seqs(ep, e, start, last):  # type: ignore[no-untyped-def]
    ep[e, E_START] = start & MASK
    ep[e, E_ACK] = start & MASK
    ep[e, E_LAST] = last & MASK


@helper
def _set_state(ep, e, state):  # type: ignore[no-untyped-def]
    if ep[e, E_STATE] != state:
        ep[e, E_PREV] = ep[e, E_STATE]
        ep[e, E_STATE] = state


@helper
def _clean(ep, e):  # type: ignore[no-untyped-def]
    s = ep[e, E_STATE]
    return s == ESTABLISHED or (s == CLOSED and ep[e, E_PREV] == ESTABLISHED)


@helper
def _no_data_acked(ep, e):  # type: ignore[no-untyped-def]
    full = (ep[e, E_ACK_WRAPS] << 32) + ep[e, E_ACK]
    return full == ep[e, E_START] or full == ep[e, E_START] + 1


@helper
def _size(ep, e):  # type: ignore[no-untyped-def]
    """TCP_Endpoint::Size: bytes of sequence space sent (SYN and FIN octets left out)."""
    last = (ep[e, E_SEQ_WRAPS] << 32) + ep[e, E_LAST]
    size = max(last, (ep[e, E_ACK_WRAPS] << 32) + ep[e, E_ACK]) - ep[e, E_START]
    if size != 0:
        size -= 1
    if ep[e, E_FIN_CNT] > 0 and size != 0:
        size -= 1
    return size


@helper
def _init_endpoint(ep, e, syn, seq, past):  # type: ignore[no-untyped-def]
    """init_endpoint: sequence numbers from an endpoint's first packet (or a new SYN)."""
    s = ep[e, E_STATE]
    if s == INACTIVE:
        if syn:
            _init_seqs(ep, e, seq, past)
        else:  # as though a SYN had come just before; the first packet is no repeat
            _init_seqs(ep, e, seq - 1, seq)
    elif syn and (
        ((s == SYN_SENT or s == SYN_ACK_SENT) and seq != ep[e, E_START])
        or s == ESTABLISHED
        or s == PARTIAL
        or (s == RESET and ep[e, E_PREV] == INACTIVE)
    ):
        _init_seqs(ep, e, seq, past)


@helper
def _take_ack(ep, p, ack, has_ack, rst):  # type: ignore[no-untyped-def]
    """The acknowledgement relative to the peer's start (init_peer, update_ack_seq)."""
    if not has_ack:
        return np.int64(0)
    if ep[p, E_STATE] == INACTIVE:
        _init_seqs(ep, p, ack - 1, ack - 1)
        return np.int64(1)
    rel_ack, underflow = _relative(ep, p, ack, ep[p, E_ACK], ep[p, E_ACK_WRAPS])
    if underflow:
        return np.int64(0)
    d = _seq_delta(ack, ep[p, E_ACK])
    if not rst and not (ack == 0 and d > TOO_LARGE_SEQ_DELTA) and d > 0:
        if ack < ep[p, E_ACK]:
            ep[p, E_ACK_WRAPS] += 1
        ep[p, E_ACK] = ack
    return rel_ack


# ------------------------------------------------------------------ letters per packet


@helper
def _repeatable(out, conn, ep, e, mask, letter, col, value):  # type: ignore[no-untyped-def]
    """S/H, F and R: recorded once, and again when their sequence number changes."""
    if _check(out, conn, e, mask, letter) and value != ep[e, col]:
        _add(out, conn, e, letter)
    ep[e, col] = value


@helper
def _update_history(out, conn, ep, e, syn, fin, rst, has_ack, rel_seq, n):  # type: ignore[no-untyped-def]
    """update_history: once-per-direction letters; S/H, F, R again at a new sequence."""
    bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
    if bits > 1:
        if fin and rst:
            _check(out, conn, e, M_FIN_RST, L_FIN_RST)
        else:
            _check(out, conn, e, M_MULTI, L_MULTI_FLAG)
    elif syn:
        code = L_SYN_ACK if has_ack else L_SYN
        _repeatable(out, conn, ep, e, M_SYN, code, E_HIST_SYN, rel_seq)
    elif fin:  # a FIN's sequence number is the one after its data
        _repeatable(out, conn, ep, e, M_FIN, L_FIN, E_HIST_FIN, rel_seq + n)
    elif rst:
        _repeatable(out, conn, ep, e, M_RST, L_RST, E_HIST_RST, rel_seq)
    elif n:
        _check(out, conn, e, M_DATA, L_DATA)
    elif has_ack:
        _check(out, conn, e, M_ACK, L_ACK)


@helper
def _update_last_seq(out, conn, ep, e, past, syn, fin, rst, n):  # type: ignore[no-untyped-def]
    """update_last_seq: data that does not reach past the highest end seen is a 'T'."""
    last = ep[e, E_LAST]
    d = _seq_delta(past, last)
    if (syn or rst) and (d > TOO_LARGE_SEQ_DELTA or d < -TOO_LARGE_SEQ_DELTA):
        return
    resetted = ep[e, E_STATE] == RESET
    if (fin and last == (ep[e, E_START] + 1) & MASK) or (not resetted and d > 0):
        if past < last:
            ep[e, E_SEQ_WRAPS] += 1
        ep[e, E_LAST] = past
    elif not resetted and n > 0:
        _scaled(out, conn, ep, e, LOG_T)


# ------------------------------------------------------------------ state machine


@helper
def _inactive(conn, ep, e, syn, fin, rst, has_ack, seq, n):  # type: ignore[no-untyped-def]
    """UpdateInactiveState (roles are tcpweave's: the SYN/SYN-ACK reversal does not flip)."""
    p = 1 - e
    if syn and e == 0:
        _set_state(ep, e, SYN_ACK_SENT if has_ack else SYN_SENT)
    elif syn:
        if not has_ack and ep[p, E_STATE] == SYN_ACK_SENT and seq == ep[e, E_START]:
            conn[C_PARTIAL] = 0
            _set_state(ep, p, ESTABLISHED)
        if ep[p, E_STATE] == SYN_SENT:
            _set_state(ep, p, ESTABLISHED)
        _set_state(ep, e, ESTABLISHED)
    if fin:
        _set_state(ep, e, CLOSED)
    if rst:
        _set_state(ep, e, RESET)
    if ep[e, E_STATE] == INACTIVE:
        if e == 1 and n == 0 and ep[0, E_STATE] == SYN_SENT:
            pass  # an ACK of the SYN before the SYN-ACK: not yet a partial connection
        elif has_ack and ep[p, E_STATE] == ESTABLISHED:  # the SYN was missed
            _set_state(ep, e, ESTABLISHED)
            conn[C_PARTIAL] = 0
        else:
            _set_state(ep, e, PARTIAL)


@helper
def _update_state(conn, ep, e, syn, fin, rst, has_ack, seq, n):  # type: ignore[no-untyped-def]
    """UpdateStateMachine, the state changes only (weirds and events left out)."""
    p = 1 - e
    state = ep[e, E_STATE]
    if state == INACTIVE:
        _inactive(conn, ep, e, syn, fin, rst, has_ack, seq, n)
    elif state == SYN_SENT or state == SYN_ACK_SENT:
        if fin:
            _set_state(ep, e, CLOSED)
        if rst:
            _set_state(ep, e, RESET)
    elif state == ESTABLISHED or state == PARTIAL:
        if syn and state == PARTIAL and ep[p, E_STATE] == INACTIVE and not has_ack:
            _set_state(ep, e, SYN_SENT)
        if fin and not rst:
            _set_state(ep, e, CLOSED)
            if ep[p, E_STATE] == RESET and ep[p, E_PREV] == CLOSED:  # FIN, RST: a normal close
                _set_state(ep, p, CLOSED)
        if rst:
            _set_state(ep, e, RESET)
    elif state == CLOSED and rst and ep[p, E_STATE] != CLOSED:
        _set_state(ep, e, RESET)


# ------------------------------------------------------------------ reassembler


@helper
def _drop_leading(ep, blocks, e, k):  # type: ignore[no-untyped-def]
    n = ep[e, E_BLOCKS]
    for m in range(k, n):
        blocks[e, 0, m - k] = blocks[e, 0, m]
        blocks[e, 1, m - k] = blocks[e, 1, m]
    ep[e, E_BLOCKS] = n - k


@helper
def _deliver(ep, blocks, e):  # type: ignore[no-untyped-def]
    """BlockInserted: what now touches the delivered part is delivered."""
    k = 0
    while k < ep[e, E_BLOCKS] and blocks[e, 0, k] <= ep[e, E_REASSEM]:
        ep[e, E_REASSEM] = max(ep[e, E_REASSEM], blocks[e, 1, k])
        k += 1
    _drop_leading(ep, blocks, e, k)


@helper
def _insert(ep, blocks, e, start, end):  # type: ignore[no-untyped-def]
    """Hold [start, end) until it can be delivered (merged with the blocks it touches)."""
    n = ep[e, E_BLOCKS]
    a = 0
    while a < n and blocks[e, 1, a] < start:
        a += 1
    b = a
    while b < n and blocks[e, 0, b] <= end:
        b += 1
    if n - (b - a) + 1 > MAX_BLOCKS:  # too many holes: give up, as Zeek does on excess
        ep[e, E_BLOCKS] = 0
        ep[e, E_SKIP] = 1
        return
    if b > a:
        start = min(start, blocks[e, 0, a])
        end = max(end, blocks[e, 1, b - 1])
    shift = 1 - (b - a)
    if shift > 0:
        for m in range(n - 1, b - 1, -1):
            blocks[e, 0, m + shift] = blocks[e, 0, m]
            blocks[e, 1, m + shift] = blocks[e, 1, m]
    elif shift < 0:
        for m in range(b, n):
            blocks[e, 0, m + shift] = blocks[e, 0, m]
            blocks[e, 1, m + shift] = blocks[e, 1, m]
    blocks[e, 0, a] = start
    blocks[e, 1, a] = end
    ep[e, E_BLOCKS] = n + shift


@helper
def _gap(out, conn, ep, p):  # type: ignore[no-untyped-def]
    """TCP_Reassembler::Gap: recorded only while both sides are cleanly established."""
    if _clean(ep, p) and _clean(ep, 1 - p):
        _scaled(out, conn, ep, p, LOG_G)


@helper
def _undelivered(out, conn, ep, blocks, p, up_to):  # type: ignore[no-untyped-def]
    """TCP_Reassembler::Undelivered: each hole below ``up_to`` is a content gap."""
    if up_to <= 2 and conn[C_PARTIAL]:
        return
    if not ep[p, E_SKIP]:
        while ep[p, E_BLOCKS] > 0 and blocks[p, 0, 0] < up_to:
            _gap(out, conn, ep, p)
            ep[p, E_REASSEM] = blocks[p, 0, 0]
            _deliver(ep, blocks, p)
        if up_to > ep[p, E_REASSEM]:
            _gap(out, conn, ep, p)
    ep[p, E_REASSEM] = max(ep[p, E_REASSEM], up_to)


@helper
def _ack_received(out, conn, ep, blocks, p, seq):  # type: ignore[no-untyped-def]
    """TCP_Reassembler::AckReceived: the peer acknowledged up to ``seq``."""
    fin_seq = ep[p, E_FIN_SEQ]
    if ep[p, E_FIN_CNT] > 0 and fin_seq >= 0 and fin_seq <= seq:  # the FIN octet is no data
        seq = fin_seq - 1
    if seq <= ep[p, E_TRIM]:
        return
    if seq > ep[p, E_REASSEM]:
        _undelivered(out, conn, ep, blocks, p, seq)
    k = 0
    while k < ep[p, E_BLOCKS] and blocks[p, 1, k] <= seq:
        k += 1
    _drop_leading(ep, blocks, p, k)
    ep[p, E_TRIM] = seq
    _deliver(ep, blocks, p)


@helper
def _data_sent(ep, blocks, e, seq, n):  # type: ignore[no-untyped-def]
    """TCP_Reassembler::DataSent and Reassembler::NewBlock."""
    if ep[e, E_SKIP]:
        return
    upper = seq + n
    ack = (ep[e, E_ACK_WRAPS] << 32) + ep[e, E_ACK] - ep[e, E_START]
    seq = max(seq, max(ack, ep[e, E_TRIM]))  # acknowledged or trimmed bytes are old
    if upper <= seq or upper <= ep[e, E_REASSEM]:
        return
    _insert(ep, blocks, e, max(seq, ep[e, E_REASSEM]), upper)
    before = ep[e, E_REASSEM]
    _deliver(ep, blocks, e)
    acked = not _no_data_acked(ep, e)
    if ep[e, E_REASSEM] > before and not acked and _size(ep, e) > MAX_INITIAL_WINDOW:
        ep[e, E_TRIM] = ep[e, E_REASSEM]  # much sent, nothing acked: the peer's acks unseen
    nb = ep[e, E_BLOCKS]
    held = blocks[e, 1, nb - 1] - ep[e, E_REASSEM] if nb > 0 else 0
    if not acked and held > MAX_ABOVE_HOLE_WITHOUT_ACKS:
        ep[e, E_BLOCKS] = 0
        ep[e, E_SKIP] = 1
    total = max(ep[e, E_REASSEM] - ep[e, E_TRIM], 0)
    for m in range(ep[e, E_BLOCKS]):
        total += blocks[e, 1, m] - blocks[e, 0, m]
    if total > EXCESSIVE_DATA_WITHOUT_ACKS:
        ep[e, E_BLOCKS] = 0
        ep[e, E_SKIP] = 1


# ------------------------------------------------------------------ one packet


@helper
def _partial_status(conn, e, syn, has_ack):  # type: ignore[no-untyped-def]
    """SetPartialStatus, from each side's first packet (CheckPIA_FirstPacket)."""
    first = conn[C_FIRST_SEEN]
    if e == 0 and not first & 1:
        conn[C_PARTIAL] = 1 if (not syn or has_ack) else 0
    elif e == 1 and not first & 2 and not conn[C_PARTIAL]:
        conn[C_PARTIAL] = 0 if syn else 1
    conn[C_FIRST_SEEN] = first | (1 << e)


@helper
def _packet(out, conn, ep, blocks, e, fl, seq, ack, win, n, cap):  # type: ignore[no-untyped-def]
    """TCPSessionAdapter::Process, in its order: letters, window, acks, last seq, states,
    the peer's gaps, then the data."""
    p = 1 - e
    syn, fin, rst, has_ack = fl & SYN, fl & FIN, fl & RST, fl & ACK
    _partial_status(conn, e, syn, has_ack)
    seg_len = n + (1 if syn else 0) + (1 if fin else 0) - (n if rst else 0)
    past = (seq + seg_len) & MASK
    _init_endpoint(ep, e, syn, seq, past)
    rel_seq, underflow = _relative(ep, e, seq, ep[e, E_LAST], ep[e, E_SEQ_WRAPS])
    _update_history(out, conn, ep, e, syn, fin, rst, has_ack, rel_seq, n)
    # update_window: a zero window, unless with or after a reset, or once the peer closed
    if win == 0 and not rst and ep[p, E_STATE] != CLOSED and ep[e, E_STATE] != RESET:
        _scaled(out, conn, ep, e, LOG_W)
    if fin:
        ep[e, E_FIN_CNT] += 1
        ep[e, E_FIN_SEQ] = rel_seq + seg_len
    rel_ack = _take_ack(ep, p, ack, has_ack, rst)
    _update_last_seq(out, conn, ep, e, past, syn, fin, rst, n)
    _update_state(conn, ep, e, syn, fin, rst, has_ack, seq, n)
    if has_ack:
        _ack_received(out, conn, ep, blocks, p, rel_ack)
    if n > 0 and cap >= n and not rst and not underflow:
        _data_sent(ep, blocks, e, rel_seq + (1 if syn else 0), n)


@helper
def _reset(ep, conn):  # type: ignore[no-untyped-def]
    for e in range(2):
        for c in range(N_EP):
            ep[e, c] = 0
        for w in range(4):
            ep[e, E_THRESH + w] = 1
        ep[e, E_REASSEM] = 1  # Zeek's reassembler starts at relative seq 1
        ep[e, E_TRIM] = 1
    conn[C_SEEN] = 0
    conn[C_PARTIAL] = 0
    conn[C_FIRST_SEEN] = 0


@kernel
def build_histories(  # type: ignore[no-untyped-def]
    order, bounds, direction, flags, seq, ack, window, payload_len, payload_caplen, bad, flipped,
    out, ends, states,
):  # fmt: skip
    """Each session's Zeek history: session s's rows are ``order[bounds[s]:bounds[s+1]]`` (in
    capture order); its letters end at ``ends[s]`` in ``out`` (written only where ``out``
    has room), and its endpoints' final states (client, server) are ``states[s]``. Returns
    how many bytes all histories take."""
    ep = np.zeros((2, N_EP), np.int64)
    blocks = np.zeros((2, 2, MAX_BLOCKS), np.int64)
    conn = np.zeros(N_CONN, np.int64)
    for s in range(bounds.size - 1):
        _reset(ep, conn)
        if flipped[s]:
            _add(out, conn, 0, L_FLIPPED)
        for j in range(bounds[s], bounds[s + 1]):
            i = order[j]
            e = np.int64(direction[i])
            if bad[i]:  # TCPAnalyzer::ValidateChecksum: counted, then the packet is dropped
                _scaled(out, conn, ep, e, LOG_C)
                continue
            _packet(out, conn, ep, blocks, e, np.int64(flags[i]), np.int64(seq[i]),
                    np.int64(ack[i]), np.int64(window[i]), np.int64(payload_len[i]),
                    np.int64(payload_caplen[i]))  # fmt: skip
        ends[s] = conn[C_OUT]
        states[s, 0] = ep[0, E_STATE]
        states[s, 1] = ep[1, E_STATE]
    return conn[C_OUT]
