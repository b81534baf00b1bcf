"""How long the operator's event loop has been unable to run, measured from the inside.

Everything of the operator shares one loop (kopf's watches, the HTTP API, the re-check).
A tick every :data:`TICK` seconds that comes late shows a stall: its length is logged
when it matters, kept for the benchmarks, and forgiven to the workers (a worker that
asked for work during a stall was not silent; the operator was).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

__all__ = ["LoopWatch"]

logger = logging.getLogger(__name__)

TICK = 0.25  # seconds between ticks
NOTEWORTHY = 1.0  # a stall at least this long is logged


class LoopWatch:
    def __init__(self, forgive: Callable[[float], None]) -> None:
        self.forgive = forgive  # called with each stall's seconds
        self.longest = 0.0
        self.stalled = 0.0  # seconds lost to stalls of NOTEWORTHY or more, in all

    async def run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            stall = now - last - TICK
            last = now
            if stall <= 0.05:
                continue
            self.longest = max(self.longest, stall)
            self.forgive(stall)
            if stall >= NOTEWORTHY:
                self.stalled += stall
                logger.warning("the operator's event loop stalled for %.1f s", stall)

    def figures(self) -> dict[str, float]:
        return {"longest_stall": round(self.longest, 3), "stalled": round(self.stalled, 3)}
