"""The local pool: this process and forked children share a batch of tasks."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tcpweave.run.executors import LocalPool


def _square_with_pid(x: int) -> tuple[int, int]:
    time.sleep(0.002)  # long enough that every process gets some tasks
    return x * x, os.getpid()


def test_every_task_runs_once_and_results_come_back() -> None:
    with LocalPool(3) as pool:
        results = list(pool.map(_square_with_pid, [(x,) for x in range(200)]))
    assert sorted(r for r, _pid in results) == [x * x for x in range(200)]
    pids = {pid for _r, pid in results}
    assert os.getpid() in pids  # the caller works too
    assert len(pids) > 1  # and so do the children


def _fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"task {x} failed")
    time.sleep(0.001)
    return x


@pytest.mark.parametrize("bad", [0, 57, 199])
def test_an_error_in_any_task_is_raised_here(bad: int) -> None:
    with LocalPool(2) as pool, pytest.raises(ValueError, match=f"task {bad} failed"):
        list(pool.map(_fail_on, [(x, bad) for x in range(200)]))


def _die_on(x: int, parent: int) -> int:
    if x == 5 and os.getpid() != parent:  # a child killed in the middle of a task
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 5:  # this process got the task: hand it to a child by waiting
        time.sleep(0.2)
    time.sleep(0.01)
    return x


def test_a_child_that_dies_is_an_error_not_a_lost_task() -> None:
    """If this process claims task 5 itself nothing dies; run until a child claims it."""
    for _ in range(5):
        try:
            with LocalPool(2) as pool:
                done = list(pool.map(_die_on, [(x, os.getpid()) for x in range(40)]))
        except RuntimeError as exc:
            assert "ended with status" in str(exc)
            return
        assert sorted(done) == list(range(40))
    pytest.skip("the calling process claimed the fatal task every time")


def test_warm_runs_here_before_the_tasks() -> None:
    calls: list[int] = []
    with LocalPool(2) as pool:
        results = list(pool.map(_square_with_pid, [(1,), (2,)], warm=lambda: calls.append(1)))
    assert calls == [1]
    assert sorted(r for r, _ in results) == [1, 4]


def test_one_job_runs_everything_here() -> None:
    with LocalPool(1) as pool:
        results = list(pool.map(_square_with_pid, [(x,) for x in range(5)]))
    assert {pid for _, pid in results} == {os.getpid()}
