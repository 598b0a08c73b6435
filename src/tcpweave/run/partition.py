"""One partition of a run, seen as a small capture.

``packets`` is its packet table in frame order, ``flows`` its sessions (numbered locally,
in order of first packet), ``sources`` where its payload bytes are (row ``r``'s payload is
``sources[packets.file[r]].buffer[payload_offset : + payload_caplen]``), and
``global_index`` maps its local stream numbers to the capture's (``tcp.stream``). A
capture read whole is one partition whose sources are the capture files themselves; a
spilled partition's sources are its payload spill files.
"""

from __future__ import annotations

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

__all__ = ["Partition", "load"]

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
    ) -> None:
        self.index = index  # the partition's number in its run
        self._on_discard = on_discard
        self._capture = capture_columns
        self.defrag_file = defrag_file  # the capture ``file`` of datagrams rebuilt from fragments
        self.packets = packets
        self._sources = sources  # or how to open them: mapped on first use
        self.settings = settings
        self._flows: Flows | None = None
        self._global_index = global_index
        self._plan: Plan | None = None
        if isinstance(packets.columns, SpilledColumns):
            self._number_sessions()

    def _number_sessions(self) -> Flows:
        packets = self.packets
        if isinstance(packets.columns, SpilledColumns):  # what numbering sessions reads, at once
            packets.columns.load([*FLOW_COLUMNS, "ip_version"])  # and the endpoints kept below
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
    (numbering sessions needs none)."""
    paths = layout.files(p, "payload")
    packets, columns = load_partition(layout, p)
    return Partition(packets, lambda: [MappedFile(f) for f in paths], settings, global_index, p,
                     lambda: layout.remove(p), columns, layout.n_files)  # fmt: skip
