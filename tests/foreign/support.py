"""Helpers of the foreign-client tests: Kafka's own console producer and consumer (Java, from
the jars `bus.localkafka` fetches), the KafkaJS + CloudEvents reader of tools/foreign-clients,
and the records as these clients see them."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bus.settings import KafkaSettings
from tests.conftest import PROJECT_ROOT

__all__ = [
    "CONSOLE_CONSUMER",
    "CONSOLE_PRODUCER",
    "JavaTools",
    "KafkaJSReader",
    "Seen",
]

CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
# A small, quickly started JVM: these tools send or read a few hundred records.
_JVM = ["-Xms32m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
# Separators no record of ours contains: the console consumer prints each record as
# headers, key and value joined by _FIELD, header pairs joined by _HEADER, records ended by _END.
_FIELD, _HEADER, _END = "\x1f", "\x1e", "\x1d\n"

FOREIGN_CLIENTS = PROJECT_ROOT / "tools" / "foreign-clients"


@dataclass(frozen=True)
class Seen:
    """One record as a client saw it: key, value and headers as text."""

    key: str | None
    value: str | None
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, key: bytes | None, value: bytes | None, headers: dict[str, bytes]) -> Seen:
        return cls(
            key=None if key is None else key.decode(),
            value=None if value is None else value.decode(),
            headers=tuple(sorted((k, v.decode()) for k, v in headers.items())),
        )


class JavaTools:
    """Kafka's console producer and consumer (`java -cp <classpath> <class>`)."""

    def __init__(self, classpath: str, kafka: KafkaSettings) -> None:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java is not on PATH (Debian: apt-get install openjdk-17-jre)")
        self.java = java
        self.classpath = classpath
        self.kafka = kafka

    def command(self, main_class: str) -> list[str]:
        return [self.java, *_JVM, "-cp", self.classpath, main_class]

    def shell_functions(self) -> str:
        """Bash functions named like Kafka's scripts, for running shell examples as written."""
        producer = " ".join(f"'{part}'" for part in self.command(CONSOLE_PRODUCER))
        consumer = " ".join(f"'{part}'" for part in self.command(CONSOLE_CONSUMER))
        return (
            f'kafka-console-producer.sh() {{ {producer} "$@"; }}\n'
            f'kafka-console-consumer.sh() {{ {consumer} "$@"; }}\n'
        )

    def produce(self, topic: str, lines: list[str], *, timeout: float = 60.0) -> None:
        """Send `headers<TAB>key<TAB>value` lines with the console producer (its own defaults:
        Kafka's partitioner, no compression), waiting for it to flush and exit."""
        done = subprocess.run(
            [
                *self.command(CONSOLE_PRODUCER),
                "--bootstrap-server",
                self.kafka.bootstrap_servers,
                "--topic",
                self.kafka.topic(topic),
                "--reader-property",
                "parse.headers=true",
                "--reader-property",
                "parse.key=true",
            ],
            input="".join(f"{line}\n" for line in lines).encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"the console producer failed ({done.returncode}): {done.stderr!r}"
            )

    def consume(self, topics: list[str], count: int, *, timeout_ms: int = 30_000) -> list[Seen]:
        """Read `count` records of `topics` from the beginning with the console consumer
        (read_committed), headers and key included."""
        pattern = "|".join(self.kafka.topic(t).replace(".", r"\.") for t in topics)
        done = subprocess.run(
            [
                *self.command(CONSOLE_CONSUMER),
                "--bootstrap-server",
                self.kafka.bootstrap_servers,
                "--include",
                f"^({pattern})$",
                "--from-beginning",
                "--isolation-level",
                "read_committed",
                "--max-messages",
                str(count),
                "--timeout-ms",
                str(timeout_ms),
                "--formatter-property",
                "print.headers=true",
                "--formatter-property",
                "print.key=true",
                "--formatter-property",
                f"key.separator={_FIELD}",
                "--formatter-property",
                f"headers.separator={_HEADER}",
                "--formatter-property",
                f"line.separator={_END}",
                "--formatter-property",
                "null.literal=\x1cnull",
            ],
            capture_output=True,
            timeout=timeout_ms / 1000 + 60,
            check=False,
        )
        output = done.stdout.decode()
        records = [_parse_console_record(chunk) for chunk in output.split(_END) if chunk]
        if len(records) < count:
            raise AssertionError(
                f"the console consumer read {len(records)} of {count} records "
                f"(exit {done.returncode}): {done.stderr.decode()[-2000:]}"
            )
        return records


def _parse_console_record(text: str) -> Seen:
    headers_text, key, value = text.split(_FIELD, 2)
    headers: list[tuple[str, str]] = []
    if headers_text != "NO_HEADERS":
        for pair in headers_text.split(_HEADER):
            name, _, header_value = pair.partition(":")
            headers.append((name, header_value))
    return Seen(
        key=None if key == "\x1cnull" else key,
        value=None if value == "\x1cnull" else value,
        headers=tuple(sorted(headers)),
    )


class KafkaJSReader:
    """tools/foreign-clients/read-cloudevents.cjs: KafkaJS reads topics from the beginning and
    the CloudEvents JS SDK parses every record; returns its JSON report."""

    def __init__(self, kafka: KafkaSettings) -> None:
        node = shutil.which("node")
        script = FOREIGN_CLIENTS / "read-cloudevents.cjs"
        if node is None or not (FOREIGN_CLIENTS / "node_modules" / "kafkajs").is_dir():
            raise RuntimeError(
                "node or the foreign clients are missing: `make foreign-clients` installs them"
            )
        self.node = node
        self.script: Path = script
        self.kafka = kafka

    def read(self, expected: dict[str, int], *, timeout_ms: int = 30_000) -> dict[str, Any]:
        done = subprocess.run(
            [
                self.node,
                str(self.script),
                "--brokers",
                self.kafka.bootstrap_servers,
                "--timeout-ms",
                str(timeout_ms),
                *(f"{self.kafka.topic(topic)}={count}" for topic, count in expected.items()),
            ],
            capture_output=True,
            timeout=timeout_ms / 1000 + 30,
            check=False,
            cwd=FOREIGN_CLIENTS,
        )
        try:
            report: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise AssertionError(
                f"no report from the KafkaJS reader (exit {done.returncode}): "
                f"{done.stdout!r} {done.stderr!r}"
            ) from exc
        report["exit"] = done.returncode
        return report
