"""Periodic recipes on one leader: two real `dastra-kafka worker` processes of one consumer group
(the session broker, the sandbox over HTTP) run the periodic recipe `deadline-escalation` every
second. Only the schedule leader (the member holding partition 0 of the create-task topic) checks
Dastra; when it stops or dies, the other worker takes the partition and the checks over."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from dastra.sandbox import SandboxServer
from tests.consumers.agents_support import WorkerProcess
from tests.kafka_helpers import create_catalogue_topics, delete_topics, unique, wait_for

RECIPE = "deadline-escalation"


@pytest.fixture
def lkafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("leader") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


@pytest.fixture
def workers(
    lkafka: KafkaSettings, sandbox_server: SandboxServer, tmp_path: Path
) -> Iterator[Callable[[str], WorkerProcess]]:
    started: list[WorkerProcess] = []

    def make(name: str) -> WorkerProcess:
        process = WorkerProcess(
            lkafka,
            sandbox_server,
            tmp_path,
            name=name,
            RECIPES_ENABLE=RECIPE,
            RECIPES_DPO_USER_ID="302",
            RECIPES_SCHEDULE_INTERVAL_S="1",
            # Only the periodic checks call Dastra: no start-up probes.
            WORKER_DETECT="false",
        )
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


def _checks(worker: WorkerProcess) -> float:
    """Periodic checks this worker made (whatever Dastra answered)."""
    return sum(
        worker.metric("dastra_recipe_schedule_checks_total", recipe=RECIPE, outcome=outcome)
        for outcome in ("ok", "error")
    )


def _leads(worker: WorkerProcess) -> bool:
    group = worker.kafka.topic("dastra-agents")  # the consumer group: the app id, prefixed
    return worker.metric("dastra_recipe_schedule_leader", group=group) == 1.0


# The kill is the harder case (the partition moves only after the session timeout): it runs in
# `make test`; a clean stop runs in `make test-all`.
@pytest.mark.parametrize("end", [pytest.param("stop", marks=pytest.mark.slow), "kill"])
def test_one_worker_of_the_group_checks_and_another_takes_over(
    workers: Callable[[str], WorkerProcess], end: str
) -> None:
    first = workers("first")
    wait_for(lambda: _leads(first) and _checks(first) >= 1, 60, "the only worker leading")
    second = workers("second")

    def one_leader() -> bool:
        leading = [_leads(first), _leads(second)]
        return first.ready() and second.ready() and leading.count(True) == 1

    wait_for(one_leader, 60, "one schedule leader of the two workers")
    leader, other = (first, second) if _leads(first) else (second, first)
    led, idle = _checks(leader), _checks(other)
    wait_for(lambda: _checks(leader) >= led + 3, 60, "three more checks by the leader")
    # Meanwhile the other worker, ready and in the group, made none.
    assert _checks(other) == idle and not _leads(other)
    assert _leads(leader)

    if end == "stop":
        leader.stop()  # leaves the group: the partition moves at once
    else:
        leader.kill()  # silent: the partition moves after the session timeout (6 s)
    wait_for(
        lambda: _leads(other) and _checks(other) >= idle + 2,
        60,
        "the other worker leading and checking",
    )
