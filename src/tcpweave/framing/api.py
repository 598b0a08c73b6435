"""The framer contract: a framer reads stream bytes and answers; the driver does the rest.

A framer is shown the bytes of one direction of a TCP session from where the
next PDU should start, and answers one of (sans-I/O, as h11's ``None`` means
"need more data"):

* an ``int`` n > 0: a PDU of n bytes starts here. n may exceed the bytes shown
  (the PDU continues); the driver never asks again about that PDU, so a framer
  may update its own state when it returns an int;
* ``None``: need more bytes, unknown how many;
* :class:`Need` (n): need at least n more bytes;
* :class:`Skip` (k): these bytes are not mine; skip k of them.

The same contract as Wireshark's ``tcp_dissect_pdus`` and ``desegment_len`` /
``desegment_offset`` (doc/README.dissector, "TCP protocol dissection"): ``None``
is ``DESEGMENT_ONE_MORE_SEGMENT``, ``Need(n)`` is ``desegment_len = n``, an int
is the length ``get_pdu_len`` returns, and ``Skip`` is a dissector returning 0
("not mine"), here with how far to skip so the engine can resynchronise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

__all__ = ["Answer", "Framer", "Need", "PduState", "Skip"]


@dataclass(frozen=True, slots=True)
class Need:
    """Need at least ``more`` bytes beyond those shown before answering."""

    more: int


@dataclass(frozen=True, slots=True)
class Skip:
    """The bytes shown are not a PDU start: skip ``count`` bytes and ask again."""

    count: int = 1


Answer = int | Need | Skip | None


class Framer:
    """Base class of framers. Override :meth:`frame`; override :meth:`session` to keep state.

    ``frame(data, direction, eof)``: ``data`` starts where the next PDU should
    start (bytes); ``direction`` is 0 client->server, 1 server->client; ``eof`` is
    true when ``data`` reaches the end of a closed direction (nothing follows).

    A framer must answer consistently on prefixes: if it answers an int or a
    Skip for some bytes, it answers the same for any longer data starting there.
    """

    #: the name PDUs and the CLI show
    name: ClassVar[str] = "custom"

    def session(self) -> Framer:
        """The framer for one TCP session (both directions, client->server framed first).

        Stateless framers return ``self``; stateful ones a fresh copy (HTTP pairs
        responses with the requests' methods this way).
        """
        return self

    def frame(self, data: bytes, direction: int, eof: bool) -> Answer:
        raise NotImplementedError


class PduState(IntEnum):
    """Whether a PDU was recovered whole (PDU column ``state``)."""

    OK = 0
    GAP = 1  # bytes inside it were never captured: the PDU straddles a gap
    INCOMPLETE = 2  # the direction ended (or the capture stopped) before it did

    def __str__(self) -> str:
        return self.name.lower()
