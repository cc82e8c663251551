"""The agents when workers die: SIGKILL in the middle of 400 commands (2 000 in make test-all)
and a restart, and two workers sharing the partitions when one of them is killed. Real worker
processes, the session broker, the sandbox over HTTP. Nothing may be lost, nothing duplicated:
every command has exactly one result, and no rights request, actor or task exists twice in
Dastra."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, TopicCatalogue, command_topic
from consumers.create_task import MARKER
from dastra.sandbox import SandboxServer
from tests.consumers.agents_support import (
    RecordProducer,
    Tail,
    WorkerProcess,
    command_record,
    results_of,
)
from tests.kafka_helpers import unique, wait_for


def _commands(count: int, tag: str) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """`count` commands spread over the three creating actions: (command id, data) by action."""
    made: dict[str, list[tuple[str, dict[str, Any]]]] = {
        "create-rights-request": [],
        "create-actor": [],
        "create-task": [],
        "find-or-create-actor": [],
    }
    for n in range(count):
        command_id = f"{tag}-{n}"
        if n % 4 == 0:
            made["create-rights-request"].append(
                (command_id, {"title": f"Access {tag} {n}", "purposes": ["Access"]})
            )
        elif n % 4 == 1:
            made["create-actor"].append(
                (command_id, {"companyName": f"Acme {n}", "email": f"dpo-{n}@{tag}.eu"})
            )
        elif n % 4 == 2:
            made["create-task"].append((command_id, {"label": f"Task {tag} {n}"}))
        else:
            made["find-or-create-actor"].append(
                (command_id, {"companyName": f"Globex {n}", "email": f"fc-{n}@{tag}.eu"})
            )
    return made


def _produce(kafka: KafkaSettings, made: dict[str, list[tuple[str, dict[str, Any]]]]) -> set[str]:
    producer = RecordProducer(kafka)
    for action, commands in made.items():
        records = []
        for command_id, data in commands:
            headers, value = command_record(data, command_id=command_id, action=action)
            records.append((command_id.encode(), headers, value))
        producer.send(command_topic(action), records)
    producer.close()
    return {command_id for commands in made.values() for command_id, _ in commands}


def _assert_exactly_once(
    tail: Tail,
    ids: set[str],
    sandbox: SandboxServer,
    tag: str,
    created: int,
    workers: tuple[WorkerProcess, ...],
) -> None:
    # Stop every worker still running first (SIGTERM, a clean exit): then nothing can write a
    # late duplicate, and the topic read to its end holds every result there will ever be.
    for worker in workers:
        assert worker.stop() == 0, worker.log_tail()
    tail.read_to_end()
    keys = Counter((r.key or b"").decode() for r in tail.records)
    assert set(keys) == ids
    assert [k for k, n in keys.items() if n != 1] == []
    statuses = Counter(r["status"] for r in results_of(tail.records))
    assert statuses == {"succeeded": len(ids)}
    state = sandbox.admin.state(sandbox.workspace_id)
    requests = [r["refId"] for r in state["rightsRequests"] if (r["refId"] or "").startswith(tag)]
    actors = [a["email"] for a in state["actors"] if (a["email"] or "").endswith(f"@{tag}.eu")]
    tasks = [
        (t["additionalDatas"] or {}).get(MARKER)
        for t in state["tasks"]
        if t["label"].startswith(f"Task {tag}")
    ]
    for name, found in (("rights requests", requests), ("actors", actors), ("tasks", tasks)):
        duplicated = [k for k, n in Counter(found).items() if n > 1]
        assert duplicated == [], f"duplicated {name}: {duplicated[:5]}"
    assert len(requests) + len(actors) + len(tasks) == created


@pytest.mark.parametrize(
    ("count", "kill_after"), [(400, 125), pytest.param(2000, 600, marks=pytest.mark.slow)]
)
def test_sigkill_during_commands_then_restart_loses_and_duplicates_nothing(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    tmp_path: Path,
    count: int,
    kill_after: int,
) -> None:
    sandbox.admin.configure(rate_limit=False)
    tag = unique("kill")
    ids = _produce(kafka, _commands(count, tag))
    tail = Tail(kafka, COMMAND_RESULTS)
    worker = WorkerProcess(kafka, sandbox, tmp_path, WORKER_CONCURRENCY="32")
    try:
        worker.start()
        tail.wait(
            lambda t: len(t.records) >= kill_after, 120, f"{kill_after} results before the kill"
        )
        worker.kill()
        done_before = len(tail.by_key())
        assert done_before < len(ids), "the worker finished before it could be killed"
        worker.start()
        tail.wait(lambda t: ids <= set(t.by_key()), 240, "a result for every command")
        _assert_exactly_once(tail, ids, sandbox, tag, created=count, workers=(worker,))
    finally:
        worker.stop()
        tail.close()


def test_two_workers_share_the_partitions_and_one_is_killed(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    sandbox.admin.configure(rate_limit=False)
    # Some latency, so that the killed worker has commands in flight.
    sandbox.admin.inject_fault("/v1/ws/*", latency_s=0.02)
    tail = Tail(kafka, COMMAND_RESULTS)
    first = WorkerProcess(kafka, sandbox, tmp_path, name="first")
    second = WorkerProcess(kafka, sandbox, tmp_path, name="second")
    try:
        # Both start at once (each start is mostly Python and Faust loading), then both serve.
        first.start(wait=False)
        second.start(wait=False)
        first.wait_ready()
        second.wait_ready()
        wait_for(
            lambda: (
                len(first.partitions()) + len(second.partitions()) == 36
                and bool(first.partitions())
                and bool(second.partitions())
            ),
            60,
            "the command partitions shared by both workers",
        )
        tag = unique("two")
        ids = _produce(kafka, _commands(400, tag))
        tail.wait(lambda t: len(t.records) >= 100, 120, "100 results before the kill")
        first.kill()
        tail.wait(lambda t: ids <= set(t.by_key()), 180, "a result for every command")
        assert len(second.partitions()) == 36
        _assert_exactly_once(tail, ids, sandbox, tag, created=400, workers=(second,))
    finally:
        first.stop()
        second.stop()
        tail.close()
