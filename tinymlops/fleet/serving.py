"""Run a fleet app under a real uvicorn server on loopback, in a background thread: for the
simulator, tests and benchmarks that need the real HTTP stack in-process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from fastapi import FastAPI

from tinymlops.fleet import FleetError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, port: int | None = None, timeout: float = 20.0) -> Iterator[str]:
    """Yield the base URL while uvicorn serves `app` on 127.0.0.1; shut it down cleanly after."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", backlog=4096)
    )
    thread = threading.Thread(target=server.run, name=f"fleet-server-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise FleetError(f"fleet server on 127.0.0.1:{port} did not start within {timeout:.0f} s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)


@contextlib.contextmanager
def serve_in_process(
    env: dict[str, str], port: int | None = None, args: tuple[str, ...] = (), timeout: float = 60.0
) -> Iterator[tuple[str, object]]:
    """`tinymlops fleet serve` as a separate process (the real CLI); yields (base URL, Popen).
    `env` is the child's whole environment. Stops it with SIGTERM (SIGKILL if it hangs)."""
    import subprocess
    import sys

    import httpx

    port = port or free_port()
    cmd = [sys.executable, "-c", "from tinymlops.cli import main; main()", "fleet", "serve", "--port", str(port), *args]
    import tempfile

    log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child can never block on it
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                err = log.read().decode(errors="replace").strip().splitlines()
                raise FleetError(f"fleet server exited with {proc.returncode}: {err[-1] if err else 'no output'}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise FleetError(f"fleet server on {url} not ready within {timeout:.0f} s")
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
