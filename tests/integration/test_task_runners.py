"""The task runner chosen by environment: a mapped flow really fans out on a Dask LocalCluster. (The
whole pipeline on Dask worker processes is part of tests/integration/test_pipeline_flow.py.)"""

from __future__ import annotations

import threading

import pytest
from prefect import flow, task

from flows.runners import task_runner_from_env
from tinymlops.errors import ConfigError


@task
def where_squared(x: int) -> tuple[int, str]:
    from distributed import get_worker

    try:
        return x * x, get_worker().address
    except ValueError:  # not inside a Dask worker
        return x * x, threading.current_thread().name


def test_dask_runner_maps_tasks_onto_the_cluster_workers(prefect_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        monkeypatch.setenv("TINYMLOPS_TASK_RUNNER", "dask")
        monkeypatch.setenv("TINYMLOPS_DASK_ADDRESS", cluster.scheduler_address)
        runner = task_runner_from_env()
        assert isinstance(runner, DaskTaskRunner)

        @flow(task_runner=runner)
        def fan_out(n: int) -> list[tuple[int, str]]:
            return [f.result() for f in where_squared.map(range(n))]

        results = fan_out(8)
        workers = set(cluster.scheduler.workers)
    assert [r[0] for r in results] == [x * x for x in range(8)]
    assert {r[1] for r in results} <= workers  # every task ran on one of the cluster's workers


def test_thread_runner_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner

    monkeypatch.delenv("TINYMLOPS_TASK_RUNNER", raising=False)
    monkeypatch.setenv("TINYMLOPS_TASK_WORKERS", "3")
    runner = task_runner_from_env()
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3


@pytest.mark.parametrize(("name", "value"), [("TINYMLOPS_TASK_RUNNER", "ray"), ("TINYMLOPS_TASK_WORKERS", "two")])
def test_bad_setting_is_one_line(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name) as info:
        task_runner_from_env()
    assert "\n" not in str(info.value)
