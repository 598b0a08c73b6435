"""One capture through the whole pipeline, with the invariant the fuzzers hold.

``check_pipeline(path, work)`` runs ``extract`` (partitioned: the engine under the
command line), then on the capture object the session streams, the audit and two
framers. Every input must either go through all of it or raise ``CaptureError``
(the file is unreadable) -- any other exception is a finding -- and what it writes
must stay small: on disk at most twice the input plus a streams.jsonl line per
packet (``disk_bound``), whatever the input claims. Used by tests/test_fuzz_pipeline.py
(mutated captures, in the suite) and fuzz/fuzz_pipeline.py (atheris).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import tcpweave
from tcpweave import CaptureError

#: the most a streams.jsonl line (with its gap and conflict lists) may cost per packet
LINE_BYTES = 1024


def disk_bound(input_bytes: int) -> int:
    """The most an extraction of ``input_bytes`` of capture may put on disk."""
    frames = max(input_bytes // 16, 1)  # a record is at least its 16-byte header
    return 2 * input_bytes + LINE_BYTES * frames + (1 << 20)


def on_disk(root: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(base, name)).st_blocks * 512
    return total


def check_pipeline(path: str, work: str, partition_rows: int = 64) -> str:
    """Run the pipeline on ``path`` (scratch space in ``work``); returns "ok" or
    "unreadable". Raises AssertionError when an invariant breaks, and lets any exception
    other than CaptureError through."""
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    try:
        summary, _run = tcpweave.extract(path, out, jobs=1, partition_rows=partition_rows)
    except CaptureError:
        return "unreadable"
    used = on_disk(out)
    bound = disk_bound(os.path.getsize(path))
    assert used <= bound, f"{path}: extract put {used:,} bytes on disk (bound {bound:,})"
    lines = Path(out, "streams.jsonl").read_text().splitlines()
    assert len(lines) == summary.directions
    for line in lines:
        rec = json.loads(line)
        if rec["path"] is not None:
            assert os.path.getsize(os.path.join(out, rec["path"])) in (rec["length"], rec["bytes"])
    assert not os.path.exists(os.path.join(out, "INCOMPLETE.json"))
    with tcpweave.open(path) as cap:
        for stream in cap.streams():
            for d in (stream.c2s, stream.s2c):
                sum(c.length for c in d.chunks())
        cap.audit()
        for spec in ("length:size=2", "http"):
            for _pdu in cap.pdus(spec, data=False):
                pass
    shutil.rmtree(out, ignore_errors=True)
    return "ok"
