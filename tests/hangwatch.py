"""A pytest plugin that ends the run when one test hangs, printing where every thread was.

A test that runs past ``GTACITY_TEST_HANG_SECONDS`` (900 unless set; the slowest test takes about a
minute on a 2-core CPU) is taken to be stuck: the stack of every thread goes to the terminal and
the process exits with status 1. Without it a hang shows only as a CI job that waits out its own
limit and prints nothing about where it stopped.

The timer is :func:`faulthandler.dump_traceback_later`, which runs in a C thread: it fires even
when the stuck thread holds the GIL (a deadlock inside a C library's callback, say), where a Python
timer or a signal handler would never get to run.

``tests/conftest.py`` loads it; any pytest run can load it with ``-p hangwatch`` (``tests/`` on the
path).
"""

from __future__ import annotations

import faulthandler
import os

import pytest

_stderr = pytest.StashKey[int]()


def hang_seconds() -> float:
    return float(os.environ.get("GTACITY_TEST_HANG_SECONDS", "900"))


def pytest_configure(config: pytest.Config) -> None:
    # A copy of the terminal's stderr, taken before any test runs: while a test runs, pytest
    # captures file descriptor 2, and what is written there is lost when the process exits.
    config.stash[_stderr] = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    faulthandler.cancel_dump_traceback_later()
    os.close(config.stash[_stderr])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem):
    # Set inside pytest's own faulthandler_timeout wrapper (so this timer is the one that runs):
    # a test's setup, call and teardown all count.
    seconds = hang_seconds()
    fd = item.config.stash[_stderr]
    faulthandler.dump_traceback_later(seconds, exit=True, file=fd)
    try:
        return (yield)
    finally:
        faulthandler.cancel_dump_traceback_later()
