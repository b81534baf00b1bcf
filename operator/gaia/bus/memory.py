"""The in-process event bus: numbered events, read by subscribers from one shared backlog.

Subscribers are the HTTP event streams. Publishing appends an event to the backlog and
wakes whoever waits: it costs the same with one listener or 200 (a queue per listener
made a task printing 300,000 lines to 200 dashboards cost 60,000,000 puts). Each listener
keeps its place and takes what is new when it is ready, in batches. One that falls
further behind than the backlog holds is dropped (its stream ends) rather than letting
the server's memory grow without bound.
"""

from __future__ import annotations

import asyncio
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
    """One listener's place in the bus's backlog: the id of the last event it has seen,
    or passed over (another namespace's, when it follows one)."""

    def __init__(self, bus: EventBus, root: str | None) -> None:
        self.bus, self.root = bus, root
        self.seen = bus.last_id

    async def get(self, timeout: float) -> Event | None:
        """The next event; None if ``timeout`` passed or the subscription was dropped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.bus.is_dropped(self):
            if taken := self.ready(1):
                return taken[0]
            left = deadline - loop.time()
            if left <= 0 or not await self.bus.arrival(left):
                return None
        return None

    def ready(self, most: int) -> list[Event]:
        """The events already published that it has not seen (up to ``most``), without
        waiting: a listener that is behind sends them in one write, not one per event."""
        return self.bus.take(self, most)

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(
        self,
        sink: Callable[[Event], None] | None = None,
        first_id: int = 1,
        backlog: int = 10_000,
    ) -> None:
        """``sink`` records every event except log lines (they go to each task's log
        file). A listener may be ``backlog`` events behind (of any namespace), at least."""
        self.sink = sink
        self.sinks: list[Callable[[Event], None]] = []
        self.ids = itertools.count(first_id)
        self.last_id = first_id - 1  # the newest event's id
        self.subscribers: set[Subscription] = set()
        self.dropped: set[Subscription] = set()
        self.backlog = backlog
        # The newest events, oldest first, ids consecutive: between backlog and twice it
        # (trimmed a backlog at a time), kept only while someone listens.
        self._events: list[Event] = []
        self._first = first_id  # the id of _events[0]
        self._arrived: asyncio.Event | None = None  # set at the next publish

    def publish(self, event: Event) -> None:
        event["id"] = self.last_id = next(self.ids)
        event.setdefault("time", time.time())
        if self.sink is not None and event.get("event") != "log":
            self.sink(event)
        for extra in self.sinks:
            extra(event)
        events = self._events
        if not self.subscribers:
            events.clear()  # nobody to read it: and the backlog's ids stay consecutive
            return
        if not events:
            self._first = event["id"]
        events.append(event)
        if len(events) >= 2 * self.backlog:
            del events[: len(events) - self.backlog]
            self._first = events[0]["id"]
        if self._arrived is not None:
            self._arrived.set()  # wakes every listener that waits, once
            self._arrived = None

    async def arrival(self, timeout: float) -> bool:
        """Wait until the next event is published (True) or ``timeout`` passes."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
        arrived = self._arrived
        try:
            async with asyncio.timeout(timeout):
                await arrived.wait()
        except TimeoutError:
            return False
        return True

    def take(self, subscription: Subscription, most: int) -> list[Event]:
        """Up to ``most`` events ``subscription`` has not seen, of its namespace."""
        events = self._events
        start = subscription.seen + 1 - self._first  # where its unseen events begin
        if not events or start >= len(events) or subscription in self.dropped:
            return []
        if start < 0:  # events it never saw were trimmed: it fell too far behind
            logger.warning("dropping an event listener that fell behind")
            self.subscribers.discard(subscription)
            self.dropped.add(subscription)
            return []
        root = subscription.root
        if root is None:
            taken = events[start : start + most]
            subscription.seen = taken[-1]["id"]
            return taken
        taken = []
        at = start
        for at in range(start, len(events)):  # other namespaces' events are passed over
            event = events[at]
            if event.get("root") == root:
                taken.append(event)
                if len(taken) >= most:
                    break
        subscription.seen = events[at]["id"]
        return taken

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        """Also pass every event, log lines included, to ``sink`` (e.g. a KafkaPublisher).
        A sink must return at once and never raise."""
        self.sinks.append(sink)

    def subscribe(self, root: str | None = None) -> Subscription:
        subscription = Subscription(self, root)
        self.subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """Server shutdown: end every stream now rather than at its next keep-alive."""
        self.dropped.update(self.subscribers)
        self.subscribers.clear()
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

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
