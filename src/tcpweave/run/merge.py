"""Merging per-partition tables into one, in bounded memory.

A per-partition task writes its table, sorted by a key column (global stream index, or
frame number), to an Arrow IPC file with one record batch per window of ``window``
consecutive key values (``write_keyed``). The merge takes window after window -- that
window's batch of every file --, sorts it by the key (stable: rows of one key come from
one partition, already in order) and hands it to a sink (``merge_keyed``). The merged rows
and their order are those of the whole capture's table; only one window is in memory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

__all__ = ["KeyedFile", "merge_keyed", "write_keyed"]


@dataclass(frozen=True)
class KeyedFile:
    """An IPC file of one partition's rows and the key window of each of its batches."""

    path: str
    windows: tuple[int, ...]


def write_keyed(table: pa.Table, key: str, window: int, directory: str, name: str) -> KeyedFile:
    """Write ``table`` (sorted by ``key``) to ``directory/name.arrow``, one record batch per
    window of ``window`` key values that has rows."""
    path = os.path.join(directory, f"{name}.arrow")
    keys = table.column(key).to_numpy()
    batch = keys // window
    starts = np.flatnonzero(np.r_[True, batch[1:] != batch[:-1]]) if len(keys) else np.zeros(0)
    bounds = np.append(starts, len(keys)).astype(np.int64)
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            writer.write_table(table.slice(lo, hi - lo), max_chunksize=hi - lo)
    return KeyedFile(path, tuple(batch[starts.astype(np.int64)].tolist()))


def merge_keyed(files: list[KeyedFile], key: str) -> Iterator[pa.Table]:
    """The rows of every file, a window at a time, in key order."""
    with contextlib.ExitStack() as stack:
        readers = []
        for f in files:
            handle = stack.enter_context(pa.OSFile(f.path, "rb"))
            readers.append(pa.ipc.open_file(handle))
        # (window, file, batch position in its file) in window order
        todo = sorted((w, i, j) for i, f in enumerate(files) for j, w in enumerate(f.windows))
        at = 0
        while at < len(todo):
            end = at
            while end < len(todo) and todo[end][0] == todo[at][0]:
                end += 1
            table = pa.Table.from_batches([readers[i].get_batch(j) for _, i, j in todo[at:end]])
            order = np.argsort(table.column(key).to_numpy(), kind="stable")
            yield table.take(order)
            at = end
