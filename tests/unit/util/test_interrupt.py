"""The Ctrl-C latch: an interrupt is remembered even when a library turns it into its own error."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tinymlops.util.interrupt import interrupted, sigint_latch


@contextmanager
def _scope_that_asserts_on_the_way_out() -> Iterator[None]:
    """As a graph or distribution scope does when an interrupt lands between its enter and exit."""
    try:
        yield
    finally:
        raise AssertionError("scope stack out of order")


def test_an_interrupt_turned_into_an_assertion_error_is_still_an_interrupt() -> None:
    before = signal.getsignal(signal.SIGINT)
    with sigint_latch():
        assert not interrupted()
        with pytest.raises(AssertionError) as caught:
            with _scope_that_asserts_on_the_way_out():
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(10_000_000):  # the handler runs between bytecodes; never reached
                    pass
        assert isinstance(caught.value.__context__, KeyboardInterrupt)
        assert interrupted()
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_a_background_job_that_ignores_ctrl_c_keeps_ignoring_it() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with sigint_latch():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)  # ignored: nothing raised, nothing remembered
            assert not interrupted()
    finally:
        signal.signal(signal.SIGINT, previous)


def test_each_latch_starts_clean() -> None:
    with sigint_latch():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000_000):
                pass
        assert interrupted()
    assert not interrupted()  # left with the scope it stopped: later work in the process did not get a Ctrl-C
    with sigint_latch():
        assert not interrupted()
