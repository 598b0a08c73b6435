"""``extract --jobs 2`` writes exactly what ``--jobs 1`` writes, and both match the truth.

The capture comes from the extract benchmark's deterministic generator (bench/extract.py):
3,000 sessions -- more than two 1000-stream blocks, so the work really is shared out to
forked workers -- with out-of-order and retransmitted segments and reused 4-tuples, and
the generator's sha256 of every direction as the truth.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import ROOT, stream_tree
from tcpweave.cli import app

sys.path.insert(0, str(ROOT / "bench"))
extract_bench: Any = pytest.importorskip("extract")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: Any) -> dict[str, Any]:
    params = extract_bench.GenParams(size=6 << 20, sessions=3000, seed=11)
    out = tmp_path_factory.mktemp("gen") / "sessions.pcap"
    return extract_bench.ensure_capture(params, out)  # type: ignore[no-any-return]


def test_two_writers_write_the_same_tree_as_one(generated: dict[str, Any], tmp_path: Path) -> None:
    trees = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        result = CliRunner().invoke(
            app,
            [
                "extract",
                generated["path"],
                "-o",
                str(out),
                "--jobs",
                str(jobs),
                "--partition-rows",
                "1000",
            ],
        )
        assert result.exit_code == 0, result.output
        trees[jobs] = stream_tree(out)
    assert len(trees[1]) > 2 * 2000  # both directions of 3000 sessions, plus streams.jsonl
    assert trees[2] == trees[1]
    check = extract_bench.check_output(tmp_path / "jobs2", generated["truth"], True)
    assert check["mismatched"] == 0 and check["missing"] == 0 and check["unexpected"] == 0
    assert check["exact"] == check["expected"]
