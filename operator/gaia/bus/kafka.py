"""Events on Kafka: a sink of the event bus that publishes every event to a topic.

Log lines go to the ``log`` topic (default ``sisyphus-log``), every other event to the
``status`` topic (default ``sisyphus-status``). Values are the events in JSON; the key is
the event's namespace (``root``), so one namespace's events stay in order on one partition
(events without a namespace, such as ``worker-launched``, have no key).

Failure behaviour:

- A broker that cannot be reached when the publisher is created raises
  :class:`~gaia.errors.ConnectionFailed` naming the address, so ``gaia serve --kafka``
  fails at start rather than serving without its events.
- A broker that goes away later never stops the engine: :meth:`KafkaPublisher.publish`
  only hands the event to a background thread (it never blocks the event loop), the
  producer retries for a while, and events it cannot deliver are dropped with a warning
  and counted in :attr:`KafkaPublisher.failed` (events the thread cannot keep up with, in
  :attr:`KafkaPublisher.dropped`). The HTTP event stream is unaffected.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

from gaia.errors import ConnectionFailed, InvalidRequest
from gaia.wire import DEFAULT_TOPICS
from gaia.wire import Event as EventName

__all__ = ["KafkaPublisher"]

logger = logging.getLogger(__name__)

Event = dict[str, Any]


class KafkaPublisher:
    """Publish events to Kafka with kafka-python; see the module docstring.

    ``topics`` maps ``"log"`` and ``"status"`` to topic names (missing ones: the defaults).
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Mapping[str, str] | None = None,
        *,
        connect_timeout: float = 10.0,
        delivery_timeout: float = 30.0,
        backlog: int = 100_000,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaConfigurationError, KafkaError

        self.bootstrap = bootstrap
        self.topics = {**DEFAULT_TOPICS, **(topics or {})}
        self.sent = self.failed = self.dropped = 0
        self._failing = False
        self._lock = threading.Lock()
        try:
            self.producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id="gaia",
                linger_ms=5,
                bootstrap_timeout_ms=int(connect_timeout * 1000),
                max_block_ms=int(connect_timeout * 1000),
                request_timeout_ms=int(delivery_timeout * 1000 / 3),
                delivery_timeout_ms=int(delivery_timeout * 1000),
            )
        except KafkaConfigurationError as exc:
            raise InvalidRequest(f"Kafka at {bootstrap}: {exc}") from exc
        except (KafkaError, OSError, ValueError) as exc:
            raise ConnectionFailed(
                f"cannot reach the Kafka broker at {bootstrap} ({exc}); start it, or serve "
                "without --kafka to stream events over HTTP only"
            ) from exc
        try:  # learn the topics now, so that sending never waits for metadata
            self._create_topics(connect_timeout)
            for topic in self.topics.values():
                self.producer.partitions_for(topic)
        except KafkaError as exc:
            self.producer.close(timeout=1)
            raise ConnectionFailed(
                f"the Kafka broker at {bootstrap} has no topic {topic!r} and did not create "
                f"it ({exc}); create the topics {sorted(set(self.topics.values()))} first"
            ) from exc
        self._queue: queue.Queue[tuple[str, bytes | None, bytes] | None] = queue.Queue(backlog)
        self._thread = threading.Thread(target=self._run, name="gaia-kafka", daemon=True)
        self._thread.start()
        logger.info("publishing events to Kafka at %s, topics %s", bootstrap, self.topics)

    def _create_topics(self, timeout: float) -> None:
        """Create missing topics with the broker's defaults (brokers often refuse to
        auto-create them); a refusal is left to the metadata check that follows."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="gaia",
                bootstrap_timeout_ms=int(timeout * 1000),
            )
        except KafkaError as exc:
            logger.debug("no Kafka admin client (%s); relying on the broker", exc)
            return
        try:
            missing = sorted(set(self.topics.values()) - set(admin.list_topics()))
            if missing:
                admin.create_topics(
                    [NewTopic(topic) for topic in missing],
                    timeout_ms=int(timeout * 1000),
                    raise_errors=False,
                    wait_for_metadata=True,
                )
                logger.info("created Kafka topics %s", missing)
        except KafkaError as exc:
            logger.warning("could not create the Kafka topics %s: %s", missing, exc)
        finally:
            admin.close()

    def __call__(self, event: Event) -> None:
        self.publish(event)

    def publish(self, event: Event) -> None:
        """Queue ``event`` for its topic; never blocks and never raises."""
        try:
            value = json.dumps(event, default=str).encode("utf-8")
        except (TypeError, ValueError) as exc:  # a bug, but never the engine's problem
            logger.warning("not publishing an event that is not JSON (%s): %.200r", exc, event)
            return
        topic = self.topics["log" if event.get("event") == EventName.LOG else "status"]
        root = event.get("root")
        try:
            key = root.encode("utf-8") if isinstance(root, str) else None
            self._queue.put_nowait((topic, key, value))
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = self.dropped == 1 or self.dropped % 10_000 == 0
            if first:
                logger.warning(
                    "Kafka at %s is not keeping up: dropped %d events", self.bootstrap, self.dropped
                )

    def _run(self) -> None:
        from kafka.errors import KafkaError

        while True:
            item = self._queue.get()
            if item is None:  # close()
                return
            topic, key, value = item
            try:
                future = self.producer.send(topic, key=key, value=value)
            except (KafkaError, OSError) as exc:
                self._failed(exc)
                continue
            future.add_callback(self._delivered)
            future.add_errback(self._failed)

    def _delivered(self, _metadata: object) -> None:
        with self._lock:
            self.sent += 1
            recovered, self._failing = self._failing, False
        if recovered:
            logger.warning("Kafka at %s takes events again", self.bootstrap)

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            first, self._failing = not self._failing, True
            failed = self.failed
        if first or failed % 1000 == 0:
            logger.warning(
                "dropping events: Kafka at %s did not take them (%s); %d dropped so far; "
                "the HTTP event stream is unaffected",
                self.bootstrap,
                exc,
                failed,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (waiting at most about ``timeout`` seconds), then disconnect;
        what the broker has not taken by then is dropped with a warning."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        try:
            self.producer.flush(timeout=timeout)
            delivered = True
        except Exception:  # a broker gone at shutdown
            delivered = False
            logger.warning(
                "Kafka at %s did not take the last events within %gs; dropping them",
                self.bootstrap,
                timeout,
            )
        try:
            self.producer.close(timeout=timeout if delivered else 0)
        except Exception as exc:
            logger.debug("closing the Kafka producer: %s", exc)
