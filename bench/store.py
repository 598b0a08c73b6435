"""Streams as data: ``tcpweave extract --store DIR`` against ``tcpweave extract -o DIR``.

The capture is ``extract.py``'s (default about 1 GB and 100,000 sessions, cached with
the generator's truth: the sha256 of every direction). After one warm-up run of each
(page cache, numba's on-disk cache), the two commands run in interleaved rounds (the
order flips every round, so neither always runs on the other's dirty pages), each with
all cores; the report gives the median wall time, CPU time and peak memory of each, and
the ratio store / file tree per round and of the medians. The machine is shared: only
ratios taken side by side mean much.

Checks: every direction of the last store, read back with pyarrow alone, hashed from its
``data`` column, equals the generator's truth (and so does every file tree's
streams.jsonl, as in extract.py).

Target: the store in at most 0.4 times the file tree's wall time.

Usage::

    .venv/bin/python bench/store.py                             # 1 GB, 100k sessions
    .venv/bin/python bench/store.py --size 200M --rounds 3      # quicker
    .venv/bin/python bench/store.py --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import extract as bench
import packet_table as pt

TARGET_RATIO = 0.4  # store wall time / file tree wall time, at most


def commands(path: str, work: Path) -> dict[str, tuple[list[str], Path]]:
    """name -> (command, output directory)."""
    tw = [sys.executable, "-m", "tcpweave", "extract", path, "-q"]
    tree, store = work / "tree", work / "store"
    return {
        "tree": ([*tw, "-o", str(tree)], tree),
        "store": ([*tw, "--store", str(store)], store),
    }


def check_store(out: Path, truth_path: str) -> dict[str, Any]:
    """Every direction of the store (pyarrow alone; its ``data`` hashed here) against the
    generator's truth: (client, server, session, direction) -> (kept bytes, sha256)."""
    import pyarrow.parquet as pq

    truth = {tuple(r[:6]): (r[6], r[7]) for r in json.loads(Path(truth_path).read_text())}
    res = {"expected": len(truth), "exact": 0, "mismatched": 0, "unexpected": 0}
    seen = set()
    digests: dict[tuple[Any, ...], Any] = {}
    names = ["src", "sport", "dst", "dport", "session", "direction", "bytes", "gaps", "piece",
             "data"]  # fmt: skip
    for part in sorted((out / "streams").glob("*.parquet")):
        for batch in pq.ParquetFile(part).iter_batches(columns=names, batch_size=4096):
            cols = {n: batch.column(n) for n in names}
            data = cols.pop("data")
            rows = batch.drop_columns(["data"]).to_pylist()
            for i, r in enumerate(rows):
                c2s = r["direction"] == "c2s"
                client = (r["src"], r["sport"]) if c2s else (r["dst"], r["dport"])
                server = (r["dst"], r["dport"]) if c2s else (r["src"], r["sport"])
                key = (bench._norm(client[0]), client[1], bench._norm(server[0]), server[1],
                       r["session"], r["direction"])  # fmt: skip
                digest = digests.setdefault(key, [hashlib.sha256(), r])
                digest[0].update(data[i].as_buffer() or b"")
    for key, (digest, r) in digests.items():
        want = truth.get(key)
        if want is None:
            res["unexpected"] += 1
            continue
        seen.add(key)
        exact = digest.hexdigest() == want[1] and r["bytes"] == want[0] and r["gaps"] == 0
        res["exact" if exact else "mismatched"] += 1
    res["missing"] = len(truth) - len(seen)
    res["passed"] = res["exact"] == len(truth) and not res["mismatched"] and not res["unexpected"]
    return res


def run(meta: dict[str, Any], rounds: int, work: Path) -> dict[str, Any]:
    cmds = commands(meta["path"], work)
    work.mkdir(parents=True, exist_ok=True)
    bench.subprocess.run(["cat", meta["path"]], stdout=bench.subprocess.DEVNULL, check=True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cmds}
    checks: list[dict[str, Any]] = []
    for name, (cmd, out) in cmds.items():  # warm-up: page cache, numba's cache
        bench._prepare_out(out)
        warm = bench.run_measured(cmd, work / f"{name}.warm.log")
        if warm["exit"] != 0:
            raise SystemExit(f"{name} failed: {warm['stderr_tail']}")
        bench._clean(out)
    for k in range(rounds):
        order = list(cmds) if k % 2 == 0 else list(reversed(cmds))
        for name in order:
            cmd, out = cmds[name]
            bench._prepare_out(out)
            m = bench.run_measured(cmd, work / f"{name}.{k}.log")
            if m["exit"] != 0:
                raise SystemExit(f"{name} failed: {m['stderr_tail']}")
            runs[name].append(m)
            if name == "tree":
                checks.append(bench.check_output(out, meta["truth"], read_files=False))
            elif k == rounds - 1:
                checks.append(check_store(out, meta["truth"]))
            bench._clean(out)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "cpu_s", "maxrss")}
           for n, rs in runs.items()}  # fmt: skip
    per_round = [s["wall_s"] / t["wall_s"] for t, s in zip(runs["tree"], runs["store"],
                                                           strict=True)]  # fmt: skip
    ratio = med["store"]["wall_s"] / med["tree"]["wall_s"]
    return {
        "capture": {k: meta[k] for k in ("path", "bytes", "packets") if k in meta},
        "rounds": rounds,
        "median": med,
        "ratio_of_medians": ratio,
        "ratio_per_round": per_round,
        "ratio_median_of_rounds": statistics.median(per_round),
        "load_before": [r["load_before"] for rs in runs.values() for r in rs],
        "checks_passed": all(c["passed"] for c in checks),
        "checks": checks[-2:],
        "target_met": statistics.median(per_round) <= TARGET_RATIO,
    }


def report(res: dict[str, Any]) -> str:
    cap = res["capture"]
    lines = [f"capture {cap['path']}: {cap['bytes']:,} bytes, {cap['packets']:,} packets; "
             f"{res['rounds']} interleaved rounds, medians"]  # fmt: skip
    lines.append(f"{'':8}{'wall s':>9}{'cpu s':>9}{'peak MB':>9}")
    for name, m in res["median"].items():
        lines.append(f"{name:8}{m['wall_s']:9.2f}{m['cpu_s']:9.2f}{m['maxrss'] / 1e6:9.0f}")
    rounds = ", ".join(f"{r:.2f}" for r in res["ratio_per_round"])
    lines.append(f"store / tree wall time: per round {rounds}; median "
                 f"{res['ratio_median_of_rounds']:.2f} (target <= {TARGET_RATIO}); "
                 f"of the medians {res['ratio_of_medians']:.2f}")  # fmt: skip
    lines.append(f"load average before the runs: "
                 f"{', '.join(f'{x:.1f}' for x in res['load_before'])}")  # fmt: skip
    lines.append(f"byte-exact against the generator's truth: {res['checks_passed']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="capture size; 1G, 200M, ... (1G)")
    ap.add_argument("--sessions", type=int, default=None, help="(default: one per 10.7 kB)")
    ap.add_argument("--seed", type=int, default=20240502)
    ap.add_argument("--out", type=Path, default=None, help="capture path (default: a temp dir)")
    ap.add_argument("--work", type=Path, default=None, help="where the runs write (temp dir)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    size = pt.parse_size(args.size)
    params = bench.GenParams(size=size, sessions=args.sessions or bench.default_sessions(size),
                             seed=args.seed)  # fmt: skip
    meta = bench.ensure_capture(params, args.out)
    work = args.work or Path(tempfile.gettempdir()) / "tcpweave-bench" / "store-out"
    res = run(meta, args.rounds, work)
    print(json.dumps(res, indent=1) if args.json else report(res))
    return 0 if res["checks_passed"] and res["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
