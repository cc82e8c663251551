"""The main job behind `make run`: a local broker (or the configured cluster), the topic
catalogue applied, and what is on the cluster shown.

Consumes the settings; produces a running pipeline on the local broker until it ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from bus.admin import apply, describe, plan
from bus.localkafka import LocalKafka
from bus.settings import KafkaSettings, Settings
from bus.topics import TopicCatalogue

__all__ = ["run"]


@contextlib.contextmanager
def _broker(settings: Settings, console: Console) -> Iterator[KafkaSettings]:
    """The configured cluster when KAFKA_BOOTSTRAP_SERVERS is set, else a local broker."""
    if "bootstrap_servers" in settings.kafka.model_fields_set:
        console.print(f"using Kafka at {settings.kafka.bootstrap_servers}")
        yield settings.kafka
        return
    with console.status("starting a local Apache Kafka broker"):
        broker = LocalKafka(progress=lambda message: console.print(message))
        broker.start()
    try:
        console.print(f"local Apache Kafka broker ready at {broker.bootstrap_servers}")
        yield settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
    finally:
        with console.status("stopping the broker"):
            broker.stop()


def run(settings: Settings, catalogue: TopicCatalogue) -> int:
    """Run the demo; return the process exit code."""
    console = Console()
    with _broker(settings, console) as kafka:
        admin = AdminClient(kafka.confluent_config())
        changes = plan(admin, catalogue, prefix=kafka.topic_prefix)
        apply(admin, [change for change in changes if change.allowed])
        states = describe(admin, [kafka.topic(spec.name) for spec in catalogue])
        table = Table(title=f"topics.yaml applied to {kafka.bootstrap_servers}")
        for column in ("topic", "partitions", "cleanup", "retention ms", "personal data"):
            table.add_column(column, no_wrap=column == "topic")
        missing = 0
        for spec in catalogue:
            state = states.get(kafka.topic(spec.name))
            if state is None:
                missing += 1
                table.add_row(kafka.topic(spec.name), "[red]missing[/]", "", "", "")
                continue
            table.add_row(
                state.name,
                str(state.partitions),
                state.configs.get("cleanup.policy", ""),
                state.configs.get("retention.ms", ""),
                "yes" if spec.personal_data else "no",
            )
        console.print(table)
        return 1 if missing else 0
