"""Event buses: how events reach listeners (in process and over HTTP, or Kafka)."""

from gaia.bus.memory import EventBus, EventHistory, Subscription

__all__ = ["EventBus", "EventHistory", "Subscription"]
