"""run/: the one engine under every command.

A ``Run`` cuts a capture into partitions (one in memory when it is small, flow-hashed
spill files otherwise) and maps a per-partition function over them on an executor
(this process, forked workers, Dask); each command is that function plus a merge
(``commands.py``, ``extraction.py``). See ``driver.py`` for the theory of operation.
"""

from __future__ import annotations

from tcpweave.run.commands import (
    audit,
    follow_stream,
    packet_rows,
    pdu_windows,
    pdus,
    sessions,
    stream_count,
)
from tcpweave.run.driver import MIN_FRAME_BYTES, ROWS_PER_PARTITION, Run, fits_whole
from tcpweave.run.executors import DaskPool, Executor, InProcess, LocalPool, executor_for
from tcpweave.run.extraction import extract
from tcpweave.run.partition import Partition
from tcpweave.run.settings import Settings

__all__ = [
    "MIN_FRAME_BYTES",
    "ROWS_PER_PARTITION",
    "DaskPool",
    "Executor",
    "InProcess",
    "LocalPool",
    "Partition",
    "Run",
    "Settings",
    "audit",
    "executor_for",
    "extract",
    "fits_whole",
    "follow_stream",
    "packet_rows",
    "pdu_windows",
    "pdus",
    "sessions",
    "stream_count",
]
