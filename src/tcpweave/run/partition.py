"""One partition of a run, seen as a small capture.

``packets`` is its packet table in frame order, ``flows`` its sessions (numbered locally,
in order of first packet), ``sources`` where its payload bytes are (row ``r``'s payload is
``sources[packets.file[r]].buffer[payload_offset : + payload_caplen]``), and
``global_index`` maps its local stream numbers to the capture's (``tcp.stream``). A
capture read whole is one partition whose sources are the capture files themselves; a
spilled partition's sources are its payload spill files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from tcpweave.decode.table import PacketTable
from tcpweave.flows import Flows, assign
from tcpweave.output.streams import StreamViews
from tcpweave.reassembly import Plan, plan
from tcpweave.run.settings import Settings
from tcpweave.run.spill import MappedFile, SpilledColumns, SpillLayout, load_partition

__all__ = ["Partition", "load", "save_flows"]

#: the columns numbering sessions reads (``flows.assign``): read in one pass
FLOW_COLUMNS = ("src", "dst", "sport", "dport", "flags", "seq", "ts_ns")
#: what writers read of each session's first packet (its endpoints)
ENDPOINT_COLUMNS = ("ip_version", "src", "dst", "sport", "dport")
#: the columns planning reads (``reassembly.plan``)
PLAN_COLUMNS = ("seq", "ack", "flags", "window", "wscale", "payload_len", "payload_caplen",
                "payload_offset", "file", "frame", "ts_ns", "tcp_checksum")  # fmt: skip


class Partition:
    """Packets, flows, sources and global stream numbers of one partition; ``plan()`` and
    ``views()`` with the run's settings, computed once."""

    def __init__(
        self,
        packets: PacketTable,
        sources: list[Any] | Callable[[], list[Any]],
        settings: Settings,
        global_index: np.ndarray | None = None,
        index: int = 0,
        on_discard: Callable[[], None] | None = None,
        capture_columns: tuple[np.ndarray, np.ndarray] | SpilledColumns | None = None,
        defrag_file: int = -1,
        flows: Flows | None = None,
    ) -> None:
        """``flows``: the partition's sessions as numbered before (by step 2 of its run,
        ``save_flows``), else they are numbered here."""
        self.index = index  # the partition's number in its run
        self._on_discard = on_discard
        self._capture = capture_columns
        self.defrag_file = defrag_file  # the capture ``file`` of datagrams rebuilt from fragments
        self.packets = packets
        self._sources = sources  # or how to open them: mapped on first use
        self.settings = settings
        self._flows: Flows | None = flows
        self._global_index = global_index
        self._plan: Plan | None = None
        if isinstance(packets.columns, SpilledColumns):
            self._number_sessions()

    def _number_sessions(self) -> Flows:
        packets = self.packets
        flows = self._flows
        if flows is None:
            if isinstance(packets.columns, SpilledColumns):  # what numbering reads, at once
                packets.columns.load([*FLOW_COLUMNS, "ip_version"])  # and the endpoints below
            flows = self._flows = assign(packets, self.settings.idle_timeout_ns)
        if isinstance(packets.columns, SpilledColumns):  # writers want them at first rows only
            first = np.sort(flows.first_row)
            packets.columns.keep_rows(first, list(ENDPOINT_COLUMNS))
            packets.columns.drop(list(ENDPOINT_COLUMNS))
        return flows

    @property
    def flows(self) -> Flows:
        """Session, stream and direction of every packet: numbered when first asked for (a
        spilled partition at once), so that a capture opened for its packet table alone
        does not number sessions."""
        return self._number_sessions() if self._flows is None else self._flows

    @property
    def global_index(self) -> np.ndarray:
        if self._global_index is None:
            self._global_index = np.arange(self.flows.n_streams, dtype=np.int64)
        return self._global_index

    @property
    def capture_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """``file`` and ``payload_offset`` as the capture gave them (a spilled partition's
        packet table points at its spill files instead)."""
        c = self._capture
        if c is None:
            return self.packets.file, self.packets.payload_offset
        if isinstance(c, SpilledColumns):
            got = c.load(["capture_file", "capture_offset"])
            return got["capture_file"], got["capture_offset"]
        return c

    @property
    def sources(self) -> list[Any]:
        if callable(self._sources):
            self._sources = self._sources()
        return self._sources

    def plan(self) -> Plan:
        if self._plan is None:
            if isinstance(self.packets.columns, SpilledColumns):  # read in one pass
                self.packets.columns.load(list(PLAN_COLUMNS))
            hosts = self.settings.offloaded
            offloaded = None if hosts is None else np.frombuffer(b"".join(hosts), np.uint8)
            self._plan = plan(
                self.packets, self.flows, self.sources, self.settings.policy,
                self.settings.checksums,
                None if offloaded is None else offloaded.reshape(-1, 16),
            )  # fmt: skip
        return self._plan

    def views(self) -> StreamViews:
        return StreamViews(self.packets, self.flows, self.plan(), self.sources)

    def discard(self) -> None:
        """Forget the plan and the sources, and remove a spilled partition's files (once its
        task is done with them for good)."""
        self._plan = None
        self._sources = []
        if self._on_discard is not None:
            self._on_discard()

    def packets_as_captured(self) -> pa.Table:
        """The packet table as Arrow, ``file`` and ``payload_offset`` as the capture gave
        them, with each packet's ``stream`` (the capture's), ``session`` and ``direction``."""
        table = self.packets.to_arrow()
        for name, col in zip(("file", "payload_offset"), self.capture_columns, strict=True):
            table = table.set_column(table.schema.get_field_index(name), name, pa.array(col))
        flows = self.flows
        return (
            table.append_column("stream", pa.array(self.global_index[flows.stream]))
            .append_column("session", pa.array(flows.session[flows.stream]))
            .append_column("direction", pa.array(flows.direction))
        )

    def header_cut(self) -> np.ndarray:
        """Rows whose frame the capture cut inside the TCP header (its payload would start
        beyond the captured bytes); never a datagram rebuilt from fragments."""
        capture_file, capture_offset = self.capture_columns
        p = self.packets
        return np.asarray(
            (capture_offset > p.offset + p.caplen) & (capture_file != self.defrag_file)
        )

    def local_stream(self, stream: int) -> int | None:
        """This partition's number for the capture's stream ``stream``, if it holds it."""
        hit = np.flatnonzero(self.global_index == stream)
        return int(hit[0]) if len(hit) else None


def load(
    layout: SpillLayout, p: int, settings: Settings, global_index: np.ndarray | None = None
) -> Partition:
    """Spilled partition ``p``; its payload files are mapped when a payload is first read
    (numbering sessions needs none). Its sessions are those step 2 numbered and saved
    (``save_flows``), if it did under the same settings."""
    paths = layout.files(p, "payload")
    packets, columns = load_partition(layout, p)
    return Partition(packets, lambda: [MappedFile(f) for f in paths], settings, global_index, p,
                     lambda: layout.remove(p), columns, layout.n_files,
                     _saved_flows(layout, p, settings, len(packets)))  # fmt: skip


def save_flows(layout: SpillLayout, part: Partition) -> None:
    """Keep partition ``part``'s sessions in its work directory, for its later steps: they
    are numbered once per run (renamed into place: a file there is whole)."""
    path = layout.path(part.index, "flows")
    arrays = {name: getattr(part.flows, name) for name in _FLOW_FIELDS}
    with open(path + ".tmp", "wb") as f:
        np.savez(f, idle_timeout_ns=np.int64(part.settings.idle_timeout_ns), **arrays)
    os.replace(path + ".tmp", path)


def _saved_flows(layout: SpillLayout, p: int, settings: Settings, rows: int) -> Flows | None:
    """Partition ``p``'s sessions as ``save_flows`` kept them, if they were numbered under
    the same idle timeout and for as many rows (else None: numbered again)."""
    try:
        with np.load(layout.path(p, "flows")) as z:
            if int(z["idle_timeout_ns"]) != settings.idle_timeout_ns:
                return None
            flows = Flows(**{name: z[name] for name in _FLOW_FIELDS})
    except (OSError, ValueError, KeyError):
        return None
    return flows if len(flows.stream) == rows else None


_FLOW_FIELDS = tuple(f.name for f in dataclasses.fields(Flows))
