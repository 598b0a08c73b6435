"""Extraction on Dask distributed workers writes exactly what one process writes.

Two set-ups: a ``LocalCluster`` of two worker processes driven through the Python API,
and a real ``dask scheduler`` with two ``dask worker`` processes started here on
localhost, driven through ``tcpweave extract --scheduler``. The capture comes from the
extract benchmark's generator (out-of-order and retransmitted segments, reused
4-tuples) and is also cut into several files, so that flows cross file boundaries.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tcpweave
from conftest import ROOT, stream_tree
from craft import split_pcap
from tcpweave.cli import app

distributed: Any = pytest.importorskip("dask.distributed")
sys.path.insert(0, str(ROOT / "bench"))
extract_bench: Any = pytest.importorskip("extract")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generated(tmp_path_factory: Any) -> dict[str, Any]:
    params = extract_bench.GenParams(size=3 << 20, sessions=1500, seed=31)
    out = tmp_path_factory.mktemp("gen") / "sessions.pcap"
    capture = extract_bench.ensure_capture(params, out)
    capture["cuts"] = split_pcap(Path(capture["path"]), 5, out.parent)
    return capture  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def single(generated: dict[str, Any], tmp_path_factory: Any) -> dict[str, str]:
    out = tmp_path_factory.mktemp("single")
    tcpweave.extract(generated["path"], out, jobs=1, partition_rows=100_000)
    return stream_tree(out)


def test_local_cluster_equals_one_process(
    generated: dict[str, Any], single: dict[str, str], tmp_path: Path
) -> None:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        tcpweave.extract(generated["cuts"], tmp_path / "dask", client=client, partition_rows=1000)
    assert stream_tree(tmp_path / "dask") == single
    check = extract_bench.check_output(tmp_path / "dask", generated["truth"], True)
    assert check["exact"] == check["expected"] > 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_workers(address: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    with distributed.Client(address, timeout=timeout) as client:
        while len(client.scheduler_info()["workers"]) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} dask workers did not join {address}")
            time.sleep(0.2)


def test_real_scheduler_and_workers_via_cli(
    generated: dict[str, Any], single: dict[str, str], tmp_path: Path
) -> None:
    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip("the dask command is not installed beside this Python")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", ":0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
    ]  # fmt: skip
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [str(dask), "worker", address, "--nworkers", "1", "--nthreads", "1",
                     "--no-dashboard"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                )
            )  # fmt: skip
        _wait_for_workers(address, 2)
        out = tmp_path / "cli"
        result = CliRunner().invoke(
            app,
            ["extract", *map(str, generated["cuts"]), "-o", str(out),
             "--scheduler", address, "--partition-rows", "1000"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    assert stream_tree(out) == single
