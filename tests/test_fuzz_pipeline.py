"""Fuzzing the whole pipeline: mutated captures through extract, streams, audit and framers.

Seeds are crafted captures rich in reassembly cases (tests/craft.py: overlaps,
retransmissions, port reuse, fragments, ...) and a generated capture of many sessions;
each is mutated (bit flips, absurd length words, cuts, duplicated and removed spans)
and run through ``fuzz/pipeline.py``'s ``check_pipeline`` in a child process: every
input is read or raises CaptureError, and its output stays within the disk bound.
The child's peak RSS must stay within the memory budget and the batch must end (a hang
ends the test at its timeout). The longer campaign is fuzz/fuzz_pipeline.py (atheris).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT
from test_fuzz import mutate

#: peak RSS of the child running the batch: the process's own ~250 MB and room to spare;
#: the inputs are a few kB, so anything near this is a leak or a blow-up
RSS_LIMIT = 1536 << 20
SEEDS_KEPT = 12
MUTANTS_PER_SEED = 5

_CHILD = """
import json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
from pipeline import check_pipeline
results = {}
for path in sys.argv[3:]:
    try:
        results[path] = check_pipeline(path, sys.argv[2])
    except BaseException as exc:
        results[path] = "FAILED " + "".join(traceback.format_exception_only(exc)).strip()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: Any) -> list[Path]:
    craft: Any = pytest.importorskip("craft")
    base = tmp_path_factory.mktemp("pipeline-fuzz")
    built = craft.build_all(base / "seeds")
    rng = random.Random(20261203)
    # the largest crafted captures hold the most segments, overlaps and sessions
    seeds = sorted(built.values(), key=lambda p: Path(p).stat().st_size)[-SEEDS_KEPT:]
    out = []
    for k, seed in enumerate(seeds):
        data = Path(seed).read_bytes()
        out.append(Path(seed))
        for m in range(MUTANTS_PER_SEED):
            path = base / f"m{k:02d}-{m}.pcap"
            path.write_bytes(mutate(rng, data, ops=4))
            out.append(path)
    return out


def test_mutated_captures_through_the_whole_pipeline(inputs: list[Path], tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    cmd = [
        sys.executable,
        "-c",
        _CHILD,
        str(ROOT / "fuzz"),
        str(tmp_path / "work"),
        *map(str, inputs),
    ]
    with open(tmp_path / "out", "w+") as out_f, open(tmp_path / "err", "w+") as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f)
        _, status, usage = os.wait4(proc.pid, 0)  # also its peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert os.waitstatus_to_exitcode(status) == 0, err[-3000:]
    results = json.loads(out)
    failed = {p: r for p, r in results.items() if r.startswith("FAILED")}
    assert not failed, "\n".join(f"{p}: {r}" for p, r in failed.items())
    assert set(results.values()) <= {"ok", "unreadable"}
    # most mutants are still read: the pipeline behind the reader is exercised
    assert list(results.values()).count("ok") >= len(results) // 2
    assert usage.ru_maxrss * 1024 <= RSS_LIMIT, f"peak RSS {usage.ru_maxrss // 1024} MB"
