"""The in-process event bus: numbered events, read by subscribers from shared backlogs.

Subscribers are the HTTP event streams. Publishing appends an event to the backlog of
everything and to its namespace's (each kept only while someone listens) and wakes
whoever waits: it costs the same with one listener or 200 (a queue per listener made a
task printing 300,000 lines to 200 dashboards cost 60,000,000 puts). Each listener keeps
its place in its backlog and takes what is new when it is ready, as one piece of bytes
encoded once for all of them. One that falls further behind than the backlog holds is
dropped (its stream ends) rather than letting the server's memory grow without bound.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["BACKLOG", "EventBus", "EventHistory", "Subscription"]

BACKLOG = 10_000  # events a listener may lag behind, at least, before it is dropped

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class Backlog:
    """The newest events of one namespace (or of all), oldest first, for its listeners;
    between ``keep`` and twice as many (trimmed ``keep`` at a time). Positions count
    every event ever appended; ``encoded`` holds the first events' bytes, made once."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.events: list[Event] = []
        self.encoded: list[bytes] = []  # of events[: len(encoded)]
        self.first = 0  # the position of events[0]
        self.listeners = 0

    @property
    def end(self) -> int:
        return self.first + len(self.events)

    def append(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) >= 2 * self.keep:
            cut = len(self.events) - self.keep
            del self.events[:cut]
            del self.encoded[:cut]
            self.first += cut

    def joined(self, start: int, end: int, encode: Callable[[Event], bytes]) -> bytes:
        """The events from index ``start`` to ``end``, encoded, as one piece."""
        encoded, events = self.encoded, self.events
        while len(encoded) < end:  # each event is encoded once, for every listener
            encoded.append(encode(events[len(encoded)]))
        return b"".join(encoded[start:end])


class Subscription:
    """One listener's place in the backlog of its namespace (``root``), or of all."""

    def __init__(self, bus: EventBus, root: str | None, backlog: Backlog) -> None:
        self.bus, self.root, self.backlog = bus, root, backlog
        self.at = backlog.end  # the position of the next event it takes

    def _start(self) -> int | None:
        """Where its unseen events begin in the backlog; None if it was dropped."""
        if self.bus.is_dropped(self):
            return None
        start = self.at - self.backlog.first
        if start < 0:  # events it never saw were trimmed: it fell too far behind
            logger.warning("dropping an event listener that fell behind")
            self.bus.drop(self)
            return None
        return start

    def pending(self) -> bool:
        return self.at < self.backlog.end and not self.bus.is_dropped(self)

    async def wait(self, timeout: float) -> bool:
        """Until an event is there to take (True), or ``timeout`` passed or the
        subscription was dropped (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.pending():
            left = deadline - loop.time()
            if self.bus.is_dropped(self) or left <= 0 or not await self.bus.arrival(left):
                return False
        return True

    async def get(self, timeout: float) -> Event | None:
        """The next event; None if ``timeout`` passed or the subscription was dropped."""
        if await self.wait(timeout) and (taken := self.ready(1)):
            return taken[0]
        return None

    def ready(self, most: int) -> list[Event]:
        """The events published that it has not taken (up to ``most``), without waiting."""
        start = self._start()
        if start is None:
            return []
        taken = self.backlog.events[start : start + most]
        self.at += len(taken)
        return taken

    def ready_encoded(self, most: int, encode: Callable[[Event], bytes]) -> bytes:
        """As :meth:`ready`, encoded and joined: a listener that is behind sends them in
        one write, with no work per event of its own."""
        start = self._start()
        if start is None:
            return b""
        end = min(start + most, len(self.backlog.events))
        self.at += end - start
        return self.backlog.joined(start, end, encode)

    def pass_through(self, last_id: int) -> None:
        """Skip the events up to ``last_id`` (sent already, from the saved history)."""
        start = self._start()
        events = self.backlog.events
        while start is not None and start < len(events) and events[start]["id"] <= last_id:
            start += 1
            self.at += 1

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    def __init__(
        self,
        sink: Callable[[Event], None] | None = None,
        first_id: int = 1,
        backlog: int = BACKLOG,
    ) -> None:
        """``sink`` records every event except log lines (they go to each task's log
        file). A listener may be ``backlog`` events behind, at least."""
        self.sink = sink
        self.sinks: list[Callable[[Event], None]] = []
        self.ids = itertools.count(first_id)
        self.last_id = first_id - 1  # the newest event's id
        self.subscribers: set[Subscription] = set()
        self.dropped: set[Subscription] = set()
        self.backlog = backlog
        self.backlogs: dict[str | None, Backlog] = {}  # root (None: all) -> its backlog
        self._arrived: asyncio.Event | None = None  # set at the next publish

    def publish(self, event: Event) -> None:
        event["id"] = self.last_id = next(self.ids)
        event.setdefault("time", time.time())
        if self.sink is not None and event.get("event") != "log":
            self.sink(event)
        for extra in self.sinks:
            extra(event)
        if not self.backlogs:
            return
        if (everything := self.backlogs.get(None)) is not None:
            everything.append(event)
        root = event.get("root")
        if root is not None and (ours := self.backlogs.get(root)) is not None:
            ours.append(event)
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

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        """Also pass every event, log lines included, to ``sink`` (e.g. a KafkaPublisher).
        A sink must return at once and never raise."""
        self.sinks.append(sink)

    def subscribe(self, root: str | None = None) -> Subscription:
        backlog = self.backlogs.get(root)
        if backlog is None:
            backlog = self.backlogs[root] = Backlog(self.backlog)
        backlog.listeners += 1
        subscription = Subscription(self, root, backlog)
        self.subscribers.add(subscription)
        return subscription

    def close(self) -> None:
        """Server shutdown: end every stream now rather than at its next keep-alive."""
        for subscription in list(self.subscribers):
            self.drop(subscription)
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    def is_dropped(self, subscription: Subscription) -> bool:
        return subscription in self.dropped

    def drop(self, subscription: Subscription) -> None:
        """End a subscription's stream (its reader sees :meth:`is_dropped`)."""
        if subscription in self.subscribers:
            self._leave(subscription)
            self.dropped.add(subscription)

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self.subscribers:
            self._leave(subscription)
        self.dropped.discard(subscription)

    def _leave(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        subscription.backlog.listeners -= 1
        if not subscription.backlog.listeners:  # nobody left to read it
            self.backlogs.pop(subscription.root, None)


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
