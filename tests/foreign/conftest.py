"""Fixtures of the foreign-client tests, one set for the whole folder (starting workers and a
poller run costs seconds): topics under one uuid prefix (with a topic of "yours" a recipe
reads), the seeded sandbox published once by the poller, two `dastra-kafka worker` processes
of one group, and the tools of each foreign client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from bus.localkafka import tools_classpath
from bus.settings import KafkaSettings
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
    command_topic,
)
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from tests.consumers.agents_support import (
    Tail,
    WorkerProcess,
    command_record,
    produce,
    results_of,
)
from tests.foreign.support import JavaTools, KafkaJSReader
from tests.kafka_helpers import (
    create_catalogue_topics,
    delete_topics,
    read_all,
    unique,
    wait_for,
)

VENDOR_TOPIC = "procurement.vendor-onboarded"
VENDOR_RECIPE = "vendor-onboarded-link-processing"
EVENT_TOPICS = (TASKS, RIGHTS_REQUESTS)
# What a foreign consumer reads: the events, the command results, the dead letters.
READ_TOPICS = (*EVENT_TOPICS, COMMAND_RESULTS, DEAD_LETTER)


@pytest.fixture(scope="package")
def fkafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("foreign") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    vendor = kafka.topic(VENDOR_TOPIC)
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(vendor, 3, 1)])[vendor].result(timeout=30)
    # A created topic reaches the broker's metadata a moment after the controller answered;
    # a worker started before that refuses to start (missing topic).
    wanted = {*names, vendor}
    wait_for(
        lambda: wanted <= set(admin.list_topics(timeout=10).topics),
        30,
        "the topics in the broker's metadata",
    )
    yield kafka
    delete_topics(kafka, [*names, vendor])


@pytest.fixture(scope="package")
def fsandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session sandbox, reset once for the folder (no test here resets it again)."""
    sandbox_server.admin.reset()
    sandbox_server.admin.configure(rate_limit=False)
    return sandbox_server


@pytest.fixture(scope="package")
def published(
    fkafka: KafkaSettings, catalogue: TopicCatalogue, fsandbox: SandboxServer
) -> dict[str, int]:
    """A few tasks and rights requests entered in Dastra (text that needs care: accents, commas,
    quotes, HTML, a line break), then one poller cycle from the beginning: each becomes an
    event. Returns the number of records per event topic then."""
    admin = fsandbox.admin
    for n, name in enumerate(["Zoë Ångström", "O'Brien, Seán", "李 小龙"]):
        given, _, family = name.partition(" ")
        admin.create_rights_request(
            title=f'Access request {n}: "{name}", please',
            email=f"subject{n}@foreign.example",
            givenName=given,
            familyName=family,
        )
        admin.create_task(
            label=f"Answer {name}, by post",
            descriptionHtml=f'<p>Dear {name},</p>\n<p>a, b; c: "d"</p>',
            priority=["High", "Medium", "Low"][n],
        )

    async def cycle() -> None:
        async with DastraClient(fsandbox.dastra_settings()) as client:
            poller = Poller(
                fkafka,
                PollerSettings(start_from="beginning"),
                catalogue,
                client,
                workspaces=[fsandbox.workspace_id],
            )
            await poller.run(max_cycles=1)

    asyncio.run(cycle())
    counts = {topic: len(read_all(fkafka, fkafka.topic(topic))) for topic in EVENT_TOPICS}
    assert all(counts.values()), counts
    return counts


@pytest.fixture(scope="package")
def workers(
    fkafka: KafkaSettings,
    fsandbox: SandboxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    """Two workers of one group, the vendor recipe (find-or-create-actor commands) enabled."""
    log_dir: Path = tmp_path_factory.mktemp("foreign-workers")
    env = {
        "RECIPES_ENABLE": VENDOR_RECIPE,
        "RECIPES_STEP_TIMEOUT_S": "60",
        "KAFKA_COMPRESSION_TYPE": fkafka.compression_type,
    }
    first = WorkerProcess(fkafka, fsandbox, log_dir, name="first", **env)
    second = WorkerProcess(fkafka, fsandbox, log_dir, name="second", **env)
    try:
        first.start(wait=False)
        second.start(wait=False)
        first.wait_ready(90)
        second.wait_ready(90)
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture(scope="package")
def java(fkafka: KafkaSettings) -> JavaTools:
    return JavaTools(tools_classpath(), fkafka)


@pytest.fixture(scope="package")
def kafkajs(fkafka: KafkaSettings) -> KafkaJSReader:
    return KafkaJSReader(fkafka)


@pytest.fixture(scope="package")
def traffic(
    fkafka: KafkaSettings,
    published: dict[str, int],
    workers: tuple[WorkerProcess, WorkerProcess],
) -> dict[str, int]:
    """Every topic a foreign consumer reads holds records the project wrote: the events, the
    result of a command that succeeded and of one that failed, and the failed one's dead letter
    (the original CloudEvent, unchanged, plus the dlq.* headers). Returns the record count per
    topic in READ_TOPICS."""
    good_id, bad_id = unique("good"), unique("bad")
    good = command_record(
        {"label": "Foreign clients read this"}, command_id=good_id, action="create-task"
    )
    bad = command_record(
        {"label": "Refused", "colour": "red"}, command_id=bad_id, action="create-task"
    )
    results = Tail(fkafka, COMMAND_RESULTS)
    try:
        produce(
            fkafka,
            command_topic("create-task"),
            [(good_id.encode(), *good), (bad_id.encode(), *bad)],
        )
        found = results.wait_for_keys([good_id, bad_id], timeout=60)
    finally:
        results.close()
    statuses = {key: results_of(records)[0]["status"] for key, records in found.items()}
    assert statuses == {good_id: "succeeded", bad_id: "failed"}, statuses
    counts = {topic: len(read_all(fkafka, fkafka.topic(topic))) for topic in READ_TOPICS}
    assert all(counts.values()), counts
    return counts
