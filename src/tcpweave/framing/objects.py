"""HTTP objects: the bodies of a session's HTTP/1.x messages, de-chunked and decoded.

Theory of operation. A session's directions are cut into messages by the
:class:`~tcpweave.framing.protocols.Http` framer through the framing engine's
``walk`` (client->server first, so that each response knows its request's method;
framing stays in step across a gap inside a body and resynchronises after one).
Each message's header section is read again here for what an object needs, and
requests are paired with the final responses in order (pipelining, RFC 9112 §9.3;
1xx interim responses answer no request, RFC 9110 §15.2). Body length, RFC 9112 §6.3:
responses to HEAD and 1xx/204/304 responses have none; a chunked body (§7.1) is
de-chunked (extensions and the trailer section dropped); else Content-Length; else a
request has none and a response runs until the connection closes -- the rest of the
direction, whatever later bytes look like.

An object's bytes are never glued across a gap: a body with bytes missing keeps them
as zeros at their place (a chunked one keeps its chunk framing, the positions being
the stream's) and lists the missing ranges, and it is not content-decoded. A whole
body is content-decoded (RFC 9110 §8.4: codings listed in the order applied, so
undone in reverse): gzip, deflate (zlib-wrapped, or raw as browsers also accept), br;
each step's output is capped at ``max_decoded`` bytes (a decompression bomb costs no
more), past which the object is cut there and marked ``truncated-decoding``.
206 Partial Content pieces (Content-Range, RFC 9110 §14.4) of one representation
(host, target, entity tag, complete length) are put together by
:func:`assemble_ranges` when together they cover it, else kept as pieces.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import IntEnum

from tcpweave.framing.api import Answer, PduState
from tcpweave.framing.driver import walk
from tcpweave.framing.protocols import Http, header_fields

__all__ = [
    "DEFAULT_MAX_DECODED",
    "DirectionBytes",
    "HttpObject",
    "ObjectState",
    "assemble_ranges",
    "decode_body",
    "safe_name",
    "session_objects",
]

#: largest decoded object, bytes (``--max-decoded``): each decoding step stops there
DEFAULT_MAX_DECODED = 256 << 20
#: longest file name made from a request target (before the stream and index prefix)
MAX_NAME = 64


class ObjectState(IntEnum):
    """Whether an object's bytes are whole (manifest column ``state``)."""

    OK = 0
    GAP = 1  # bytes inside the body were never captured (zero-filled, listed in ``gaps``)
    INCOMPLETE = 2  # the direction (or the capture) ended before the body did
    PARTIAL = 3  # a 206 piece whose siblings do not cover the whole representation
    TRUNCATED_DECODING = 4  # decoded output reached max_decoded and was cut there
    DECODING_ERROR = 5  # the content coding could not be undone: the encoded body is kept

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class DirectionBytes:
    """One direction as the objects need it: its bytes (gaps zero-filled, ``length`` long),
    the missing ranges ``(offset, length)``, and whether it ended (FIN or RST) with every
    byte up to its end captured."""

    data: bytes
    gaps: tuple[tuple[int, int], ...] = ()
    closed: bool = True

    @property
    def length(self) -> int:
        return len(self.data)

    def runs(self) -> list[tuple[int, int, int]]:
        """Captured runs as ``walk`` takes them: (position, stream offset, length)."""
        out, at = [], 0
        for off, n in sorted(self.gaps):
            if off > at:
                out.append((at, at, off - at))
            at = max(at, off + n)
        if at < self.length:
            out.append((at, at, self.length - at))
        return out

    def gaps_in(self, start: int, end: int) -> tuple[tuple[int, int], ...]:
        """The missing ranges inside [start, end), as [start, end) relative to ``start``."""
        return tuple((max(o, start) - start, min(o + n, end) - start)
                     for o, n in sorted(self.gaps) if o < end and o + n > start)  # fmt: skip


@dataclass(frozen=True)
class HttpObject:
    """One message body. ``data`` is the body as written: decoded when ``decoded``, else
    as carried (de-chunked unless ``chunked_kept``); ``gaps`` are [start, end) in it."""

    stream: int
    index: int  # order among the session's objects
    direction: int  # 0: a request body, 1: a response body
    message_offset: int  # stream offset of the message's first byte
    body_offset: int  # stream offset of the body's first byte
    method: str
    target: str
    host: str | None
    status: int | None
    content_type: str | None
    content_encoding: tuple[str, ...]
    chunked: bool
    state: ObjectState
    data: bytes
    encoded_size: int  # the body with its content codings (de-chunked)
    encoded_sha256: str
    decoded: bool = False
    chunked_kept: bool = False  # a chunked body with a gap keeps its chunk framing
    gaps: tuple[tuple[int, int], ...] = ()
    etag: str | None = None
    content_range: tuple[int, int, int | None] | None = None  # [first, end), complete length
    pieces: int = 1  # 206 pieces put together into this object
    decoding: str = ""  # what went wrong decoding, if anything
    #: False when bytes between responses were lost before this one: a response may have
    #: vanished in the gap, so the request it is paired with (in order) may not be its own
    paired_surely: bool = True

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


# ------------------------------------------------------------------------- messages

_REQUEST = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^ \r\n]+) HTTP/1\.[0-9]\r?\n")
_STATUS = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})[^\r\n]*\r?\n")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CHUNK = re.compile(rb"([0-9A-Fa-f]+)[^\r\n]*\r?\n")
_RANGE = re.compile(rb"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)")


@dataclass
class _Head:
    offset: int  # stream offset of the message
    body_offset: int
    end: int  # stream offset where the message (as framed) ends
    state: PduState
    line: re.Match[bytes]
    fields: dict[bytes, list[bytes]]

    def one(self, name: bytes) -> str | None:
        values = self.fields.get(name)
        return b", ".join(values).decode("latin-1") if values else None

    def codings(self, name: bytes) -> list[str]:
        joined = b",".join(self.fields.get(name, []))
        return [c.strip().decode("latin-1").lower() for c in joined.split(b",") if c.strip()]


def _heads(d: DirectionBytes, pdus: list[tuple[int, int, int]], direction: int) -> list[_Head]:
    """The messages among the PDUs whose start line and header section were captured."""
    pattern = _REQUEST if direction == 0 else _STATUS
    out = []
    for off, n, state in pdus:
        line = pattern.match(d.data, off, off + n)
        end = _HEAD_END.search(d.data, line.end() - 2, off + n) if line else None
        if line is None or end is None or d.gaps_in(off, end.end()):
            continue
        fields = header_fields(d.data[line.end() : end.start()])
        out.append(_Head(off, end.end(), off + n, PduState(state), line, fields))
    return out


def frame_session(
    c2s: DirectionBytes, s2c: DirectionBytes
) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Both directions' HTTP messages (stream offset, length, PduState), framed as
    ``tcpweave pdus --framer http`` frames them."""
    framer = Http().session()
    out = []
    for direction, d in enumerate((c2s, s2c)):
        ask: Callable[[bytes, bool], Answer] = _bound(framer, direction)
        pdus, _skipped = walk(ask, d.data, d.runs(), d.length, d.closed)
        out.append(pdus)
    return out[0], out[1]


def _bound(framer: Http, direction: int) -> Callable[[bytes, bool], Answer]:
    return lambda data, eof: framer.frame(data, direction, eof)


# ----------------------------------------------------------------------------- bodies


@dataclass
class _Body:
    data: bytes
    state: ObjectState
    chunked: bool = False
    chunked_kept: bool = False
    gaps: tuple[tuple[int, int], ...] = ()
    start: int = 0
    end: int = 0


def _body(d: DirectionBytes, h: _Head, until_close: bool) -> _Body | None:
    """The body of message ``h`` (RFC 9112 §6.3), or None when it has none."""
    start = h.body_offset
    if h.codings(b"transfer-encoding")[-1:] == ["chunked"]:
        return _chunked_body(d, h)
    length = h.one(b"content-length")
    if h.fields.get(b"transfer-encoding") or (length is None and until_close):
        end = d.length  # until the connection closes (§6.3 items 4 and 8)
        state = ObjectState.OK if d.closed else ObjectState.INCOMPLETE
    elif length is not None:
        end = min(h.end, d.length)
        state = ObjectState.INCOMPLETE if end < h.end or h.state == PduState.INCOMPLETE else (
            ObjectState.OK)  # fmt: skip
    else:
        return None
    if end <= start:
        return None if state == ObjectState.OK else _Body(b"", state, start=start, end=start)
    gaps = d.gaps_in(start, end)
    return _Body(d.data[start:end], ObjectState.GAP if gaps else state, gaps=gaps, start=start,
                 end=end)  # fmt: skip


def _chunked_body(d: DirectionBytes, h: _Head) -> _Body:
    """De-chunk (RFC 9112 §7.1: chunk-size [extensions] CRLF data CRLF ... last-chunk
    trailer-section CRLF); a body with a gap keeps its chunk framing instead."""
    start, end = h.body_offset, min(h.end, d.length)
    gaps = d.gaps_in(start, end)
    if gaps:
        return _Body(d.data[start:end], ObjectState.GAP, True, True, gaps, start, end)
    pieces, at = [], start
    while (line := _CHUNK.match(d.data, at, end)) is not None:
        size = int(line.group(1), 16)
        if size == 0:
            break
        pieces.append(d.data[line.end() : min(line.end() + size, end)])
        at = line.end() + size + (1 if d.data[line.end() + size : line.end() + size + 1] == b"\n"
                                  else 2)  # fmt: skip
    whole = h.state == PduState.OK and end == h.end
    state = ObjectState.OK if whole else ObjectState.INCOMPLETE
    return _Body(b"".join(pieces), state, True, start=start, end=end)


# --------------------------------------------------------------------------- decoding


def decode_body(data: bytes, codings: Iterable[str], limit: int) -> tuple[bytes, str]:
    """Undo content codings listed in the order they were applied (RFC 9110 §8.4), each
    step's output capped at ``limit`` bytes. Returns (bytes, problem): problem is ""
    (decoded), "truncated" (the decoded bytes cut at ``limit``), "truncated-inner" (a
    coding before the last one gave more than ``limit`` bytes: ``data`` is returned as it
    came), or what could not be decoded (``data`` as it came)."""
    steps = list(reversed([c for c in codings if c != "identity"]))
    encoded = data
    for k, coding in enumerate(steps):
        step = _DECODERS.get(coding)
        if step is None:
            return encoded, f"unsupported content coding {coding!r}"
        try:
            data, truncated = step(data, limit)
        except (zlib.error, ValueError, _BrotliError) as exc:
            return encoded, f"{coding}: {exc}"
        if truncated:
            return (data[:limit], "truncated") if k == len(steps) - 1 else (
                encoded, "truncated-inner")  # fmt: skip
    return data, ""


class _BrotliError(Exception):
    pass


def _inflate(data: bytes, limit: int, wbits: int) -> tuple[bytes, bool]:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, limit + 1)
    if len(out) > limit:
        return out, True
    if not d.eof:
        raise ValueError("compressed data ends early")
    return out, False


def _gzip(data: bytes, limit: int) -> tuple[bytes, bool]:
    """gzip (RFC 1952); members one after another are one stream (RFC 1952 §2.2)."""
    out: list[bytes] = []
    total = 0
    while True:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        piece = d.decompress(data, limit + 1 - total)
        out.append(piece)
        total += len(piece)
        if total > limit:
            return b"".join(out), True
        if not d.eof:
            raise ValueError("compressed data ends early")
        data = d.unused_data
        if not data.startswith(b"\x1f\x8b"):
            return b"".join(out), False


def _deflate(data: bytes, limit: int) -> tuple[bytes, bool]:
    """ "deflate" is the zlib format (RFC 9110 §8.4.1.2, RFC 1950); some servers send raw
    deflate (RFC 1951), which browsers accept too: tried when the zlib header is wrong."""
    try:
        return _inflate(data, limit, zlib.MAX_WBITS)
    except zlib.error:
        return _inflate(data, limit, -zlib.MAX_WBITS)


def _brotli(data: bytes, limit: int) -> tuple[bytes, bool]:
    """br (RFC 7932), its output bounded as it is produced."""
    import brotli  # type: ignore[import-untyped]

    d = brotli.Decompressor()
    try:
        out = [d.process(data, output_buffer_limit=limit + 1)]
        total = len(out[0])
        while total <= limit and not d.can_accept_more_data():
            out.append(d.process(b"", output_buffer_limit=limit + 1 - total))
            total += len(out[-1])
    except brotli.error as exc:
        raise _BrotliError(str(exc) or "invalid brotli data") from None
    if total > limit:
        return b"".join(out), True
    if not d.is_finished():
        raise ValueError("compressed data ends early")
    return b"".join(out), False


_DECODERS: dict[str, Callable[[bytes, int], tuple[bytes, bool]]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,  # RFC 9110 §8.4.1.3
    "deflate": _deflate,
    "br": _brotli,
}


# ---------------------------------------------------------------------------- objects


def session_objects(
    stream: int,
    c2s: DirectionBytes,
    s2c: DirectionBytes,
    max_decoded: int = DEFAULT_MAX_DECODED,
) -> list[HttpObject]:
    """The objects (message bodies) of one session, in message order."""
    pdus_c2s, pdus_s2c = frame_session(c2s, s2c)
    requests = _heads(c2s, pdus_c2s, 0)
    responses = _heads(s2c, pdus_s2c, 1)
    out: list[HttpObject] = []
    pending = iter(requests)
    exchanges: list[tuple[_Head | None, _Head | None]] = []
    after = -1  # a response body running until close swallows what follows it
    expected, surely, unsure = 0, True, set()  # where the next response should start
    for r in responses:
        if r.offset < after:
            continue
        surely = surely and r.offset == expected
        expected = r.end
        status = int(r.line.group(1))
        if 100 <= status < 200 and status != 101:
            continue  # interim: the request still waits for its final response
        exchanges.append((next(pending, None), r))
        if not surely:
            unsure.add(id(r))
        if _until_close(r, exchanges[-1][0]):
            after = s2c.length
    exchanges += [(q, None) for q in pending]
    for request, response in exchanges:
        for direction, head in ((0, request), (1, response)):
            if head is None:
                continue
            obj = _object(stream, len(out), direction, head, request, (c2s, s2c)[direction],
                          max_decoded)  # fmt: skip
            if obj is not None:
                out.append(replace(obj, paired_surely=False) if id(head) in unsure else obj)
    return out


def _until_close(response: _Head, request: _Head | None) -> bool:
    return (
        _has_body(response, request)
        and response.codings(b"transfer-encoding")[-1:] != ["chunked"]
        and (b"transfer-encoding" in response.fields or b"content-length" not in response.fields)
    )


def _has_body(response: _Head, request: _Head | None) -> bool:
    """RFC 9112 §6.3 items 1-2: no body after HEAD, in 1xx, 204, 304; none after a 2xx to
    CONNECT or a 101 (the connection is no longer HTTP)."""
    status = int(response.line.group(1))
    method = request.line.group(1) if request is not None else b"GET"
    if method == b"HEAD" or status < 200 or status in (204, 304):
        return False
    return not (method == b"CONNECT" and 200 <= status < 300)


def _object(
    stream: int,
    index: int,
    direction: int,
    head: _Head,
    request: _Head | None,
    d: DirectionBytes,
    max_decoded: int,
) -> HttpObject | None:
    if direction == 1 and not _has_body(head, request):
        return None
    body = _body(d, head, until_close=direction == 1)
    if body is None:
        return None
    status = int(head.line.group(1)) if direction == 1 else None
    codings = tuple(head.codings(b"content-encoding"))
    rng = _content_range(head) if status == 206 else None
    obj = HttpObject(
        stream=stream,
        index=index,
        direction=direction,
        message_offset=head.offset,
        body_offset=head.body_offset,
        method=request.line.group(1).decode("latin-1") if request else "",
        target=request.line.group(2).decode("latin-1") if request else "",
        host=request.one(b"host") if request else None,
        status=status,
        content_type=head.one(b"content-type"),
        content_encoding=codings,
        chunked=body.chunked,
        state=body.state,
        data=body.data,
        encoded_size=len(body.data),
        encoded_sha256=hashlib.sha256(body.data).hexdigest(),
        chunked_kept=body.chunked_kept,
        gaps=body.gaps,
        etag=head.one(b"etag"),
        content_range=rng,
    )
    if status == 206:
        return replace(obj, state=ObjectState.PARTIAL) if body.state == ObjectState.OK else obj
    return decoded(obj, max_decoded)


def decoded(obj: HttpObject, max_decoded: int) -> HttpObject:
    """``obj`` with its content codings undone, when its bytes are whole."""
    if obj.state != ObjectState.OK or not [c for c in obj.content_encoding if c != "identity"]:
        return obj
    data, problem = decode_body(obj.data, obj.content_encoding, max_decoded)
    if problem == "truncated":
        return replace(obj, data=data, decoded=True, state=ObjectState.TRUNCATED_DECODING,
                       decoding=f"decoded output cut at {max_decoded} bytes")  # fmt: skip
    if problem == "truncated-inner":  # the encoded body is kept: a cut inner coding is junk
        return replace(obj, state=ObjectState.TRUNCATED_DECODING,
                       decoding=f"an inner coding gave more than {max_decoded} bytes")  # fmt: skip
    if problem:
        return replace(obj, state=ObjectState.DECODING_ERROR, decoding=problem)
    return replace(obj, data=data, decoded=True)


def _content_range(head: _Head) -> tuple[int, int, int | None] | None:
    """``Content-Range: bytes first-last/complete`` as [first, last + 1) and the complete
    length (None for ``*``), RFC 9110 §14.4; None when absent or not of that form."""
    raw = (head.fields.get(b"content-range") or [b""])[0]
    m = _RANGE.fullmatch(raw.strip())
    if m is None or int(m.group(2)) < int(m.group(1)):
        return None
    complete = None if m.group(3) == b"*" else int(m.group(3))
    return int(m.group(1)), int(m.group(2)) + 1, complete


# ----------------------------------------------------------------------------- ranges


def _range_key(obj: HttpObject) -> tuple[str | None, str, str | None, int] | None:
    if obj.content_range is None or obj.gaps:
        return None
    first, end, complete = obj.content_range
    if complete is None or end > complete or len(obj.data) != end - first:
        return None
    if obj.state != ObjectState.PARTIAL:
        return None
    return obj.host, obj.target, obj.etag, complete


@dataclass
class _Group:
    pieces: list[HttpObject] = field(default_factory=list)

    def covers(self, complete: int) -> bool:
        at = 0
        for p in sorted(self.pieces, key=lambda o: o.content_range or (0, 0, 0)):
            assert p.content_range is not None
            if p.content_range[0] > at:
                return False
            at = max(at, p.content_range[1])
        return at >= complete


def assemble_ranges(objects: Iterable[HttpObject], max_decoded: int) -> Iterator[HttpObject]:
    """The objects, with the 206 pieces of each representation (host, target, entity tag,
    complete length) that together cover it replaced by one object (at the place of the
    first piece; where pieces overlap the first one's bytes are kept). Pieces that do not
    cover their representation stay, state ``partial``."""
    objects = list(objects)
    groups: dict[tuple[str | None, str, str | None, int], _Group] = {}
    for obj in objects:
        key = _range_key(obj)
        if key is not None:
            groups.setdefault(key, _Group()).pieces.append(obj)
    whole = {key: g for key, g in groups.items() if g.covers(key[3])}
    done = {id(p) for g in whole.values() for p in g.pieces}
    firsts = {id(g.pieces[0]): (key, g) for key, g in whole.items()}
    for obj in objects:
        if id(obj) in firsts:
            key, g = firsts[id(obj)]
            yield _joined(g, key[3], max_decoded)
        elif id(obj) not in done:
            yield obj


def _joined(group: _Group, complete: int, max_decoded: int) -> HttpObject:
    buf = bytearray(complete)
    filled = 0
    for p in sorted(group.pieces, key=lambda o: o.content_range or (0, 0, 0)):
        assert p.content_range is not None
        first, end, _ = p.content_range
        if end > filled:
            buf[max(first, filled) : end] = p.data[max(first, filled) - first :]
            filled = end
    first_piece = group.pieces[0]
    data = bytes(buf)
    joined = replace(first_piece, state=ObjectState.OK, data=data, encoded_size=len(data),
                     encoded_sha256=hashlib.sha256(data).hexdigest(),
                     content_range=(0, complete, complete), pieces=len(group.pieces))  # fmt: skip
    return decoded(joined, max_decoded)


# ------------------------------------------------------------------------------ names

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(target: str) -> str:
    """A file name from a request target: its last path segment (no query), characters
    outside [A-Za-z0-9._-] replaced by ``_``, no leading dot, at most MAX_NAME long;
    never a path (a hostile target cannot climb out of the output directory)."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    last = path.rstrip("/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", last).lstrip(".")[:MAX_NAME]
    return name or "index"
