"""Remember that the user pressed Ctrl-C, even when the KeyboardInterrupt it raised does not survive.

An interrupt that lands inside a library's context manager (TensorFlow's graph and distribution
scopes, a thread pool's shutdown) can come out as that library's own error, an AssertionError
say. The run was still stopped by its user: it must end KILLED in MLflow, with the CLI's one
line and no traceback. The CLI installs the latch; the flow and the console filter ask it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_seen = threading.Event()


def interrupted() -> bool:
    """True once Ctrl-C reached this process inside the installed latch (until it is left)."""
    return _seen.is_set()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _seen.set()
    raise KeyboardInterrupt  # Python's own default action, now remembered


@contextmanager
def sigint_latch() -> Iterator[None]:
    """Install the remembering handler (main thread only) and restore the previous one after."""
    _seen.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:  # a background job ignores Ctrl-C by design: keep it so
        yield
        return
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:  # the interrupt belonged to this scope: later work in the process is not "stopped by its user"
        signal.signal(signal.SIGINT, previous)
        _seen.clear()
