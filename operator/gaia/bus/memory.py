"""The in-process event bus: numbered events fanned out to subscribers' queues.

Subscribers are the HTTP event streams. A subscriber too slow to keep up is dropped
(its stream ends) rather than letting the server's memory grow without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["EventBus", "EventHistory", "Subscription"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class Subscription:
    def __init__(self, bus: EventBus, root: str | None, limit: int) -> None:
        self.bus, self.root = bus, root
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(limit)

    def offer(self, event: Event) -> bool:
        if self.root is not None and event.get("root") != self.root:
            return True
        try:
            self.queue.put_nowait(event)
            return True
        except asyncio.QueueFull:
            return False

    async def get(self, timeout: float) -> Event | None:
        """The next event; None if ``timeout`` passed or the subscription was dropped."""
        try:
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    def ready(self, most: int) -> list[Event | None]:
        """The events already queued (up to ``most``), without waiting: a listener that
        is behind sends them in one write instead of one per event."""
        taken: list[Event | None] = []
        while len(taken) < most and not self.queue.empty():
            taken.append(self.queue.get_nowait())
        return taken

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(self, sink: Callable[[Event], None] | None = None, first_id: int = 1) -> None:
        """``sink`` records every event except log lines (they go to each task's log file)."""
        self.sink = sink
        self.sinks: list[Callable[[Event], None]] = []
        self.ids = itertools.count(first_id)
        self.last_id = first_id - 1  # the newest event's id
        self.subscribers: set[Subscription] = set()
        self.dropped: set[Subscription] = set()

    def publish(self, event: Event) -> None:
        event["id"] = self.last_id = next(self.ids)
        event.setdefault("time", time.time())
        if self.sink is not None and event.get("event") != "log":
            self.sink(event)
        for extra in self.sinks:
            extra(event)
        for subscriber in list(self.subscribers):
            if not subscriber.offer(event):
                logger.warning("dropping an event listener that fell behind")
                self.subscribers.discard(subscriber)
                self.dropped.add(subscriber)

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        """Also pass every event, log lines included, to ``sink`` (e.g. a KafkaPublisher).
        A sink must return at once and never raise."""
        self.sinks.append(sink)

    def subscribe(self, root: str | None = None, limit: int = 10_000) -> Subscription:
        subscription = Subscription(self, root, limit)
        self.subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """Server shutdown: end every stream now rather than at its next keep-alive."""
        for subscription in list(self.subscribers):
            self.subscribers.discard(subscription)
            self.dropped.add(subscription)
            with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes its reader anyway
                subscription.queue.put_nowait(None)

    def is_dropped(self, subscription: Subscription) -> bool:
        return subscription in self.dropped

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        self.dropped.discard(subscription)


class EventHistory:
    """The latest events but log lines, kept in memory so that a stream can resume
    (``since``) on a server without a database of them: the operator. Bounded, so a
    listener away for too long misses the oldest."""

    def __init__(self, size: int = 10_000) -> None:
        self.events: deque[Event] = deque(maxlen=size)

    def record(self, event: Event) -> None:
        self.events.append(event)

    def since(self, after: int, root: str | None) -> list[Event]:
        return [
            event
            for event in self.events
            if event["id"] > after and (root is None or event.get("root") == root)
        ]
