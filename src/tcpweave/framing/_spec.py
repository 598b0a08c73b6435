"""How a generic framer is handed to the kernels: an int64 parameter vector and byte arrays.

Shared by ``generic`` (which writes it), ``_kernels`` and ``_reference`` (which read it).
"""

from __future__ import annotations

# parameter vector slots
S_KIND = 0
S_OFFSET = 1  # where the length field (or varint) starts
S_SIZE = 2  # length field size in bytes (fixed: the PDU size)
S_BIG = 3  # 1: big-endian length field
S_ADJUST = 4  # added to the field's value to give the PDU length
S_MIN = 5  # smallest sane PDU length
S_MAX = 6  # largest sane PDU length (delimiter: longest line, delimiter included)
S_MAGIC_OFFSET = 7
S_HEADER = 8  # bytes needed before the length is known
N_SPEC = 9

# kinds
KIND_LENGTH = 1
KIND_DELIMITER = 2
KIND_FIXED = 3
KIND_VARINT = 4

# answers (code, value)
A_PDU = 0
A_NEED = 1  # value: more bytes needed, 0 when unknown
A_SKIP = 2

# PDU states (values of PduState)
ST_OK = 0
ST_GAP = 1
ST_INCOMPLETE = 2

# direction flags
F_EOF = 1  # the direction was closed (FIN/RST) and its last run reaches its end

VARINT_MAX_BYTES = 10  # a 64-bit LEB128 value takes at most 10 bytes
