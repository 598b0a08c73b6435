"""Time and memory of the read-only commands on a big capture: streams, audit, pdus, packets.

Every command runs on the one engine (``tcpweave.run``): a capture larger than one
partition is spilled by flow and processed a partition at a time, so the process tree's
memory must stay within issue 4's budget (100 B per packet + 300 MB) whatever the
capture's size. The capture is bench/extract.py's generated one (default 2 GB, 200,000
sessions); each command runs once (numba's cache filled by an earlier run), and the
script prints the wall time, the peak of the process tree's summed RSS and PSS (sampled
every 0.2 s) and the sum of each process's own high-water mark (an upper bound with no
sampling gap), against the budget. ``--with-extract`` adds extract (for the ratio of
streams and audit to extract).

    .venv/bin/python bench/commands.py                  # 2 GB, --jobs 2
    .venv/bin/python bench/commands.py --size 200M --jobs 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import extract as ex
import packet_table as pt

EXE = str(Path(sys.executable).parent / "tcpweave")


def commands(path: str, jobs: int, out: Path) -> dict[str, list[str]]:
    common = ["--jobs", str(jobs)]
    return {
        "streams": [EXE, "streams", path, "--format", "jsonl", *common],
        "audit": [EXE, "audit", path, "--json", *common],
        "pdus": [EXE, "pdus", path, "--framer", "http", "--format", "jsonl", *common],
        "packets": [EXE, "packets", path, "--format", "csv", *common],
        "extract": [EXE, "extract", path, "-o", str(out), "--force", *common],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="2G", help="capture size (2G, 200M, ...)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--with-extract", action="store_true")
    ap.add_argument("--only", action="append", help="run only this command (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = pt.parse_size(args.size)
    meta = ex.ensure_capture(ex.GenParams(size=size, sessions=ex.default_sessions(size),
                                          seed=1), None)  # fmt: skip
    packets = int(meta["packets"])
    budget = 100 * packets + (300 << 20)
    work = Path(tempfile.mkdtemp(prefix="tcpweave-commands-"))
    todo = commands(meta["path"], args.jobs, work / "extract")
    names = args.only or [n for n in todo if n != "extract" or args.with_extract]
    results: dict[str, Any] = {"capture": meta["path"], "packets": packets, "budget": budget}
    try:
        for name in names:
            r = ex.run_measured(todo[name], work / f"{name}.log")
            r["within_budget"] = max(r["tree_pss"], r["tree_rss"]) <= budget
            results[name] = r
            if not args.json:
                print(f"{name:8s} {r['wall_s']:8.1f} s  tree RSS {r['tree_rss'] / 1e6:8.0f} MB  "
                      f"tree PSS {r['tree_pss'] / 1e6:8.0f} MB  sum of HWM "
                      f"{r['tree_hwm'] / 1e6:8.0f} MB  budget {budget / 1e6:.0f} MB  "
                      f"{'ok' if r['within_budget'] else 'OVER'}  exit {r['exit']}",
                      flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1, default=str))
    ok = all(results[n]["within_budget"] and results[n]["exit"] in (0, 3) for n in names)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
