"""The command agents end to end: a real `dastra-kafka worker` process (shared by this module),
the session broker, the sandbox over HTTP. The shared behaviour suite runs for all six actions:
happy path, malformed records, Dastra's 400, 503 for 6 s (20 s in make test-all), redelivery
after rewinding the group's offsets; then ordering, a slow command, the find-or-create race,
decoding modes and dlq replay."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from bus.deadletter import read_dead_letter
from bus.settings import KafkaSettings
from bus.topics import ACTIONS, COMMAND_RESULTS, DEAD_LETTER, TopicCatalogue, command_topic
from consumers.create_task import MARKER
from dastra.sandbox import SandboxAdmin, SandboxServer
from dastra_kafka.cli import app as cli
from tests.consumers.agents_support import (
    RecordProducer,
    Tail,
    WorkerProcess,
    command_record,
    committed_offsets,
    end_offsets,
    group_caught_up,
    results_of,
    rewind_group,
)
from tests.kafka_helpers import create_catalogue_topics, delete_topics, unique, wait_for

MAX_RECORD_BYTES = 4096


# --- the six actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A valid command of one action, and how to check Dastra's state after it succeeded."""

    action: str
    make: Callable[[SandboxAdmin, str], dict[str, Any]]
    check: Callable[[SandboxAdmin, dict[str, Any], Any, str], None]


def _make_task(_admin: SandboxAdmin, tag: str) -> dict[str, Any]:
    return {"label": f"Answer {tag}", "priority": "High", "description": "<p>Call back</p>"}


def _check_task(admin: SandboxAdmin, data: dict[str, Any], result: Any, command_id: str) -> None:
    tasks = [t for t in admin.objects("tasks") if t["label"] == data["label"]]
    assert len(tasks) == 1 and tasks[0]["id"] == result["id"]
    assert tasks[0]["priority"] == "High" and tasks[0]["additionalDatas"][MARKER] == command_id


def _make_actor(_admin: SandboxAdmin, tag: str) -> dict[str, Any]:
    return {"companyName": f"Acme {tag}", "email": f"dpo@{tag}.eu", "countryCode": "FR"}


def _check_actor(admin: SandboxAdmin, data: dict[str, Any], result: Any, _id: str) -> None:
    actors = [a for a in admin.objects("actors") if a["email"] == data["email"]]
    assert len(actors) == 1 and actors[0]["id"] == result["id"]
    assert actors[0]["companyName"] == data["companyName"] and actors[0]["actorType"] == "Morale"


def _make_request(_admin: SandboxAdmin, tag: str) -> dict[str, Any]:
    return {"title": f"Access {tag}", "purposes": ["Access"], "email": f"{tag}@example.eu",
            "givenName": "Ada", "channel": "Zapier"}  # fmt: skip


def _check_request(admin: SandboxAdmin, data: dict[str, Any], result: Any, cid: str) -> None:
    found = [r for r in admin.objects("rightsRequests") if r["title"] == data["title"]]
    assert len(found) == 1 and found[0]["id"] == result["id"]
    assert found[0]["refId"] == cid and found[0]["channel"] == "Zapier"


def _make_link(admin: SandboxAdmin, tag: str) -> dict[str, Any]:
    actor = admin.create_actor(companyName=f"Vendor {tag}")
    processing = admin.info()["processings"][2]
    return {"actorIds": [actor["id"]], "dataProcessingId": processing, "type": "Recipient",
            "recipientType": "Vendor"}  # fmt: skip


def _check_link(admin: SandboxAdmin, data: dict[str, Any], result: Any, _id: str) -> None:
    assert result["linked"] == data["actorIds"] and result["count"] == 1
    processings = admin.state(None, None)["byWorkspace"]
    links = [
        link["actorId"]
        for ws in processings.values()
        for p in ws["processings"]
        if p["id"] == data["dataProcessingId"]
        for link in p["recipients"]
    ]
    assert links.count(data["actorIds"][0]) == 1


def _make_search(admin: SandboxAdmin, tag: str) -> dict[str, Any]:
    admin.create_actor(companyName=f"{tag} Holding", email=f"info@{tag}-holding.eu")
    admin.create_actor(companyName=f"{tag} Partners", email=f"dpo@{tag}.eu")
    return {"q": tag, "email": f"dpo@{tag}.eu"}


def _check_search(_admin: SandboxAdmin, data: dict[str, Any], result: Any, _id: str) -> None:
    assert result[0]["email"] == data["email"] and len(result) == 2


def _make_find_or_create(_admin: SandboxAdmin, tag: str) -> dict[str, Any]:
    return {"email": f"privacy@{tag}.eu", "companyName": f"Globex {tag}"}


def _check_find_or_create(admin: SandboxAdmin, data: dict[str, Any], result: Any, _: str) -> None:
    actors = [a for a in admin.objects("actors") if a["email"] == data["email"]]
    assert len(actors) == 1 and actors[0]["id"] == result["id"]


CASES = {
    "create-task": Case("create-task", _make_task, _check_task),
    "create-actor": Case("create-actor", _make_actor, _check_actor),
    "create-rights-request": Case("create-rights-request", _make_request, _check_request),
    "link-actor-to-processing": Case("link-actor-to-processing", _make_link, _check_link),
    "search-actors": Case("search-actors", _make_search, _check_search),
    "find-or-create-actor": Case("find-or-create-actor", _make_find_or_create,
                                 _check_find_or_create),
}  # fmt: skip
assert set(CASES) == set(ACTIONS)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agents_kafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("agents") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


@pytest.fixture(scope="module")
def worker(
    agents_kafka: KafkaSettings,
    sandbox_server: SandboxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        agents_kafka,
        sandbox_server,
        tmp_path_factory.mktemp("agents"),
        WORKER_MAX_RECORD_BYTES=str(MAX_RECORD_BYTES),
        WORKER_CONCURRENCY="8",
        # No start-up probes of Dastra (tests/consumers/test_agents_strict.py has them): these
        # tests count the worker's calls to Dastra, which must be its commands' own.
        WORKER_DETECT="false",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def producer(agents_kafka: KafkaSettings) -> Iterator[RecordProducer]:
    records = RecordProducer(agents_kafka)
    yield records
    records.close()


@dataclass
class Env:
    kafka: KafkaSettings
    worker: WorkerProcess
    producer: RecordProducer
    admin: SandboxAdmin
    results: Tail
    dlq: Tail

    def send(
        self,
        action: str,
        data: Any,
        *,
        key: bytes | None = None,
        command_id: str | None = None,
        mode: str = "binary",
        partition: int | None = None,
    ) -> str:
        command_id = command_id or unique("cmd")
        headers, value = command_record(data, command_id=command_id, mode=mode, action=action)
        record = (key or command_id.encode(), headers, value)
        self.producer.send(command_topic(action), [record], partition=partition)
        return command_id

    def result(self, command_id: str, timeout: float = 30.0) -> dict[str, Any]:
        [record] = self.results.wait_for_keys([command_id], timeout)[command_id]
        return results_of([record])[0]


@pytest.fixture
def env(
    worker: WorkerProcess,
    producer: RecordProducer,
    sandbox: SandboxServer,
    agents_kafka: KafkaSettings,
) -> Iterator[Env]:
    sandbox.admin.configure(rate_limit=False)
    results, dlq = Tail(agents_kafka, COMMAND_RESULTS), Tail(agents_kafka, DEAD_LETTER)
    try:
        yield Env(agents_kafka, worker, producer, sandbox.admin, results, dlq)
    finally:
        results.close()
        dlq.close()
        assert worker.returncode() is None, worker.log_tail()


# --- the shared suite, for all six actions ----------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_a_command_succeeds_with_one_result_and_the_object_in_dastra(env: Env, action: str) -> None:
    case = CASES[action]
    data = case.make(env.admin, unique("ok"))
    command_id = env.send(action, data)
    result = env.result(command_id)
    assert result["status"] == "succeeded", result
    assert result["command_id"] == command_id
    assert result["action"] == action and result["attempts"] == 1 and result["error"] is None
    assert result["workspace_id"] == env.admin.info()["defaultWorkspace"]
    case.check(env.admin, data, result["result"], command_id)
    [record] = env.results.by_key()[command_id]
    assert record.headers["ce_type"] == b"eu.dastra.command.succeeded"
    assert record.headers["ce_subject"] == command_id.encode()
    assert env.worker.metric("dastra_agent_commands_succeeded_total", action=action) >= 1
    # The Dastra client's requests are counted per endpoint template: no ids, no e-mails.
    endpoints = _client_endpoints(env.worker.metrics())
    assert endpoints, "no dastra_client_requests_total on the worker's /metrics"
    assert all(_TEMPLATE.fullmatch(e) for e in endpoints), endpoints


_TEMPLATE = re.compile(r"(?:/(?:[A-Za-z][A-Za-z0-9-]*|\{(?:ws|id|uuid|value)\}))+")


def _client_endpoints(metrics: str) -> set[str]:
    return {
        sample.labels["endpoint"]
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "dastra_client_requests_total"
    }


def _as_bytes(headers: list[tuple[str, Any]]) -> list[tuple[str, bytes]]:
    return [(n, v.encode() if isinstance(v, str) else v) for n, v in headers]


def _malformed(action: str, valid: dict[str, Any]) -> list[tuple[str, list[Any], bytes | None]]:
    """(expected dlq.error.kind, headers, value) of every kind of bad record."""
    ce = [("ce_specversion", b"1.0"), ("ce_id", unique("bad").encode())]  # no source, no type
    # A valid command of another action, and an event, sent to this action's topic.
    other = ACTIONS[(ACTIONS.index(action) + 1) % len(ACTIONS)]
    misrouted = command_record(valid, command_id=unique("other"), action=other)
    event = command_record(valid, command_id=unique("event"), mode="structured", action="x")
    event_value = json.dumps({**json.loads(event[1]), "type": "eu.dastra.task.created"}).encode()
    return [
        ("not-json", [], b"{this is not json"),
        ("not-json", [], b"\xff\xfe binary"),
        ("empty", [], b""),
        ("empty", [], None),
        ("bad-envelope", ce, json.dumps(valid).encode()),
        ("invalid-command", [], b"{}"),  # required fields missing
        ("invalid-command", [], json.dumps({**valid, "bogusField": 1}).encode()),  # unknown field
        ("invalid-command", [], b"[1, 2, 3]"),  # wrong type
        ("invalid-command", [], json.dumps({**valid, "workspaceId": "twelve"}).encode()),
        ("oversized", [], json.dumps({**valid, "pad": "x" * MAX_RECORD_BYTES}).encode()),
        ("unknown-action", _as_bytes(misrouted[0]), misrouted[1]),
        ("unknown-action", _as_bytes(event[0]), event_value),
    ]


def _bad_id(headers: list[Any], value: bytes | None, topic: str, offset: int) -> str:
    """A bad record's command id: its CloudEvent id (ce_id header, or the id of a structured
    event) if it has one, else its position."""
    found = dict(headers)
    if found.get("content-type", b"").startswith(b"application/cloudevents"):
        return str(json.loads(value or b"")["id"])
    ce_id = found.get("ce_id")
    return ce_id.decode() if ce_id else f"{topic}/0/{offset}"


@pytest.mark.parametrize("action", ACTIONS)
def test_malformed_records_are_dead_lettered_and_later_commands_complete(
    env: Env, action: str
) -> None:
    valid = CASES[action].make(env.admin, unique("ok"))
    bad = _malformed(action, valid)
    topic = env.kafka.topic(command_topic(action))
    before = end_offsets(env.kafka, [command_topic(action)])[(topic, 0)]
    env.producer.send(
        command_topic(action),
        [(f"bad-{i}".encode(), headers, value) for i, (_, headers, value) in enumerate(bad)],
        partition=0,
    )
    good = env.send(action, valid, partition=0)

    ids = [_bad_id(headers, value, topic, before + i) for i, (_, headers, value) in enumerate(bad)]
    assert {kind for kind, _, _ in bad} == {"not-json", "empty", "bad-envelope", "invalid-command",
                                           "oversized", "unknown-action"}  # fmt: skip
    found = env.results.wait_for_keys([*ids, good])
    assert results_of(found[good])[0]["status"] == "succeeded"

    env.dlq.wait(
        lambda t: sum(r.headers.get("dlq.original.topic") == topic.encode()
                      and int(r.headers["dlq.original.offset"]) >= before
                      for r in t.records) >= len(bad),
        30, "the dead letters",
    )  # fmt: skip
    letters = {
        int(r.headers["dlq.original.offset"]): r
        for r in env.dlq.records
        if r.headers.get("dlq.original.topic") == topic.encode()
        and int(r.headers["dlq.original.offset"]) >= before
    }
    assert sorted(letters) == list(range(before, before + len(bad)))  # not the good one
    for i, (kind, headers, value) in enumerate(bad):
        letter = letters[before + i]
        info = read_dead_letter(list(letter.headers.items()))
        assert info.kind == kind, (i, info.message)
        assert info.message and info.partition == 0 and info.component == "agents"
        assert letter.key == f"bad-{i}".encode()
        assert letter.value == value  # the original bytes (None stays None)
        assert dict(info.original_headers) == {n: v for n, v in headers}
        [result] = results_of(found[ids[i]])
        assert result["status"] == "failed" and result["error"]["kind"] == kind
    unknown = results_of(found[ids[6]])[0]["error"]
    assert "bogusField" in unknown["field_errors"]
    # Another action's valid command is refused, not run as this topic's action.
    assert command_topic(action) in results_of(found[ids[-2]])[0]["error"]["message"]


_PERMANENT = {
    400: ("dastra-rejected", {"title": "Bad Request", "errors": {"Label": ["Too long."]}}),
    404: ("dastra-not-found", {"title": "Not Found", "status": 404}),
}


@pytest.mark.parametrize("status", sorted(_PERMANENT))
@pytest.mark.parametrize("action", ACTIONS)
def test_dastra_400_or_404_gives_a_failed_result_and_a_dead_letter_at_once(
    env: Env, action: str, status: int
) -> None:
    kind, problem = _PERMANENT[status]
    data = CASES[action].make(env.admin, unique("rejected"))
    env.admin.inject_fault("/v1/ws/*", status=status, body=problem)
    command_id = env.send(action, data)
    result = env.result(command_id)
    assert result["status"] == "failed" and result["attempts"] == 1, result
    assert result["error"]["kind"] == kind and result["error"]["status"] == status
    if status == 400:
        assert result["error"]["field_errors"] == {"Label": ["Too long."]}
    env.dlq.wait(lambda t: any(r.headers.get("ce_id") == command_id.encode()
                               for r in t.records), 30, "the dead letter")  # fmt: skip
    [letter] = [r for r in env.dlq.records if r.headers.get("ce_id") == command_id.encode()]
    assert letter.headers["dlq.error.kind"] == kind.encode()
    assert json.loads(letter.value or b"") == data
    assert env.worker.metric("dastra_agent_commands_dead_lettered_total", action=action, kind=kind)
    [fault] = env.admin.faults()
    assert fault["hits"] == 1  # failed at once: not one retry


def test_a_dastra_429_waits_its_retry_after_then_succeeds(env: Env) -> None:
    env.admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=429, retry_after=1, times=2)
    data = _make_task(env.admin, unique("limited"))
    command_id = env.send("create-task", data)
    result = env.result(command_id)
    assert result["status"] == "succeeded" and result["attempts"] == 3, result
    _check_task(env.admin, data, result["result"], command_id)
    waited = datetime.fromisoformat(result["completed_at"]) - datetime.fromisoformat(
        result["received_at"]
    )
    assert waited.total_seconds() >= 2  # twice at least its Retry-After of 1 s
    statuses = env.admin.status_counts()["POST /v1/ws/{ws}/Tasks"]
    assert statuses["429"] == 2 and sum(statuses.values()) == 3
    assert (
        env.worker.metric(
            "dastra_agent_commands_retried_total", action="create-task", kind="rate_limited"
        )
        >= 2
    )
    # The same, as the Dastra client saw it: attempts by status, retries, limiter waits.
    tasks = {"endpoint": "/v1/ws/{ws}/Tasks", "method": "POST"}
    metric = env.worker.metric
    assert metric("dastra_client_requests_total", **tasks, status="429") >= 2
    assert metric("dastra_client_requests_total", **tasks, status="200") >= 1
    assert metric("dastra_client_retries_total", **tasks, kind="rate_limited") >= 2
    assert metric("dastra_client_request_duration_seconds_count", **tasks) >= 3
    assert metric("dastra_client_limiter_wait_seconds_count", endpoint=tasks["endpoint"]) >= 3
    # Faust's own sensors, in the same registry.
    assert metric("faust_messages_received_total") >= 1
    assert (
        metric(
            "faust_messages_received_per_topic_total",
            topic=env.kafka.topic(command_topic("create-task")),
        )
        >= 1
    )


# 6 s is three times the workers' longest backoff (2 s here): every action retries through it.
# The 20 s outage is the longer variant (make test-all).
@pytest.mark.parametrize("outage_s", [6, pytest.param(20, marks=pytest.mark.slow)])
def test_dastra_503_for_seconds_delays_every_action_but_loses_none(env: Env, outage_s: int) -> None:
    made = {action: CASES[action].make(env.admin, unique("busy")) for action in ACTIONS}
    env.admin.inject_fault("/v1/ws/*", status=503, duration_s=outage_s)
    began = time.monotonic()
    ids = {action: env.send(action, data) for action, data in made.items()}
    found = env.results.wait_for_keys(ids.values(), timeout=outage_s + 40)
    assert time.monotonic() - began >= outage_s - 1  # the outage was real
    for action, command_id in ids.items():
        [result] = results_of(found[command_id])
        assert result["status"] == "succeeded", result
        assert result["attempts"] > 1
        CASES[action].check(env.admin, made[action], result["result"], command_id)
        assert (
            env.worker.metric(
                "dastra_agent_commands_retried_total", action=action, kind="server_error"
            )
            >= 1
        )
    env.dlq.poll(0.5)
    assert not [r for r in env.dlq.records if r.headers.get("ce_id", b"").decode() in ids.values()]


def test_redelivered_commands_make_no_dastra_call_and_no_second_result(
    env: Env, agents_kafka: KafkaSettings
) -> None:
    made = {action: CASES[action].make(env.admin, unique("once")) for action in ACTIONS}
    ids = {action: env.send(action, data) for action, data in made.items()}
    env.results.wait_for_keys(ids.values())
    calls = env.admin.call_counts()
    group = agents_kafka.topic("dastra-agents")
    topics = [command_topic(a) for a in ACTIONS]
    # Every command of this module (good, bad, failed) is redelivered after the rewind.
    assert env.worker.stop() == 0
    assert group_caught_up(agents_kafka, group, topics)  # the last offsets committed on SIGTERM
    rewind_group(agents_kafka, group)
    assert set(committed_offsets(agents_kafka, group).values()) == {0}
    assert not group_caught_up(agents_kafka, group, topics)
    redelivered = sum(end_offsets(agents_kafka, topics).values())
    env.results.poll(0.5)
    results_before = len(env.results.records)
    env.worker.start()
    wait_for(lambda: group_caught_up(agents_kafka, group, topics), 60,
             "every redelivered record acked again")  # fmt: skip
    duplicates = sum(
        env.worker.metric("dastra_agent_commands_duplicate_total", action=action)
        for action in ACTIONS
    )
    assert duplicates == redelivered
    assert env.admin.call_counts() == calls  # not one call to Dastra
    env.results.poll(1.0)
    assert len(env.results.records) == results_before  # not one second result
    for action, command_id in ids.items():
        assert len(env.results.by_key()[command_id]) == 1, action


# --- ordering, slowness, races -----------------------------------------------------------------


def test_commands_with_one_key_run_in_order(env: Env) -> None:
    env.admin.inject_fault("/v1/ws/*/Tasks", method="POST", latency_s=0.05)
    labels = [f"Step {i} {unique()}" for i in range(12)]
    ids = [env.send("create-task", {"label": label}, key=b"one-key") for label in labels]
    found = env.results.wait_for_keys(ids)
    created = [results_of(found[command_id])[0]["result"]["id"] for command_id in ids]
    assert created == sorted(created)


def test_a_slow_command_does_not_stall_its_partition(env: Env) -> None:
    env.admin.inject_fault("/v1/ws/*/Tasks", method="POST", latency_s=6, times=1)
    slow = env.send("create-task", {"label": f"Slow {unique()}"}, key=b"slow", partition=3)
    wait_for(lambda: env.admin.faults()[0]["hits"] == 1, 10, "the slow command in its call")
    fast = [env.send("create-task", {"label": f"Fast {i}"}, key=f"k{i}".encode(), partition=3)
            for i in range(5)]  # fmt: skip
    env.results.wait_for_keys(fast, timeout=5)
    assert slow not in env.results.by_key()  # still in its 6 s call
    assert results_of(env.results.wait_for_keys([slow], 20)[slow])[0]["status"] == "succeeded"


def test_concurrent_find_or_create_commands_for_one_actor_create_one(env: Env) -> None:
    env.admin.inject_fault("/v1/ws/*/Actors", latency_s=0.05)
    tag = unique("race")
    spellings = [f"dpo@{tag}.eu", f"DPO@{tag}.EU", f" Dpo@{tag}.eu "]
    ids = [
        env.send("find-or-create-actor",
                 {"email": spellings[i % 3], "companyName": f"Race {tag}"},
                 key=f"producer-{i}".encode())
        for i in range(24)
    ]  # fmt: skip
    found = env.results.wait_for_keys(ids)
    actor_ids = {results_of(found[c])[0]["result"]["id"] for c in ids}
    assert len(actor_ids) == 1
    actors = [a for a in env.admin.objects("actors") if (a["email"] or "").lower() == spellings[0]]
    assert len(actors) == 1


def test_binary_structured_and_plain_commands_and_their_ids(env: Env) -> None:
    binary = env.send("create-task", {"label": "Binary"}, command_id=unique("bin"))
    structured = env.send("create-task", {"label": "Structured"}, command_id=unique("st"),
                          mode="structured")  # fmt: skip
    topic = env.kafka.topic(command_topic("create-task"))
    before = end_offsets(env.kafka, [command_topic("create-task")])[(topic, 1)]
    # (A command's workspaceId overriding the default: tests/consumers/test_agents_workspaces.py,
    # with a sandbox of two workspaces.)
    env.send("create-task", {"label": "Plain"}, mode="plain", partition=1)
    plain = f"{topic}/1/{before}"
    found = env.results.wait_for_keys([binary, structured, plain])
    for command_id in (binary, structured, plain):
        [result] = results_of(found[command_id])
        assert result["status"] == "succeeded" and result["command_id"] == command_id


def test_dlq_replay_brings_a_fixed_command_to_success_once(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    since = datetime.now(UTC).isoformat()
    fault = env.admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=400)
    topic = env.kafka.topic(command_topic("create-task"))
    before = end_offsets(env.kafka, [command_topic("create-task")])[(topic, 2)]
    label = f"Replayed {unique()}"
    env.send("create-task", {"label": label}, mode="plain", key=b"replay-me", partition=2)
    command_id = f"{topic}/2/{before}"
    assert env.result(command_id)["status"] == "failed"
    env.admin.clear_faults(fault)  # the cause is fixed

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", env.kafka.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", env.kafka.topic_prefix)
    args = ["--env-file", str(tmp_path / "none.env"), "dlq", "replay",
            "--topic", command_topic("create-task"), "--kind", "dastra-rejected",
            "--since", since, "--json"]  # fmt: skip
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["replayed"] == 1
    run = CliRunner().invoke(cli, args)
    assert run.exit_code == 0, run.output
    summary = json.loads(run.stdout)
    [record] = summary["records"]
    assert record["commandId"] == command_id and record["outcome"] == "replayed"
    assert record["original"] == {"topic": topic, "partition": 2, "offset": before}
    assert record["dlq"]["offset"] >= 0

    env.results.wait(lambda t: len(t.by_key().get(command_id, [])) == 2, 30, "the new result")
    failed, succeeded = results_of(env.results.by_key()[command_id])
    assert failed["status"] == "failed" and succeeded["status"] == "succeeded"
    assert [t["label"] for t in env.admin.objects("tasks")].count(label) == 1
    # Replaying again does nothing: the command already succeeded.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["alreadySucceeded"] == 1
    assert json.loads(again.stdout)["replayed"] == 0


def test_metrics_and_readiness_are_served_on_loopback(env: Env) -> None:
    text = env.worker.metrics()
    for name in ("succeeded", "failed", "retried", "dead_lettered", "duplicate"):
        assert f"# TYPE dastra_agent_commands_{name}_total counter" in text
    assert "# TYPE dastra_agent_command_latency_seconds histogram" in text
    # The standard collectors of every role's registry.
    for standard in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert f"\n{standard}" in text, standard
    assert "python_gc_objects_collected_total{" in text
    assert env.worker.ready()
