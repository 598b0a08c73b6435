"""The audit of one capture: figures, verification matrix, verdicts, and its stable JSON.

A stream's verdict is ``exact`` when none of the :class:`Reason` applies to
it; otherwise the list of reasons. The capture-level summary says how many
streams, and how many of their bytes, are exact: what can be stood behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from tcpweave.decode.table import FIN, RST, PacketTable, format_address
from tcpweave.enums import Checksum, GapReason
from tcpweave.flows import Flows
from tcpweave.reassembly import Plan

from .figures import (
    DEFAULT_PORT_RANGE,
    PacketFigures,
    PortGroups,
    PortReuse,
    StreamFigures,
    merge_port_groups,
    packet_figures,
    port_groups,
    port_reuse_of,
    stream_figures,
    stream_kind,
    streams_with_syn,
)
from .matrix import MAX_OCCURRENCES, MAX_SCAN_BYTES, Matrix

#: version of the JSON layout below; bumped on any incompatible change
JSON_VERSION = 1
#: payloads shorter than this repeat by nature (keystrokes, "\r\n"): not "ambiguous"
AMBIGUOUS_MIN_LEN = 8


class Reason(IntEnum):
    """Why a stream is not ``exact`` (bit ``1 << value`` in ``Audit.reasons``)."""

    GAPS = 0  # bytes never captured
    CONFLICTS = 1  # overlapping segments with different bytes
    TRUNCATED = 2  # a packet captured short of its wire length
    BAD_CHECKSUM = 3  # a packet with a bad IPv4 header or TCP checksum
    AMBIGUOUS = 4  # a payload occurs at several offsets of its stream
    MID_STREAM = 5  # no SYN: the capture started after the connection did
    UNCLOSED = 6  # no FIN or RST in either direction

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")


@dataclass
class Audit:
    """Everything ``tcpweave audit`` reports; :meth:`to_dict` is the ``--json`` layout."""

    captures: list[str]
    policy: str
    checksums: str
    packet: PacketFigures
    stream: StreamFigures
    reuse: PortReuse
    #: the verification matrix; None when the audit ran partition by partition (the matrix
    #: then went straight to the --matrix file, see ``tcpweave.audit.partitioned``)
    matrix: Matrix | None
    reasons: np.ndarray  # per stream: bit mask of Reason
    stream_bytes: np.ndarray  # per stream: kept bytes, both directions
    has_syn: np.ndarray
    endpoints: dict[int, tuple[str, int, str, int]]  # mismatching streams: client, server
    gaps: int = 0  # continuity breaks of the matrix: gaps
    overlaps: int = 0  # and overlaps

    @property
    def exact(self) -> np.ndarray:
        return np.asarray(self.reasons == 0)

    def reasons_of(self, stream: int) -> list[str]:
        mask = int(self.reasons[stream])
        return [str(r) for r in Reason if mask >> r & 1]

    def reason_counts(self) -> dict[str, int]:
        return {str(r): int(np.count_nonzero(self.reasons >> r & 1)) for r in Reason}

    def mismatches(self) -> list[dict[str, Any]]:
        """Streams behind E != S: flag-sessions they open against streams produced."""
        out = []
        for s in self.stream.mismatches().tolist():
            c, cp, srv, sp = self.endpoints[s]
            out.append({
                "stream": s, "client": f"{c}:{cp}", "server": f"{srv}:{sp}",
                "flag_sessions": int(self.stream.opened[s]),
                "produced": int(self.stream.produced[s]),
                "kind": stream_kind(bool(self.has_syn[s]), bool(self.stream.produced[s])),
            })  # fmt: skip
        return out

    def summary(self) -> dict[str, int]:
        exact = self.exact
        return {
            "streams": len(self.reasons),
            "exact_streams": int(np.count_nonzero(exact)),
            "bytes": int(self.stream_bytes.sum()),
            "exact_bytes": int(self.stream_bytes[exact].sum()),
        }

    def figure_rows(self) -> list[tuple[str, str, str]]:
        """The figures as ``tcpweave audit`` and the HTML report show them: (figure, value,
        what it counts), one line each (docs/audit.md defines them)."""
        pk, st, ru = self.packet, self.stream, self.reuse
        s = self.summary()
        reasons = ", ".join(f"{k} {v:,}" for k, v in self.reason_counts().items() if v)
        return [
            ("P_c", _share(pk.bad_checksum, pk.packets), "packets with a bad IPv4/TCP checksum"),
            ("P_f", _share(pk.fragmented, pk.packets), "packets that arrived as IP fragments"),
            ("P_dH", _share(pk.truncated, pk.packets), "packets captured short of wire length"),
            ("E", f"{st.E:,}", "sessions counted from TCP flags alone"),
            ("S", f"{st.S:,}", f"streams produced (with bytes; {st.sessions:,} sessions in all)"),
            ("E - S", f"{st.delta:,}", f"I_p = {_opt(st.I_p)}   A_p = {_opt(st.A_p)}"),
            ("P_spec", _share(st.reused_tuples, st.tuples), "4-tuples carrying several sessions"),
            ("P_b", f"{ru.expected:.4g}", f"expected groups with a reused client port "
             f"(P_r = {ru.P_r:,}); observed {ru.observed:,} of {ru.groups:,}"),
            ("breaks", f"{self.gaps:,} / {self.overlaps:,}",
             "gaps / overlaps against s'_i = s'_(i-1) + lambda_(i-1)"),
            ("exact", f"{s['exact_streams']:,} of {s['streams']:,}",
             f"streams; {s['exact_bytes']:,} of {s['bytes']:,} bytes can be stood behind"),
            ("reasons", "", reasons or "none"),
        ]  # fmt: skip

    def to_dict(self, per_stream: bool = True) -> dict[str, Any]:
        """The stable JSON layout (documented in docs/audit.md)."""
        pk, st, ru = self.packet, self.stream, self.reuse
        out: dict[str, Any] = {
            "version": JSON_VERSION,
            "captures": self.captures,
            "policy": self.policy,
            "checksums": self.checksums,
            "packets": {
                "total": pk.packets, "bad_checksum": pk.bad_checksum, "P_c": pk.P_c,
                "fragmented": pk.fragmented, "P_f": pk.P_f,
                "truncated": pk.truncated, "P_dH": pk.P_dH,
            },
            "streams": {
                "E": st.E, "S": st.S, "delta": st.delta, "I_p": st.I_p, "A_p": st.A_p,
                "sessions": st.sessions, "tuples": st.tuples,
                "reused_tuples": st.reused_tuples, "P_spec": st.P_spec,
                "mismatches": self.mismatches(),
            },
            "port_reuse": {
                "port_range": list(ru.port_range), "P_r": ru.P_r, "groups": ru.groups,
                "expected_groups_with_reuse": ru.expected,
                "observed_groups_with_reuse": ru.observed, "largest": ru.top,
            },
            "continuity": {"gaps": self.gaps, "overlaps": self.overlaps},
            "occurrences": {"max_count": MAX_OCCURRENCES, "max_scan_bytes": MAX_SCAN_BYTES,
                            "ambiguous_min_len": AMBIGUOUS_MIN_LEN},
            "verdicts": {**self.summary(), "reasons": self.reason_counts()},
        }  # fmt: skip
        if per_stream:
            out["per_stream"] = [
                {"stream": s, "verdict": "exact" if not r else self.reasons_of(s),
                 "bytes": int(b)}
                for s, (r, b) in enumerate(zip(self.reasons.tolist(), self.stream_bytes.tolist(),
                                               strict=True))
            ]  # fmt: skip
        return out


def _share(num: int, den: int) -> str:
    return f"{num:,} / {den:,}" + (f"  ({num / den:.4%})" if den else "")


def _opt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@dataclass
class AuditPart:
    """The audit of some of a capture's sessions (one partition, or all of them), their
    streams numbered with the capture's indexes (``streams``: local session -> global).

    Everything in it is either a count that adds up over parts, or per stream, or per
    4-tuple (a 4-tuple lies in one partition), or the P_b groups, merged by key.
    """

    packet: PacketFigures
    E: int
    tuples: int
    reused_tuples: int
    streams: np.ndarray
    opened: np.ndarray
    produced: np.ndarray
    reasons: np.ndarray
    stream_bytes: np.ndarray
    has_syn: np.ndarray
    endpoints: dict[int, tuple[str, int, str, int]]
    groups: PortGroups
    gaps: int
    overlaps: int
    #: a file holding this part's matrix rows, when it was written out (run/commands.py)
    matrix_file: str | None = None
    matrix_batches: list[int] | None = None
    #: the part's matrix itself, when it is kept in memory (a capture read whole)
    matrix: Matrix | None = None


def audit_part(
    packets: PacketTable, flows: Flows, plan: Plan, matrix: Matrix, global_index: np.ndarray
) -> AuditPart:
    """The share of one partition (or of the whole capture, ``global_index`` the identity)."""
    has_syn = streams_with_syn(packets, flows)
    d = plan.directions
    stream_bytes = np.bincount(d["stream"], weights=d["bytes"], minlength=flows.n_streams)
    figures = stream_figures(packets, flows, plan)
    endpoints = _endpoints(packets, flows, figures.mismatches())
    kind = matrix.breaks["kind"]
    return AuditPart(
        packet_figures(packets),
        figures.E,
        figures.tuples,
        figures.reused_tuples,
        np.asarray(global_index, np.int64),
        figures.opened,
        figures.produced,
        _reasons(packets, flows, plan, matrix, has_syn),
        stream_bytes.astype(np.int64),
        has_syn,
        {int(global_index[s]): v for s, v in endpoints.items()},
        port_groups(packets, flows, global_index),
        int(np.count_nonzero(kind == 0)),
        int(np.count_nonzero(kind == 1)),
    )


def merge_parts(
    parts: list[AuditPart],
    captures: list[str],
    policy: str,
    checksums: str,
    port_range: tuple[int, int] = DEFAULT_PORT_RANGE,
) -> Audit:
    """One capture's audit from the audits of its partitions (whose streams, together, are
    numbered 0..n-1 once each). The matrix is left out (``Audit.matrix`` is None)."""
    n = sum(len(p.streams) for p in parts)
    per_stream = {name: np.zeros(n, dtype) for name, dtype in (
        ("opened", np.int64), ("produced", np.int64), ("reasons", np.int64),
        ("stream_bytes", np.int64), ("has_syn", np.bool_))}  # fmt: skip
    endpoints: dict[int, tuple[str, int, str, int]] = {}
    for p in parts:
        for name, out in per_stream.items():
            out[p.streams] = getattr(p, name)
        endpoints.update(p.endpoints)
    total = {name: sum(getattr(p.packet, name) for p in parts)
             for name in ("packets", "bad_checksum", "fragmented", "truncated")}  # fmt: skip
    produced = per_stream["produced"]
    figures = StreamFigures(
        sum(p.E for p in parts),
        int(produced.sum()),
        n,
        sum(p.tuples for p in parts),
        sum(p.reused_tuples for p in parts),
        per_stream["opened"],
        produced,
    )
    return Audit(
        captures,
        policy,
        checksums,
        PacketFigures(**total),
        figures,
        port_reuse_of(merge_port_groups([p.groups for p in parts]), port_range),
        None,
        per_stream["reasons"],
        per_stream["stream_bytes"],
        per_stream["has_syn"],
        dict(sorted(endpoints.items())),
        sum(p.gaps for p in parts),
        sum(p.overlaps for p in parts),
    )


def _any_per_stream(flows: Flows, mask: np.ndarray) -> np.ndarray:
    return np.bincount(flows.stream[mask], minlength=flows.n_streams) > 0


def _reasons(
    packets: PacketTable, flows: Flows, plan: Plan, matrix: Matrix, has_syn: np.ndarray
) -> np.ndarray:
    n = flows.n_streams
    g = plan.gaps
    c = matrix.columns
    ambiguous_rows = (c["occurrences"] >= 2) & (c["payload_len"] >= AMBIGUOUS_MIN_LEN)
    bad = (packets.ip_checksum == Checksum.BAD) | (packets.tcp_checksum == Checksum.BAD)
    checks = {
        Reason.GAPS: np.bincount(g["stream"][g["reason"] == GapReason.NOT_CAPTURED], minlength=n)
        > 0,
        Reason.CONFLICTS: np.bincount(plan.conflicts["stream"], minlength=n) > 0,
        Reason.TRUNCATED: _any_per_stream(flows, packets.caplen < packets.wirelen),
        Reason.BAD_CHECKSUM: _any_per_stream(flows, bad),
        Reason.AMBIGUOUS: np.bincount(c["stream"][ambiguous_rows], minlength=n) > 0,
        Reason.MID_STREAM: ~has_syn,
        Reason.UNCLOSED: ~_any_per_stream(flows, (packets.flags & (FIN | RST)) != 0),
    }
    out = np.zeros(n, np.int64)
    for reason, hit in checks.items():
        out |= hit[:n].astype(np.int64) << int(reason)
    return out


def _endpoints(
    packets: PacketTable, flows: Flows, streams: np.ndarray
) -> dict[int, tuple[str, int, str, int]]:
    """(client address, port, server address, port) of the given streams."""
    out = {}
    for s in streams.tolist():
        r = int(flows.first_row[s])
        v = int(packets.ip_version[r])
        a = (format_address(packets.src[r], v), int(packets.sport[r]))
        b = (format_address(packets.dst[r], v), int(packets.dport[r]))
        (ca, cp), (sa, sp) = (a, b) if flows.direction[r] == 0 else (b, a)
        out[s] = (ca, cp, sa, sp)
    return out
