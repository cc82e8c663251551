"""`topics apply` and `topics check` semantics against the real broker."""

from __future__ import annotations

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    ResourceType,
)

from bus.admin import apply, describe, plan
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from tests.kafka_helpers import delete_topics, wait_for


def _names(kafka: KafkaSettings, catalogue: TopicCatalogue) -> list[str]:
    return [kafka.topic(spec.name) for spec in catalogue]


def test_apply_creates_everything_then_is_idempotent(
    kafka: KafkaSettings, catalogue: TopicCatalogue
) -> None:
    admin = AdminClient(kafka.confluent_config())
    first = plan(admin, catalogue, kafka.topic_prefix)
    assert {c.action for c in first} == {"create"}
    assert len(first) == len(catalogue)

    apply(admin, first)

    states = describe(admin, _names(kafka, catalogue))
    for spec in catalogue:
        state = states[kafka.topic(spec.name)]
        assert state.partitions == spec.partitions
        assert state.replication_factor == 1
        assert state.configs["cleanup.policy"] == spec.cleanup_policy
        assert state.configs["retention.ms"] == str(spec.retention_ms)
    assert plan(admin, catalogue, kafka.topic_prefix) == []  # a second run changes nothing
    delete_topics(kafka, _names(kafka, catalogue))


def test_a_dry_run_plan_changes_nothing(kafka: KafkaSettings, catalogue: TopicCatalogue) -> None:
    admin = AdminClient(kafka.confluent_config())
    plan(admin, catalogue, kafka.topic_prefix)
    assert describe(admin, _names(kafka, catalogue)) == {}


def test_check_detects_changes_made_behind_its_back(
    kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    admin = AdminClient(kafka.confluent_config())
    tasks = kafka.topic("dastra.tasks.v1")
    admin.create_partitions([NewPartitions(tasks, 8)])[tasks].result(timeout=30)
    results = kafka.topic("dastra.command-results.v1")
    resource = ConfigResource(
        ResourceType.TOPIC,
        results,
        incremental_configs=[
            ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)

    expected = {(tasks, "refused"), (results, "alter-config")}

    def seen() -> set[tuple[str, str]]:
        return {(c.topic, c.action) for c in plan(admin, topics, kafka.topic_prefix)}

    # The broker's metadata catches up with the controller shortly after the change.
    wait_for(lambda: seen() == expected, 10, f"check to report {expected}, last saw {seen()}")
    apply(admin, [c for c in plan(admin, topics, kafka.topic_prefix) if c.allowed])
    remaining = plan(admin, topics, kafka.topic_prefix)
    assert [(c.topic, c.action) for c in remaining] == [(tasks, "refused")]


def test_apply_raises_partitions(kafka: KafkaSettings, topics: TopicCatalogue) -> None:
    admin = AdminClient(kafka.confluent_config())
    spec = topics["dastra.tasks.v1"]
    bigger = topics.model_copy(
        update={
            "topics": tuple(
                s.model_copy(update={"partitions": 9}) if s.name == spec.name else s for s in topics
            )
        }
    )
    changes = plan(admin, bigger, kafka.topic_prefix)
    assert [(c.action, c.topic) for c in changes] == [("add-partitions", kafka.topic(spec.name))]
    apply(admin, changes)
    assert describe(admin, [kafka.topic(spec.name)])[kafka.topic(spec.name)].partitions == 9
