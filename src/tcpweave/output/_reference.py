"""Plain-Python references of the output stage's kernels (same names, same results).

``build_histories`` is Zeek's TCP endpoint model written out as two small classes:
``_Endpoint`` (TCP_Endpoint with its TCP_Reassembler, only the parts that decide history
letters) and ``_Session`` (TCPSessionAdapter::Process and the state machine). Each method
names the Zeek function it follows (zeek/zeek a13de64, src/packet_analysis/protocol/tcp/
TCPSessionAdapter.cc, src/analyzer/protocol/tcp/TCP_Endpoint.cc, TCP_Reassembler.cc,
src/Reassem.cc); the rules are in docs/sessions.md. Endpoint 0 is the client.
"""

from __future__ import annotations

from typing import Any

from tcpweave.output._history import (
    ACK,
    CLOSED,
    ESTABLISHED,
    EXCESSIVE_DATA_WITHOUT_ACKS,
    FIN,
    INACTIVE,
    L_ACK,
    L_DATA,
    L_FIN,
    L_FIN_RST,
    L_FLIPPED,
    L_MULTI_FLAG,
    L_RST,
    L_SYN,
    L_SYN_ACK,
    LOG_C,
    LOG_G,
    LOG_LETTERS,
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
    PARTIAL,
    RESET,
    RST,
    SCALE_BASE,
    SYN,
    SYN_ACK_SENT,
    SYN_SENT,
    TOO_LARGE_SEQ_DELTA,
)

MASK = 0xFFFFFFFF


def gather_ranges(buf: Any, start: Any, length: Any, at: Any, out: Any) -> int:
    """Each row's bytes of ``buf`` copied to its place ``at`` in ``out``."""
    rows = zip(start.tolist(), length.tolist(), at.tolist(), strict=True)
    for s, n, a in rows:
        out[a : a + n] = bytearray(buf[s : s + n].tobytes())
    return int(sum(length.tolist()))


def _seq_delta(a: int, b: int) -> int:
    """``a - b`` as a signed 32-bit number (RFC 9293 §3.4 sequence arithmetic)."""
    d = (a - b) & MASK
    return d - (1 << 32) if d >= 1 << 31 else d


class _Endpoint:
    """One side's sequence bookkeeping, states, counters and reassembler."""

    def __init__(self) -> None:
        self.state = self.prev = INACTIVE
        self.start = self.last = self.seq_wraps = self.ack = self.ack_wraps = 0
        self.hist_syn = self.hist_fin = self.hist_rst = 0
        self.fin_cnt = self.fin_seq = 0
        self.count = [0, 0, 0, 0]
        self.thresh = [1, 1, 1, 1]
        self.reassem = self.trim = 1  # Zeek's reassembler starts at relative seq 1
        self.skip = False
        self.blocks: list[list[int]] = []  # undelivered [start, end), sorted, disjoint

    def set_state(self, state: int) -> None:
        if state != self.state:
            self.prev, self.state = self.state, state

    def clean(self) -> bool:
        """TCP_Reassembler's is_clean: established, or closed from established."""
        return self.state == ESTABLISHED or (self.state == CLOSED and self.prev == ESTABLISHED)

    def init_seqs(self, start: int, last: int) -> None:
        self.start, self.ack, self.last = start & MASK, start & MASK, last & MASK

    def relative(self, value: int, last: int, wraps: int) -> tuple[int, bool]:
        """get_relative_seq: ``value`` relative to the start, and whether it lies before it."""
        d = _seq_delta(value, last)
        if d < 0 and wraps and value > last:
            wraps -= 1
        elif d > 0 and value < last:
            wraps += 1
        if wraps == 0:
            d = _seq_delta(value, self.start)
            return d, d < 0
        return (wraps << 32) + value - self.start, False

    def no_data_acked(self) -> bool:
        full = (self.ack_wraps << 32) + self.ack
        return full in (self.start, self.start + 1)

    def size(self) -> int:
        """TCP_Endpoint::Size: bytes of sequence space sent (SYN and FIN octets left out)."""
        size = max((self.seq_wraps << 32) + self.last, (self.ack_wraps << 32) + self.ack)
        size -= self.start
        if size != 0:
            size -= 1
        if self.fin_cnt > 0 and size != 0:
            size -= 1
        return size

    def deliver(self) -> None:
        """BlockInserted: what now touches the delivered part is delivered."""
        while self.blocks and self.blocks[0][0] <= self.reassem:
            self.reassem = max(self.reassem, self.blocks.pop(0)[1])

    def insert(self, start: int, end: int) -> None:
        """Hold [start, end) until it can be delivered (merged with the blocks it touches)."""
        keep = [b for b in self.blocks if b[1] < start or b[0] > end]
        touch = [b for b in self.blocks if not (b[1] < start or b[0] > end)]
        if len(keep) + 1 > MAX_BLOCKS:
            self.blocks, self.skip = [], True
            return
        lo = min([start] + [b[0] for b in touch])
        hi = max([end] + [b[1] for b in touch])
        self.blocks = sorted([*keep, [lo, hi]])


class _Session:
    """TCPSessionAdapter::Process over one session's packets, with the history it writes."""

    def __init__(self) -> None:
        self.ep = [_Endpoint(), _Endpoint()]
        self.seen = 0
        self.partial = False
        self.first_seen = 0
        self.letters = bytearray()

    def add(self, e: int, letter: int) -> None:
        self.letters.append(letter + (LOWER if e else 0))

    def check(self, e: int, mask: int, letter: int) -> bool:
        """Session::CheckHistory: record the letter the first time; True if seen before."""
        bit = mask << (16 * e)
        if self.seen & bit:
            return True
        self.seen |= bit
        self.add(e, letter)
        return False

    def scaled(self, e: int, which: int) -> None:
        """Session::ScaledHistoryEntry: the letter at counts 1, 10, 100, ..."""
        ep = self.ep[e]
        ep.count[which] += 1
        if ep.count[which] == ep.thresh[which]:
            self.add(e, LOG_LETTERS[which])
            ep.thresh[which] *= SCALE_BASE

    def packet(self, e: int, fl: int, seq: int, ack: int, win: int, n: int, cap: int) -> None:
        E, P = self.ep[e], self.ep[1 - e]
        syn, fin, rst, has_ack = fl & SYN, fl & FIN, fl & RST, fl & ACK
        self.partial_status(e, syn, has_ack)
        seg_len = n + (1 if syn else 0) + (1 if fin else 0) - (n if rst else 0)
        past = (seq + seg_len) & MASK
        self.init_endpoint(E, syn, seq, past)
        rel_seq, underflow = E.relative(seq, E.last, E.seq_wraps)
        self.update_history(e, syn, fin, rst, has_ack, rel_seq, n)
        # update_window: a zero window, unless with or after a reset, or once the peer closed
        if win == 0 and not rst and P.state != CLOSED and E.state != RESET:
            self.scaled(e, LOG_W)
        if fin:
            E.fin_cnt += 1
            E.fin_seq = rel_seq + seg_len
        rel_ack = self.take_ack(P, ack, has_ack, rst)
        self.update_last_seq(e, past, syn, fin, rst, n)
        self.update_state(e, syn, fin, rst, has_ack, seq, n)
        if has_ack:
            self.ack_received(1 - e, rel_ack)
        if n > 0 and cap >= n and not rst and not underflow:
            self.data_sent(e, rel_seq + (1 if syn else 0), n)

    def partial_status(self, e: int, syn: int, has_ack: int) -> None:
        """SetPartialStatus, from each side's first packet (CheckPIA_FirstPacket)."""
        if e == 0 and not self.first_seen & 1:
            self.partial = not syn or bool(has_ack)
        elif e == 1 and not self.first_seen & 2 and not self.partial:
            self.partial = not syn
        self.first_seen |= 1 << e

    def init_endpoint(self, E: _Endpoint, syn: int, seq: int, past: int) -> None:
        """init_endpoint: sequence numbers from an endpoint's first packet (or a new SYN)."""
        if E.state == INACTIVE:
            if syn:
                E.init_seqs(seq, past)
            else:  # as though a SYN had come just before; the first packet is no repeat
                E.init_seqs(seq - 1, seq)
        elif syn and (
            (E.state in (SYN_SENT, SYN_ACK_SENT) and seq != E.start)
            or E.state in (ESTABLISHED, PARTIAL)
            or (E.state == RESET and E.prev == INACTIVE)
        ):
            E.init_seqs(seq, past)

    def update_history(
        self, e: int, syn: int, fin: int, rst: int, has_ack: int, rel_seq: int, n: int
    ) -> None:
        """update_history: once-per-direction letters; S/H, F, R again at a new sequence."""
        E = self.ep[e]
        bits = (1 if syn else 0) + (1 if fin else 0) + (1 if rst else 0)
        if bits > 1:
            if fin and rst:
                self.check(e, M_FIN_RST, L_FIN_RST)
            else:
                self.check(e, M_MULTI, L_MULTI_FLAG)
        elif syn:
            code = L_SYN_ACK if has_ack else L_SYN
            if self.check(e, M_SYN, code) and rel_seq != E.hist_syn:
                self.add(e, code)
            E.hist_syn = rel_seq
        elif fin:  # a FIN's sequence number is the one after its data
            if self.check(e, M_FIN, L_FIN) and rel_seq + n != E.hist_fin:
                self.add(e, L_FIN)
            E.hist_fin = rel_seq + n
        elif rst:
            if self.check(e, M_RST, L_RST) and rel_seq != E.hist_rst:
                self.add(e, L_RST)
            E.hist_rst = rel_seq
        elif n:
            self.check(e, M_DATA, L_DATA)
        elif has_ack:
            self.check(e, M_ACK, L_ACK)

    def take_ack(self, P: _Endpoint, ack: int, has_ack: int, rst: int) -> int:
        """The acknowledgement relative to the peer's start (init_peer, update_ack_seq)."""
        if not has_ack:
            return 0
        if P.state == INACTIVE:
            P.init_seqs(ack - 1, ack - 1)
            return 1
        rel_ack, underflow = P.relative(ack, P.ack, P.ack_wraps)
        if underflow:
            return 0
        d = _seq_delta(ack, P.ack)
        if not rst and not (ack == 0 and d > TOO_LARGE_SEQ_DELTA) and d > 0:
            P.ack_wraps += 1 if ack < P.ack else 0
            P.ack = ack
        return rel_ack

    def update_last_seq(self, e: int, past: int, syn: int, fin: int, rst: int, n: int) -> None:
        """update_last_seq: data that does not reach past the highest end seen is a 'T'."""
        E = self.ep[e]
        d = _seq_delta(past, E.last)
        if (syn or rst) and abs(d) > TOO_LARGE_SEQ_DELTA:
            return
        if (fin and E.last == (E.start + 1) & MASK) or (E.state != RESET and d > 0):
            E.seq_wraps += 1 if past < E.last else 0
            E.last = past
        elif E.state != RESET and n > 0:
            self.scaled(e, LOG_T)

    def update_state(
        self, e: int, syn: int, fin: int, rst: int, has_ack: int, seq: int, n: int
    ) -> None:
        """UpdateStateMachine, the state changes only (weirds and events left out)."""
        E, P = self.ep[e], self.ep[1 - e]
        state = E.state
        if state == INACTIVE:
            self.inactive(e, syn, fin, rst, has_ack, seq, n)
        elif state in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                E.set_state(CLOSED)
            if rst:
                E.set_state(RESET)
        elif state in (ESTABLISHED, PARTIAL):
            if syn and state == PARTIAL and P.state == INACTIVE and not has_ack:
                E.set_state(SYN_SENT)
            if fin and not rst:
                E.set_state(CLOSED)
                if P.state == RESET and P.prev == CLOSED:  # FIN then RST: a normal close
                    P.set_state(CLOSED)
            if rst:
                E.set_state(RESET)
        elif state == CLOSED and rst and P.state != CLOSED:
            E.set_state(RESET)

    def inactive(
        self, e: int, syn: int, fin: int, rst: int, has_ack: int, seq: int, n: int
    ) -> None:
        """UpdateInactiveState (roles are tcpweave's: the SYN/SYN-ACK reversal does not flip)."""
        E, P = self.ep[e], self.ep[1 - e]
        if syn and e == 0:
            E.set_state(SYN_ACK_SENT if has_ack else SYN_SENT)
        elif syn:
            if not has_ack and P.state == SYN_ACK_SENT and seq == E.start:
                self.partial = False
                P.set_state(ESTABLISHED)
            if P.state == SYN_SENT:
                P.set_state(ESTABLISHED)
            E.set_state(ESTABLISHED)
        if fin:
            E.set_state(CLOSED)
        if rst:
            E.set_state(RESET)
        if E.state == INACTIVE:
            if e == 1 and n == 0 and self.ep[0].state == SYN_SENT:
                pass  # an ACK of the SYN before the SYN-ACK: not yet a partial connection
            elif has_ack and P.state == ESTABLISHED:  # the SYN was missed
                E.set_state(ESTABLISHED)
                self.partial = False
            else:
                E.set_state(PARTIAL)

    def ack_received(self, p: int, seq: int) -> None:
        """TCP_Reassembler::AckReceived: the peer acknowledged up to ``seq``."""
        R = self.ep[p]
        if R.fin_cnt > 0 and 0 <= R.fin_seq <= seq:  # the FIN's octet is no data
            seq = R.fin_seq - 1
        if seq <= R.trim:
            return
        if seq > R.reassem:
            self.undelivered(p, seq)
        R.blocks = [b for b in R.blocks if b[1] > seq]
        R.trim = seq
        R.deliver()

    def undelivered(self, p: int, up_to: int) -> None:
        """TCP_Reassembler::Undelivered: each hole below ``up_to`` is a content gap."""
        R = self.ep[p]
        if up_to <= 2 and self.partial:
            return
        if not R.skip:
            while R.blocks and R.blocks[0][0] < up_to:
                self.gap(p)
                R.reassem = R.blocks[0][0]
                R.deliver()
            if up_to > R.reassem:
                self.gap(p)
        R.reassem = max(R.reassem, up_to)

    def gap(self, p: int) -> None:
        """TCP_Reassembler::Gap: recorded only while both sides are cleanly established."""
        if self.ep[p].clean() and self.ep[1 - p].clean():
            self.scaled(p, LOG_G)

    def data_sent(self, e: int, seq: int, n: int) -> None:
        """TCP_Reassembler::DataSent and Reassembler::NewBlock."""
        E = self.ep[e]
        if E.skip:
            return
        upper = seq + n
        ack = (E.ack_wraps << 32) + E.ack - E.start
        seq = max(seq, ack, E.trim)  # acknowledged or trimmed bytes are old
        if upper <= seq or upper <= E.reassem:
            return
        E.insert(max(seq, E.reassem), upper)
        before = E.reassem
        E.deliver()
        if E.reassem > before and E.no_data_acked() and E.size() > MAX_INITIAL_WINDOW:
            E.trim = E.reassem  # much sent, nothing acked: the peer's acks are not seen
        held = (E.blocks[-1][1] - E.reassem) if E.blocks else 0
        if E.no_data_acked() and held > MAX_ABOVE_HOLE_WITHOUT_ACKS:
            E.blocks, E.skip = [], True
        delivered = max(E.reassem - E.trim, 0)
        if delivered + sum(b[1] - b[0] for b in E.blocks) > EXCESSIVE_DATA_WITHOUT_ACKS:
            E.blocks, E.skip = [], True


def build_histories(
    order: Any,
    bounds: Any,
    direction: Any,
    flags: Any,
    seq: Any,
    ack: Any,
    window: Any,
    payload_len: Any,
    payload_caplen: Any,
    bad: Any,
    flipped: Any,
    out: Any,
    ends: Any,
    states: Any,
) -> int:
    """Each session's Zeek history: its bytes end at ``ends[s]`` in ``out`` (written only
    where ``out`` has room), its endpoints' final states are ``states[s]`` (client,
    server); returns how many bytes all histories take."""
    n_out = 0
    for s in range(len(bounds) - 1):
        sess = _Session()
        if flipped[s]:
            sess.letters.append(L_FLIPPED)
        for j in range(int(bounds[s]), int(bounds[s + 1])):
            i = int(order[j])
            e = int(direction[i])
            if bad[i]:  # TCPAnalyzer::ValidateChecksum: counted, then the packet is dropped
                sess.scaled(e, LOG_C)
                continue
            args = (flags[i], seq[i], ack[i], window[i], payload_len[i], payload_caplen[i])
            sess.packet(e, *(int(a) for a in args))
        for letter in sess.letters:
            if n_out < len(out):
                out[n_out] = letter
            n_out += 1
        ends[s] = n_out
        states[s] = (sess.ep[0].state, sess.ep[1].state)
    return n_out
