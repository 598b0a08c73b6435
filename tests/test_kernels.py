"""Every registered kernel == its plain-Python reference, on generated and damaged inputs.

``tcpweave._jit.REGISTRY`` lists the kernels; each stage's ``_reference`` module
holds a function of the same name and signature. Both are fed copies of the
same arguments and must leave every output column, state array and error
column identical and return the same value. Inputs are valid-ish captures and
frames built here (random link types, IPv4/IPv6 headers with random fields,
extension headers, fragments, options, truncation), the same after random
damage, and raw random bytes. The ``quick`` tests use few examples so that
they also run with ``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import importlib
import inspect
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tcpweave.audit
import tcpweave.capture
import tcpweave.decode
import tcpweave.flows
import tcpweave.output
import tcpweave.reassembly
from conftest import corpus_captures
from tcpweave._jit import REGISTRY
from tcpweave.capture import source as capture_source
from tcpweave.capture.index import empty_interfaces, empty_records
from tcpweave.decode.fragments import empty_fragments
from tcpweave.decode.table import empty_packets
from test_audit_kernels import EXERCISED as EXERCISED_BY_AUDIT_TESTS
from test_bpf import EXERCISED as EXERCISED_BY_BPF_TESTS
from test_framing_properties import EXERCISED as EXERCISED_BY_FRAMING_PROPERTIES
from test_plan_properties import EXERCISED as EXERCISED_BY_PLAN_PROPERTIES
from test_sessions import EXERCISED as EXERCISED_BY_SESSION_TESTS

# imported for the kernels they register
assert tcpweave.capture and tcpweave.decode and tcpweave.flows and tcpweave.reassembly
assert tcpweave.audit  # its kernels: tests/test_audit_kernels.py

QUICK = settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
FULL = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

PCAP_SCAN = ("tcpweave.capture", "scan_pcap_records")
PCAPNG_SCAN = ("tcpweave.capture", "scan_pcapng_blocks")
DECODE = ("tcpweave.decode", "decode_records")


def reference_of(key: tuple[str, str]) -> Callable[..., Any] | None:
    stage, name = key
    return getattr(importlib.import_module(stage + "._reference"), name, None)


# ------------------------------------------------------------------------ comparing runs


def _copy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_copy(v) for v in value))
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value


def _arrays(value: Any, name: str) -> list[tuple[str, np.ndarray]]:
    """Every array reachable from an argument, named by its path (``rec.caplen``)."""
    if isinstance(value, np.ndarray):
        return [(name, value)]
    if isinstance(value, tuple):
        fields = getattr(value, "_fields", range(len(value)))
        return [a for f, v in zip(fields, value, strict=True) for a in _arrays(v, f"{name}.{f}")]
    return []


def _call(key: tuple[str, str], func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    # with the JIT off the kernel is numpy-scalar Python; int64 wrap-around is what the
    # compiled kernel does, so numpy's overflow warning is not an error here
    with np.errstate(over="ignore"):
        return func(*args)


def assert_same(key: tuple[str, str], kernel_args: tuple[Any, ...], ref_args: Any) -> None:
    """Call kernel and reference on copies of ``kernel_args``; compare everything after."""
    names = list(inspect.signature(reference_of(key)).parameters)  # type: ignore[arg-type]
    got = _call(key, REGISTRY[key], kernel_args)
    want = _call(key, reference_of(key), ref_args)  # type: ignore[arg-type]
    assert int(got) == int(want), f"{key[1]} returned {got}, reference {want}"
    for name, k_arg, r_arg in zip(names, kernel_args, ref_args, strict=True):
        for path, k_arr in _arrays(k_arg, name):
            r_arr = dict(_arrays(r_arg, name))[path]
            if not np.array_equal(k_arr, r_arr):
                bad = np.flatnonzero(np.asarray(k_arr != r_arr).reshape(len(k_arr), -1).any(1))
                raise AssertionError(
                    f"{key[1]}: {path} differs at rows {bad[:10].tolist()}: "
                    f"kernel {k_arr[bad[:5]].tolist()} reference {r_arr[bad[:5]].tolist()}"
                )


def run_scan(key: tuple[str, str], args: tuple[Any, ...], capacity: int) -> None:
    """Drive a scanning kernel as its wrapper does: fresh record columns until state says done.

    ``state`` and the error columns carry over from call to call, as in ``source._scan``.
    """
    names = list(inspect.signature(reference_of(key)).parameters)  # type: ignore[arg-type]
    rec_slot, state_slot = names.index("rec"), names.index("state")
    k_args, r_args = list(_copy(args)), list(_copy(args))
    for _ in range(10_000):
        k_args[rec_slot] = empty_records(capacity)
        r_args[rec_slot] = empty_records(capacity)
        assert_same(key, tuple(k_args), tuple(r_args))
        if k_args[state_slot][2]:  # ST_DONE
            return
    raise AssertionError("scanner made no progress")


# --------------------------------------------------------------------------- mutations


@st.composite
def damaged(draw: st.DrawFn, data: bytes, max_ops: int = 3) -> bytes:
    """``data`` after a few bit flips, overwrites with absurd values, cuts and insertions."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(["flip", "word", "cut", "insert", "delete"]))
        at = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "word":
            word = draw(st.sampled_from([0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 12, 0xFFFF]))
            buf[at : at + 4] = word.to_bytes(4, draw(st.sampled_from(["little", "big"])))
        elif op == "cut":
            del buf[at:]
        elif op == "insert":
            buf[at:at] = draw(st.binary(min_size=1, max_size=9))
        else:
            del buf[at : at + draw(st.integers(1, 9))]
    return bytes(buf)


def as_buffer(data: bytes, pad: int = 0) -> np.ndarray:
    """An aligned uint8 copy of ``data`` (as the memory map is), optionally shifted by ``pad``."""
    out = np.zeros(pad + len(data), np.uint8)
    out[pad:] = np.frombuffer(data, np.uint8)
    return out[pad:] if pad else out


# --------------------------------------------------------------------------------- pcap


@st.composite
def pcap_files(draw: st.DrawFn) -> tuple[bytes, bool, bool]:
    """(file bytes, big-endian, nanosecond) of a pcap file with random, mostly sane records."""
    swapped, nano = draw(st.booleans()), draw(st.booleans())
    order = ">" if swapped else "<"
    frac_limit = 10**9 if nano else 10**6
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    snaplen = draw(st.sampled_from([0, 60, 65535, 262144, 0xFFFFFFFF]))
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, 1)]
    sec = draw(st.integers(0, 2**32 - 1))
    for _ in range(draw(st.integers(0, 10))):
        data = draw(st.binary(max_size=90))
        sec = (sec + draw(st.sampled_from([0, 1, 86400 * 8]))) % 2**32
        frac = draw(st.one_of(st.integers(0, frac_limit - 1), st.integers(0, 2**32 - 1)))
        caplen = draw(
            st.sampled_from([len(data)] * 6 + [0, 0xFFFFFFFF, 300000, 70000, len(data) + 9])
        )
        wirelen = draw(st.sampled_from([caplen, caplen + 100, 0, 0x1000001]))
        out.append(struct.pack(order + "IIII", sec, frac, caplen, wirelen & 0xFFFFFFFF) + data)
    return draw(damaged(b"".join(out))), swapped, nano


@st.composite
def pcap_scans(draw: st.DrawFn, files: st.SearchStrategy[tuple[bytes, bool, bool]]) -> tuple:
    data, swapped, nano = draw(files)
    buf = as_buffer(data)
    snaplen = draw(st.sampled_from([0, 40, 65535, 262144]))
    max_caplen = draw(st.sampled_from([16, 100, 262144, 16 * 1024 * 1024]))
    state = np.zeros(capture_source.STATE_SLOTS, np.int64)
    state[0] = draw(st.sampled_from([24, 0, 1, 23]))
    state[1] = int(swapped)
    state[3] = draw(st.sampled_from([-1, 0, 2**31]))
    errs_n = draw(st.sampled_from([0, 1, 3, 1000]))
    errs = (
        np.zeros(errs_n, np.int64),
        np.zeros(errs_n, np.int32),
        np.zeros(errs_n, np.int64),
        np.zeros(errs_n, np.int64),
    )
    ts_scale, frac_limit = (1, 10**9) if nano else (1000, 10**6)
    args = (buf, ts_scale, frac_limit, snaplen, max_caplen, state, None, *errs)
    return args, draw(st.integers(1, 6))


def raw_pcap() -> st.SearchStrategy[tuple[bytes, bool, bool]]:
    return st.tuples(st.binary(max_size=400), st.booleans(), st.booleans())


@pytest.mark.quick
@QUICK
@given(pcap_scans(pcap_files()))
def test_scan_pcap_records_quick(case: tuple) -> None:
    run_scan(PCAP_SCAN, *case)


@FULL
@given(pcap_scans(st.one_of(pcap_files(), raw_pcap())))
def test_scan_pcap_records_matches_reference(case: tuple) -> None:
    run_scan(PCAP_SCAN, *case)


# ------------------------------------------------------------------------------- pcapng


def _block(order: str, btype: int, body: bytes, blen: int | None = None) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    n = 12 + len(body) if blen is None else blen
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


@st.composite
def pcapng_files(draw: st.DrawFn) -> bytes:
    """Sections of SHB, IDBs (with if_tsresol / if_tsoffset) and EPB/OPB/SPB/ISB/unknown blocks."""
    out = []
    for _ in range(draw(st.integers(1, 3))):
        order = draw(st.sampled_from("<>"))
        out.append(_block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
        for _ in range(draw(st.integers(0, 12))):
            kind = draw(st.sampled_from(["idb", "epb", "epb", "opb", "spb", "isb", "other"]))
            if kind == "idb":
                opts = b""
                if draw(st.booleans()):
                    opts += _option(order, 9, bytes([draw(st.integers(0, 255))]))
                if draw(st.booleans()):
                    opts += _option(
                        order, 14, struct.pack(order + "q", draw(st.integers(-(2**63), 2**63 - 1)))
                    )
                if draw(st.booleans()):
                    opts += _option(order, draw(st.integers(0, 20)), draw(st.binary(max_size=9)))
                snap = draw(st.sampled_from([0, 8, 65535]))
                lt = draw(st.sampled_from([1, 101, 113, 228, 147]))
                out.append(_block(order, 1, struct.pack(order + "HHI", lt, 0, snap) + opts))
            elif kind in ("epb", "opb"):
                data = draw(st.binary(max_size=60))
                iface = draw(st.sampled_from([0, 0, 1, 2, 0xFFFF]))
                head = struct.pack(
                    order + ("I" if kind == "epb" else "HH"), iface, *([] if kind == "epb" else [0])
                )
                hi, lo = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
                caplen = draw(st.sampled_from([len(data)] * 4 + [len(data) + 8, 0xFFFFFFFF]))
                wire = draw(st.sampled_from([len(data), len(data) + 10, 0]))
                body = head + struct.pack(order + "IIII", hi, lo, caplen, wire) + data
                out.append(_block(order, 6 if kind == "epb" else 2, body))
            elif kind == "spb":
                data = draw(st.binary(max_size=60))
                wire = draw(st.sampled_from([len(data), len(data) + 10, 0, 3]))
                out.append(_block(order, 3, struct.pack(order + "I", wire) + data))
            else:
                btype = 5 if kind == "isb" else draw(st.integers(0, 2**32 - 1))
                out.append(_block(order, btype, draw(st.binary(max_size=20))))
            if draw(st.integers(0, 9)) == 0:  # a block with a short or absurd length
                blen = draw(st.sampled_from([12, 16, 20, 28, 0xFFFFFFFC]))
                btype = draw(st.sampled_from([1, 2, 3, 6]))
                out.append(_block(order, btype, b"\x00" * max(0, min(blen, 40) - 12), blen))
    return draw(damaged(b"".join(out)))


@st.composite
def pcapng_scans(draw: st.DrawFn, files: st.SearchStrategy[bytes]) -> tuple:
    buf = as_buffer(draw(files))
    state = np.zeros(capture_source.STATE_SLOTS, np.int64)
    ifaces = empty_interfaces(draw(st.sampled_from([1, 2, 5, 64])))
    errs_n = draw(st.sampled_from([0, 2, 1000]))
    errs = (
        np.zeros(errs_n, np.int64),
        np.zeros(errs_n, np.int32),
        np.zeros(errs_n, np.int64),
        np.zeros(errs_n, np.int64),
    )
    return (buf, state, ifaces, None, *errs), draw(st.integers(1, 6))


@pytest.mark.quick
@QUICK
@given(pcapng_scans(pcapng_files()))
def test_scan_pcapng_blocks_quick(case: tuple) -> None:
    run_scan(PCAPNG_SCAN, *case)


@FULL
@given(pcapng_scans(st.one_of(pcapng_files(), st.binary(max_size=400))))
def test_scan_pcapng_blocks_matches_reference(case: tuple) -> None:
    run_scan(PCAPNG_SCAN, *case)


# -------------------------------------------------------------------------------- decode


def word_sum(data: bytes) -> int:
    data += b"\x00" * (len(data) % 2)
    return sum(struct.unpack(f">{len(data) // 2}H", data))


def checksum(data: bytes) -> int:
    s = word_sum(data)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@st.composite
def tcp_options(draw: st.DrawFn) -> bytes:
    parts = draw(
        st.lists(
            st.one_of(
                st.builds(lambda v: struct.pack(">BBH", 2, 4, v), st.integers(0, 0xFFFF)),
                st.builds(lambda v: bytes([3, 3, v]), st.integers(0, 255)),
                st.just(b"\x04\x02"),
                st.builds(
                    lambda a, b: struct.pack(">BBII", 8, 10, a, b),
                    st.integers(0, 2**32 - 1),
                    st.integers(0, 2**32 - 1),
                ),
                st.sampled_from([b"\x01", b"\x00", b"\x05", b"\x02\x01", b"\x08\xff"]),
                st.binary(max_size=6),
            ),
            max_size=6,
        )
    )
    opts = b"".join(parts)[:40]
    return opts + b"\x00" * (-len(opts) % 4)


@st.composite
def tcp_segments(draw: st.DrawFn, pseudo: bytes) -> bytes:
    """A TCP segment whose checksum over ``pseudo`` (minus the length) is right or random."""
    opts = draw(tcp_options())
    data_offset = draw(st.sampled_from([(20 + len(opts)) // 4] * 5 + list(range(16))))
    payload = draw(st.binary(max_size=40))
    ports_seq = [draw(st.integers(0, 2**b - 1)) for b in (16, 16, 32, 32)]
    flags = draw(st.integers(0, 0xFFF))
    head = struct.pack(
        ">HHIIHHHH",
        *ports_seq,
        (data_offset << 12) | flags,
        draw(st.integers(0, 0xFFFF)),
        0,
        draw(st.integers(0, 0xFFFF)),
    )
    seg = head + opts + payload
    good = checksum(pseudo + struct.pack(">I", len(seg)) + seg)
    value = draw(st.sampled_from([good, good, good ^ 0x1234, 0, 0xFFFF]))
    return seg[:16] + struct.pack(">H", value) + seg[18:]


@st.composite
def ipv4_packets(draw: st.DrawFn) -> bytes:
    src, dst = draw(st.binary(min_size=4, max_size=4)), draw(st.binary(min_size=4, max_size=4))
    proto = draw(st.sampled_from([6, 6, 6, 17, 1]))
    body = (
        draw(tcp_segments(src + dst + b"\x00\x06")) if proto == 6 else draw(st.binary(max_size=30))
    )
    options = draw(st.sampled_from([b"", b"\x01\x01\x01\x00", b"\x94\x04\x00\x00" * 2]))
    ihl = draw(st.sampled_from([5 + len(options) // 4] * 6 + [0, 4, 15]))
    total = draw(st.sampled_from([20 + len(options) + len(body)] * 5 + [0, 19, 0xFFFF]))
    frag = draw(st.sampled_from([0, 0, 0, 0x4000, 0x2000, 0x0001, 0x2010, 0x1FFF]))
    version = draw(st.sampled_from([4] * 9 + [6]))
    head = (
        struct.pack(
            ">BBHHHBBH",
            (version << 4) | ihl,
            0,
            total,
            draw(st.integers(0, 0xFFFF)),
            frag,
            draw(st.integers(0, 255)),
            proto,
            0,
        )
        + src
        + dst
        + options
    )
    if draw(st.integers(0, 3)):
        head = head[:10] + struct.pack(">H", checksum(head)) + head[12:]
    return head + body


@st.composite
def ipv6_extension(draw: st.DrawFn, nh: int, final_dst: list[bytes]) -> tuple[int, bytes]:
    """One extension header in front of ``nh``: (its own type, bytes)."""
    kind = draw(st.sampled_from([0, 43, 44, 51, 60, 135, 139, 140]))
    if kind == 44:
        fo = draw(st.sampled_from([0, 0, 1, 8, 0xFFF9, 0x0010]))
        return 44, struct.pack(">BBHI", nh, 0, fo, draw(st.integers(0, 2**32 - 1)))
    if kind == 0 and draw(st.booleans()):  # jumbo payload option (RFC 2675), maybe padded
        jumbo = struct.pack(">BBI", 0xC2, 4, draw(st.sampled_from([0, 70000, 100, 2**32 - 1])))
        return 0, bytes([nh, 0]) + jumbo
    if kind == 43:
        rtype = draw(st.sampled_from([0, 2, 4, 3]))
        n = draw(st.integers(0, 3))
        addrs = [draw(st.binary(min_size=16, max_size=16)) for _ in range(n)]
        final_dst.extend(addrs[-1:] if rtype in (0, 2) else addrs[:1])
        return 43, struct.pack(
            ">BBBB", nh, 2 * n, rtype, draw(st.integers(0, 3))
        ) + b"\0" * 4 + b"".join(addrs)
    # 8 * (units + 1) bytes: Hdr Ext Len in 8-octet units, AH's (RFC 4302) in 4-octet units - 2
    units = draw(st.integers(0, 2))
    body = draw(st.binary(min_size=6 + 8 * units, max_size=6 + 8 * units))
    return kind, bytes([nh, 2 * units if kind == 51 else units]) + body


@st.composite
def ipv6_packets(draw: st.DrawFn) -> bytes:
    src, dst = draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16, max_size=16))
    final: list[bytes] = []
    proto = draw(st.sampled_from([6, 6, 6, 17, 59]))
    chain, nh = b"", proto
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        nh, ext = draw(ipv6_extension(nh, final))
        chain = ext + chain
    pseudo_dst = final[-1] if final else dst
    body = (
        draw(tcp_segments(src + pseudo_dst + b"\x00\x06"))
        if proto == 6
        else draw(st.binary(max_size=30))
    )
    plen = draw(st.sampled_from([len(chain) + len(body)] * 5 + [0, 1, 0xFFFF]))
    version = draw(st.sampled_from([6] * 9 + [4]))
    head = struct.pack(">IHBB", version << 28, plen, nh, draw(st.integers(0, 255)))
    return head + src + dst + chain + body


LINK_TYPES = [0, 1, 12, 14, 101, 108, 113, 228, 229, 242, 276, 147, 9, 10, 50, 100, 104]


@st.composite
def tunnel_headers(draw: st.DrawFn, inner: bytes) -> tuple[int, bytes]:
    """(IP protocol, payload): ``inner`` behind one of the tunnel headers tcpweave opens, with
    random flags, lengths and ports (docs/encapsulations.md)."""
    v6 = bool(inner) and inner[0] >> 4 == 6
    ip_type = 0x86DD if v6 else 0x0800
    frame = b"\x02" * 12 + struct.pack(">H", ip_type) + inner
    kind = draw(st.sampled_from(["ipip", "gre", "erspan", "udp"]))
    if kind == "ipip":
        return draw(st.sampled_from([41 if v6 else 4, 4, 41])), inner
    if kind in ("gre", "erspan"):
        flags = draw(st.sampled_from([0, 0x2000, 0x1000, 0xB000, 0x4000, 0x0001, 0x3000]))
        extra = 4 * (bool(flags & 0x8000) + bool(flags & 0x2000) + bool(flags & 0x1000))
        if kind == "gre":
            mpls = b"\x00\x01\x01\x40" + inner
            proto, body = draw(st.sampled_from([(ip_type, inner), (0x6558, frame), (0x8847, mpls)]))
        else:
            proto = draw(st.sampled_from([0x88BE, 0x22EB]))
            span = draw(st.binary(min_size=12, max_size=20))
            body = (span[:8] if proto == 0x88BE and flags & 0x1000 else span) + frame
            if proto == 0x88BE and not flags & 0x1000:
                body = frame
        if draw(st.integers(0, 3)) == 0:  # PPTP's enhanced GRE (RFC 2637 §4.1)
            flags = draw(st.sampled_from([0x2001, 0x3001, 0x3081, 0x2081, 0x0001, 0x2002]))
            extra = 4 * (bool(flags & 0x1000) + bool(flags & 0x0080))
            ppp = draw(st.sampled_from([b"\xff\x03\x00\x21", b"\x21", b"\x00\x57", b"\xc0"]))
            body = ppp + inner
            key = struct.pack(">HH", draw(st.sampled_from([len(body), 0])), 7)
            return 47, struct.pack(">HH", flags, 0x880B) + key + bytes(extra) + body
        return (
            47,
            struct.pack(">HH", flags, proto)
            + draw(st.binary(min_size=extra, max_size=extra))
            + body,
        )
    port = draw(st.sampled_from([4789, 4790, 6081, 2152, 3544, 5072, 53]))
    if port == 4789:
        head = struct.pack(">II", 0x08000000, draw(st.integers(0, 2**32 - 1)))
        body = head + frame
    elif port == 4790:  # VXLAN-GPE: Next Protocol 1 IPv4, 2 IPv6, 3 Ethernet, 5 MPLS, 4 NSH
        nxt, payload = draw(st.sampled_from([(2 if v6 else 1, inner), (3, frame), (4, inner),
                                             (5, b"\x00\x01\x01\x40" + inner)]))  # fmt: skip
        body = struct.pack(">BBBBI", 0x0C, 0, 0, nxt, draw(st.integers(0, 2**32 - 1))) + payload
    elif port == 6081:
        opts = draw(st.binary(max_size=12))
        opts += b"\x00" * (-len(opts) % 4)
        proto, payload = draw(st.sampled_from([(ip_type, inner), (0x6558, frame), (0x0806, b"x")]))
        body = struct.pack(">BBHI", len(opts) // 4 | draw(st.sampled_from([0, 0x40])), 0, proto,
                           draw(st.integers(0, 2**32 - 1))) + opts + payload  # fmt: skip
    elif port == 2152:
        flags = draw(st.sampled_from([0x30, 0x32, 0x34, 0x36, 0x20, 0x50]))
        ext = b""
        if flags & 0x07:
            nxt = 0x85 if flags & 0x04 else 0
            ext = struct.pack(">HBB", 1, 0, nxt)
            if nxt:
                ext += bytes([draw(st.sampled_from([1, 1, 0, 2]))]) + b"\x09\x01" + b"\x00"
                ext += b"\x00" * 4 if ext[4] == 2 else b""
        mtype = draw(st.sampled_from([0xFF, 0xFF, 1]))
        body = struct.pack(">BBHI", flags, mtype, len(ext) + len(inner), 7) + ext + inner
    elif port == 3544:
        auth = b"\x00\x01\x01\x02" + b"i" + b"au" + b"\x00" * 9 if draw(st.booleans()) else b""
        origin = b"\x00\x00" + b"\xff" * 6 if draw(st.booleans()) else b""
        body = auth + origin + inner
    elif port == 5072:
        id_len = draw(st.integers(0, 4))
        head = bytes([id_len << 4 | 1, 5 << 4 | 2, draw(st.sampled_from([1, 1, 2])),
                      draw(st.sampled_from([41, 4, 17]))]) + b"\x00" * 4  # fmt: skip
        body = head + b"\x01" * (1 << id_len) + b"\x02" * 20 + inner
    else:
        body = inner
    ports = [port, draw(st.integers(0, 0xFFFF))]
    if draw(st.booleans()):
        ports.reverse()
    return 17, struct.pack(">HHHH", *ports, 8 + len(body), 0) + body


@st.composite
def tunnelled_packets(draw: st.DrawFn) -> bytes:
    """An IP packet inside one or two tunnels, each in an outer IPv4 or IPv6 header."""
    packet = draw(st.one_of(ipv4_packets(), ipv6_packets()))
    for _ in range(draw(st.integers(1, 2))):
        proto, payload = draw(tunnel_headers(packet))
        if draw(st.booleans()):
            head = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0)
            head += draw(st.binary(min_size=8, max_size=8))
            head = head[:10] + struct.pack(">H", checksum(head)) + head[12:]
        else:
            head = struct.pack(">IHBB", 6 << 28, len(payload), proto, 64)
            head += draw(st.binary(min_size=32, max_size=32))
        packet = head + payload
    return packet


#: link-layer encapsulations in front of an EtherType: (EtherType, header before the next type)
LINK_WRAPS = {
    "pbb": (0x88E7, b"\x00\x00\x00\x01" + b"\x02" * 12),
    "vntag": (0x8926, b"\x00\x05\x00\x07"),
    "etag": (0x893F, b"\x00\x12\x00\x34\x00\x00"),
    "fabricpath": (0x8903, b"\x00\x60" + b"\x02" * 12),
    "teb": (0x6558, b"\x02" * 12),
}


@st.composite
def frames(draw: st.DrawFn) -> tuple[int, bytes]:
    """(link type, frame): an IP packet behind one of the supported link headers, or noise."""
    ip = draw(
        st.one_of(ipv4_packets(), ipv6_packets(), tunnelled_packets(), st.binary(max_size=60))
    )
    v6 = bool(ip) and ip[0] >> 4 == 6
    ip_type = 0x86DD if v6 else 0x0800
    encap = draw(
        st.sampled_from(["plain"] * 4 + ["mpls", "pppoe", "other", "llc", "eompls", "link"])
    )
    payload, inner_type = ip, ip_type
    if encap == "mpls":  # RFC 3032 label stack, bottom-of-stack bit on the last label
        labels = draw(st.integers(1, 3))
        stack = b"".join(struct.pack(">I", (i == labels - 1) << 8) for i in range(labels))
        payload, inner_type = stack + ip, 0x8847
    elif encap == "eompls":  # label, RFC 4448 control word, Ethernet frame
        eth = b"\x02" * 12 + struct.pack(">H", ip_type) + ip
        payload, inner_type = b"\x00\x01\x01\x40" + b"\x00" * 4 + eth, 0x8847
    elif encap == "pppoe":  # RFC 2516 session header, then the PPP protocol
        ppp = draw(st.sampled_from([0x0057 if v6 else 0x0021, 0xC021]))
        payload, inner_type = struct.pack(">BBHHH", 0x11, 0, 1, len(ip) + 2, ppp) + ip, 0x8864
    elif encap == "llc":  # 802.3 length, LLC/SNAP
        oui = draw(st.sampled_from([b"\x00\x00\x00", b"\x00\x00\xf8", b"\x00\x00\x0c"]))
        payload = b"\xaa\xaa\x03" + oui + struct.pack(">H", ip_type) + ip
        inner_type = draw(st.sampled_from([len(payload), 0x05DC, 0x0500]))
    elif encap == "link":
        inner_type, head = LINK_WRAPS[draw(st.sampled_from(sorted(LINK_WRAPS)))]
        payload = head + struct.pack(">H", ip_type) + ip
    elif encap == "other":
        inner_type = draw(st.sampled_from([0x0806, 0x88CC, 0]))
    # 802.1Q/802.1ad tags: the outer type is the first TPID, each tag names the next type
    tpids = draw(st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100, 0x9200]), max_size=2))
    types = [*tpids, inner_type]
    tags = b"".join(struct.pack(">HH", draw(st.integers(0, 0xFFFF)), t) for t in types[1:])
    ethertype = struct.pack(">H", types[0])
    family = draw(st.sampled_from([10 if v6 else 2, 24, 28, 30, 23, 7]))
    ppp = struct.pack(">H", 0x0057 if v6 else draw(st.sampled_from([0x0021, 0xC021])))
    snap = b"\xaa\xaa\x03\x00\x00\x00" + struct.pack(">H", ip_type)
    headers = {
        1: b"\x00" * 12 + ethertype + tags,
        113: b"\x00" * 14 + ethertype + tags,
        276: ethertype + b"\x00" * 18 + tags,
        242: b"\x00" * 40 + ethertype + b"\x00\x00" + tags,
        104: b"\x0f\x00" + ethertype + tags,
        0: struct.pack(draw(st.sampled_from(["<I", ">I"])), family),
        108: struct.pack(">I", family),
        9: draw(st.sampled_from([b"\xff\x03", b""])) + ppp,
        50: b"\xff\x03" + ppp,
        10: b"\x50" + b"\x02" * 12 + snap,
        100: snap,
    }
    lt = draw(st.sampled_from(LINK_TYPES))
    body = payload if lt in (1, 113, 276, 242, 104) else ip
    return lt, headers.get(lt, b"") + body


@st.composite
def decode_cases(draw: st.DrawFn, max_frames: int = 8) -> tuple:
    chunks, rows = [], []
    pos = draw(st.integers(0, 7))
    chunks.append(bytes(pos))
    for _ in range(draw(st.integers(0, max_frames))):
        lt, frame = draw(frames())
        caplen = draw(st.sampled_from([len(frame)] * 10 + [len(frame) // 2, 0, 13, 40, 54]))
        caplen = min(caplen, len(frame))
        wirelen = draw(st.sampled_from([len(frame)] * 3 + [caplen, len(frame) + 1000]))
        rows.append((pos, caplen, max(wirelen, caplen), draw(st.integers(0, 2**62)), lt))
        gap = bytes(draw(st.integers(0, 9)))
        chunks.append(frame + gap)
        pos += len(frame) + len(gap)
    buf = as_buffer(b"".join(chunks) + b"\x00" * 8)
    n = len(rows)
    rec = empty_records(n)
    for i, (off, caplen, wirelen, ts, lt) in enumerate(rows):
        rec.offset[i], rec.caplen[i], rec.wirelen[i], rec.ts_ns[i], rec.linktype[i] = (
            off,
            caplen,
            wirelen,
            ts,
            lt,
        )
    buf64 = buf[: buf.size // 8 * 8].view(np.uint64)
    frags = empty_fragments(draw(st.sampled_from([0, 1, 16])))
    counters = np.zeros(tcpweave.decode._kernels.N_COUNTERS, np.int64)
    file_index, frame_base = draw(st.sampled_from([(0, 0), (3, 1000)]))
    row0 = draw(st.sampled_from([0, 2]))  # a later chunk of the same table starts further down
    return (
        buf,
        buf64,
        rec,
        file_index,
        frame_base,
        empty_packets(n + row0),
        row0,
        np.zeros(n, np.uint8),
        frags,
        counters,
    )


def _decode_both(args: tuple) -> None:
    assert_same(DECODE, _copy(args), _copy(args))


@pytest.mark.quick
@QUICK
@given(decode_cases(max_frames=4))
def test_decode_records_quick(args: tuple) -> None:
    _decode_both(args)


@FULL
@given(decode_cases())
def test_decode_records_matches_reference(args: tuple) -> None:
    _decode_both(args)


# --------------------------------------------------------------------- real captures


@pytest.mark.parametrize("path", corpus_captures(), ids=lambda p: p.name)
def test_corpus_kernels_match_reference(path: Any) -> None:
    """On every corpus capture: the index and the decoded table agree with the references."""
    src = capture_source.open_source(str(path))
    try:
        buf = src.buffer
        if src.format == "pcap":
            swapped = int.from_bytes(buf[:4].tobytes(), "big") in (0xA1B2C3D4, 0xA1B23C4D)
            nano = int.from_bytes(buf[:4].tobytes(), "big" if swapped else "little") == 0xA1B23C4D
            state = np.zeros(capture_source.STATE_SLOTS, np.int64)
            state[0], state[1], state[3] = 24, int(swapped), -1
            errs = capture_source._error_columns()
            max_caplen = min(max(src.snaplen, 262144), 16 * 1024 * 1024)
            args = (
                buf,
                1 if nano else 1000,
                10**9 if nano else 10**6,
                src.snaplen,
                max_caplen,
                state,
                None,
                *errs,
            )
            run_scan(PCAP_SCAN, args, 4096)
        else:
            state = np.zeros(capture_source.STATE_SLOTS, np.int64)
            errs = capture_source._error_columns()
            run_scan(PCAPNG_SCAN, (buf, state, empty_interfaces(64), None, *errs), 4096)
        rec = src.records
        n = len(rec.offset)
        args = (
            buf,
            src.buffer64,
            rec,
            0,
            0,
            empty_packets(n),
            0,
            np.zeros(n, np.uint8),
            empty_fragments(max(16, n)),
            np.zeros(tcpweave.decode._kernels.N_COUNTERS, np.int64),
        )
        _decode_both(args)
    finally:
        src.close()


# ------------------------------------------------------------------------- the registry


GATHER = ("tcpweave.output", "gather_ranges")


@st.composite
def gather_cases(draw: Any) -> tuple[Any, ...]:
    """A buffer and rows pointing anywhere inside it (empty payloads included), each copied
    to its own place in the output (places may be in any order)."""
    size = draw(st.integers(0, 300))
    buf = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), np.uint8)
    rows = []
    for _ in range(draw(st.integers(0, 20))):
        start = draw(st.integers(0, size))
        rows.append((start, draw(st.integers(0, size - start))))
    start_col = np.array([r[0] for r in rows], np.int64)
    length = np.array([r[1] for r in rows], np.int64)
    order = draw(st.permutations(list(range(len(rows)))))
    at = np.zeros(len(rows), np.int64)
    if rows:  # the rows' places in a shuffled order, back to back
        at[order] = np.concatenate(([0], np.cumsum(length[order])))[:-1]
    return buf, start_col, length, at, int(length.sum())


@pytest.mark.quick
@settings(deadline=None)
@given(gather_cases())
def test_gather_ranges_matches_reference(case: tuple[Any, ...]) -> None:
    buf, start, length, at, total = case
    out_k = np.full(total + 3, 7, np.uint8)  # bytes past the end must stay untouched
    out_r = out_k.copy()
    assert_same(GATHER, (buf, start, length, at, out_k), (buf, start, length, at, out_r))
    assert out_k[total:].tolist() == [7, 7, 7]
    for s, n, a in zip(start.tolist(), length.tolist(), at.tolist(), strict=True):
        assert out_k[a : a + n].tobytes() == buf[s : s + n].tobytes()


@pytest.mark.quick
def test_every_kernel_has_a_reference() -> None:
    """Each registered kernel has a reference of the same name and parameter list."""
    assert {PCAP_SCAN, PCAPNG_SCAN, DECODE} | EXERCISED_BY_PLAN_PROPERTIES <= set(REGISTRY)
    for key, compiled in REGISTRY.items():
        ref = reference_of(key)
        assert ref is not None, f"{key[0]}._reference has no {key[1]}"
        py_func = getattr(compiled, "py_func", compiled)
        assert ref is not py_func, f"{key[1]}: the reference must be written independently"
        assert (
            inspect.signature(ref).parameters.keys() == inspect.signature(py_func).parameters.keys()
        )


@pytest.mark.quick
def test_every_kernel_is_exercised_here() -> None:
    """A new kernel must get an input generator, not just a reference.

    The flow and plan kernels are exercised in test_plan_properties.py, on sessions
    built there (their plan output is compared normalised, see reassembly/_reference.py).
    """
    here = {PCAP_SCAN, PCAPNG_SCAN, DECODE, GATHER}
    exercised = here | EXERCISED_BY_PLAN_PROPERTIES | EXERCISED_BY_FRAMING_PROPERTIES
    exercised |= EXERCISED_BY_AUDIT_TESTS | EXERCISED_BY_SESSION_TESTS | EXERCISED_BY_BPF_TESTS
    assert set(REGISTRY) == exercised, sorted(set(REGISTRY))
