"""Benchmark: length-prefixed framing of small PDUs (PDUs per second, one core).

    python bench/pdus.py [--pdus 2000000] [--streams 4] [--runs 5]

Writes a pcap (Ethernet/IPv4/TCP, 1448-byte segments) whose client directions carry
``--pdus`` PDUs of 2-byte length + 6..30 body bytes, opens it with ``tcpweave.open``,
builds the plan once (not timed), then times ``Capture.pdus`` with the generic
length-prefixed framer (the numba kernel path); reports the median of ``--runs``
runs without and with the PDU bytes gathered. The first call compiles or loads the
kernels and is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

import tcpweave
from tcpweave.framing import LengthPrefixed

MSS = 1448


def _frame(src: int, dst: int, sport: int, dport: int, seq: int, flags: int, data: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + data
    ip = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp


def write_capture(path: Path, n_pdus: int, n_streams: int, seed: int = 1) -> int:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(6, 31, n_pdus)
    records = []
    per_stream = np.array_split(sizes, n_streams)
    for s, part in enumerate(per_stream):
        body = bytearray()
        for n in part.tolist():
            body += struct.pack("!H", n) + bytes(n)
        src, dst, sport = 0x0A000001, 0x0A000002, 40000 + s
        records.append(_frame(src, dst, sport, 9000, 999, 0x02, b""))  # SYN
        for at in range(0, len(body), MSS):
            records.append(
                _frame(src, dst, sport, 9000, 1000 + at, 0x18, bytes(body[at : at + MSS]))
            )
        records.append(_frame(src, dst, sport, 9000, 1000 + len(body), 0x11, b""))  # FIN
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, rec in enumerate(records):
            f.write(struct.pack("<IIII", 1_700_000_000, i % 1_000_000, len(rec), len(rec)) + rec)
    return int(sizes.size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pdus", type=int, default=2_000_000)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    framer = LengthPrefixed(size=2, adjust=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pdus.pcap"
        n = write_capture(path, args.pdus, args.streams)
        with tcpweave.open(path) as cap:
            cap.plan(checksums="ignore")
            first = cap.pdus(framer, checksums="ignore")
            assert len(first) == n and not first.damaged.any(), first
            for data in (False, True):
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    found = cap.pdus(framer, checksums="ignore", data=data)
                    times.append(time.perf_counter() - t0)
                    assert len(found) == n
                med = statistics.median(times)
                label = "with bytes" if data else "frames only"
                runs = ", ".join(f"{t * 1e3:.0f}" for t in times)
                rate = n / med / 1e6
                print(f"{n:,} PDUs, {label}: median {med * 1e3:.1f} ms -> {rate:.2f} M PDUs/s")
                print(f"    runs: {runs} ms")


if __name__ == "__main__":
    main()
