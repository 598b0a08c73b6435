"""Protocol framers: HTTP/1.x, TLS records, DNS over TCP, Modbus/TCP.

DNS and Modbus are generic length-prefixed framers with their parameters (so
they run as kernels); HTTP and TLS look at more than one field and are plain
Python framers.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from tcpweave.framing.api import Answer, Framer, Need, Skip
from tcpweave.framing.generic import LengthPrefixed

__all__ = ["Dns", "Http", "Modbus", "Tls"]


@dataclass(frozen=True)
class Dns(LengthPrefixed):
    """DNS over TCP: "the message is prefixed with a two byte length field which gives the
    message length, excluding the two byte length field" (RFC 1035 §4.2.2, RFC 7766 §8);
    a message holds at least its 12-byte header (RFC 1035 §4.1.1)."""

    size: int = 2
    adjust: int = 2
    min_len: int = 2 + 12
    max_len: int = 2 + 0xFFFF
    name: ClassVar[str] = "dns"


@dataclass(frozen=True)
class Modbus(LengthPrefixed):
    """Modbus/TCP ADU: the MBAP header is transaction id (2), protocol id (2, always 0),
    length (2: the bytes that follow, unit id included) and unit id (1); an ADU is at
    most 260 bytes (Modbus Messaging on TCP/IP Implementation Guide v1.0b, §3.1.3)."""

    offset: int = 4
    size: int = 2
    adjust: int = 6
    min_len: int = 8  # unit id + function code at least
    max_len: int = 260
    magic: bytes = b"\x00\x00"
    magic_offset: int = 2
    name: ClassVar[str] = "modbus"


@dataclass(frozen=True)
class Tls(Framer):
    """TLS records (RFC 8446 §5.1): content type (1), legacy_record_version (2), length (2).

    Content types 20-24 (24: heartbeat, RFC 6520); versions 3.0-3.4 (SSL 3.0 to the
    0x0303 TLS 1.3 writes); length at most 2^14 + 2048 (RFC 5246 §6.2.3, the largest
    of any version's ciphertext bound). Anything else is not a record.
    """

    name: ClassVar[str] = "tls"

    def frame(self, data: bytes, direction: int, eof: bool) -> Answer:
        if data[:1] and not 20 <= data[0] <= 24:
            return Skip(1)
        if (data[1:2] and data[1] != 3) or (data[2:3] and data[2] > 4):
            return Skip(1)
        if len(data) < 5:
            return Need(5 - len(data))
        length = int.from_bytes(data[3:5], "big")
        return 5 + length if length <= (1 << 14) + 2048 else Skip(1)


# RFC 9112 §3: request-line = method SP request-target SP HTTP-version; §4: status-line
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") [^ \r\n]+ HTTP/1\.[0-9]\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})[^\r\n]*\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)[^\r\n]*\r?\n")
_TRAILER_END = re.compile(rb"\r?\n")
MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024


@dataclass
class Http(Framer):
    """HTTP/1.x messages, requests client->server and responses server->client.

    The message body length follows RFC 9112 §6.3: responses to HEAD and with
    status 1xx, 204 or 304 end with their header section; Transfer-Encoding
    ending in chunked: the chunked body (§7.1) with its trailer section;
    otherwise Content-Length; otherwise a request has no body and a response
    runs until the connection closes. Responses are paired with requests in
    order (pipelining), so a session's client->server side is framed first;
    after a 101 or a 2xx to CONNECT the connection is no longer HTTP and the
    rest of each direction is one PDU. Bytes that cannot start a message are
    skipped up to the next line, which is how framing resynchronises after a gap.
    """

    name: ClassVar[str] = "http"
    methods: deque[bytes] = field(default_factory=deque)
    tunnel: list[bool] = field(default_factory=lambda: [False, False])

    def session(self) -> Http:
        return Http()

    def frame(self, data: bytes, direction: int, eof: bool) -> Answer:
        if self.tunnel[direction]:
            return len(data) if eof and data else None
        line = (_REQUEST_LINE if direction == 0 else _STATUS_LINE).match(data)
        if line is None:
            return self._not_a_start_line(data, direction)
        end = _HEAD_END.search(data, line.end() - 2)
        if end is None:
            return Skip(line.end()) if len(data) > MAX_HEAD else None
        head = data[line.end() : end.start()]
        if direction == 0:
            return self._request(line.group(1), head, end.end(), data, eof)
        return self._response(int(line.group(1)), head, end.end(), data, eof)

    def _request(self, method: bytes, head: bytes, head_len: int, data: bytes, eof: bool) -> Answer:
        length = _body(head, head_len, data, eof, until_close=False)
        if isinstance(length, int) and not isinstance(length, bool):
            self.methods.append(method)
        return length

    def _response(self, status: int, head: bytes, head_len: int, data: bytes, eof: bool) -> Answer:
        interim = 100 <= status < 200 and status != 101
        method = b"GET" if interim or not self.methods else self.methods[0]
        if method == b"HEAD" or 100 <= status < 200 or status in (204, 304):
            length: Answer = head_len
        else:
            length = _body(head, head_len, data, eof, until_close=True)
        if isinstance(length, int) and not interim:
            if self.methods:
                self.methods.popleft()
            if status == 101 or (method == b"CONNECT" and 200 <= status < 300):
                self.tunnel[:] = [True, True]
        return length

    def _not_a_start_line(self, data: bytes, direction: int) -> Answer:
        """Skip to the next line or to a start line inside this one, whichever comes first,
        unless ``data`` may still become a start line. After a gap (or a mid-stream start)
        the bytes before the next message need not end with a line break -- a binary body
        -- so a start line is also looked for in the middle of a line, as tshark finds a
        message that starts a segment after a gap."""
        newline = data.find(b"\n")
        found = _RESYNC[direction].search(data, 1, newline + 1 if newline >= 0 else len(data))
        if found is not None:
            return Skip(found.start())
        if newline >= 0:
            return Skip(newline + 1)
        if len(data) <= MAX_LINE and _may_start(data, direction):
            return None
        # keep a tail that may still grow into a start line (prefix-consistent answers)
        tail = next((p for p in _candidates(data, direction) if _may_resume(data[p:], direction)),
                    len(data))  # fmt: skip
        return Skip(tail) if tail else None


# resynchronisation looks for these in the middle of a line: the request methods of
# RFC 9110 §9 and RFC 5789 (PATCH), and status lines
_METHODS = rb"(?:GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH)"
_RESYNC = {
    0: re.compile(_METHODS + rb" [^ \r\n]+ HTTP/1\.[0-9]\r?\n"),
    1: re.compile(rb"HTTP/1\.[0-9] [0-9]{3}[^\r\n]*\r?\n"),
}
_RESUME = {
    0: re.compile(_METHODS + rb"(?: [^ \r\n]*(?: [^ \r\n]*)?)?\r?\Z"),
    1: re.compile(rb"HTTP/1\.[0-9](?: [0-9]{0,3}[^\r\n]*)?\r?\Z"),
}
_FIRST = {0: re.compile(rb"[CDGHOPT]"), 1: re.compile(rb"H")}
_PREFIXES = {
    0: (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH"),
    1: (b"HTTP/1.",),
}


def _may_start(data: bytes, direction: int) -> bool:
    """Could ``data`` (no newline yet) be the beginning of a start line?"""
    if direction == 1:
        n = min(len(data), 7)
        return data[:n] == b"HTTP/1."[:n]
    return re.match(_TOKEN + rb"( [^ \r\n]*( [^ \r\n]*)?)?\r?$", data) is not None


def _candidates(data: bytes, direction: int) -> Iterator[int]:
    """Positions (from 1, within the last MAX_LINE bytes) where a start line could begin."""
    start = max(1, len(data) - MAX_LINE)
    return (m.start() for m in _FIRST[direction].finditer(data, start))


def _may_resume(tail: bytes, direction: int) -> bool:
    """Could ``tail`` (no line break) grow into a start line found by resynchronisation?"""
    if any(p.startswith(tail) for p in _PREFIXES[direction]):
        return True
    return _RESUME[direction].match(tail) is not None


def header_fields(head: bytes) -> dict[bytes, list[bytes]]:
    """An HTTP/1.x header section's fields by lower-case name (values in order)."""
    out: dict[bytes, list[bytes]] = {}
    for raw in head.split(b"\n"):
        name, colon, value = raw.partition(b":")
        if colon:
            out.setdefault(name.strip().lower(), []).append(value.strip())
    return out


def _body(head: bytes, head_len: int, data: bytes, eof: bool, *, until_close: bool) -> Answer:
    fields = header_fields(head)
    if b"transfer-encoding" in fields:
        codings = b",".join(fields[b"transfer-encoding"]).split(b",")
        if codings[-1].strip().lower() == b"chunked":
            return _chunked(data, head_len)
        until_close = True  # RFC 9112 §6.3 item 4 (a request so framed is an error anyway)
    elif b"content-length" in fields:
        values = {v.strip() for v in b",".join(fields[b"content-length"]).split(b",")}
        if len(values) == 1 and (value := values.pop()).isdigit():
            return head_len + int(value)
        return Skip(1)  # RFC 9112 §6.3 item 5: an invalid length is unrecoverable
    if not until_close:
        return head_len
    return len(data) if eof else None


def _chunked(data: bytes, at: int) -> Answer:
    """The length of a message whose chunked body starts at ``at`` (RFC 9112 §7.1)."""
    while True:
        line = _CHUNK_LINE.match(data, at)
        if line is None:
            if len(data) - at > MAX_LINE or b"\n" in data[at:]:
                return Skip(1)
            return None
        size = int(line.group(1), 16)
        at = line.end()
        if size == 0:
            break
        at += size
        crlf = data[at : at + 2]
        if len(data) < at + 2:
            return Need(at + 2 - len(data))
        at += 2 if crlf == b"\r\n" else 1 if crlf[:1] == b"\n" else 0
    while True:  # trailer section: field lines up to an empty line
        nl = _TRAILER_END.search(data, at)
        if nl is None:
            return None
        if nl.start() == at:
            return nl.end()
        at = nl.end()
