"""The in-process bus: every listener reads the one shared backlog from its own place."""

from __future__ import annotations

import asyncio

from gaia.bus.memory import EventBus


def published(bus: EventBus, count: int, root: str = "ns") -> None:
    for n in range(count):
        bus.publish({"event": "log", "root": root, "line": str(n)})


def test_each_listener_reads_every_event_in_order_and_only_its_namespace() -> None:
    bus = EventBus()
    everything, ours = bus.subscribe(), bus.subscribe("a")
    for n in range(30):
        bus.publish({"event": "log", "root": "a" if n % 3 else "b", "n": n})
    assert [e["n"] for e in everything.ready(100)] == list(range(30))
    taken = [e["n"] for e in ours.ready(7)] + [e["n"] for e in ours.ready(100)]
    assert taken == [n for n in range(30) if n % 3]
    assert everything.ready(100) == [] and ours.ready(100) == []
    late = bus.subscribe()  # sees what comes after it subscribed, nothing before
    published(bus, 2)
    assert [e["id"] for e in late.ready(100)] == [31, 32]


def test_a_listener_gone_and_back_starts_from_now() -> None:
    """With nobody listening nothing is kept: the backlog's ids stay consecutive."""
    bus = EventBus()
    first = bus.subscribe()
    published(bus, 3)
    first.close()
    published(bus, 5)  # nobody listens
    again = bus.subscribe()
    published(bus, 2)
    assert [e["id"] for e in again.ready(100)] == [9, 10]
    assert len(bus.backlogs[None].events) == 2


def test_each_event_is_encoded_once_for_all_the_listeners_of_its_backlog() -> None:
    bus = EventBus()
    listeners = [bus.subscribe("a") for _ in range(50)]
    for n in range(10):
        bus.publish({"event": "log", "root": "a" if n % 2 else "b", "n": n})
    encoded: list[int] = []

    def encode(event: dict[str, object]) -> bytes:
        encoded.append(event["n"])  # type: ignore[arg-type]
        return b"%d;" % event["n"]  # type: ignore[str-bytes-safe]

    assert listeners[0].ready_encoded(2, encode) == b"1;3;"
    assert all(listener.ready_encoded(100, encode) == b"1;3;5;7;9;" for listener in listeners[1:])
    assert listeners[0].ready_encoded(100, encode) == b"5;7;9;"
    assert encoded == [1, 3, 5, 7, 9]  # once each, for 50 listeners
    assert listeners[0].ready_encoded(100, encode) == b""


def test_events_sent_from_the_history_are_passed_over_live() -> None:
    bus = EventBus()
    listener = bus.subscribe()
    published(bus, 5)  # ids 1..5, published while the history (up to 3) was sent
    listener.pass_through(3)
    assert [e["id"] for e in listener.ready(100)] == [4, 5]


def test_a_listener_too_far_behind_is_dropped_and_the_others_go_on() -> None:
    bus = EventBus(backlog=100)
    slow, quick = bus.subscribe(), bus.subscribe("ns")
    for _ in range(5):
        published(bus, 100)
        assert len(quick.ready(1000)) == 100  # keeps up
    assert all(len(backlog.events) < 200 for backlog in bus.backlogs.values())  # bounded
    assert slow.ready(1000) == [] and bus.is_dropped(slow)
    assert not bus.is_dropped(quick)
    published(bus, 1)
    assert len(quick.ready(10)) == 1


def test_a_waiting_listener_wakes_at_the_next_event_or_its_timeout() -> None:
    async def scenario() -> tuple[object, object, object]:
        bus = EventBus()
        waiting = [bus.subscribe("ns") for _ in range(3)]
        other = bus.subscribe("other")
        gets = [asyncio.ensure_future(w.get(5)) for w in waiting]
        quiet = asyncio.ensure_future(other.get(0.2))
        await asyncio.sleep(0.05)
        published(bus, 1)
        woken = await asyncio.wait_for(asyncio.gather(*gets), 2)
        timed_out = await quiet  # woken by an event of another namespace, then times out
        bus.close()
        closed = await asyncio.wait_for(waiting[0].get(5), 2)  # at once, not after 5 s
        return woken, timed_out, closed

    woken, timed_out, closed = asyncio.run(scenario())
    assert [e["line"] for e in woken] == ["0", "0", "0"]  # type: ignore[index, union-attr]
    assert timed_out is None and closed is None
