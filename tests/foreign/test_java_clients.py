"""Kafka's own Java console tools against the bridge: the README's shell example (a
find-or-create-actor command keyed by the README's actor rule, and a plain JSON command) sent
with `kafka-console-producer` is run by the workers; `kafka-console-consumer` reads the events
the poller wrote with their headers, byte for byte what the project itself reads."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter

from confluent_kafka import murmur2
from confluent_kafka.admin import AdminClient

from bus.records.commands import FindOrCreateActor, actor_record_key
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, command_topic
from tests.conftest import PROJECT_ROOT
from tests.consumers.agents_support import Tail, WorkerProcess, results_of
from tests.foreign.conftest import EVENT_TOPICS
from tests.foreign.support import JavaTools, Seen
from tests.kafka_helpers import read_all


def _readme_console_example() -> str:
    """The README's shell block that produces commands with `kafka-console-producer.sh`."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    for block in re.findall(r"```sh\n(.*?)```", readme, flags=re.S):
        if "kafka-console-producer.sh" in block and "find-or-create-actor" in block:
            return str(block)
    raise AssertionError("the README has no kafka-console-producer.sh example any more")


def test_the_readme_console_producer_example_is_run_by_the_workers(
    fkafka: KafkaSettings, java: JavaTools, workers: tuple[WorkerProcess, WorkerProcess]
) -> None:
    example = _readme_console_example()
    # Only the broker's address and the test's topic prefix change; the rest runs as written.
    script = re.sub(
        r"--bootstrap-server \S+", f"--bootstrap-server {fkafka.bootstrap_servers}", example
    )
    script = re.sub(r"--topic (dastra\.\S+)", lambda m: f"--topic {fkafka.topic(m[1])}", script)
    results = Tail(fkafka, COMMAND_RESULTS)
    try:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", java.shell_functions() + script],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]

        # The actor command: keyed by the README's rule, which is the project's own, and placed
        # by the Java producer where every project producer places that key (murmur2).
        topic = fkafka.topic(command_topic("find-or-create-actor"))
        [record] = [r for r in read_all(fkafka, topic) if r.headers.get("ce_id") == b"crm-43"]
        key = actor_record_key(
            FindOrCreateActor.model_validate({"email": "dpo@acme.eu", "companyName": "Acme"})
        )
        assert key is not None and record.key == key
        assert record.headers["ce_id"] == b"crm-43"
        metadata = AdminClient(fkafka.confluent_config()).list_topics(topic, timeout=10)
        assert record.partition == murmur2(key, len(metadata.topics[topic].partitions))

        created = read_all(fkafka, fkafka.topic(command_topic("create-task")))
        [plain] = [r for r in created if "ce_id" not in r.headers]
        plain_id = f"{plain.topic}/{plain.partition}/{plain.offset}"
        found = results.wait_for_keys(["crm-43", plain_id], timeout=60)
        [actor] = results_of(found["crm-43"])
        assert actor["status"] == "succeeded", actor
        assert actor["result"]["email"] == "dpo@acme.eu"
        [task] = results_of(found[plain_id])
        assert task["status"] == "succeeded", task
        assert task["result"]["label"] == "Call the requester back"
        assert task["result"]["priority"] == "High"
    finally:
        results.close()


def test_a_java_consumer_reads_the_poller_events_with_their_headers(
    fkafka: KafkaSettings, java: JavaTools, published: dict[str, int]
) -> None:
    ours = Counter(
        Seen.of(r.key, r.value, r.headers)
        for topic in EVENT_TOPICS
        for r in read_all(fkafka, fkafka.topic(topic))
    )
    assert sum(ours.values()) >= sum(published.values())
    theirs = Counter(java.consume(list(EVENT_TOPICS), sum(ours.values())))
    assert theirs == ours
    for seen in theirs:
        headers = dict(seen.headers)
        assert headers["ce_specversion"] == "1.0" and headers["ce_id"] and headers["ce_type"]
        assert headers["content-type"] == "application/json"
        assert json.loads(seen.value or "null") is not None
