"""Time ``tcpweave audit`` against ``tcpweave extract`` on the ~1 GB benchmark capture.

Target (issue 6): audit costs at most 1.5x extract. Both are run through the
public command line, interleaved (extract, audit, extract, audit, ...) after
one warm-up of each (page cache, numba's on-disk cache), and the medians are
compared. extract writes to /dev/shm (deleted after every run) so that the
figure is tcpweave's work, not the disk's; audit writes its JSON to /dev/null.

    .venv/bin/python bench/audit.py                      # the cached 1 GB capture, 3 rounds
    .venv/bin/python bench/audit.py --capture F --rounds 5
    .venv/bin/python bench/audit.py --json

The capture is bench/extract.py's (generated and cached there when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / ".venv" / "bin" / "tcpweave"
DEFAULT = Path("/tmp/tcpweave-bench/tcpweave-extract-1073741824-n100000-s20240502-v1.2.pcap")
TARGET = 1.5


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    return env


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=_env())
    return time.perf_counter() - started


def run_extract(capture: Path) -> float:
    out = Path(tempfile.mkdtemp(prefix="tcpweave-bench-audit-", dir="/dev/shm"))
    try:
        return _timed([str(TOOL), "extract", str(capture), "-o", str(out / "x")])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def run_audit(capture: Path) -> float:
    return _timed([str(TOOL), "audit", str(capture), "--json"])


def ensure_capture(path: Path) -> Path:
    if path.exists():
        return path
    if path != DEFAULT:
        sys.exit(f"{path}: no such capture")
    subprocess.run([sys.executable, str(ROOT / "bench" / "extract.py"), "--generate-only"],
                   check=True, env=_env())  # fmt: skip
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capture", type=Path, default=DEFAULT)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    capture = ensure_capture(args.capture)
    run_extract(capture)  # warm-up: page cache, compiled kernels
    run_audit(capture)
    times: dict[str, list[float]] = {"extract": [], "audit": []}
    for _ in range(args.rounds):
        times["extract"].append(run_extract(capture))
        times["audit"].append(run_audit(capture))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["audit"] / med["extract"]
    result = {"capture": str(capture), "bytes": capture.stat().st_size, "runs_s": times,
              "median_s": med, "ratio": ratio, "target": TARGET, "ok": ratio <= TARGET}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"capture  {capture} ({capture.stat().st_size / 1e9:.2f} GB), {args.rounds} rounds")
        for k in ("extract", "audit"):
            runs = " ".join(f"{t:.2f}" for t in times[k])
            print(f"{k:8} median {med[k]:6.2f} s   runs {runs}")
        print(f"audit / extract = {ratio:.2f} (target <= {TARGET})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
