"""The record index: one row per captured frame, the contract between capture/ and decode/."""

from __future__ import annotations

from collections import namedtuple
from typing import Any

import numpy as np

#: Columns of the record index. ``offset`` is where the frame's bytes start in
#: the source buffer; ``interface`` is a global pcapng interface slot (0 for pcap).
RECORD_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("offset", np.int64),
    ("caplen", np.int64),
    ("wirelen", np.int64),
    ("ts_ns", np.int64),
    ("linktype", np.int32),
    ("interface", np.int32),
)

RecordColumns = namedtuple("RecordColumns", [name for name, _ in RECORD_COLUMNS])  # type: ignore[misc]

#: Per-interface properties read from pcapng IDBs.
INTERFACE_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("linktype", np.int32),
    ("snaplen", np.int64),
    ("ts_binary", np.int64),
    ("ts_exponent", np.int64),
    ("ts_offset_sec", np.int64),
)

InterfaceColumns = namedtuple("InterfaceColumns", [name for name, _ in INTERFACE_COLUMNS])  # type: ignore[misc]


def empty_records(n: int) -> Any:
    """Fresh, zeroed record columns for ``n`` rows."""
    return RecordColumns(*(np.zeros(n, dtype) for _, dtype in RECORD_COLUMNS))


def empty_interfaces(n: int) -> Any:
    return InterfaceColumns(*(np.zeros(n, dtype) for _, dtype in INTERFACE_COLUMNS))


def concat_records(parts: list[Any]) -> Any:
    """Join record chunks column by column."""
    if len(parts) == 1:
        return parts[0]
    return RecordColumns(*(np.concatenate(cols) for cols in zip(*parts, strict=True)))


def slice_records(rec: Any, n: int) -> Any:
    return RecordColumns(*(col[:n] for col in rec))
