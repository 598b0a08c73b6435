"""run/: the one engine under every command.

A ``Run`` cuts a capture into partitions (one in memory when it is small, flow-hashed
spill files otherwise) and maps a per-partition function over them on an executor
(this process, forked workers, Dask); each command is that function plus a merge
(``commands.py``, ``extraction.py``). See ``driver.py`` for the theory of operation.

Each name is imported on first use (``tcpweave._lazy``), so that ``tcpweave.run.settings``
(the command line's defaults) comes without the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tcpweave import _lazy

if TYPE_CHECKING:
    from tcpweave.run.commands import (
        audit,
        follow_stream,
        packet_rows,
        pdu_windows,
        pdus,
        sessions,
        stream_count,
    )
    from tcpweave.run.driver import MIN_FRAME_BYTES, Run, fits_whole
    from tcpweave.run.executors import DaskPool, Executor, InProcess, LocalPool, executor_for
    from tcpweave.run.extraction import extract
    from tcpweave.run.partition import Partition
    from tcpweave.run.settings import ROWS_PER_PARTITION, Settings

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

__getattr__, __dir__ = _lazy.attach(
    __name__,
    {
        "tcpweave.run.commands": (
            "audit",
            "follow_stream",
            "packet_rows",
            "pdu_windows",
            "pdus",
            "sessions",
            "stream_count",
        ),
        "tcpweave.run.driver": ("MIN_FRAME_BYTES", "Run", "fits_whole"),
        "tcpweave.run.executors": (
            "DaskPool",
            "Executor",
            "InProcess",
            "LocalPool",
            "executor_for",
        ),
        "tcpweave.run.extraction": ("extract",),
        "tcpweave.run.partition": ("Partition",),
        "tcpweave.run.settings": ("ROWS_PER_PARTITION", "Settings"),
    },
)
