"""The framing engine: drive a framer over every direction of the chosen sessions.

Theory of operation. A direction's kept bytes form runs (contiguous captured
ranges) separated by gaps. From a position the framer is shown the bytes up to
the end of the current run (in growing windows, so a framer answering ``None``
is asked again with more) and answers (see ``api``):

* a length that fits in the run: a whole PDU; continue after it;
* a length past the run: the PDU straddles a gap (state ``gap``) or outlives the
  direction (``incomplete``); continue at its known end -- framing stays in
  step across a gap inside a PDU body;
* "need more" at the end of a run: the PDU's end is unknown; it is reported
  damaged up to the next captured byte, where framing resynchronises;
* "not mine": skip, as Wireshark's dissectors return 0 for bytes that are not
  theirs; after a gap or at a mid-stream start this is how a framer with magic
  bytes finds the next PDU start.

Generic framers run as the ``frame_runs`` kernel (the compiled twin of
:func:`walk`) over a batch of directions at once; other framers run through
:func:`walk`. Frames and timestamps come from the kept plan rows each PDU
overlaps: ``last_frame`` is the frame in which the whole PDU is first
available, as Wireshark's "Reassembled PDU in frame N".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.errors import UsageError
from tcpweave.framing import _kernels as k
from tcpweave.framing import _spec as S
from tcpweave.framing.api import Answer, Framer, Need, PduState, Skip
from tcpweave.framing.generic import GenericFramer
from tcpweave.output.streams import StreamViews, kept_run_starts

__all__ = ["Pdu", "Pdus", "frame", "walk"]

FIRST_WINDOW = 4096
BATCH_BYTES = 32 << 20  # stream bytes gathered per batch of sessions


def _ask(
    framer: Callable[[bytes, bool], Answer], data: bytes, at: int, avail: int, eof: bool
) -> Answer:
    """The framer's answer on the bytes from ``at`` to the end of the run, asking on growing
    windows: ``None`` or :class:`Need` on a window that is not the whole run asks again."""
    window = FIRST_WINDOW
    while True:
        w = min(window, avail)
        answer = framer(data[at : at + w], eof and w == avail)
        if w == avail or not (answer is None or isinstance(answer, Need)):
            return _checked(answer)
        more = answer.more if isinstance(answer, Need) else 0
        window = max(4 * w, w + more)


def _checked(answer: Answer) -> Answer:
    if answer is None:
        return None
    if isinstance(answer, Skip) and answer.count < 1:
        raise UsageError(f"framer answered {answer!r}: skip at least one byte")
    if isinstance(answer, Need) and answer.more < 0:
        raise UsageError(f"framer answered {answer!r}: a count cannot be negative")
    if isinstance(answer, Skip | Need):
        return answer
    if isinstance(answer, int) and not isinstance(answer, bool) and answer > 0:
        return answer
    raise UsageError(f"framer answered {answer!r}: expected a length > 0, None, Need or Skip")


def walk(
    framer: Callable[[bytes, bool], Answer],
    data: bytes,
    runs: list[tuple[int, int, int]],
    length: int,
    eof: bool,
) -> tuple[list[tuple[int, int, int]], int]:
    """Frame one direction: ``runs`` are (position in ``data``, stream offset, length).

    ``framer(bytes, eof)`` answers as a Framer does. Returns the PDUs as (stream
    offset, length, state) and the number of captured bytes skipped as not mine.
    """
    pdus: list[tuple[int, int, int]] = []
    skipped = 0
    r = 0
    off = runs[0][1] if runs else length
    while True:
        while r < len(runs) and off >= runs[r][1] + runs[r][2]:
            r += 1
        if r == len(runs):
            return pdus, skipped
        at, run_off, run_len = runs[r]
        off = max(off, run_off)  # a position inside a gap resumes at the next captured byte
        avail = run_off + run_len - off
        last = r == len(runs) - 1
        answer = _ask(framer, data, at + off - run_off, avail, eof and last)
        if isinstance(answer, Skip):
            skipped += min(answer.count, avail)
            off += answer.count
            continue
        if isinstance(answer, int) and answer <= avail:
            end, state = off + answer, PduState.OK
        elif isinstance(answer, int):  # the PDU's end is known and lies past this run
            end = off + answer
            state = PduState.INCOMPLETE if end > length else PduState.GAP
        elif last:  # needs more, and nothing more was captured
            end, state = length, PduState.INCOMPLETE
        else:  # needs more, unknown how much: damaged up to where capture resumes
            end, state = runs[r + 1][1], PduState.GAP
        end = min(end, length)
        pdus.append((off, end - off, int(state)))
        off = end


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Pdu:
    """One PDU: where it sits in its stream, the frames it came from, and its bytes."""

    stream: int
    direction: int  # 0 client->server, 1 server->client
    stream_offset: int
    length: int
    first_frame: int
    last_frame: int  # the frame that completed it (Wireshark's "Reassembled PDU in frame")
    frames: int
    first_ts_ns: int
    last_ts_ns: int
    state: PduState
    data: bytes  # bytes inside gaps are zero

    @property
    def damaged(self) -> bool:
        return self.state is not PduState.OK


COLUMNS = (
    "stream",
    "direction",
    "stream_offset",
    "length",
    "first_frame",
    "last_frame",
    "frames",
    "first_ts_ns",
    "last_ts_ns",
    "state",
)


class Pdus:
    """The PDUs of a capture as numpy columns (``COLUMNS``) plus their bytes.

    Iterating yields :class:`Pdu` objects; :meth:`to_arrow` gives a table with
    a ``data`` column (binary) and ``state`` as its string. ``skipped_bytes``
    counts captured bytes the framer declared not its own.
    """

    def __init__(
        self,
        framer: str,
        columns: dict[str, np.ndarray],
        data: np.ndarray,
        data_offsets: np.ndarray,
        skipped_bytes: int,
    ) -> None:
        self.framer = framer
        self.columns = columns
        self.data = data
        self.data_offsets = data_offsets
        self.skipped_bytes = skipped_bytes

    def __len__(self) -> int:
        return len(self.columns["stream"])

    def __getitem__(self, i: int) -> Pdu:
        c = self.columns
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        lo, hi = int(self.data_offsets[i]), int(self.data_offsets[i + 1])
        values = {name: int(c[name][i]) for name in COLUMNS}
        values["state"] = PduState(values["state"])  # type: ignore[assignment]
        return Pdu(**values, data=self.data[lo:hi].tobytes())  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Pdu]:
        return (self[i] for i in range(len(self)))

    @property
    def damaged(self) -> np.ndarray:
        return np.asarray(self.columns["state"] != PduState.OK)

    def to_arrow(self) -> pa.Table:
        cols: dict[str, Any] = {name: pa.array(self.columns[name]) for name in COLUMNS}
        names = np.array([str(s) for s in PduState], dtype=object)
        cols["state"] = pa.array(names[self.columns["state"]])
        cols["damaged"] = pa.array(self.damaged)
        cols["data"] = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            len(self),
            [None, pa.py_buffer(self.data_offsets), pa.py_buffer(self.data)],
        )
        return pa.table(cols)

    @classmethod
    def from_arrow(cls, framer: str, table: pa.Table, skipped_bytes: int = 0) -> Pdus:
        """PDUs back from ``to_arrow``'s table (or rows of it)."""
        names = [str(s) for s in PduState]
        cols = {name: table.column(name).to_numpy() for name in COLUMNS if name != "state"}
        states = table.column("state").to_pylist()
        cols["state"] = np.array([names.index(v) for v in states], np.int64)
        data = table.column("data").combine_chunks()
        offsets = np.frombuffer(data.buffers()[1], np.int64)[
            data.offset : data.offset + len(data) + 1
        ]
        raw = (
            np.frombuffer(data.buffers()[2], np.uint8)
            if data.buffers()[2]
            else np.zeros(0, np.uint8)
        )
        start = int(offsets[0]) if len(offsets) else 0
        return cls(framer, cols, raw[start : int(offsets[-1]) if len(offsets) else 0].copy(),
                   (offsets - start).astype(np.int64), skipped_bytes)  # fmt: skip

    def __repr__(self) -> str:
        return f"Pdus({len(self)} PDUs, framer {self.framer!r}, {int(self.damaged.sum())} damaged)"


# ----------------------------------------------------------------------------- engine


@dataclass
class _Batch:
    """Directions of a batch of sessions, their runs and kept rows, and their bytes."""

    stream: np.ndarray  # per direction
    direction: np.ndarray
    length: np.ndarray
    flags: np.ndarray
    dir_runs: np.ndarray  # bounds into the run arrays, per direction
    run_buf: np.ndarray
    run_off: np.ndarray
    run_len: np.ndarray
    dir_rows: np.ndarray  # bounds into the row arrays, per direction
    rows: dict[str, np.ndarray]  # kept plan rows: stream_offset, length, frame, ts_ns
    buf: np.ndarray


def frame(
    views: StreamViews,
    framer: Framer,
    streams: Iterable[int] | None = None,
    *,
    data: bool = True,
) -> Pdus:
    """Cut every direction of the chosen sessions (all by default) into PDUs."""
    if not isinstance(framer, Framer):
        raise UsageError(f"{framer!r} is not a Framer")
    chosen = _chosen(views, streams)
    parts: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
    skipped = 0
    for batch_streams in _batches(views, chosen):
        batch = _batch(views, batch_streams)
        if isinstance(framer, GenericFramer):
            found, skip = _frame_generic(batch, framer)
        else:
            found, skip = _frame_python(batch, framer)
        skipped += skip
        parts.append(_finish(batch, found, data))
    return _concat(framer.name, parts, skipped)


def _chosen(views: StreamViews, streams: Iterable[int] | None) -> np.ndarray:
    n = len(views)
    if streams is None:
        return np.arange(n, dtype=np.int64)
    chosen = np.unique(np.asarray([int(s) for s in streams], dtype=np.int64))
    bad = chosen[(chosen < 0) | (chosen >= n)]
    if bad.size:
        raise UsageError(f"no stream {int(bad[0])} (the capture has {n} streams)")
    return chosen


def _batches(views: StreamViews, chosen: np.ndarray) -> Iterator[np.ndarray]:
    """Runs of chosen streams holding about BATCH_BYTES of stream bytes each."""
    ends = np.concatenate(([0], np.cumsum(views.kept_rows["length"])))
    rb = views.row_bounds
    per_stream = ends[rb[2 * chosen + 2]] - ends[rb[2 * chosen]]
    start, total = 0, 0
    for i, size in enumerate(per_stream.tolist()):
        if total and total + size > BATCH_BYTES:
            yield chosen[start:i]
            start, total = i, 0
        total += size
    if start < len(chosen):
        yield chosen[start:]


def _batch(views: StreamViews, streams: np.ndarray) -> _Batch:
    slots = (2 * streams[:, None] + np.arange(2)).ravel()
    rb = views.row_bounds
    lo, hi = rb[slots], rb[slots + 1]
    counts = hi - lo
    row_idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    kept = views.kept_rows
    offset, length = kept["stream_offset"][row_idx], kept["length"][row_idx]
    dir_rows = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    rows = {
        "stream_offset": offset,
        "length": length,
        "frame": kept["frame"][row_idx],
        "ts_ns": views.packets.ts_ns[kept["row"][row_idx]],
    }
    buf = np.empty(int(length.sum()), np.uint8)
    pos = np.concatenate(([0], np.cumsum(length)[:-1])) if len(length) else length
    views.copy_kept(row_idx, pos, buf)
    starts = kept_run_starts(offset, length, dir_rows[:-1][counts > 0])
    run_len = np.add.reduceat(length, starts) if len(starts) else starts
    dir_runs = np.searchsorted(starts, dir_rows).astype(np.int64)
    info = _direction_info(views, slots)
    last_end = np.zeros(len(slots), np.int64)
    has = dir_runs[1:] > dir_runs[:-1]
    last_run = dir_runs[1:][has] - 1
    last_end[has] = offset[starts[last_run]] + run_len[last_run]
    eof = info["closed"] & (last_end == info["length"]) & has
    return _Batch(
        stream=slots // 2,
        direction=slots % 2,
        length=info["length"],
        flags=np.where(eof, S.F_EOF, 0).astype(np.int64),
        dir_runs=dir_runs,
        run_buf=pos[starts].astype(np.int64),
        run_off=offset[starts].astype(np.int64),
        run_len=run_len.astype(np.int64),
        dir_rows=dir_rows,
        rows=rows,
        buf=buf,
    )


def _direction_info(views: StreamViews, slots: np.ndarray) -> dict[str, np.ndarray]:
    d = views.plan.directions
    idx = views.slot_dir[slots]
    present = idx >= 0
    safe = idx.clip(0)
    return {
        "length": np.where(present, d["length"][safe], 0).astype(np.int64),
        "closed": present & (d["fin"][safe] | d["rst"][safe]),
    }


def _frame_generic(batch: _Batch, framer: GenericFramer) -> tuple[dict[str, np.ndarray], int]:
    spec, magic, delim = framer.spec()
    n_dirs = len(batch.length)
    resume = np.zeros(1, np.int64)
    skipped = np.zeros(n_dirs, np.int64)
    smallest = max(int(spec[S.S_MIN]), 1)
    capacity = min(len(batch.buf) // smallest, 1 << 20) + len(batch.run_off) + n_dirs + 16
    parts: list[dict[str, np.ndarray]] = []
    while resume[0] < n_dirs:
        out: dict[str, np.ndarray] = {
            "dir": np.empty(capacity, np.int64),
            "offset": np.empty(capacity, np.int64),
            "length": np.empty(capacity, np.int64),
            "state": np.empty(capacity, np.uint8),
        }
        before = int(resume[0])
        args = (batch.buf, batch.run_buf, batch.run_off, batch.run_len, batch.dir_runs)
        n = int(
            k.frame_runs(
                *args, batch.length, batch.flags, spec, magic, delim, resume, out["dir"],
                out["offset"], out["length"], out["state"], skipped,
            )
        )  # fmt: skip
        parts.append({name: col[:n] for name, col in out.items()})
        if resume[0] == before:  # not even one direction fitted
            capacity *= 4
    found = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return found, int(skipped.sum())


def _frame_python(batch: _Batch, framer: Framer) -> tuple[dict[str, np.ndarray], int]:
    cols: dict[str, list[int]] = {"dir": [], "offset": [], "length": [], "state": []}
    skipped = 0
    session: Framer | None = None
    for d in range(len(batch.length)):
        direction = int(batch.direction[d])
        if direction == 0 or session is None:
            session = framer.session()
        lo, hi = int(batch.dir_runs[d]), int(batch.dir_runs[d + 1])
        if lo == hi:
            continue
        base = int(batch.run_buf[lo])
        end = int(batch.run_buf[hi - 1] + batch.run_len[hi - 1])
        data = batch.buf[base:end].tobytes()
        runs = [
            (int(batch.run_buf[r]) - base, int(batch.run_off[r]), int(batch.run_len[r]))
            for r in range(lo, hi)
        ]
        ask = _bind(session, direction)
        eof = bool(batch.flags[d] & S.F_EOF)
        pdus, skip = walk(ask, data, runs, int(batch.length[d]), eof)
        skipped += skip
        for off, n, state in pdus:
            cols["dir"].append(d)
            cols["offset"].append(off)
            cols["length"].append(n)
            cols["state"].append(state)
    found = {name: np.asarray(v, dtype=np.int64) for name, v in cols.items()}
    found["state"] = found["state"].astype(np.uint8)
    return found, skipped


def _bind(framer: Framer, direction: int) -> Callable[[bytes, bool], Answer]:
    def ask(data: bytes, eof: bool) -> Answer:
        return framer.frame(data, direction, eof)

    return ask


def _finish(
    batch: _Batch, found: dict[str, np.ndarray], with_data: bool
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    n = len(found["dir"])
    attr = {name: np.empty(n, np.int64) for name in ("first_frame", "last_frame", "frames")}
    attr |= {name: np.empty(n, np.int64) for name in ("first_ts_ns", "last_ts_ns")}
    rows = batch.rows
    k.attribute_pdus(
        found["dir"], found["offset"], found["length"], batch.dir_rows, rows["stream_offset"],
        rows["length"], rows["frame"], rows["ts_ns"], attr["first_frame"], attr["last_frame"],
        attr["frames"], attr["first_ts_ns"], attr["last_ts_ns"],
    )  # fmt: skip
    sizes = found["length"] if with_data else np.zeros(n, np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = np.zeros(int(offsets[-1]), np.uint8)
    if with_data:
        k.gather_pdus(
            batch.buf, batch.run_buf, batch.run_off, batch.run_len, batch.dir_runs,
            found["dir"], found["offset"], found["length"], offsets[:-1], data,
        )  # fmt: skip
    cols = {
        "stream": batch.stream[found["dir"]].astype(np.int64),
        "direction": batch.direction[found["dir"]].astype(np.uint8),
        "stream_offset": found["offset"],
        "length": found["length"],
        **attr,
        "state": found["state"],
    }
    return cols, data, offsets


def _concat(
    name: str, parts: list[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]], skipped: int
) -> Pdus:
    if not parts:
        empty = {c: np.zeros(0, np.int64) for c in COLUMNS}
        empty["direction"] = empty["direction"].astype(np.uint8)
        empty["state"] = empty["state"].astype(np.uint8)
        return Pdus(name, empty, np.zeros(0, np.uint8), np.zeros(1, np.int64), skipped)
    cols = {c: np.concatenate([p[0][c] for p in parts]) for c in COLUMNS}
    data = np.concatenate([p[1] for p in parts])
    shifts = np.cumsum([0] + [len(p[1]) for p in parts[:-1]])
    offsets = np.concatenate(
        [p[2][:-1] + s for p, s in zip(parts, shifts, strict=True)] + [[len(data)]]
    ).astype(np.int64)
    return Pdus(name, cols, data, offsets, skipped)
