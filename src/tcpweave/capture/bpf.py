"""BPF capture filters (``tcpweave extract CAP 'port 80'``), as tcpdump and tcpflow take them.

The expression is compiled by the system's libpcap (``pcap_compile`` on a "dead" handle of
the record's link type, pcap-filter(7)), through ctypes: libpcap is the definition of
the filter language, and no maintained Python binding exposes ``pcap_compile`` without
opening a capture through libpcap as well. The compiled classic-BPF program is then run
by the ``bpf_match`` kernel over the records, before anything is decoded -- the same
test libpcap applies to each record when tcpdump reads a file with a filter: a record
the program rejects is not a packet of the capture (its frame number stays spent, as in
tshark with a read filter). Like tcpdump's, the filter sees each record as captured:
``port 80`` does not match the non-first fragments of an IP datagram, whose rebuilt
datagram is then incomplete.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any

import numpy as np

from tcpweave.capture import _kernels as k
from tcpweave.errors import UsageError

__all__ = ["FILTERED_LINKTYPE", "RecordFilter", "compile_filter"]

#: the link type a rejected record is given, so that decoding passes it by (no row)
FILTERED_LINKTYPE = -2
#: PCAP_NETMASK_UNKNOWN: broadcast tests fail rather than guess a netmask
_NETMASK_UNKNOWN = 0xFFFFFFFF
_SNAPLEN = 262144


class _Insn(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class _Program(ctypes.Structure):
    _fields_ = (("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn)))


@cache
def _libpcap() -> Any:
    names = [ctypes.util.find_library("pcap"), "libpcap.so.1", "libpcap.so.0.8", "libpcap.so"]
    for name in filter(None, names):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = (ctypes.c_int, ctypes.c_int)
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = (ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p,
                                     ctypes.c_int, ctypes.c_uint32)  # fmt: skip
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = (ctypes.c_void_p,)
        lib.pcap_freecode.argtypes = (ctypes.POINTER(_Program),)
        lib.pcap_close.argtypes = (ctypes.c_void_p,)
        return lib
    raise UsageError("a BPF filter needs libpcap (the system library: libpcap0.8 on Debian)")


def compile_filter(expression: str, linktype: int) -> tuple[np.ndarray, ...]:
    """The program libpcap compiles for ``expression`` on ``linktype`` records, as four
    columns (code, jt, jf, k). A bad expression is a ``UsageError`` with libpcap's reason."""
    lib = _libpcap()
    handle = lib.pcap_open_dead(linktype, _SNAPLEN)
    if not handle:
        raise UsageError(f"libpcap cannot open a handle for link type {linktype}")
    prog = _Program()
    try:
        if lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), 1, _NETMASK_UNKNOWN):
            reason = lib.pcap_geterr(handle).decode(errors="replace")
            raise UsageError(f"filter {expression!r}: {reason} (link type {linktype})")
        insns = [prog.bf_insns[i] for i in range(prog.bf_len)]
        columns = (
            np.array([i.code for i in insns], np.int64),
            np.array([i.jt for i in insns], np.int64),
            np.array([i.jf for i in insns], np.int64),
            np.array([i.k for i in insns], np.int64),
        )
        lib.pcap_freecode(ctypes.byref(prog))
        return columns
    finally:
        lib.pcap_close(handle)


class RecordFilter:
    """A filter expression, compiled once per link type met, applied to record chunks."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self._programs: dict[int, tuple[np.ndarray, ...]] = {}

    def check(self, linktype: int = 1) -> None:
        """Compile for ``linktype`` now (Ethernet by default): a bad expression fails early."""
        self._program(linktype)

    def _program(self, linktype: int) -> tuple[np.ndarray, ...]:
        if linktype not in self._programs:
            self._programs[linktype] = compile_filter(self.expression, linktype)
        return self._programs[linktype]

    def apply(self, buffer: np.ndarray, rec: Any) -> tuple[Any, int]:
        """``rec`` with the records the program rejects given ``FILTERED_LINKTYPE`` (a copy
        of the link type column), and how many were rejected."""
        keep = np.zeros(len(rec.offset), np.bool_)
        for linktype in np.unique(rec.linktype).tolist():
            rows = np.flatnonzero(rec.linktype == linktype)
            out = np.zeros(len(rows), np.bool_)
            code, jt, jf, kk = self._program(int(linktype))
            k.bpf_match(code, jt, jf, kk, buffer, rec.offset, rec.caplen, rec.wirelen, rows, out)
            keep[rows] = out
        rejected = int(len(keep) - keep.sum())
        if not rejected:
            return rec, 0
        linktype = np.where(keep, rec.linktype, FILTERED_LINKTYPE).astype(rec.linktype.dtype)
        return rec._replace(linktype=linktype), rejected
