"""Capture files of sessions, from their original records: ``carve`` and ``extract --pcap``.

Each partition names the frames of its chosen sessions' records (``carve_rows``): every
TCP packet's frame and, for a datagram rebuilt from IP fragments, the frames of all the
fragments that joined it (``Run._fragment_origins``), each with its session's stream.
Sorted by frame (one table in memory, or keyed files merged a window at a time on a
spilled run), they drive one walk of the capture's record index per pass
(``output/carve.py``): the bytes come from the capture files themselves, whatever the
partitioning.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.decode.fragments import Origins
from tcpweave.errors import UsageError
from tcpweave.output.carve import Carver, format_for_path, open_output, picked
from tcpweave.run.driver import Run
from tcpweave.run.merge import KeyedFile, merge_keyed, write_keyed
from tcpweave.run.partition import Partition

__all__ = ["CarveSummary", "carve", "carve_partition", "keyed_file", "write_session_captures"]

#: frames per window of the keyed files
CARVE_FRAMES = 1 << 20

Windows = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


@dataclass
class CarveSummary:
    streams: int
    records: int
    format: str  # of the file written: pcap or pcapng


def carve_rows(part: Partition, chosen: np.ndarray | None, origins: Origins) -> pa.Table:
    """``frame`` and ``stream`` of every record of the partition's chosen sessions (all when
    None), in frame order."""
    stream = part.global_index[part.flows.stream]
    keep = np.ones(len(stream), np.bool_) if chosen is None else np.isin(stream, chosen)
    frames = np.asarray(part.packets.frame)[keep]
    streams = stream[keep]
    capture_file, _ = part.capture_columns
    rebuilt = np.asarray(capture_file)[keep] == part.defrag_file
    fragments, which = origins.expand(frames[rebuilt])
    frames = np.concatenate([frames[~rebuilt], fragments])
    streams = np.concatenate([streams[~rebuilt], streams[rebuilt][which]])
    frames, first = np.unique(frames, return_index=True)
    return pa.table({"frame": frames, "stream": streams[first].astype(np.int64)})


def carve_partition(
    part: Partition, chosen: np.ndarray | None, origins: Origins, workdir: str | None,
    name: str = "carve",
) -> pa.Table | KeyedFile:  # fmt: skip
    """``carve_rows`` as a table, or as a keyed file ``workdir/name-P.arrow`` (by frame)."""
    table = carve_rows(part, chosen, origins)
    if workdir is None:
        return table
    return write_keyed(table, "frame", CARVE_FRAMES, workdir, f"{name}-{part.index:05d}")


def keyed_file(path: str) -> KeyedFile:
    """A keyed file ``carve_partition`` wrote (maybe an earlier process: ``--resume``)."""
    with pa.memory_map(path) as f:
        reader = pa.ipc.open_file(f)
        windows = tuple(int(reader.get_batch(i).column("frame")[0].as_py()) // CARVE_FRAMES
                        for i in range(reader.num_record_batches))  # fmt: skip
    return KeyedFile(path, windows)


def keyed_windows(files: Sequence[KeyedFile]) -> Windows:
    """The rows of the keyed files, merged by frame, as (frames, streams) windows."""

    def windows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for table in merge_keyed(list(files), "frame"):
            yield table.column("frame").to_numpy(), table.column("stream").to_numpy()

    return windows


def _chosen(run: Run, streams: Iterable[int]) -> np.ndarray:
    chosen = np.unique(np.asarray([int(s) for s in streams], np.int64))
    n = sum(len(r) for r in run.ranks())
    bad = chosen[(chosen < 0) | (chosen >= n)]
    if bad.size or not chosen.size:
        has = f"streams 0 to {n - 1}" if n else "no TCP stream"
        what = f"no stream {int(bad[0])}" if bad.size else "no stream chosen"
        raise UsageError(f"{what} (the capture has {has})")
    return chosen


def carve(
    run: Run, streams: Iterable[int], path: str | os.PathLike[str], *, fmt: str = "auto",
    force: bool = False,
) -> CarveSummary:  # fmt: skip
    """Write the records of ``streams`` (tcp.stream indexes) to the capture file ``path``:
    every record of those sessions -- handshake, retransmissions, each fragment of their
    datagrams -- verbatim, in capture order, with their timestamps and link types. pcap,
    unless ``fmt`` or a ``.pcapng`` name asks for pcapng or the records' link types differ.
    An existing ``path`` is replaced only with ``force``; the file appears (by rename) once
    complete."""
    path = os.fspath(path)
    kind = format_for_path(path, fmt)
    if os.path.exists(path) and not force:
        raise UsageError(f"{path}: the file exists (--force replaces it)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UsageError(f"{path}: no such directory")
    chosen = _chosen(run, streams)
    origins = run._fragment_origins()
    todo = [p for p, r in enumerate(run.ranks()) if np.isin(r, chosen).any()]
    partial = os.path.join(os.path.dirname(os.path.abspath(path)),
                           f".{os.path.basename(path)}.tcpweave-{os.getpid()}.tmp")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="tcpweave-carve-") as tmp:
        if run.in_memory:
            tables = [t for _, t in run.map(carve_partition, chosen, origins, None, todo=todo)]
            windows: Windows = lambda: iter(  # noqa: E731
                (t.column("frame").to_numpy(), np.zeros(len(t), np.int64)) for t in tables
            )
        else:
            files = [f for _, f in run.map(carve_partition, chosen, origins, tmp, todo=todo)]
            merged = keyed_windows(files)
            windows = lambda: ((f, np.zeros(len(f), np.int64)) for f, _ in merged())  # noqa: E731
        carver = Carver(kind, lambda key, again: open_output(partial, again))
        try:
            _two_passes(run, carver, windows)
            os.replace(partial, path)
        except BaseException:
            carver.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
            raise
    return CarveSummary(len(chosen), carver.records, carver.kind(0))


def write_session_captures(
    run: Run, windows: Windows, out_dir: str, names: Callable[[int], str], fmt: str = "auto"
) -> int:
    """One capture file per session named in ``windows`` (its records: ``carve``), at
    ``out_dir/names(stream)``; the files must not exist. Returns the records written."""

    def open_file(stream: int, again: bool) -> Any:
        path = os.path.join(out_dir, names(stream))
        if not again:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        return open_output(path, again)

    carver = Carver(fmt, open_file)
    try:
        _two_passes(run, carver, windows)
    finally:
        carver.close()
    return carver.records


def _two_passes(run: Run, carver: Carver, windows: Windows) -> None:
    """Learn what each file needs, then write the records (the capture walked twice)."""
    with run._capture_sources() as sources:
        for got in picked(sources, windows()):
            carver.learn(got)
        carver.check()
        for got in picked(sources, windows()):
            carver.write(got, sources[got.file].buffer)
    carver.close()
