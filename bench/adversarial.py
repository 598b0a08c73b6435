"""Hostile captures: small inputs crafted to cost a reassembler time, memory or disk.

Each case is generated here (numpy, independent of tcpweave), then run through
``tcpweave extract`` (and, with ``--commands all``, ``streams`` and ``audit``) in a
fresh process; the script prints per case and command the wall time, the process's
peak RSS (``--jobs 1``: one process does the work), and the output's apparent size and
size on disk, against the budget: peak RSS <= 100 B per packet + 300 MB, output on disk
<= 2 x the capture + 1 kB per packet (streams.jsonl lines) + 1 MB. It exits non-zero
when a case is over budget.

    .venv/bin/python bench/adversarial.py                 # every case
    .venv/bin/python bench/adversarial.py --case overlap  # one case
    .venv/bin/python bench/adversarial.py --json

Cases (the figures of issue 12):

- ``overlap``: 2,000 one-byte segments at every other offset, then 2,000 segments of
  4,000 bytes each covering all of them with other bytes (8.2 MB);
- ``seqjump``: 30 data segments, each ~900 MB of sequence space ahead of the last
  (2 kB): the receiver's window is 64 kB;
- ``ackjump``: the same jumps, but the receiver acknowledges each one (so each is
  accepted and the stream is mostly gap: 26 GB apparent, sparse on disk);
- ``longdir``: one direction of 3 M one-byte segments;
- ``synflood``: 300,000 SYN-only packets from distinct ports;
- ``fragments``: 150,000 IPv4 first fragments that never complete.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
EXE = Path(sys.executable).parent / "tcpweave"
BUDGET_PER_PACKET = 100
BUDGET_BASE = 300 << 20
#: streams.jsonl: a line of ~370 bytes per direction, at most two directions per packet
BUDGET_LINE = 1024
CLIENT, SERVER = (10 << 24) | 1, (10 << 24) | 2  # 10.0.0.1 -> 10.0.0.2
ISN_C, ISN_S = 1000, 5000


# -- a small vectorised pcap writer (Ethernet / IPv4 / TCP, checksums valid) -------------------


def _csum_fold(s: np.ndarray) -> np.ndarray:
    s = s.astype(np.uint64)
    while np.any(s >> np.uint64(16)):
        s = (s & np.uint64(0xFFFF)) + (s >> np.uint64(16))
    return (~s & np.uint64(0xFFFF)).astype(np.uint16)


def _words(b: np.ndarray) -> np.ndarray:
    """Sum of the big-endian 16-bit words of each row (rows of even length)."""
    w = b.reshape(len(b), -1, 2).astype(np.uint64)
    return (w[:, :, 0] * np.uint64(256) + w[:, :, 1]).sum(axis=1)


def packets(
    src: np.ndarray, dst: np.ndarray, sport: np.ndarray, dport: np.ndarray,
    seq: np.ndarray, ack: np.ndarray, flags: np.ndarray, payload: np.ndarray,
    window: int = 65535, frag: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:  # fmt: skip
    """Ethernet frames as rows (one payload length for all): IPv4 + TCP with valid
    checksums, or (``frag``: ip ids, more-fragments offsets) IPv4 fragments."""
    n, plen = payload.shape
    ip = np.zeros((n, 20), np.uint8)
    tcp = np.zeros((n, 20), np.uint8)
    total = 20 + 20 + plen
    ip[:, 0], ip[:, 8], ip[:, 9] = 0x45, 64, 6
    ip[:, 2], ip[:, 3] = total >> 8, total & 0xFF
    if frag is not None:
        ids, off = frag
        ip[:, 4], ip[:, 5] = (ids >> 8) & 0xFF, ids & 0xFF
        fo = 0x2000 | (off & 0x1FFF)  # more fragments
        ip[:, 6], ip[:, 7] = fo >> 8, fo & 0xFF
    for k, v in enumerate((src, dst)):
        for b in range(4):
            ip[:, 12 + 4 * k + b] = (v >> (24 - 8 * b)) & 0xFF
    c = _csum_fold(_words(ip))
    ip[:, 10], ip[:, 11] = c >> 8, c & 0xFF
    for off, v, width in ((0, sport, 2), (2, dport, 2), (4, seq, 4), (8, ack, 4)):
        v = np.asarray(v, np.uint64)
        for b in range(width):
            tcp[:, off + b] = (v >> np.uint64(8 * (width - 1 - b))) & np.uint64(0xFF)
    tcp[:, 12], tcp[:, 13] = 0x50, flags
    tcp[:, 14], tcp[:, 15] = window >> 8, window & 0xFF
    seg = np.concatenate([tcp, payload, np.zeros((n, plen % 2), np.uint8)], axis=1)
    pseudo = _words(ip[:, 12:20]) + 6 + 20 + plen
    c = _csum_fold(_words(seg) + pseudo)
    tcp[:, 16], tcp[:, 17] = c >> 8, c & 0xFF
    eth = np.zeros((n, 14), np.uint8)
    eth[:, 12] = 0x08
    return np.concatenate([eth, ip, tcp, payload], axis=1)


def write_pcap(path: Path, groups: list[np.ndarray]) -> int:
    """Write groups of equal-length frames, in order, one microsecond apart; returns the
    number of packets."""
    count = 0
    with open(path, "wb") as f:
        f.write(np.array([0xA1B2C3D4], "<u4").tobytes())
        f.write(np.array([2, 4], "<u2").tobytes() + np.array([0, 0, 262144, 1], "<u4").tobytes())
        for frames in groups:
            n, length = frames.shape
            t = 1_700_000_000_000_000 + count + np.arange(n, dtype=np.int64)
            head = np.zeros((n, 4), "<u4")
            head[:, 0], head[:, 1] = t // 1_000_000, t % 1_000_000
            head[:, 2] = head[:, 3] = length
            f.write(np.concatenate([head.view(np.uint8).reshape(n, 16), frames], axis=1).tobytes())
            count += n
    return count


def _one(n: int, value: int) -> np.ndarray:
    return np.full(n, value, np.int64)


def _handshake(sport: int = 40000, window: int = 65535) -> list[np.ndarray]:
    none = np.zeros((1, 0), np.uint8)
    return [
        packets(_one(1, CLIENT), _one(1, SERVER), _one(1, sport), _one(1, 80), _one(1, ISN_C),
                _one(1, 0), _one(1, 0x02), none, window),
        packets(_one(1, SERVER), _one(1, CLIENT), _one(1, 80), _one(1, sport), _one(1, ISN_S),
                _one(1, ISN_C + 1), _one(1, 0x12), none, window),
        packets(_one(1, CLIENT), _one(1, SERVER), _one(1, sport), _one(1, 80), _one(1, ISN_C + 1),
                _one(1, ISN_S + 1), _one(1, 0x10), none, window),
    ]  # fmt: skip


def _c2s(seq: np.ndarray, payload: np.ndarray, flags: int = 0x18) -> np.ndarray:
    n = len(seq)
    return packets(_one(n, CLIENT), _one(n, SERVER), _one(n, 40000), _one(n, 80),
                   (ISN_C + 1 + seq) % (1 << 32), _one(n, ISN_S + 1), _one(n, flags),
                   payload)  # fmt: skip


def _acks(ack_offsets: np.ndarray) -> np.ndarray:
    n = len(ack_offsets)
    return packets(_one(n, SERVER), _one(n, CLIENT), _one(n, 80), _one(n, 40000),
                   _one(n, ISN_S + 1), (ISN_C + 1 + ack_offsets) % (1 << 32), _one(n, 0x10),
                   np.zeros((n, 0), np.uint8))  # fmt: skip


def case_overlap(path: Path) -> int:
    rng = np.random.default_rng(1)
    n = 2000
    small = _c2s(np.arange(n, dtype=np.int64) * 2, rng.integers(0, 256, (n, 1), np.uint8))
    cover = _c2s(np.zeros(n, np.int64), rng.integers(0, 256, (n, 2 * n), np.uint8))
    return write_pcap(path, [*_handshake(), small, cover])


def _jumps() -> np.ndarray:
    return np.arange(30, dtype=np.int64) * 900_000_000


def case_seqjump(path: Path) -> int:
    seq = _jumps()
    data = _c2s(seq, np.full((len(seq), 10), ord("x"), np.uint8))
    return write_pcap(path, [*_handshake(), data])


def case_ackjump(path: Path) -> int:
    seq = _jumps()
    groups = [*_handshake()]
    for s in seq.tolist():
        groups.append(_c2s(np.array([s]), np.full((1, 10), ord("x"), np.uint8)))
        groups.append(_acks(np.array([s + 10])))
    return write_pcap(path, groups)


def case_longdir(path: Path) -> int:
    n = 3_000_000
    seq = np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(2)
    groups = [*_handshake()]
    step = 100_000
    for a in range(0, n, step):
        groups.append(_c2s(seq[a : a + step], rng.integers(0, 256, (step, 1), np.uint8)))
        groups.append(_acks(np.array([a + step])))
    return write_pcap(path, groups)


def case_synflood(path: Path) -> int:
    n = 300_000
    ports = 1024 + np.arange(n, dtype=np.int64) % 64000
    src = CLIENT + np.arange(n, dtype=np.int64) // 64000
    syn = packets(src, _one(n, SERVER), ports, _one(n, 80), _one(n, ISN_C), _one(n, 0),
                  _one(n, 0x02), np.zeros((n, 0), np.uint8))  # fmt: skip
    return write_pcap(path, [syn])


def case_fragments(path: Path) -> int:
    n = 150_000
    ids = np.arange(n, dtype=np.int64) % 65536
    src = CLIENT + np.arange(n, dtype=np.int64) // 65536
    frames = packets(src, _one(n, SERVER), _one(n, 40000), _one(n, 80), _one(n, ISN_C),
                     _one(n, 0), _one(n, 0x18), np.full((n, 16), ord("f"), np.uint8),
                     frag=(ids, np.zeros(n, np.int64)))  # fmt: skip
    return write_pcap(path, [frames])


CASES: dict[str, Callable[[Path], int]] = {
    "overlap": case_overlap,
    "seqjump": case_seqjump,
    "ackjump": case_ackjump,
    "longdir": case_longdir,
    "synflood": case_synflood,
    "fragments": case_fragments,
}


# -- measuring ------------------------------------------------------------------------------


def _sizes(root: Path) -> tuple[int, int]:
    apparent = disk = 0
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            apparent += st.st_size
            disk += st.st_blocks * 512
    return apparent, disk


def run(cmd: list[str], out: Path | None) -> dict[str, Any]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(REPO / ".numba_cache")}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    err = proc.stderr.read().decode() if proc.stderr else ""
    apparent, disk = _sizes(out) if out is not None and out.exists() else (0, 0)
    return {
        "seconds": round(seconds, 2),
        "peak_rss": usage.ru_maxrss * 1024,
        "exit": os.waitstatus_to_exitcode(status),
        "out_apparent": apparent,
        "out_disk": disk,
        "stderr": err.strip().splitlines()[-1:] if err.strip() else [],
    }


def measure(name: str, work: Path, commands: list[str]) -> dict[str, Any]:
    cap = work / f"{name}.pcap"
    n = CASES[name](cap)
    size = cap.stat().st_size
    budget = BUDGET_PER_PACKET * n + BUDGET_BASE
    result: dict[str, Any] = {"case": name, "packets": n, "capture_bytes": size, "runs": {}}
    for command in commands:
        out = work / f"{name}-{command}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [str(EXE), command, str(cap), "--jobs", "1"]
        if command == "extract":
            cmd += ["-o", str(out)]
        else:
            cmd += ["--format", "jsonl"] if command == "streams" else ["--json"]
        r = run(cmd, out if command == "extract" else None)
        r["rss_ok"] = r["peak_rss"] <= budget
        r["disk_ok"] = r["out_disk"] <= 2 * size + BUDGET_LINE * n + (1 << 20)
        r["exit_ok"] = r["exit"] in (0, 3)
        result["runs"][command] = r
        shutil.rmtree(out, ignore_errors=True)
    result["budget_rss"] = budget
    cap.unlink()
    return result


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", choices=sorted(CASES), action="append")
    ap.add_argument("--commands", default="extract", help="extract, or all (extract,streams,audit)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--workdir", default=None, help="where captures and outputs go (default: tmp)")
    args = ap.parse_args()
    commands = (
        ["extract", "streams", "audit"] if args.commands == "all" else args.commands.split(",")
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="tcpweave-adversarial-", dir=args.workdir) as tmp:
        for name in args.case or list(CASES):
            results.append(measure(name, Path(tmp), commands))
            if not args.json:
                _print(results[-1])
    if args.json:
        print(json.dumps(results, indent=1))
    ok = all(
        r["rss_ok"] and r["disk_ok"] and r["exit_ok"] for x in results for r in x["runs"].values()
    )
    return 0 if ok else 1


def _print(r: dict[str, Any]) -> None:
    print(f"{r['case']}: {r['packets']:,} packets, {_mb(r['capture_bytes'])} capture, "
          f"RSS budget {_mb(r['budget_rss'])}")  # fmt: skip
    for command, x in r["runs"].items():
        flags = "".join(" OVER-RSS" * (not x["rss_ok"]) + " OVER-DISK" * (not x["disk_ok"]))
        flags += f" EXIT {x['exit']}" * (not x["exit_ok"])
        print(f"  {command:8s} {x['seconds']:8.2f} s  peak RSS {_mb(x['peak_rss']):>10s}  "
              f"output {_mb(x['out_apparent']):>12s} apparent, {_mb(x['out_disk']):>10s} on disk"
              f"{flags or '  ok'}")  # fmt: skip
        if not x["exit_ok"] and x["stderr"]:
            print(f"           {x['stderr'][0]}")
    sys.stdout.flush()


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
