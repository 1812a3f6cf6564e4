"""Run a fleet app under a real uvicorn server on loopback: in a background thread (tests that need
the real HTTP stack in-process), in worker processes of its own (serve_fleet: the simulator, whose
devices must not share a GIL with the server), or as the real CLI (serve_in_process)."""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
import typing
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi import FastAPI
from pydantic import SecretStr

from tinymlops.fleet import FleetError

if TYPE_CHECKING:
    from tinymlops.fleet.config import FleetSettings

READY = b"ready\n"


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


@contextlib.contextmanager
def serve_fleet(
    settings: FleetSettings,
    *,
    workers: int = 1,
    threads: int = 1,
    keep_alive_seconds: int = 300,
    timeout: float = 60.0,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[str]:
    """Yield the base URL while `workers` processes serve create_app(settings) on 127.0.0.1.

    Each process listens on the same port with SO_REUSEPORT, so the kernel spreads connections
    evenly across them (on one shared socket, whichever process accepts first would take most of
    a client's kept-alive connections). They share the store; the schema is migrated once here,
    before they start. Each runs the app's blocking endpoints on `threads` worker threads: they
    mostly write, SQLite takes one writer at a time, and more threads only contend for the GIL
    while holding the write lock (a 10,000-device rollout spent ~15 % more server CPU with 40).
    Settings, secrets included, reach each child on its stdin, never in argv or the environment. A
    child that dies before it is ready fails this with its last line of stderr."""
    from tinymlops.fleet.store import Store

    if not hasattr(socket, "SO_REUSEPORT"):
        raise FleetError("serving the fleet from its own processes needs SO_REUSEPORT (Linux, BSD, macOS)")
    Store.open(settings.db_url).close()
    payload = json.dumps(settings.model_dump(), default=_reveal).encode()
    holder = _reuseport_socket(port, host)  # bound, never listening: keeps the port ours until the end
    port = holder.getsockname()[1]
    code = "from tinymlops.fleet.api.serving import serve_child; serve_child()"
    children: list[tuple[subprocess.Popen, typing.IO[bytes]]] = []
    try:
        for _ in range(workers):
            log: typing.IO[bytes] = tempfile.TemporaryFile()  # a file, not a pipe: never blocks a chatty child
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(port), str(keep_alive_seconds), str(threads), host],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
            children.append((proc, log))
            assert proc.stdin is not None
            proc.stdin.write(payload)
            proc.stdin.close()
        deadline = time.monotonic() + timeout
        for proc, log in children:
            _await_ready(proc, log, deadline)
        yield f"http://{host}:{port}"
    finally:
        for proc, _ in children:
            proc.terminate()
        for proc, log in children:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            log.close()
        holder.close()


def _reuseport_socket(port: int, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _reveal(value: object) -> str:
    """JSON for what pydantic's model_dump leaves as objects: secrets in clear (for a child's stdin
    only), paths as text."""
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _await_ready(proc: subprocess.Popen, log: typing.IO[bytes], deadline: float) -> None:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(max(0.0, deadline - time.monotonic()))
    line = proc.stdout.readline() if ready else b""
    if line == READY:
        return
    proc.kill()
    proc.wait()
    log.seek(0)
    err = log.read().decode(errors="replace").strip().splitlines()
    why = err[-1] if err else ("no output" if ready else "timed out")
    raise FleetError(f"fleet server process did not start: {why}")


def serve_child() -> None:
    """One server process of serve_fleet: port, keep-alive, threads and host in argv, FleetSettings as
    JSON on stdin; says READY on stdout once it accepts."""
    import anyio.to_thread
    import uvicorn

    from tinymlops.fleet.api import create_app
    from tinymlops.fleet.config import FleetSettings

    port, keep_alive, threads = (int(arg) for arg in sys.argv[1:4])
    host = sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1"
    settings = FleetSettings.model_validate_json(sys.stdin.buffer.read())

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = threads
            await super().startup(sockets)
            sys.stdout.buffer.write(READY)
            sys.stdout.buffer.flush()

    config = uvicorn.Config(
        create_app(settings), log_level="warning", access_log=False, timeout_keep_alive=keep_alive, lifespan="on"
    )
    listener = _reuseport_socket(port, host)
    listener.listen(4096)
    Server(config).run(sockets=[listener])
