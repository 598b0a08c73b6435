"""Packet-table speed per commit: the figure that shows a regression, and where it came in.

For each commit given, the ``src/`` tree at that commit is exported (``git archive``, no
worktree and no change to the repository) into ``--work``, with its own numba cache
(filled by one warm-up process per commit: a first compile is slow). Then, for
``--rounds`` rounds, one fresh process per commit, interleaved (commit A, B, C, A, B, C,
...), pinned to one core, opens the capture and reports:

* ``first_open``: the process's first ``tcpweave.open(F).packets`` (cached kernels loaded,
  fresh memory faulted in), as the bench measures it;
* ``open``: the best of ``--repeat`` further opens in the same process;
* ``decode``: ``decode(open_sources([F]))`` -- the record walk and decode alone, best of
  ``--repeat``; ``decode_kernel`` and ``scan_kernel`` the time inside the two kernels
  during that call (their module attributes wrapped by a timer);
* the rest of ``open`` (flows, the table, ...) is ``open - decode``.

Every figure is in nanoseconds per record; the medians over rounds are printed. On a
shared machine, the best-of-``--repeat`` figures and the medians over interleaved rounds
keep most of the noise out; compare commits measured in one run only.

Usage::

    .venv/bin/python bench/history.py 4a15aaf bb58bce HEAD            # 200 MB bench capture
    .venv/bin/python bench/history.py --capture F.pcap --rounds 5 A B
    .venv/bin/python bench/history.py --json A B
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
path, repeat = sys.argv[1], int(sys.argv[2])
import tcpweave
from tcpweave.capture import open_sources
from tcpweave import decode as dec
from tcpweave.decode import _kernels as dk
from tcpweave.capture import _kernels as ck
tcpweave.open  # a lazy name since d9a59dc: the engine (numpy, numba, pyarrow) is imported here

spent = {"decode_kernel": 0.0, "scan_kernel": 0.0}

def timed(mod, name, key):
    fn = getattr(mod, name)
    def wrapper(*a):
        t = time.perf_counter()
        try:
            return fn(*a)
        finally:
            spent[key] += time.perf_counter() - t
    setattr(mod, name, wrapper)

timed(dk, "decode_records", "decode_kernel")
timed(ck, "scan_pcap_records", "scan_kernel")
t = time.perf_counter()
cap = tcpweave.open(path)
n = len(cap.packets)
out = {"first_open": time.perf_counter() - t, "packets": n}
cap = None
best = {}
for _ in range(repeat):
    t = time.perf_counter()
    cap = tcpweave.open(path)
    len(cap.packets)
    best["open"] = min(best.get("open", 9e9), time.perf_counter() - t)
    cap = None
    for key in spent:
        spent[key] = 0.0
    t = time.perf_counter()
    sources = open_sources([path])
    decoded = dec.decode(sources)
    best["decode"] = min(best.get("decode", 9e9), time.perf_counter() - t)
    records = decoded.stats.frames
    for key, value in spent.items():
        best[key] = min(best.get(key, 9e9), value)
    decoded = None
    for src in sources:
        src.close()
out.update(best)
out["records"] = records
print(json.dumps(out))
"""

FIGURES = ("first_open", "open", "decode", "decode_kernel", "scan_kernel")


def export(commit: str, work: Path) -> tuple[str, Path]:
    """``src/`` at ``commit`` under ``work`` (reused when already there)."""
    full = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", commit + "^{commit}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tree = work / full[:10]
    if not (tree / "src" / "tcpweave").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", full, "src"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return full[:10], tree


def run_child(tree: Path, capture: str, repeat: int, cpu: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["NUMBA_CACHE_DIR"] = str(tree / ".numba_cache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # imports as a user's would run: from .pyc
    cmd = ["taskset", "-c", str(cpu), sys.executable, "-c", CHILD, capture, str(repeat)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree, check=False)
    if res.returncode:
        raise RuntimeError(f"{tree.name}: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench_capture(size: str) -> str:
    """The packet-table bench's capture of ``size`` (generated once, then reused)."""
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "packet_table.py"),
            "--size",
            size,
            "--generate-only",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)["path"]  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("commits", nargs="+")
    ap.add_argument("--capture", help="capture file (default: the 200M packet-table bench one)")
    ap.add_argument("--size", default="200M", help="bench capture size when --capture is not given")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="opens per process (best kept)")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tcpweave-history")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    capture = args.capture or bench_capture(args.size)
    trees = [export(c, args.work) for c in args.commits]
    for name, tree in trees:  # compile each commit's kernels into its own cache
        print(f"warming {name}", file=sys.stderr, flush=True)
        run_child(tree, capture, 1, args.cpu)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for r in range(args.rounds):
        for name, tree in trees:
            runs[name].append(run_child(tree, capture, args.repeat, args.cpu))
        print(f"round {r + 1} done", file=sys.stderr, flush=True)
    table = []
    for commit, (name, _tree) in zip(args.commits, trees, strict=True):
        rs = runs[name]
        rec = rs[0]["records"]
        row: dict[str, Any] = {
            "commit": name,
            "given": commit,
            "records": rec,
            "packets": rs[0]["packets"],
        }
        for fig in FIGURES:
            row[fig + "_ns"] = round(statistics.median(x[fig] for x in rs) * 1e9 / rec)
        table.append(row)
    if args.json:
        print(json.dumps({"capture": capture, "rounds": args.rounds, "rows": table}, indent=1))
        return 0
    print(
        f"capture {capture}: {table[0]['records']:,} records; ns/record, medians of "
        f"{args.rounds} interleaved rounds (best of {args.repeat} opens per process)"
    )
    head = "".join(f"{f:>15}" for f in FIGURES)
    print(f"{'commit':12}{head}")
    for row in table:
        print(f"{row['commit']:12}" + "".join(f"{row[f + '_ns']:15}" for f in FIGURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
