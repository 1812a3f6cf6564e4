"""One machine's orchestration stack: a Prefect server, a process worker, the deployments.

Children run in their own sessions, so Ctrl-C reaches only this process, which then stops the
worker first (no new flow runs are picked up) and the server last.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from deploy.deployments import REPO, read_specs, register
from tinymlops.errors import TinyMLOpsError


class StackError(TinyMLOpsError):
    """A part of the local stack did not start or died."""


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)  # the scripts installed beside this Python


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the whole group, incl. flow-run children
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_healthy(api: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise StackError(f"prefect server exited with code {server.returncode} (see its log above)")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise StackError(f"prefect server: no answer on {api}/health within {timeout:.0f} s")


def serve_stack(
    root: Path = REPO,
    host: str = "127.0.0.1",
    port: int = 4200,
    home: Path | None = None,
    say: Callable[[str], None] = print,
    startup_timeout: float = 180,
) -> None:
    """Start server + worker, register prefect.yaml's deployments from `root`, then wait for
    Ctrl-C (or SIGTERM) and stop everything."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    root = Path(root).resolve()
    specs = read_specs(root)
    pools = sorted({s.work_pool.name for s in specs})
    api = f"http://{host}:{port}/api"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if home is not None:
        env["PREFECT_HOME"] = str(home)
        home.mkdir(parents=True, exist_ok=True)
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another API
    children: list[subprocess.Popen] = []
    stop_requested = False

    def on_sigterm(signum, frame):  # a service manager's stop is a Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C stops the stack even when this process inherited SIGINT as ignored (started by a
    # parent that ignores it: a test runner's worker process, nohup); Python then installs no handler.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server_cmd = [_bin("prefect"), "server", "start", "--host", host, "--port", str(port)]
        children.append(subprocess.Popen(server_cmd, env=env, start_new_session=True))
        _wait_healthy(api, children[0], startup_timeout)
        with temporary_settings(updates={PREFECT_API_URL: api}):
            deployed = register(root)
        worker_env = {**env, "PREFECT_API_URL": api}
        for pool in pools:
            cmd = [_bin("prefect"), "worker", "start", "--pool", pool, "--type", "process"]
            children.append(subprocess.Popen(cmd, env=worker_env, cwd=root, start_new_session=True))
        say(f"deployments: {', '.join(sorted(deployed))} (work pool {', '.join(pools)})")
        say(f"Prefect UI: http://{host}:{port}")
        say(f"PREFECT_API_URL={api}   (Ctrl-C stops the worker and the server)")
        while True:
            for proc in children:
                if proc.poll() is not None:
                    raise StackError(f"{' '.join(proc.args[1:3])} exited with code {proc.returncode}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        stop_requested = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        for proc in reversed(children):  # worker(s) first, server last
            _stop(proc)
        if stop_requested:
            say("stopped: worker and Prefect server")
