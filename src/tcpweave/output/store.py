"""Streams as data: every direction of every session as a Parquet row, its bytes included.

Theory of operation. A partition's directions are the rows of its plan's ``directions``
table; the record fields of streams.jsonl (docs/records.md) are built from the plan's
columns with numpy and Arrow (no object per direction), and the bytes go straight into
the one data buffer of a ``large_binary`` column: every direction of a batch gets its
place in that buffer (its stream offset 0 at the running total of the lengths before it),
each kept byte range of the plan is copied to its place by the ``gather_ranges`` kernel
from the mapped capture (or the partition's spill), and the gaps stay zero (the buffer is
allocated zeroed), so offsets in a row's bytes are relative sequence numbers, as in a
stream file. With ``gaps="omit"`` the kept ranges are placed end to end instead.

A batch holds about BATCH_BYTES of stream bytes (or BATCH_ROWS rows) and becomes one row
group. Parquet stores a value in at most 2 GiB, so a direction longer than MAX_PIECE
continues on the following rows: ``piece`` 0, 1, ... with ``data_offset`` the stream
offset of the row's first byte (one row per direction otherwise: ``piece`` 0,
``data_offset`` 0). ``sha256`` is that of the row's ``data``: for a direction in one
piece, streams.jsonl's sha256 of its file. docs/store.md describes the layout.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tcpweave.decode.table import format_address
from tcpweave.enums import Close
from tcpweave.errors import UsageError
from tcpweave.output._kernels import gather_ranges
from tcpweave.output.streams import DROP_PAGES_AFTER, StreamViews

__all__ = [
    "INDEX_FILE",
    "PARTS_DIR",
    "STORE_FORMAT",
    "STORE_SCHEMA",
    "Store",
    "index_table",
    "open_store",
    "store_batches",
    "store_part",
    "write_index",
    "write_store_part",
]

#: the store's part files (one per partition) and its index, relative to its directory
PARTS_DIR = "streams"
INDEX_FILE = "index.parquet"
#: the version of the store's row schema (docs/store.md)
STORE_FORMAT = "urn:tcpweave:store:1"
#: stream bytes per batch (row group), and rows per batch at most
BATCH_BYTES = 64 << 20
BATCH_ROWS = 1 << 15
#: bytes of one direction in one row at most (Parquet values are limited to 2 GiB)
MAX_PIECE = 1 << 30
#: sources mapped in all up to this size keep their pages while a partition is written
#: (the resident set PageKeeper bounds them to: 64 KiB of fault-around per payload read)
_KEEP_MAPPED = DROP_PAGES_AFTER << 16
#: Parquet compression of the part files (measured: bench/README.md, "store")
COMPRESSION = "none"

_TIME = pa.timestamp("ns", tz="UTC")
_NAMES = pa.dictionary(pa.int8(), pa.string())
_GAP = pa.struct([("offset", pa.int64()), ("length", pa.int64()), ("reason", pa.string())])
_CONFLICT = pa.struct([("offset", pa.int64()), ("length", pa.int64()),
                       ("kept_frame", pa.int64()), ("dropped_frame", pa.int64())])  # fmt: skip
_TUNNEL = pa.struct([("encapsulation", pa.string()), ("id", pa.int64()), ("src", pa.string()),
                     ("dst", pa.string())])  # fmt: skip

#: streams.jsonl's direction record (docs/records.md) in Arrow types, without ``path``,
#: then where the row's bytes sit in the direction, their sha256, and the bytes
STORE_SCHEMA = pa.schema(
    [
        ("stream", pa.int64()),
        ("session", pa.int64()),
        ("direction", _NAMES),  # c2s, s2c
        ("src", pa.string()),
        ("sport", pa.uint16()),
        ("dst", pa.string()),
        ("dport", pa.uint16()),
        ("first_ts", _TIME),
        ("last_ts", _TIME),
        ("packets", pa.int64()),
        ("bytes", pa.int64()),  # kept bytes (gaps excluded)
        ("length", pa.int64()),  # the direction's length, gaps included
        ("gaps", pa.int64()),
        ("gap_bytes", pa.int64()),
        ("gap_list", pa.list_(_GAP)),
        ("conflicts", pa.int64()),
        ("conflict_list", pa.list_(_CONFLICT)),
        ("close", _NAMES),  # open, fin, rst
        ("tunnel", _TUNNEL),  # null outside tunnels
        ("piece", pa.int32()),
        ("data_offset", pa.int64()),
        ("sha256", pa.string()),
        ("data", pa.large_binary()),
    ]
)
_SMALL = [f.name for f in STORE_SCHEMA if f.name not in ("data", "sha256")]


def _names_array(codes: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8)), pa.array(names))


def _lists(bounds: np.ndarray, values: pa.Array) -> pa.ListArray:
    """A list per direction whose items are ``values[bounds[i]:bounds[i + 1]]``."""
    return pa.ListArray.from_arrays(pa.array(bounds.astype(np.int32)), values)


def _records(views: StreamViews, index: np.ndarray) -> pa.Table:
    """The record fields of every direction of the plan (in plan order: stream, direction)."""
    d = views.plan.directions
    local, way = d["stream"], d["direction"]
    slot = np.asarray(local * 2 + way, np.int64)
    client_addr, client_port, server_addr, server_port = _endpoints(views)
    client = pa.array(np.asarray(way == 0))
    local_a = pa.array(local)
    g, c = views.plan.gaps, views.plan.conflicts
    gb = np.append(views.gap_bounds[slot], len(g["offset"]))
    cb = np.append(views.conflict_bounds[slot], len(c["offset"]))
    summed = np.concatenate(([0], np.cumsum(np.asarray(g["length"], np.int64))))
    gap_bytes = summed[gb[1:]] - summed[gb[:-1]]
    reasons = np.array(["not-captured", "truncated"], dtype=object)[np.asarray(g["reason"])]
    gap_values = pa.StructArray.from_arrays(
        [pa.array(g["offset"], pa.int64()), pa.array(g["length"], pa.int64()),
         pa.array(reasons, pa.string())], fields=list(_GAP))  # fmt: skip
    conflict_values = pa.StructArray.from_arrays(
        [pa.array(c[k], pa.int64()) for k in ("offset", "length", "kept_frame", "dropped_frame")],
        fields=list(_CONFLICT),
    )
    cols: dict[str, Any] = {
        "stream": np.asarray(index)[local],
        "session": views.flows.session[local],
        "direction": _names_array(np.asarray(way), ["c2s", "s2c"]),
        "src": pc.if_else(client, client_addr.take(local_a), server_addr.take(local_a)),
        "sport": np.where(way == 0, client_port[local], server_port[local]),
        "dst": pc.if_else(client, server_addr.take(local_a), client_addr.take(local_a)),
        "dport": np.where(way == 0, server_port[local], client_port[local]),
        "first_ts": pa.array(d["first_ts_ns"], _TIME),
        "last_ts": pa.array(d["last_ts_ns"], _TIME),
        "packets": d["packets"],
        "bytes": d["bytes"],
        "length": d["length"],
        "gaps": np.diff(gb),
        "gap_bytes": gap_bytes,
        "gap_list": _lists(gb, gap_values),
        "conflicts": np.diff(cb),
        "conflict_list": _lists(cb, conflict_values),
        "close": _names_array(Close.of_directions(d["rst"], d["fin"]), [str(x) for x in Close]),
        "tunnel": _tunnels(views, slot),
    }
    fields = [f for f in STORE_SCHEMA if f.name in cols]
    arrays = [c if isinstance(c, pa.Array) else pa.array(c, f.type)
              for f, c in ((f, cols[f.name]) for f in fields)]  # fmt: skip
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _endpoints(views: StreamViews) -> tuple[pa.Array, np.ndarray, pa.Array, np.ndarray]:
    """Client address, client port, server address, server port of each stream: from its
    first packet and the flows' roles (as the session table's)."""
    packets, flows = views.packets, views.flows
    first = flows.first_row
    by_client = (flows.direction[first] == 0)[:, None]
    # only those rows: a spilled partition reads them without loading the whole columns
    src, dst = packets.gather("src", first), packets.gather("dst", first)
    sport, dport = packets.gather("sport", first), packets.gather("dport", first)
    version = packets.gather("ip_version", first)
    client_port = np.where(by_client[:, 0], sport, dport)
    server_port = np.where(by_client[:, 0], dport, sport)
    return (_printed(np.where(by_client, src, dst), version), client_port,
            _printed(np.where(by_client, dst, src), version), server_port)  # fmt: skip


_OCTETS = pa.array([str(i) for i in range(256)])


def _printed(raw: np.ndarray, version: np.ndarray) -> pa.Array:
    """Addresses in their printed form (``format_address``'s): IPv4 (bytes 12..15, dotted
    quad) by Arrow's string kernels, the rarer IPv6 one at a time."""
    v4 = version == 4
    quads = [_OCTETS.take(pa.array(raw[:, k])) for k in range(12, 16)]
    text = pc.binary_join_element_wise(*quads, ".")
    if v4.all():
        return text
    keys = np.ascontiguousarray(raw[~v4]).view(np.dtype((np.void, 16)))[:, 0]
    distinct, which = np.unique(keys, return_inverse=True)
    printed = [format_address(np.frombuffer(k.tobytes(), np.uint8), 6) for k in distinct]
    other = np.full(len(raw), None, dtype=object)
    other[~v4] = np.array([*printed, ""], dtype=object)[:-1][which.ravel()]
    return pc.if_else(pa.array(v4), text, pa.array(other, pa.string()))


def _tunnels(views: StreamViews, slot: np.ndarray) -> pa.Array:
    """The tunnel of each direction's first packet (null outside tunnels)."""
    if views.slot_first_row is None:
        return pa.nulls(len(slot), _TUNNEL)
    n = len(views)
    by_slot = views._tunnels(0, n)  # only captures with tunnels pay for this
    return pa.array([by_slot[s] for s in slot.tolist()], _TUNNEL)


def store_batches(
    views: StreamViews,
    index: np.ndarray,
    gaps: str = "fill",
    only: frozenset[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """A partition's directions as record batches of STORE_SCHEMA (stream order), each about
    BATCH_BYTES of stream bytes; ``index`` maps the views' streams to the capture's;
    ``only``: the capture's streams to give (default: all)."""
    records = _records(views, index)
    d = views.plan.directions
    size = np.asarray(d["length"] if gaps == "fill" else d["bytes"], np.int64)
    chosen = np.arange(len(size))
    if only is not None:
        chosen = np.flatnonzero(np.isin(records.column("stream").to_numpy(), list(only)))
    size = size[chosen]
    base = np.concatenate(([0], np.cumsum(size)))  # each chosen direction's place, all in a row
    # pieces: one per MAX_PIECE bytes of a direction (at least one)
    count = np.maximum(1, -(-size // MAX_PIECE))
    owner = np.repeat(np.arange(len(size)), count)
    piece = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
    data_offset = piece * np.int64(MAX_PIECE)
    piece_len = np.minimum(size[owner] - data_offset, MAX_PIECE)
    piece_start = base[owner] + data_offset
    rows = records.take(pa.array(chosen[owner]))
    rows = rows.append_column("piece", pa.array(piece, pa.int32()))
    rows = rows.append_column("data_offset", pa.array(data_offset, pa.int64()))
    kept = _kept_places(views, chosen, base, gaps)
    for a, b in _batch_bounds(piece_start, piece_len):
        lo, hi = int(piece_start[a]), int(piece_start[b - 1] + piece_len[b - 1])
        data = np.zeros(hi - lo, np.uint8)  # gaps stay zero
        _copy_into(views, kept, lo, hi, data)
        yield _batch(rows.slice(a, b - a), piece_start[a:b] - lo, data)


def _batch(part: pa.Table, starts: np.ndarray, data: np.ndarray) -> pa.RecordBatch:
    """The record batch of rows ``part`` whose bytes are ``data`` from ``starts`` on."""
    offsets = np.append(starts, len(data)).astype(np.int64)
    view = data.data
    edges = offsets.tolist()
    sha = [hashlib.sha256(view[x:y]).hexdigest() for x, y in itertools.pairwise(edges)]
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    column = pa.Array.from_buffers(pa.large_binary(), len(starts), buffers)
    arrays = [c.combine_chunks() for c in part.columns]
    return pa.RecordBatch.from_arrays(
        [*arrays, pa.array(sha, pa.string()), column], schema=STORE_SCHEMA
    )


def _batch_bounds(start: np.ndarray, length: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) row ranges of about BATCH_BYTES (a longer row alone) and BATCH_ROWS at most."""
    if not len(start):
        return []
    by_bytes = start // BATCH_BYTES
    by_rows = np.arange(len(start)) // BATCH_ROWS
    cut = (np.diff(by_bytes) != 0) | (np.diff(by_rows) != 0)
    long = length >= BATCH_BYTES  # alone in its batch
    cut |= long[1:] | long[:-1]
    edges = [0, *(np.flatnonzero(cut) + 1).tolist(), len(start)]
    return list(itertools.pairwise(edges))


def _kept_places(
    views: StreamViews, chosen: np.ndarray, base: np.ndarray, gaps: str
) -> dict[str, np.ndarray]:
    """The kept ranges of the chosen directions, each with its place ``at`` among all their
    bytes in a row (``base[k]`` + stream offset, or + bytes kept before it with ``omit``)."""
    kr = views.kept_rows
    d = views.plan.directions
    slot = np.asarray(d["stream"] * 2 + d["direction"], np.int64)[chosen]
    lo, hi = views.row_bounds[slot], views.row_bounds[slot + 1]
    n = hi - lo
    take = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))  # rows lo..hi each
    owner = np.repeat(np.arange(len(chosen)), n)
    length = np.asarray(kr["length"][take], np.int64)
    if gaps == "fill":
        pos = np.asarray(kr["stream_offset"][take], np.int64)
    else:  # end to end: the kept bytes before the range in its direction
        summed = np.concatenate(([0], np.cumsum(length)))
        pos = summed[:-1] - np.repeat(summed[np.cumsum(n) - n], n)
    return {
        "at": base[owner] + pos,
        "length": length,
        "start": np.asarray(kr["payload_start"][take], np.int64),
        "file": np.asarray(kr["file"][take]),
    }


def _copy_into(views: StreamViews, kept: dict[str, np.ndarray], lo: int, hi: int,
               out: np.ndarray) -> None:  # fmt: skip
    """Copy the parts of the kept ranges that fall in ``[lo, hi)`` to ``out`` (at - lo)."""
    at, length = kept["at"], kept["length"]
    i = int(np.searchsorted(at + length, lo, side="right"))
    j = int(np.searchsorted(at, hi, side="left"))
    if i >= j:
        return
    s = np.maximum(at[i:j], lo)
    e = np.minimum(at[i:j] + length[i:j], hi)
    start = kept["start"][i:j] + (s - at[i:j])
    file = kept["file"][i:j]
    buffers = [src.buffer for src in views.sources]
    one = all(buf is buffers[0] for buf in buffers)
    # Pages read are dropped between the calls (PageKeeper), unless the sources are smaller
    # than what that bounds the resident set to (a partition's spill usually is): then
    # dropping them only makes the next reads fault again.
    distinct = {id(buf): buf for buf in buffers}.values()
    small = sum(len(buf) for buf in distinct) <= _KEEP_MAPPED
    for a in range(0, j - i, DROP_PAGES_AFTER):
        b = min(a + DROP_PAGES_AFTER, j - i)
        sl = slice(a, b)
        if one:
            gather_ranges(buffers[0], start[sl], (e - s)[sl], (s - lo)[sl], out)
        else:
            for f in np.unique(file[sl]).tolist():
                m = file[sl] == f
                gather_ranges(buffers[f], start[sl][m], (e - s)[sl][m], (s - lo)[sl][m], out)
        if not small:
            views.pages.note(b - a)


def write_store_part(
    views: StreamViews,
    index: np.ndarray,
    path: str,
    gaps: str = "fill",
    only: frozenset[int] | None = None,
) -> tuple[int, int, int, int, int, int]:
    """Write a partition's rows to the Parquet file ``path``; returns its counts as
    extract_block does (directions, files 0, bytes, gap bytes, gaps, conflicts)."""
    import pyarrow.parquet as pq

    counts = [0] * 6
    with pq.ParquetWriter(path, STORE_SCHEMA, compression=COMPRESSION, use_dictionary=_SMALL,
                          write_statistics=_SMALL) as writer:  # fmt: skip
        for batch in store_batches(views, index, gaps, only):
            writer.write_batch(batch)
            first = batch.column("piece").to_numpy() == 0  # a direction once
            counts[0] += int(first.sum())
            for k, name in ((2, "bytes"), (3, "gap_bytes"), (4, "gaps"), (5, "conflicts")):
                counts[k] += int(batch.column(name).to_numpy()[first].sum())
    return (counts[0], counts[1], counts[2], counts[3], counts[4], counts[5])


def store_part(p: int) -> str:
    """Partition ``p``'s file, relative to the store's directory."""
    return f"{PARTS_DIR}/part-{p:05d}.parquet"


def write_index(out_dir: str, parts: list[int]) -> list[str]:
    """``index.parquet`` of the store in ``out_dir`` over the files of ``parts`` that exist
    (written by way of a temporary name); returns those files' names."""
    import pyarrow.parquet as pq

    names = [store_part(p) for p in parts if os.path.exists(os.path.join(out_dir, store_part(p)))]
    table = index_table([os.path.join(out_dir, n) for n in names], names)
    tmp = os.path.join(out_dir, INDEX_FILE + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(out_dir, INDEX_FILE))
    return names


def index_table(paths: list[str], names: list[str]) -> pa.Table:
    """The store's index: per row of the part files ``paths`` (named ``names`` in it) its
    stream, direction, piece, file, row group and row in the group; by stream."""
    import pyarrow.parquet as pq

    tables = []
    for path, name in zip(paths, names, strict=True):
        f = pq.ParquetFile(path)
        t = f.read(columns=["stream", "direction", "piece", "data_offset", "length"])
        groups = [f.metadata.row_group(i).num_rows for i in range(f.metadata.num_row_groups)]
        group = np.repeat(np.arange(len(groups), dtype=np.int32), groups)
        starts = np.repeat(np.cumsum(groups) - groups, groups)
        t = t.append_column("file", pa.array([name] * len(group), pa.string()))
        t = t.append_column("row_group", pa.array(group))
        t = t.append_column("row", pa.array(np.arange(len(group)) - starts, pa.int64()))
        tables.append(t)
    if not tables:
        return pa.table({"stream": pa.array([], pa.int64())})
    table = pa.concat_tables(tables)
    way = table.column("direction").combine_chunks().indices.to_numpy()
    order = np.lexsort((table.column("piece").to_numpy(), way, table.column("stream").to_numpy()))
    return table.take(pa.array(order))


class Store:
    """A finished store (``extract --store DIR``, ``extract(..., store=True)``): its rows as a
    pyarrow dataset, the direction records, and each direction's bytes by stream number."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from tcpweave.output.outdir import INCOMPLETE_FILE, MANIFEST_FILE

        self.path = os.fspath(path)
        marker = os.path.join(self.path, INCOMPLETE_FILE)
        manifest = os.path.join(self.path, MANIFEST_FILE)
        if os.path.exists(marker) or not os.path.exists(manifest):
            why = "it holds INCOMPLETE.json" if os.path.exists(marker) else "no manifest.json"
            raise UsageError(f"{self.path}: not a finished tcpweave store ({why})")
        with open(manifest, encoding="utf-8") as f:
            self.manifest: dict[str, Any] = json.load(f)
        if self.manifest.get("store", {}).get("format") != STORE_FORMAT:
            raise UsageError(f"{self.path}: not a tcpweave store (manifest.json names no "
                             f"{STORE_FORMAT})")  # fmt: skip
        self._index: pa.Table | None = None

    @property
    def files(self) -> list[str]:
        """The part files, as paths."""
        return [os.path.join(self.path, n) for n in self.manifest["store"]["files"]]

    def dataset(self) -> Any:
        """The rows as a ``pyarrow.dataset.Dataset`` (every column; filter and project there)."""
        import pyarrow.dataset as ds

        return ds.dataset(self.files, format="parquet")

    def index(self) -> pa.Table:
        """``index.parquet``: where each row is (file, row group, row), by stream."""
        if self._index is None:
            import pyarrow.parquet as pq

            self._index = pq.read_table(os.path.join(self.path, INDEX_FILE))
        return self._index

    def records(self) -> pa.Table:
        """streams.jsonl's records (every column but ``data``, one row per direction), by
        stream then direction."""
        names = [f.name for f in STORE_SCHEMA if f.name != "data"]
        table = self.dataset().to_table(columns=names, filter=pc.field("piece") == 0)
        way = table.column("direction").combine_chunks().indices.to_numpy()
        order = np.lexsort((way, table.column("stream").to_numpy()))
        return table.take(pa.array(order))

    def direction(self, stream: int, direction: str = "c2s") -> bytes:
        """The bytes of one direction of a stream (b"" when it carried no packet); KeyError
        when the store holds no row of the stream."""
        import pyarrow.parquet as pq

        if direction not in ("c2s", "s2c"):
            raise ValueError("direction must be 'c2s' or 's2c'")
        idx = self.index()
        streams = idx.column("stream").to_numpy()
        lo, hi = np.searchsorted(streams, [stream, stream + 1]).tolist()
        if lo == hi:
            raise KeyError(f"no stream {stream} in {self.path}")
        rows = idx.slice(lo, hi - lo).to_pylist()
        pieces = [r for r in rows if r["direction"] == direction]
        out = []
        for r in sorted(pieces, key=lambda r: r["piece"]):
            f = pq.ParquetFile(os.path.join(self.path, r["file"]))
            group = f.read_row_group(r["row_group"], columns=["data"])
            out.append(group.column("data")[r["row"]].as_py())
        return b"".join(out)

    def stream(self, stream: int) -> tuple[bytes, bytes]:
        """Both directions of a stream: (client to server, server to client)."""
        return self.direction(stream, "c2s"), self.direction(stream, "s2c")


def open_store(path: str | os.PathLike[str]) -> Store:
    """Open the store that ``extract --store DIR`` wrote (docs/store.md)."""
    return Store(path)
