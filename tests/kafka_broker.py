"""A real single-node Kafka broker (KRaft: broker and controller in one JVM) for tests.

The jars come from `make kafka` (tests/components/kafka.sh) in ``.cache/kafka-<version>/``.
(A module of its own, not conftest.py: tests import from it by name.)
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from ports import free_port
from waiting import eventually

REPO = Path(__file__).resolve().parents[1]
VERSION = os.environ.get("GAIA_KAFKA_VERSION", "3.9.1")
CACHE = Path(os.environ.get("GAIA_CACHE", REPO / ".cache"))
HOME = CACHE / f"kafka-{VERSION}"
START_TIMEOUT = 60.0

LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


def missing() -> str | None:
    """Why a broker cannot start here, or None."""
    if shutil.which("java") is None:
        return "no java on PATH"
    if not (HOME / "complete").exists():
        return f"no Kafka jars in {HOME}; run `make kafka`"
    return None


class Broker:
    """One KRaft node listening on 127.0.0.1:<free port>; its files under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port, self.controller_port = free_port(), free_port()
        self.logs = workdir / "logs"
        self.output = workdir / "broker.out"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",  # faster start; the tests are not about throughput
            f"-Dlog4j.configuration=file:{self.workdir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.logs}",
            "-cp",
            str(HOME / "libs" / "*"),
            main,
            *args,
        ]

    def start(self) -> Broker:
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        (self.workdir / "log4j.properties").write_text(LOG4J.format(log=self.logs / "server.log"))
        properties = self.workdir / "server.properties"
        properties.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.workdir / 'data'}",
                    "num.partitions=1",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        formatted = subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(properties),
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if formatted.returncode != 0:
            raise RuntimeError(
                f"kafka-storage format failed ({formatted.returncode}):\n"
                f"{formatted.stdout}\n{formatted.stderr}"
            )
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                self._java("kafka.Kafka", str(properties)),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(began + START_TIMEOUT)
        self.started_in = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        process = self.process
        assert process is not None

        def running() -> None:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the Kafka broker exited ({process.returncode}):\n{self.tail()}"
                )

        def listening() -> bool:
            running()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return False
            return True

        def answering() -> bool:
            running()
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.address, request_timeout_ms=3000, client_id="probe"
                )
            except (KafkaError, OSError):
                return False
            try:
                return bool(admin.describe_cluster().get("brokers"))
            except KafkaError:
                return False
            finally:
                admin.close()

        try:  # the port first: kafka-python backs off for long
            left = deadline - time.monotonic()
            eventually(listening, f"the broker's port {self.port}", left, interval=0.1)
            left = deadline - time.monotonic()
            eventually(answering, "the broker to describe its cluster", left, interval=0.2)
        except AssertionError:
            raise RuntimeError(
                f"the Kafka broker did not answer in {START_TIMEOUT:g} s:\n{self.tail()}"
            ) from None

    def tail(self, lines: int = 60) -> str:
        text = ""
        for path in (self.output, self.logs / "server.log"):
            if path.exists():
                body = path.read_text(errors="replace").splitlines()[-lines:]
                text += f"--- {path} ---\n" + "\n".join(body) + "\n"
        return text

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes in URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one that starts with '-': the storage
    tool would read it as a flag (about one id in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
