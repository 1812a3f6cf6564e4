"""Which Prefect task runner fans tasks out: threads on one machine, Dask at scale.

TINYMLOPS_TASK_RUNNER=thread (default) or dask; TINYMLOPS_DASK_ADDRESS points at a running
Dask scheduler (tcp://host:8786), otherwise a LocalCluster is started for the flow run.
"""

from __future__ import annotations

import os

from tinymlops.errors import ConfigError

RUNNER_ENV = "TINYMLOPS_TASK_RUNNER"
DASK_ADDRESS_ENV = "TINYMLOPS_DASK_ADDRESS"
WORKERS_ENV = "TINYMLOPS_TASK_WORKERS"


def task_runner_from_env():
    kind = os.environ.get(RUNNER_ENV, "thread").strip().lower() or "thread"
    workers = os.environ.get(WORKERS_ENV)
    if workers is not None and not workers.isdigit():
        raise ConfigError(f"{WORKERS_ENV}: expected a positive integer, got {workers!r}")
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=int(workers) if workers else None)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        address = os.environ.get(DASK_ADDRESS_ENV)
        if address:
            return DaskTaskRunner(address=address)
        # threads_per_worker=1: TensorFlow and TFLM already use the cores they get
        return DaskTaskRunner(cluster_kwargs={"n_workers": int(workers) if workers else 2, "threads_per_worker": 1})
    raise ConfigError(f"{RUNNER_ENV}: expected 'thread' or 'dask', got {kind!r}")
