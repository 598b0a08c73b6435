"""The layout shared by the history kernel and its reference: Zeek's letters, masks, states.

``build_histories`` (``_kernels`` and ``_reference``) replays Zeek's TCP endpoint model
over each session's packets; this module names everything the two must agree on, with
the Zeek source each value comes from (zeek/zeek at a13de64, the commit the corpus
baselines were made with). docs/sessions.md explains the rules.
"""

from __future__ import annotations

# Zeek's endpoint states (src/analyzer/protocol/tcp/TCP_Endpoint.h, EndpointState)
INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET = range(7)

# Per-endpoint fields: row ``e`` of the ``ep`` array (e = 0 client, 1 server)
E_STATE = 0
E_PREV = 1  # the state before the last change
E_START = 2  # start_seq: the ISN, or first seq - 1 (int64 of a 32-bit value, as Zeek)
E_LAST = 3  # last_seq: one past the highest sequence number sent (32-bit)
E_SEQ_WRAPS = 4
E_ACK = 5  # ack_seq: the highest acknowledgement the peer sent for this endpoint (32-bit)
E_ACK_WRAPS = 6
E_HIST_SYN = 7  # relative seq of the last SYN / FIN / RST (a new one records its letter again)
E_HIST_FIN = 8
E_HIST_RST = 9
E_FIN_CNT = 10
E_FIN_SEQ = 11  # relative seq just past the FIN
E_COUNT = 12  # 12..15: how many C, G, T, W events (in LOG_LETTERS order)
E_THRESH = 16  # 16..19: the count at which each of them is recorded next
E_REASSEM = 20  # the reassembler: delivered (or given up) up to this relative seq
E_TRIM = 21  # acknowledged up to here (data below is old)
E_SKIP = 22  # 1: the reassembler gave up (Zeek's skip_deliveries)
E_BLOCKS = 23  # how many undelivered blocks are held (``blocks[e, :, :n]``)
N_EP = 24

# Per-session fields of the ``conn`` array
C_SEEN = 0  # letters recorded once per direction (bit masks below; server's << 16)
C_PARTIAL = 1  # Zeek's is_partial: the session did not start with a SYN (and no SYN-ACK)
C_FIRST_SEEN = 2  # bit 0: the client's first packet seen, bit 1: the server's
C_OUT = 3  # bytes of history written so far (all sessions)
C_FULL = 4  # 1: ``out`` is full, call again with a larger one
N_CONN = 5

# Once-per-direction letters (Zeek's HIST_* masks, src/session/Session.h)
M_SYN, M_FIN, M_RST, M_FIN_RST, M_DATA, M_ACK, M_MULTI = 1, 2, 4, 8, 16, 32, 64

# Letters (client upper case, server lower case: docs.zeek.org Conn::Info history)
L_SYN, L_SYN_ACK, L_ACK, L_DATA = ord("S"), ord("H"), ord("A"), ord("D")
L_FIN, L_RST = ord("F"), ord("R")
L_BAD_CHECKSUM, L_GAP, L_RETRANSMIT, L_ZERO_WINDOW = ord("C"), ord("G"), ord("T"), ord("W")
L_FIN_RST, L_MULTI_FLAG, L_FLIPPED = ord("I"), ord("Q"), ord("^")
LOWER = 32  # ASCII distance from upper to lower case

# Letters recorded "in a logarithmic fashion": again when their count reaches 10, 100, ...
# (Session::ScaledHistoryEntry, scaling base 10; thresholds start at 1)
LOG_C, LOG_G, LOG_T, LOG_W = range(4)
LOG_LETTERS = (L_BAD_CHECKSUM, L_GAP, L_RETRANSMIT, L_ZERO_WINDOW)
SCALE_BASE = 10

# TCP flags (RFC 9293 §3.1)
FIN, SYN, RST, ACK = 0x001, 0x002, 0x004, 0x010

# Zeek constants (scripts/base/init-bare.zeek, TCPSessionAdapter.cc)
TOO_LARGE_SEQ_DELTA = 1048576  # SYN/RST sequence jumps beyond this are not trusted
MAX_INITIAL_WINDOW = 16384  # tcp_max_initial_window
MAX_ABOVE_HOLE_WITHOUT_ACKS = 16384  # tcp_max_above_hole_without_any_acks
EXCESSIVE_DATA_WITHOUT_ACKS = 10 * 1024 * 1024  # tcp_excessive_data_without_further_acks

# Undelivered blocks a reassembler holds at most here; past it the reassembler gives up
# as Zeek's does past tcp_excessive_data_without_further_acks (see docs/sessions.md)
MAX_BLOCKS = 512
