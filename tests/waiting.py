"""Waiting in tests: one helper, so every wait has a deadline and says what it waited for.

(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

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
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last: {str(value)[:2000]}"
            )
        time.sleep(interval)
