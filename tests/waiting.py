"""Waiting in tests: one helper, so every wait has a deadline and says what it waited for.

``eventually(probe, what)`` polls; ``await eventually_async(probe, what)`` is the same wait
for a test that runs in an event loop (it sleeps with asyncio, so the loop goes on).

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(
    probe: Callable[[], T],
    what: str,
    timeout: float = 60.0,
    *,
    until: Callable[[T], Any] = bool,
    interval: float = 0.05,
) -> T:
    """Call ``probe`` until ``until`` (default: truth) holds of what it returns, and
    return that. After ``timeout`` seconds, fail naming ``what`` and the last value.

    Deadlines are sized for a loaded 2-core CI machine: they bound a hang, they do not
    measure speed."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, value)
        time.sleep(interval)


async def eventually_async(
    probe: Callable[[], T],
    what: str,
    timeout: float = 60.0,
    *,
    until: Callable[[T], Any] = bool,
    interval: float = 0.02,
) -> T:
    """``eventually`` inside an event loop: the same contract, the same failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, value)
        await asyncio.sleep(interval)


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(
        f"timed out after {timeout:g} s waiting for {what}; last: {str(last)[:2000]}"
    )
