"""Checksum offload: which sending hosts' bad TCP checksums are an artefact of the capture.

A host that hands checksum computation to its network card is captured before the card
fills the checksum in, so every segment it sends shows a bad TCP checksum although the
wire carried good ones. Under ``--checksums auto`` such a host's segments are kept; every
other segment with a bad checksum is dropped (the receiver dropped it, RFC 9293 §3.10.7.1).

The rule (docs/reassembly-rules.md, "Checksum offload") looks at everything the capture
shows about the sending host, over all of its flows, not one direction alone -- so it is
decided once per run (``offloaded_hosts`` over every partition's ``checksum_evidence``)
and every command applies the same verdict at every size: the hosts that sent a bad
checksum anywhere (``bad_senders``) are gathered first, then every part of the capture
reports its ``checksum_evidence`` about them. A host (source address) is
offloaded when

1. it sent at least one segment with data, SYN or FIN whose TCP checksum could be
   verified, and every such segment on every flow is bad (pure ACKs are left out: some
   stacks compute those in software even with offload on); and
2. the capture shows the segments were good on the wire: a peer acknowledged sequence
   space of at least one of them (the SYN-ACK answering its SYN counts, so a capture that
   ends before the data is acknowledged still shows it), or the host's IPv4 header
   checksums are bad as well on every packet that carries one (stacks that offload both,
   as Windows does, leave both unfilled in the capture).

Besides the host rule, a direction whose data segments all carry bad checksums while
the peer's acknowledgement numbers advance is kept (the receiver took the data; decided
per direction by ``plan``). A host whose bad segments nobody answered and whose IPv4
headers are correct is indistinguishable from corrupted or inserted segments: they stay
dropped (``--checksums ignore`` keeps them).
"""

from __future__ import annotations

import numpy as np

from tcpweave.decode.table import ACK, FIN, SYN, PacketTable
from tcpweave.enums import Checksum
from tcpweave.flows import Flows

__all__ = [
    "EVIDENCE_DTYPE",
    "bad_senders",
    "checksum_evidence",
    "offloaded_hosts",
    "sender_offloaded",
]

#: what one part of the capture shows about one sending host
EVIDENCE_DTYPE = np.dtype(
    [
        ("host", np.uint8, (16,)),
        ("known", np.int64),  # segments with data, SYN or FIN and a verified TCP checksum
        ("bad", np.int64),  # ... of which bad
        ("answered", np.bool_),  # a peer acknowledged some of its sequence space
        ("ip_known", np.int64),  # packets with a verified IPv4 header checksum
        ("ip_bad", np.int64),  # ... of which bad
    ]
)


def _as_keys(addresses: np.ndarray) -> np.ndarray:
    """16-byte addresses as one opaque scalar each (for unique / isin)."""
    return np.ascontiguousarray(addresses).view(np.dtype((np.void, 16))).ravel()


def _signed32(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.int64) + (1 << 31)) % (1 << 32)) - (1 << 31)


def bad_senders(packets: PacketTable) -> np.ndarray:
    """The hosts (16-byte addresses, sorted) that sent a segment with data, SYN or FIN and
    a bad TCP checksum: the only ones whose evidence is needed."""
    bad = _counted(packets) & (packets.tcp_checksum == Checksum.BAD)
    if not bad.any():
        return np.zeros((0, 16), np.uint8)
    hosts = np.unique(_as_keys(packets.src[bad]))
    return np.frombuffer(hosts.tobytes(), np.uint8).reshape(-1, 16).copy()


def _counted(packets: PacketTable) -> np.ndarray:
    return np.asarray((packets.payload_len > 0) | ((packets.flags & (SYN | FIN)) != 0))


def checksum_evidence(
    packets: PacketTable, flows: Flows, hosts: np.ndarray | None = None
) -> np.ndarray:
    """What this part of the capture shows about ``hosts`` as senders (default: the hosts
    that sent a bad TCP checksum here); one row per host of ``hosts`` that sent here."""
    if hosts is None:
        hosts = bad_senders(packets)
    wanted = np.unique(_as_keys(hosts))
    keys = _as_keys(packets.src)
    rows = np.flatnonzero(np.isin(keys, wanted))
    if not len(rows):
        return np.zeros(0, EVIDENCE_DTYPE)
    present, first, host_of = np.unique(keys[rows], return_index=True, return_inverse=True)
    n = len(present)
    out = np.zeros(n, EVIDENCE_DTYPE)
    out["host"] = packets.src[rows[first]]
    counted = _counted(packets)[rows]
    ck = packets.tcp_checksum[rows]
    known = counted & np.isin(ck, (Checksum.OK, Checksum.BAD))
    out["known"] = np.bincount(host_of, weights=known, minlength=n).astype(np.int64)
    out["bad"] = np.bincount(host_of, weights=counted & (ck == Checksum.BAD), minlength=n).astype(
        np.int64
    )
    ip = packets.ip_checksum[rows]
    ip_known = np.isin(ip, (Checksum.OK, Checksum.BAD))
    out["ip_known"] = np.bincount(host_of, weights=ip_known, minlength=n).astype(np.int64)
    out["ip_bad"] = np.bincount(host_of, weights=ip == Checksum.BAD, minlength=n).astype(np.int64)
    out["answered"] = _answered(packets, flows, rows, host_of, n)
    return out


def _answered(
    packets: PacketTable, flows: Flows, rows: np.ndarray, host_of: np.ndarray, n: int
) -> np.ndarray:
    """Per host: does an acknowledgement from the peer cover some of its sequence space?

    Each direction the hosts sent is measured from the sequence number of its first
    packet (32-bit distances, so a direction that wraps stays whole): its sequence space
    runs from the lowest start to the highest end (SYN and FIN count one each). A peer
    acknowledgement that lands above the lowest start and at most at the highest end
    acknowledges some of it.
    """
    key = flows.stream[rows].astype(np.int64) * 2 + flows.direction[rows]
    dirs, first_of_dir, dir_of_row = np.unique(key, return_index=True, return_inverse=True)
    ref = packets.seq[rows[first_of_dir]].astype(np.int64)
    rel = _signed32(packets.seq[rows].astype(np.int64) - ref[dir_of_row])
    flags = packets.flags[rows]
    end = rel + packets.payload_len[rows] + ((flags & SYN) != 0) + ((flags & FIN) != 0)
    lo = np.full(len(dirs), np.iinfo(np.int64).max)
    hi = np.full(len(dirs), np.iinfo(np.int64).min)
    np.minimum.at(lo, dir_of_row, rel)
    np.maximum.at(hi, dir_of_row, end)
    # the peers' acknowledgements: packets of the opposite direction of those streams
    peer_key = flows.stream.astype(np.int64) * 2 + (flows.direction ^ 1)
    acks = np.flatnonzero(((packets.flags & ACK) != 0) & np.isin(peer_key, dirs))
    d = np.searchsorted(dirs, peer_key[acks])
    ack_rel = _signed32(packets.ack[acks].astype(np.int64) - ref[d])
    hit = (ack_rel > lo[d]) & (ack_rel <= hi[d])
    dir_answered = np.zeros(len(dirs), np.bool_)
    dir_answered[d[hit]] = True
    host_of_dir = host_of[first_of_dir]
    answered = np.zeros(n, np.bool_)
    answered[host_of_dir[dir_answered]] = True
    return answered


def offloaded_hosts(evidence: list[np.ndarray]) -> np.ndarray:
    """The hosts judged offloaded (16-byte addresses, sorted), from every partition's
    evidence (the rule in the module docstring)."""
    ev = np.concatenate([np.zeros(0, EVIDENCE_DTYPE), *evidence])
    if not len(ev):
        return np.zeros((0, 16), np.uint8)
    hosts, host_of = np.unique(_as_keys(ev["host"]), return_inverse=True)
    n = len(hosts)

    def total(field: str) -> np.ndarray:
        return np.bincount(host_of, weights=ev[field], minlength=n)

    known, bad, ip_known, ip_bad = (total(f) for f in ("known", "bad", "ip_known", "ip_bad"))
    answered = total("answered") > 0
    all_bad = (known > 0) & (bad == known)
    ip_all_bad = (ip_known > 0) & (ip_bad == ip_known)
    chosen = hosts[all_bad & (answered | ip_all_bad)]
    return np.frombuffer(chosen.tobytes(), np.uint8).reshape(-1, 16).copy()


def sender_offloaded(packets: PacketTable, rows: np.ndarray, hosts: np.ndarray) -> np.ndarray:
    """For each row in ``rows``: is its sender one of ``hosts``?"""
    if not len(hosts) or not len(rows):
        return np.zeros(len(rows), np.bool_)
    return np.isin(_as_keys(packets.src[rows]), _as_keys(hosts))
