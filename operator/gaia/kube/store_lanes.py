"""The operator's store calls, off its event loop and in order.

An S3 call takes tens of milliseconds and a namespace can ask for thousands; made on the
event loop they would stall kopf's watches and the HTTP API. Each namespace's calls run
in one of a few single-threaded lanes, in the order they were asked for, so that what the
engine decided in sequence happens in sequence: the delete of an expired key comes before
the publish of its next run, and a lookup sees every change asked for before it.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from gaia.store import Store

__all__ = ["StoreLanes"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
LANES = 4  # namespaces spread over this many threads; one namespace stays in one


class StoreLanes:
    def __init__(self, store: Store, lanes: int = LANES) -> None:
        self.store = store
        self._lanes = [
            ThreadPoolExecutor(1, thread_name_prefix=f"gaia-store-{number}")
            for number in range(lanes)
        ]

    def _lane(self, root: str) -> ThreadPoolExecutor:
        return self._lanes[zlib.crc32(root.encode()) % len(self._lanes)]

    async def call(self, root: str, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` in ``root``'s lane, after what it was asked before."""
        return await asyncio.wrap_future(self._lane(root).submit(function, *args))

    def later(self, root: str, what: str, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)`` in ``root``'s lane without waiting; a failure is logged
        (``what`` says what failed)."""

        def report(future: Future[Any]) -> None:
            if (exc := future.exception()) is not None:
                logger.error("namespace %s: %s failed: %s", root, what, exc)

        self._lane(root).submit(function, *args).add_done_callback(report)

    def close(self) -> None:
        """Finish what is queued (a delete, a clean-up), then stop the threads."""
        for lane in self._lanes:
            lane.shutdown(wait=True)
