"""Make a Kafka cluster match the topic catalogue.

Consumes a `TopicCatalogue` and a confluent-kafka `AdminClient`. Produces a plan (`TopicChange`s:
create, add partitions, alter configs, or refused: fewer partitions, other replication factor),
applies the allowed part of it, and reports mismatches for `topics check`. It never deletes a
topic and never lowers a partition count.

    changes = plan(admin, catalogue, prefix="")
    apply(admin, changes)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from bus.errors import KafkaAuthorizationError, KafkaUnavailableError
from bus.topics import TopicCatalogue, TopicSpec

__all__ = [
    "TopicChange",
    "TopicState",
    "apply",
    "check_topic_access",
    "describe",
    "plan",
    "retention_text",
    "retention_warnings",
]

Action = Literal["create", "add-partitions", "alter-config", "refused"]


@dataclass(frozen=True)
class TopicState:
    """A topic as the cluster has it."""

    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicChange:
    """One difference between the catalogue and the cluster."""

    topic: str
    action: Action
    detail: str
    spec: TopicSpec
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.action != "refused"


def describe(
    admin: AdminClient, names: Sequence[str], timeout: float = 15.0
) -> dict[str, TopicState]:
    """The current state of those of `names` that exist on the cluster;
    `KafkaUnavailableError` when the cluster does not answer within `timeout`."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"Kafka did not answer within {timeout:.0f} s: {exc}") from exc
    present = [name for name in names if name in metadata.topics]
    states: dict[str, TopicState] = {}
    if not present:
        return states
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in present]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout)
        except KafkaException as exc:
            denied = KafkaAuthorizationError.from_error(
                exc.args[0], topic=resource.name, topic_operation="DESCRIBE_CONFIGS"
            )
            if denied is not None:
                raise denied from exc
            raise
        topic = metadata.topics[resource.name]
        partitions = topic.partitions
        replicas = len(next(iter(partitions.values())).replicas) if partitions else 0
        states[resource.name] = TopicState(
            name=resource.name,
            partitions=len(partitions),
            replication_factor=replicas,
            configs={key: entry.value for key, entry in entries.items() if entry.value is not None},
        )
    return states


def retention_text(retention_ms: object) -> str:
    """`retention.ms` for people: "30 days", "unbounded", or "" when unknown."""
    if retention_ms is None:
        return ""
    millis = int(str(retention_ms))
    if millis < 0:
        return "unbounded"
    return f"{millis / 86_400_000:g} days"


def plan(admin: AdminClient, catalogue: TopicCatalogue, prefix: str = "") -> list[TopicChange]:
    """What `apply` would do to make the cluster match `catalogue` (topic names get `prefix`)."""
    physical = {f"{prefix}{spec.name}": spec for spec in catalogue}
    states = describe(admin, list(physical))
    changes: list[TopicChange] = []
    for name, spec in physical.items():
        state = states.get(name)
        if state is None:
            changes.append(
                TopicChange(
                    name,
                    "create",
                    f"{spec.partitions} partitions, replication {spec.replication_factor}, "
                    + ", ".join(f"{k}={v}" for k, v in spec.broker_configs().items()),
                    spec,
                )
            )
            continue
        if state.partitions > spec.partitions:
            changes.append(
                TopicChange(
                    name,
                    "refused",
                    f"has {state.partitions} partitions, topics.yaml says {spec.partitions}: "
                    "Kafka cannot lower a partition count; raise it in topics.yaml or recreate "
                    "the topic by hand",
                    spec,
                )
            )
        elif state.partitions < spec.partitions:
            changes.append(
                TopicChange(
                    name,
                    "add-partitions",
                    f"partitions {state.partitions} -> {spec.partitions} (keys move partition)",
                    spec,
                )
            )
        if state.replication_factor != spec.replication_factor:
            changes.append(
                TopicChange(
                    name,
                    "refused",
                    f"has replication factor {state.replication_factor}, topics.yaml says "
                    f"{spec.replication_factor}: change it with a partition reassignment",
                    spec,
                )
            )
        drift = {
            key: value
            for key, value in spec.broker_configs().items()
            if state.configs.get(key) != value
        }
        if drift:
            changes.append(
                TopicChange(
                    name,
                    "alter-config",
                    ", ".join(f"{k}: {state.configs.get(k)} -> {v}" for k, v in drift.items()),
                    spec,
                    configs=drift,
                )
            )
    return changes


def apply(admin: AdminClient, changes: Sequence[TopicChange], timeout: float = 30.0) -> None:
    """Carry out the allowed changes; refused ones are left for the caller to report."""
    creates = [
        NewTopic(
            change.topic,
            num_partitions=change.spec.partitions,
            replication_factor=change.spec.replication_factor,
            config=change.spec.broker_configs(),
        )
        for change in changes
        if change.action == "create"
    ]
    _wait(
        admin.create_topics(creates, request_timeout=timeout) if creates else {}, timeout, "CREATE"
    )
    grows = [
        NewPartitions(change.topic, change.spec.partitions)
        for change in changes
        if change.action == "add-partitions"
    ]
    _wait(
        admin.create_partitions(grows, request_timeout=timeout) if grows else {}, timeout, "ALTER"
    )
    alters = [
        ConfigResource(
            ResourceType.TOPIC,
            change.topic,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in change.configs.items()
            ],
        )
        for change in changes
        if change.action == "alter-config"
    ]
    _wait(
        admin.incremental_alter_configs(alters, request_timeout=timeout) if alters else {},
        timeout,
        "ALTER_CONFIGS",
    )
    _await_metadata(
        admin,
        {c.topic: c.spec.partitions for c in changes if c.action in ("create", "add-partitions")},
        timeout,
    )


def _await_metadata(admin: AdminClient, expected: dict[str, int], timeout: float) -> None:
    """Wait until the broker's metadata shows what the controller already committed, so that
    producers and consumers started right after `apply` find every topic and partition."""
    deadline = time.monotonic() + timeout
    while expected:
        topics = admin.list_topics(timeout=timeout).topics
        expected = {
            name: count
            for name, count in expected.items()
            if name not in topics
            or len(topics[name].partitions) < count
            # A partition is usable once it has a leader.
            or any(p.leader < 0 or p.error is not None for p in topics[name].partitions.values())
        }
        if not expected:
            return
        if time.monotonic() > deadline:
            raise KafkaException(f"topics not visible after {timeout:.0f} s: {sorted(expected)}")
        time.sleep(0.05)


def _wait(futures: dict[Any, Any], timeout: float, operation: str) -> None:
    for key, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            topic = key.name if isinstance(key, ConfigResource) else str(key)
            denied = KafkaAuthorizationError.from_error(
                exc.args[0], topic=topic, topic_operation=operation
            )
            if denied is not None:
                raise denied from exc
            raise


def retention_warnings(catalogue: TopicCatalogue) -> list[str]:
    """Topics that can carry personal data but keep it forever."""
    return [
        f"{spec.name}: carries personal data but its retention is unbounded (retention_ms: -1)"
        for spec in catalogue
        if spec.personal_data and spec.unbounded_retention
    ]


def check_topic_access(admin: AdminClient, needs: Mapping[str, str], timeout: float = 15.0) -> None:
    """Raise `KafkaAuthorizationError` for the first topic of `needs` (physical name -> the
    operation the caller needs on it) this principal may not even describe: a role refused its
    topics stops at start-up with the ACL named, before a library waits on it forever.

        check_topic_access(admin, {"dastra.command-results.v1": "READ"})
    """
    for topic, operation in needs.items():
        try:
            info = admin.list_topics(topic, timeout=timeout).topics.get(topic)
        except KafkaException:
            continue  # unreachable: the caller's own start-up says so
        if info is not None and (
            denied := KafkaAuthorizationError.from_error(
                info.error, topic=topic, topic_operation=operation
            )
        ):
            raise denied
