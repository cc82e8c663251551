"""The lag monitor against a real broker and real consumers: its figures are Kafka's own, its
time lag is the age of the oldest unconsumed record, its statuses follow what consumers do,
and its window survives a restart."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from consumers.lag import (
    GroupSelection,
    LagMonitor,
    LagSnapshot,
    LagUnavailableError,
    Sample,
    Status,
    evaluate_partition,
    project_group_prefix,
)
from tests.consumers.lag.support import (
    FakeClock,
    commit,
    committed_by_kafka,
    fast_lag_settings,
    live_member,
    produce,
    topic,
    watermarks,
    window_topic,
)


def _statuses(snapshot: LagSnapshot, group: str) -> dict[int, Status]:
    return {p.partition: p.status for p in snapshot.group(group).partitions}


def test_lag_figures_equal_kafkas_own(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.lag-figures")
    with topic(kafka, 4) as name:
        for partition, count in enumerate((10, 20, 30, 40)):
            produce(kafka, name, partition, count)
        commit(kafka, group, {(name, 0): 3, (name, 1): 20, (name, 2): 1})  # 3 has none

        with LagMonitor(kafka, fast_lag_settings()) as monitor:
            snapshot = monitor.refresh()

        g = snapshot.group(group)
        committed = committed_by_kafka(kafka, group)
        assert {(p.topic, p.partition) for p in g.partitions} == set(committed)
        for p in g.partitions:
            low, high = watermarks(kafka, name, p.partition)
            assert p.committed == committed[(p.topic, p.partition)]
            assert (p.log_start, p.log_end) == (low, high)
            assert p.lag == high - committed[(p.topic, p.partition)]
        assert [p.lag for p in g.partitions] == [7, 0, 29]
        assert (g.lag, g.max_lag, g.topics) == (36, 29, {name: 36})
        assert g.state == "EMPTY" and g.members == ()


def test_default_selection_is_the_projects_groups(kafka: KafkaSettings) -> None:
    ours, theirs = kafka.topic("dastra.agents"), kafka.topic("someone-else")
    with topic(kafka, 1) as name:
        produce(kafka, name, 0, 3)
        commit(kafka, ours, {(name, 0): 1})
        commit(kafka, theirs, {(name, 0): 1})
        assert project_group_prefix(kafka) == kafka.topic_prefix + "dastra"

        with LagMonitor(kafka, fast_lag_settings()) as monitor:
            default = [g.group for g in monitor.refresh().groups]
        everything = GroupSelection.of(kafka, fast_lag_settings(), all_groups=True)
        with LagMonitor(kafka, fast_lag_settings(), everything) as monitor:
            every = [g.group for g in monitor.refresh().groups]
        missing = kafka.topic("dastra.never-started")
        named = GroupSelection.of(kafka, fast_lag_settings(), [missing, theirs])
        with LagMonitor(kafka, fast_lag_settings(), named) as monitor:
            snapshot = monitor.refresh()

    assert default == [ours]
    assert {ours, theirs} <= set(every)
    assert snapshot.group(missing).status == Status.NOTFOUND
    assert snapshot.group(theirs).lag == 2
    assert snapshot.worst() == Status.NOTFOUND


def test_time_lag_is_the_age_of_the_oldest_unconsumed_record(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.time-lag")
    base = int(time.time() * 1000) - 120_000
    stamps = [base + i * 5_000 for i in range(20)]  # one record every 5 s, 2 min ago onwards
    with topic(kafka, 3) as name:
        produce(kafka, name, 0, 20, stamps)
        produce(kafka, name, 1, 5, stamps)
        produce(kafka, name, 2, 10, stamps)
        # Records 0..5 of partition 2 deleted (retention, compaction): the oldest left is 6.
        admin = AdminClient(kafka.confluent_config())
        deleted = admin.delete_records([TopicPartition(name, 2, 6)])
        for future in deleted.values():
            future.result(timeout=10)
        commit(kafka, group, {(name, 0): 7, (name, 1): 5, (name, 2): 2})

        with LagMonitor(kafka, fast_lag_settings()) as monitor:
            first = monitor.refresh().group(group)
            after_first = time.time()
            commit(kafka, group, {(name, 0): 12, (name, 1): 5, (name, 2): 2})
            second = monitor.refresh().group(group)
            after_second = time.time()

    p0, p1, p2 = first.partitions
    assert p0.time_lag_s == pytest.approx(after_first - stamps[7] / 1000, abs=1.0)
    assert p0.oldest_offset == 7
    assert (p1.lag, p1.time_lag_s) == (0, 0.0)
    assert (p2.log_start, p2.oldest_offset) == (6, 6)
    assert p2.time_lag_s == pytest.approx(after_first - stamps[6] / 1000, abs=1.0)
    assert first.max_time_lag_s == p2.time_lag_s  # record 6 is 5 s older than record 7
    moved = second.partitions[0]
    assert moved.oldest_offset == 12
    assert moved.time_lag_s == pytest.approx(after_second - stamps[12] / 1000, abs=1.0)


def test_caught_up_group_on_a_quiet_topic_stays_ok(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.quiet")
    clock = FakeClock()
    with topic(kafka, 2) as name:
        produce(kafka, name, 0, 5)
        with (
            live_member(kafka, group, name) as member,
            LagMonitor(kafka, fast_lag_settings(), clock=clock) as monitor,
        ):
            member.commit(
                offsets=[TopicPartition(name, 0, 5), TopicPartition(name, 1, 0)],
                asynchronous=False,
            )
            seen = []
            for _ in range(4):  # 4 refreshes 25 s apart: the 60 s window passes with no traffic
                snapshot = monitor.refresh()
                seen.append(snapshot.group(group))
                clock.advance(25)
        # The member leaves; hours pass; still nothing to consume.
        with LagMonitor(kafka, fast_lag_settings(), clock=clock) as monitor:
            later = []
            for _ in range(4):
                clock.advance(3600)
                later.append(monitor.refresh().group(group))

    for g in seen + later:
        assert g.status == Status.OK, g.reason
        assert (g.lag, g.max_time_lag_s) == (0, 0.0)
    assert seen[0].state == "STABLE" and len(seen[0].members) == 1
    assert later[-1].state == "EMPTY"


def _consume_all(consumer: Consumer, expected: int) -> None:
    """Poll until `expected` records arrived, then commit where the consumer is."""
    got = 0
    deadline = time.monotonic() + 30
    while got < expected:
        assert time.monotonic() < deadline, f"consumed {got} of {expected} records"
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            got += 1
    consumer.commit(asynchronous=False)


def test_a_consumer_that_stops_while_producers_go_on_is_stop(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.stopped")
    clock = FakeClock()
    with topic(kafka, 2) as name:
        produce(kafka, name, 0, 10)
        produce(kafka, name, 1, 5)  # partition 1 then stays quiet
        with LagMonitor(kafka, fast_lag_settings(), clock=clock) as monitor:
            consuming = []
            with live_member(kafka, group, name) as member:
                _consume_all(member, 15)
                for _ in range(3):  # consumes and commits everything producers write
                    consuming.append(monitor.refresh().group(group))
                    clock.advance(10)
                    produce(kafka, name, 0, 5)
                    _consume_all(member, 5)
            # The consumer is gone (crashed, scaled to zero); producers go on writing.
            clock.advance(60)
            stopped = []
            for _ in range(4):
                produce(kafka, name, 0, 5)
                stopped.append(monitor.refresh().group(group))
                clock.advance(10)

    assert [g.status for g in consuming] == [Status.OK] * 3
    assert consuming[0].state == "STABLE" and len(consuming[0].members) == 1
    assert [p.committed for p in consuming[-1].partitions] == [20, 5]  # what it consumed
    assert [g.status for g in stopped] == [Status.OK, Status.OK, Status.STOP, Status.STOP]
    last = stopped[-1]
    assert last.state == "EMPTY"
    assert [(p.committed, p.lag) for p in last.partitions] == [(25, 20), (5, 0)]
    # The caught-up partition on a quiet log is OK, never STOP.
    assert {p.partition: p.status for p in last.partitions} == {0: Status.STOP, 1: Status.OK}
    assert "no consumer" in last.reason and "1 of 2" in last.reason


def test_consumer_stuck_on_one_offset_is_stall(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.stuck")
    clock = FakeClock()
    with topic(kafka, 1) as name:
        produce(kafka, name, 0, 10)
        with (
            live_member(kafka, group, name) as member,
            LagMonitor(kafka, fast_lag_settings(), clock=clock) as monitor,
        ):
            seen = []
            for _ in range(4):
                # Commits the same offset again and again (a poison record, a livelock), while
                # producers keep writing: a live owner, so STALL, not STOP.
                member.commit(offsets=[TopicPartition(name, 0, 4)], asynchronous=False)
                produce(kafka, name, 0, 2)
                seen.append(monitor.refresh().group(group))
                clock.advance(10)
            member_id = member.memberid()

    assert [g.status for g in seen] == [Status.OK, Status.OK, Status.STALL, Status.STALL]
    p = seen[-1].partitions[0]
    assert (p.committed, p.lag, p.status) == (4, 10 + 4 * 2 - 4, Status.STALL)
    assert p.consumer_id == member_id and p.client_id == "dastra-kafka"
    assert "stuck at offset 4" in p.reason


def test_offset_reset_backwards_is_rewind_until_caught_up_again(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.rewound")
    clock = FakeClock()
    with topic(kafka, 1) as name:
        produce(kafka, name, 0, 30)
        commit(kafka, group, {(name, 0): 20})
        with LagMonitor(kafka, fast_lag_settings(), clock=clock) as monitor:
            before = monitor.refresh().group(group)
            clock.advance(10)
            commit(kafka, group, {(name, 0): 4})  # kafka-consumer-groups --reset-offsets
            rewound = monitor.refresh().group(group)
            clock.advance(10)
            commit(kafka, group, {(name, 0): 25})  # replayed past where it was
            replayed = monitor.refresh().group(group)

    assert before.status == Status.OK
    assert rewound.status == Status.REWIND
    assert "went back from 20 to 4" in rewound.reason
    assert replayed.status == Status.OK


def test_consumer_falling_behind_is_warn(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.slow")
    clock = FakeClock()
    with topic(kafka, 1) as name:
        produce(kafka, name, 0, 10)
        with LagMonitor(kafka, fast_lag_settings(), clock=clock) as monitor:
            seen = []
            for step in range(4):
                commit(kafka, group, {(name, 0): 2 + step})  # +1 per step
                produce(kafka, name, 0, 5)  # +5 per step
                seen.append(monitor.refresh().group(group).status)
                clock.advance(10)

    assert seen == [Status.OK, Status.OK, Status.WARN, Status.WARN]


def test_the_window_survives_a_restart_of_the_monitor(
    kafka: KafkaSettings, catalogue: TopicCatalogue
) -> None:
    group = kafka.topic("dastra.restarted")
    clock = FakeClock()
    persisted = fast_lag_settings(persist_window=True)
    with window_topic(kafka, catalogue), topic(kafka, 1) as name:
        produce(kafka, name, 0, 20)
        commit(kafka, group, {(name, 0): 5})
        with LagMonitor(kafka, persisted, clock=clock) as first:
            for _ in range(2):  # two samples: not enough to judge
                produce(kafka, name, 0, 5)
                assert first.refresh().group(group).status == Status.OK
                clock.advance(10)
        produce(kafka, name, 0, 5)

        with LagMonitor(kafka, persisted, clock=clock) as restarted:
            after_restart = restarted.refresh()
        with LagMonitor(kafka, fast_lag_settings(), clock=clock) as amnesiac:
            without_window = amnesiac.refresh()

    assert after_restart.group(group).status == Status.STOP
    change = next(c for c in after_restart.changes if c.group == group)
    assert (change.previous, change.status) == (Status.OK, Status.STOP)  # statuses kept too
    assert without_window.group(group).status == Status.OK  # what a restart used to cost


@pytest.mark.parametrize(
    ("history", "current", "owned", "expected"),
    [
        ([], None, False, Status.OK),
        ([Sample(0, 9, 9), Sample(10, 9, 9)], Sample(20, 9, 9), False, Status.OK),
        ([Sample(0, 3, 9)], Sample(10, 3, 12), False, Status.OK),  # too few samples
        ([Sample(0, 3, 3), Sample(10, 3, 9)], Sample(20, 3, 12), False, Status.OK),
        ([Sample(0, 3, 5), Sample(10, 3, 9)], Sample(20, 3, 12), False, Status.STOP),
        ([Sample(0, 3, 5), Sample(10, 3, 9)], Sample(20, 3, 12), True, Status.STALL),
        ([Sample(0, 3, 9), Sample(10, 3, 9)], Sample(20, 3, 9), False, Status.STALL),
        ([Sample(0, 3, 9), Sample(10, 5, 13)], Sample(20, 6, 20), True, Status.WARN),
        ([Sample(0, 3, 9), Sample(10, 8, 13)], Sample(20, 12, 14), True, Status.OK),
        ([Sample(0, 8, 9), Sample(10, 9, 13)], Sample(20, 2, 14), True, Status.REWIND),
    ],
    ids=[
        "no-commit",
        "caught-up-quiet",
        "warming-up",
        "caught-up-recently",
        "stop",
        "stall-owned",
        "stall-frozen-backlog",
        "warn",
        "consuming",
        "rewind",
    ],
)
def test_status_rules(
    history: list[Sample], current: Sample | None, owned: bool, expected: Status
) -> None:
    status, reason = evaluate_partition(history, current, owned, 3)
    assert status == expected, reason


def test_groups_that_cannot_be_read_make_the_lag_unavailable_not_an_error() -> None:
    # The broker away (restarting under the demo's --chaos): the groups' reader cannot even
    # connect. Callers (`lag serve`, the demo) wait for the next refresh on LagUnavailableError;
    # anything else ended the demo with "the demo could not run".
    away = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    selection = GroupSelection(names=("dastra-agents",), prefix="dastra")
    with (
        LagMonitor(away, fast_lag_settings(timeout_s=2.0), selection) as monitor,
        pytest.raises(LagUnavailableError, match="describing the groups failed"),
    ):
        monitor.refresh()
