"""Consumer-group administration (bus/groups.py) on a real broker: committed offsets, deleting a
group, and surviving a cluster whose group coordinator does not exist yet, the case where
librdkafka's admin calls crash the process (SIGSEGV: the worker's start in CI)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bus.groups import GroupRead, committed_offsets, delete_group, read_groups
from bus.localkafka import LocalKafka
from bus.settings import KafkaSettings
from tests.kafka_helpers import unique, wait_for

_CHILD = textwrap.dedent(
    """
    import sys
    from bus.groups import committed_offsets, delete_group
    from bus.settings import KafkaSettings
    kafka = KafkaSettings(bootstrap_servers=sys.argv[1])
    print(committed_offsets(kafka, sys.argv[2]), delete_group(kafka, sys.argv[2]))
    """
)


def _assigned(consumer: Consumer) -> bool:
    """Poll once, then: has the group given this consumer its partitions? (What poll returns
    says nothing: an error event is a message too.)"""
    consumer.poll(0.2)
    return bool(consumer.assignment())


def test_a_new_cluster_without_a_group_coordinator_yet_is_waited_for_not_a_crash() -> None:
    """The first group requests of a new cluster meet COORDINATOR_NOT_AVAILABLE while
    `__consumer_offsets` is created: asked again until it answers, in separate processes so
    a crash shows as a signal, not as a dead test run."""
    with LocalKafka(quick_jit=True) as broker:
        children = [
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, broker.bootstrap_servers, unique("fresh")],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outcomes = [(child.wait(timeout=120), *child.communicate()) for child in children]
    assert [code for code, _, _ in outcomes] == [0, 0, 0], outcomes
    assert [out.strip() for _, out, _ in outcomes] == ["{} True"] * 3, outcomes


def test_committed_offsets_then_delete_once_the_group_is_empty(kafka: KafkaSettings) -> None:
    topic = unique("groups")
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=30)
    group = unique("group")
    consumer = Consumer({**kafka.confluent_config(), "group.id": group})
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 7)], asynchronous=False
        )
        assert committed_offsets(kafka, group) == {(topic, 0): 5, (topic, 1): 7}
        consumer.subscribe([topic])
        wait_for(lambda: _assigned(consumer), 30, "an assignment")
        assert delete_group(kafka, group) is False  # a member is still in it
    finally:
        consumer.close()
    assert delete_group(kafka, group) is True
    assert committed_offsets(kafka, group) == {}
    assert delete_group(kafka, group) is True  # already gone


def test_read_groups_describes_members_assignments_and_offsets(kafka: KafkaSettings) -> None:
    topic = unique("groups")
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(timeout=30)
    group = unique("group")
    consumer = Consumer({**kafka.confluent_config(), "group.id": group, "client.id": "reader-1"})
    try:
        consumer.subscribe([topic])
        wait_for(lambda: _assigned(consumer), 30, "an assignment")
        consumer.commit(offsets=[TopicPartition(topic, 2, 9)], asynchronous=False)
        missing = unique("never")
        reads = read_groups(kafka, [group, missing])
    finally:
        consumer.close()
    read = reads[group]
    assert isinstance(read, GroupRead), read
    assert (read.state, read.simple, read.found) == ("STABLE", False, True)
    assert [(m.client_id, m.partitions) for m in read.members] == [
        ("reader-1", ((topic, 0), (topic, 1), (topic, 2)))
    ]
    assert read.committed == {(topic, 2): 9}
    unknown = reads[missing]
    assert isinstance(unknown, GroupRead) and not unknown.found, unknown
