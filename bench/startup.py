"""Start-up time of the ``tcpweave`` command (issue 15, item 8), against its goals.

What a user waits for before any packet is read: ``--help`` and ``--version`` (the
interpreter, the command-line library and whatever ``import tcpweave`` pulls in), a small
capture extracted with numba's kernel cache warm, and the first run on a new machine (an
empty kernel cache: every kernel the command calls is compiled). Each figure is the
median wall time of separate processes, timed from outside with ``time.perf_counter``
around ``subprocess.run``; the CPU time of the children (``resource``) is printed beside
it, since on a shared machine wall time also counts waiting for a core.

    .venv/bin/python bench/startup.py                  # 5 runs each, 1 first run
    .venv/bin/python bench/startup.py --runs 9 --first-runs 3 --json

The kernel cache used is a temporary directory of the script's own (``NUMBA_CACHE_DIR``),
empty for each first run; the warm runs reuse the one the first run filled. The capture
is examples/sample-http.pcap (79 frames, 4 sessions). The source tree that is timed is
the one ``PYTHONPATH`` or the environment's installation points at (``--src`` to choose).
The script exits non-zero when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "sample-http.pcap"

#: seconds: (name, goal) as issue 15 item 8 states them
GOALS = {"--help": 0.25, "extract warm": 0.5, "extract first run": 20.0}


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, children's CPU seconds and stderr of one run of ``cmd`` (which must
    succeed)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {done.returncode}\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stderr


def measure(cmd: list[str], env: dict[str, str], runs: int, fresh_cache: bool,
            work: Path) -> dict[str, Any]:  # fmt: skip
    """Median (and all) wall and CPU times of ``runs`` runs; ``{out}`` in ``cmd`` is a new
    output directory each run; with ``fresh_cache`` each run gets an empty kernel cache."""
    walls, cpus, notes = [], [], []
    for i in range(runs):
        out = work / f"out-{time.monotonic_ns()}"
        run_env = dict(env)
        if fresh_cache:
            run_env["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="cache-", dir=work)
        wall, cpu, err = timed([a.replace("{out}", str(out)) for a in cmd], run_env)
        walls.append(wall)
        cpus.append(cpu)
        notes.append(err.strip().splitlines()[:1])
        shutil.rmtree(out, ignore_errors=True)
        if fresh_cache and i + 1 < runs:
            shutil.rmtree(run_env["NUMBA_CACHE_DIR"], ignore_errors=True)
        elif fresh_cache:  # the warm runs reuse the last first run's cache
            env["NUMBA_CACHE_DIR"] = run_env["NUMBA_CACHE_DIR"]
    return {"median_s": statistics.median(walls), "cpu_median_s": statistics.median(cpus),
            "runs_s": [round(w, 3) for w in walls], "stderr_first_line": notes[0]}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of each warm measurement")
    ap.add_argument("--first-runs", type=int, default=1, help="runs with an empty cache")
    ap.add_argument("--src", help="source tree to time (put first on PYTHONPATH)")
    ap.add_argument("--capture", default=str(SAMPLE))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tcpweave-startup-"))
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = os.pathsep.join([args.src, env.get("PYTHONPATH", "")]).rstrip(":")
    env["NUMBA_CACHE_DIR"] = str(work / "cache-unused")
    exe = [sys.executable, "-m", "tcpweave"]
    extract = [*exe, "extract", args.capture, "-o", "{out}", "-q", "--jobs", "1"]
    results: dict[str, Any] = {}
    try:
        # the first runs come first: the warm runs then use the cache the last one filled
        results["extract first run"] = measure(extract, env, args.first_runs, True, work)
        results["--help"] = measure([*exe, "--help"], env, args.runs, False, work)
        results["--version"] = measure([*exe, "--version"], env, args.runs, False, work)
        results["extract warm"] = measure(extract, env, args.runs, False, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    missed = [n for n, goal in GOALS.items() if results[n]["median_s"] > goal]
    if args.json:
        print(json.dumps({"results": results, "goals": GOALS, "missed": missed}, indent=1))
    else:
        for name, r in results.items():
            goal = GOALS.get(name)
            verdict = "" if goal is None else f"goal {goal:5.2f} s  " + (
                "MISSED" if name in missed else "ok")  # fmt: skip
            print(f"{name:18s} {r['median_s']:7.2f} s  (cpu {r['cpu_median_s']:6.2f} s)  "
                  f"{verdict}  runs {r['runs_s']}")  # fmt: skip
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
