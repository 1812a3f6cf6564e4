"""Which Prefect task runner fans tasks out: threads on one machine, Dask at scale.

TINYMLOPS_TASK_RUNNER=thread (default) or dask; TINYMLOPS_DASK_ADDRESS points at a running
Dask scheduler (tcp://host:8786), otherwise a LocalCluster is started for the flow run.
"""

from __future__ import annotations

from typing import Any

from tinymlops.settings import TaskRunnerSettings


def task_runner_from_env() -> Any:
    settings = TaskRunnerSettings.from_env()
    if settings.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=settings.workers)
    from prefect_dask import DaskTaskRunner

    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # threads_per_worker=1: TensorFlow and TFLM already use the cores they get
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.workers or 2, "threads_per_worker": 1})
