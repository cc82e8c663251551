"""What the studio's worker and browser tests share: a topic prefix of their own with the
catalogue's topics and the form topic of the recipes they build, and a `dastra-kafka worker`
that runs the studio's recipes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from dastra.sandbox import SandboxServer
from tests.consumers.agents_support import WorkerProcess
from tests.kafka_helpers import create_catalogue_topics, delete_topics, unique

FORMS = "web.privacy-forms"


@contextlib.contextmanager
def studio_kafka(bootstrap: str, catalogue: TopicCatalogue, name: str) -> Iterator[KafkaSettings]:
    """Settings with a fresh prefix, its catalogue topics and `FORMS` (3 partitions) created,
    deleted at the end."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=unique(name) + ".")
    names = create_catalogue_topics(kafka, catalogue)
    admin = AdminClient(kafka.confluent_config())
    for future in admin.create_topics([NewTopic(kafka.topic(FORMS), 3, 1)]).values():
        future.result(timeout=30)
    try:
        yield kafka
    finally:
        delete_topics(kafka, [*names, kafka.topic(FORMS)])


@contextlib.contextmanager
def studio_worker(
    kafka: KafkaSettings, sandbox: SandboxServer, folder: Path
) -> Iterator[WorkerProcess]:
    """A started worker with RECIPES_STUDIO=true (the sandbox's rate limit off), stopped at the
    end."""
    sandbox.admin.configure(rate_limit=False)
    process = WorkerProcess(
        kafka,
        sandbox,
        folder,
        RECIPES_STUDIO="true",
        WORKER_DETECT="false",
        RECIPES_STEP_TIMEOUT_S="60",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()
