"""The webhook service over real HTTP (uvicorn on loopback) against the real broker: auth,
commands acknowledged only once durable, bad input refused with nothing written, idempotency
across replicas and restarts, ?wait, REST hook management, samples, Dastra's webhooks."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)
from pydantic import SecretStr

from bus.envelope import decode, encode_binary, new_event
from bus.errors import RecordTooLargeError
from bus.hooks.settings import HooksSettings
from bus.hooks.signatures import dastra_signature
from bus.producer import AsyncProducer
from bus.records.commands import (
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    CommandError,
    CommandResult,
    parse_command,
)
from bus.settings import KafkaSettings
from bus.topics import (
    ACTIONS,
    COMMAND_RESULTS,
    HOOK_SUBSCRIPTIONS,
    POLLER_TRIGGERS,
    TASKS,
    WEBHOOK_IDEMPOTENCY,
    TopicCatalogue,
    command_topic,
)
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from producers.webhook.settings import WebhookSettings
from tests.kafka_helpers import Record, consume, read_all, unique, wait_for
from tests.producers.conftest import (
    DASTRA_KEY,
    OTHER_TOKEN,
    TOKEN,
    Running,
    start_webhook,
    stop_webhook,
)

TASK = {"label": "Answer the access request", "priority": "High"}


def _records(kafka: KafkaSettings, action: str) -> list[Record]:
    return read_all(kafka, kafka.topic(command_topic(action)))


# --- auth and probes -----------------------------------------------------------------------------


def test_auth_by_bearer_or_api_key_and_401_otherwise(webhook: Running) -> None:
    with httpx.Client(base_url=webhook.url, timeout=10) as anonymous:
        _check_auth(anonymous)


def _check_auth(anonymous: httpx.Client) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"X-API-Key": "nope"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ):
        answer = anonymous.get("/v1/me", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.json()["error"] == "unauthorized"
        assert TOKEN not in answer.text
    by_bearer = anonymous.get("/v1/me", headers={"Authorization": f"Bearer {TOKEN}"})
    by_key = anonymous.get("/v1/me", headers={"X-API-Key": TOKEN})
    other = anonymous.get("/v1/me", headers={"X-API-Key": OTHER_TOKEN})
    assert by_bearer.status_code == by_key.status_code == other.status_code == 200
    assert by_bearer.json() == by_key.json()
    assert by_bearer.json()["token_id"] != other.json()["token_id"]
    assert TOKEN not in by_bearer.text
    assert set(by_bearer.json()["actions"]) == set(ACTIONS)
    # Commands and hooks need a token too; nothing is written without one.
    assert anonymous.post("/v1/commands/create-task", json=TASK).status_code == 401
    assert anonymous.get("/v1/hooks").status_code == 401
    assert anonymous.post("/v1/commands/no-such-action", json={}).status_code == 401
    # Probes and metrics need none.
    assert anonymous.get("/healthz").status_code == 200
    ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and all(ready.json()["checks"].values())
    metrics = anonymous.get("/metrics").text
    assert 'dastra_webhook_requests_total{method="GET",route="/v1/me",status="401"} 5.0' in metrics
    assert "\nprocess_cpu_seconds_total " in metrics and "\npython_info{" in metrics


# --- commands ------------------------------------------------------------------------------------


def test_a_command_is_answered_202_with_its_place_once_on_the_topic(
    webhook: Running, kafka: KafkaSettings
) -> None:
    answer = webhook.client.post("/v1/commands/create-task", json=TASK)
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "accepted" and body["replayed"] is False
    assert body["topic"] == kafka.topic(command_topic("create-task"))
    assert answer.headers["command-id"] == body["command_id"]

    records = _records(kafka, "create-task")
    assert len(records) == 1
    record = records[0]
    assert (record.partition, record.offset) == (body["partition"], body["offset"])
    assert record.key == body["command_id"].encode()
    assert record.headers["ce_id"] == body["command_id"].encode()
    assert record.headers["ce_type"] == b"eu.dastra.command.create-task"
    envelope = decode(list(record.headers.items()), record.value, fallback_id="")
    assert envelope.data == TASK
    assert parse_command("create-task", envelope.data).label == TASK["label"]


def test_bad_input_is_refused_with_a_useful_body_and_nothing_is_written(
    webhook: Running, kafka: KafkaSettings, webhook_settings: WebhookSettings
) -> None:
    client = webhook.client
    malformed = client.post(
        "/v1/commands/create-task",
        content=b'{"label": "x",',
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"] == "malformed-json"
    assert client.post("/v1/commands/create-task", content=b"").status_code == 400
    assert client.post("/v1/commands/create-task", content=b"\xff\xfe").status_code == 400

    secret_email = "jane.doe@example.org"
    invalid = client.post(
        "/v1/commands/create-task",
        json={"priority": "Urgent", "deadline": "soon", "email": secret_email},
    )
    assert invalid.status_code == 422
    problem = invalid.json()
    assert problem["error"] == "invalid-command"
    assert set(problem["field_errors"]) == {"label", "priority", "deadline", "email"}
    assert secret_email not in invalid.text  # values are never echoed
    both = client.post("/v1/commands/create-task", json={"label": "x", "objectType": "DataSubject"})
    assert both.status_code == 422 and "objectType" in json.dumps(both.json()["field_errors"])

    limit = webhook_settings.max_body_bytes
    big = {"label": "x", "description": "a" * limit}
    too_large = client.post("/v1/commands/create-task", json=big)
    assert too_large.status_code == 413 and too_large.json()["error"] == "too-large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield b'{"label": "x", "description": "'
        for _ in range(limit // 65536 + 1):
            yield b"a" * 65536
        yield b'"}'

    streamed = client.post(
        "/v1/commands/create-task", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413

    unknown = client.post("/v1/commands/delete-everything", json={})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown-action"
    assert client.post("/v1/commands/create-task?wait=99", json=TASK).status_code == 422
    assert client.post("/v1/commands/create-task?wait=-1", json=TASK).status_code == 422

    for action in ACTIONS:
        assert _records(kafka, action) == [], action


def _set_max_message_bytes(kafka: KafkaSettings, topic: str, value: int) -> None:
    admin = AdminClient(kafka.confluent_config())
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
            )
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(10)
    # The broker applies it a moment later: probe (key b"probe") until a larger record is refused.
    producer = Producer(kafka.confluent_config(**{"message.max.bytes": 10 * value}))
    outcome: list[Any] = []

    def refused() -> bool:
        outcome.clear()
        producer.produce(
            topic,
            key=b"probe",
            value=b"x" * (2 * value),
            on_delivery=lambda e, _m: outcome.append(e),
        )
        producer.flush(10)
        return bool(outcome) and outcome[0] is not None

    wait_for(refused, 30, f"max.message.bytes={value} in force on {topic}", every=0.5)


def test_a_record_too_large_for_its_topic_is_413_not_503_and_nothing_is_written(
    webhook: Running, kafka: KafkaSettings
) -> None:
    """Librdkafka's "Message size too large" (at produce time or from the broker) is permanent:
    413 with a useful body, never 503 "retry later"; the Idempotency-Key is released."""
    topic = kafka.topic(command_topic("create-task"))
    _set_max_message_bytes(kafka, topic, 20_000)
    # Incompressible (the batch is gzip), and well under WEBHOOK_MAX_BODY_BYTES.
    big = {"label": "Big", "description": secrets.token_hex(25_000)}
    headers = {"Idempotency-Key": "too-big-1"}
    for _attempt in range(2):  # the repeat is 413 again: the claim was released (not 409)
        answer = webhook.client.post("/v1/commands/create-task", json=big, headers=headers)
        assert answer.status_code == 413, answer.text
        problem = answer.json()
        assert problem["error"] == "too-large" and "smaller body" in problem["message"]
        assert "retry-after" not in answer.headers
    assert webhook.client.get("/readyz").status_code == 200  # the producer is still fine
    small = webhook.client.post("/v1/commands/create-task", json=TASK)
    assert small.status_code == 202, small.text
    keys = [r.key for r in _records(kafka, "create-task") if r.key != b"probe"]
    assert keys == [small.json()["command_id"].encode()]


def test_a_replica_whose_idempotency_table_is_no_longer_read_is_not_ready(
    webhook: Running,
) -> None:
    """The table was loaded once, but its tailer ended: the replica could answer no
    Idempotency-Key, so `/readyz` says so (503, the failing check named)."""
    assert webhook.client.get("/readyz").status_code == 200
    webhook.service.idempotency.tailer.stop()
    ready = webhook.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"] == {
        "kafka": True,
        "subscriptions": True,
        "idempotency": False,
        "results": True,
    }


def test_the_producer_refuses_a_record_over_its_own_limit_as_too_large(
    kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    async def send() -> None:
        async with AsyncProducer(kafka, timeout_s=5, max_record_bytes=10_000) as producer:
            with pytest.raises(RecordTooLargeError, match="larger than the producer accepts"):
                await producer.produce(
                    kafka.topic(command_topic("create-task")), key=b"k", value=b"x" * 20_000
                )
            delivered = await producer.produce(
                kafka.topic(command_topic("create-task")), key=b"k", value=b"x" * 5_000
            )
            assert delivered.offset == 0

    asyncio.run(send())


# --- idempotency ---------------------------------------------------------------------------------


def test_a_repeated_idempotency_key_gets_the_first_answer_and_no_second_record(
    webhook: Running, kafka: KafkaSettings
) -> None:
    client = webhook.client
    headers = {"Idempotency-Key": "order-42"}
    first = client.post("/v1/commands/create-task", json=TASK, headers=headers)
    again = client.post("/v1/commands/create-task", json=TASK, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["replayed"] is False and again.json()["replayed"] is True
    assert {k: v for k, v in again.json().items() if k != "replayed"} == {
        k: v for k, v in first.json().items() if k != "replayed"
    }
    assert again.headers["idempotent-replayed"] == "true"

    changed = client.post(
        "/v1/commands/create-task", json={**TASK, "label": "other"}, headers=headers
    )
    assert changed.status_code == 422 and changed.json()["error"] == "idempotency-key-reused"
    other_action = client.post("/v1/commands/search-actors", json={"q": "acme"}, headers=headers)
    assert other_action.status_code == 422

    # The same key under another token is another request.
    other = client.post(
        "/v1/commands/create-task",
        json=TASK,
        headers={**headers, "Authorization": f"Bearer {OTHER_TOKEN}"},
    )
    assert other.status_code == 202 and other.json()["replayed"] is False
    assert other.json()["command_id"] != first.json()["command_id"]

    records = _records(kafka, "create-task")
    assert sorted(r.key for r in records) == sorted(
        [first.json()["command_id"].encode(), other.json()["command_id"].encode()]
    )
    assert _records(kafka, "search-actors") == []
    # The idempotency topic holds hashes and ids, never the key or the token.
    stored = read_all(kafka, kafka.topic(WEBHOOK_IDEMPOTENCY))
    assert stored and all(b"order-42" not in (r.value or b"") + (r.key or b"") for r in stored)
    assert all(TOKEN.encode() not in (r.value or b"") for r in stored)


def test_replicas_racing_on_one_key_and_a_restart_still_make_one_record(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    webhook_settings: WebhookSettings,
    hooks_settings: HooksSettings,
    webhook_dastra: DastraSettings,
) -> None:
    replicas = [
        start_webhook(kafka, webhook_settings, hooks_settings, webhook_dastra) for _ in range(2)
    ]
    try:
        keys = [f"race-{n}" for n in range(4)]

        async def race() -> list[httpx.Response]:
            clients = [
                httpx.AsyncClient(base_url=r.url, headers={"X-API-Key": TOKEN}, timeout=30)
                for r in replicas
            ]
            try:
                calls = [
                    clients[n % 2].post(
                        "/v1/commands/create-task",
                        json={**TASK, "label": key},
                        headers={"Idempotency-Key": key},
                    )
                    for key in keys
                    for n in range(6)
                ]
                return list(await asyncio.gather(*calls))
            finally:
                for c in clients:
                    await c.aclose()

        answers = asyncio.run(race())
        assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
        by_key: dict[str, set[str]] = {}
        for answer in answers:
            body = answer.json()
            by_key.setdefault(body["command_id"], set()).add(
                json.dumps({k: v for k, v in body.items() if k != "replayed"}, sort_keys=True)
            )
        assert len(by_key) == len(keys)
        assert all(len(bodies) == 1 for bodies in by_key.values())  # one answer per key
        assert sum(1 for a in answers if not a.json()["replayed"]) == len(keys)

        # A replica restarts (a new process): it rebuilds the table from the topic.
        stop_webhook(replicas[0])
        replicas[0] = start_webhook(kafka, webhook_settings, hooks_settings, webhook_dastra)
        repeat = replicas[0].client.post(
            "/v1/commands/create-task",
            json={**TASK, "label": keys[0]},
            headers={"Idempotency-Key": keys[0]},
        )
        assert repeat.status_code == 202 and repeat.json()["replayed"] is True
        records = _records(kafka, "create-task")
        assert len(records) == len(keys)
        assert {r.key.decode() for r in records if r.key} == set(by_key)
    finally:
        for replica in replicas:
            stop_webhook(replica)


# --- ?wait ---------------------------------------------------------------------------------------


class _ResultWriter:
    """Stands in for the agents on the results contract (bus.records.commands.CommandResult):
    answers each command on the given topics with `reply(action, data)`, after `delay` seconds."""

    def __init__(self, kafka: KafkaSettings, actions: list[str], reply: Any, delay: float) -> None:
        self._kafka = kafka
        self._actions = actions
        self._reply = reply
        self._delay = delay
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _ResultWriter:
        self._thread.start()
        assert self._ready.wait(30)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = Consumer(
            self._kafka.confluent_config(
                **{"group.id": unique("g"), "auto.offset.reset": "earliest"}
            )
        )
        producer = Producer(self._kafka.confluent_config())
        topics = [self._kafka.topic(command_topic(a)) for a in self._actions]
        assignment = []
        for topic in topics:
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                assignment.append(TopicPartition(topic, p, 0))
        consumer.assign(assignment)
        self._ready.set()
        try:
            while not self._stop.is_set():
                message = consumer.poll(0.1)
                if message is None or message.error():
                    continue
                envelope = decode(message.headers(), message.value(), fallback_id="")
                action = (message.topic() or "").split("dastra.commands.")[1].removesuffix(".v1")
                time.sleep(self._delay)
                now = datetime.now(UTC)
                status, result, error = self._reply(action, envelope.data)
                value = CommandResult(
                    command_id=envelope.id,
                    action=action,
                    status=status,
                    result=result,
                    error=error,
                    attempts=1,
                    received_at=now,
                    completed_at=now,
                    source_topic=message.topic() or "",
                    source_partition=message.partition() or 0,
                    source_offset=message.offset() or 0,
                )
                headers, payload = encode_binary(
                    new_event(
                        type=RESULT_SUCCEEDED if status == "succeeded" else RESULT_FAILED,
                        source="urn:test",
                        id=f"result:{envelope.id}",
                        data=value.model_dump(mode="json"),
                    )
                )
                producer.produce(
                    self._kafka.topic(COMMAND_RESULTS),
                    key=envelope.id.encode(),
                    value=payload,
                    headers=headers,
                )
                producer.flush(10)
        finally:
            consumer.close()


def _reply(action: str, data: dict[str, Any]) -> tuple[str, Any, CommandError | None]:
    if action == "search-actors":
        return (
            "succeeded",
            [{"id": 2, "companyName": "Acme"}, {"id": 7, "companyName": "Acme 2"}],
            None,
        )
    if data.get("label") == "reject me":
        return (
            "failed",
            None,
            CommandError(
                kind="dastra-rejected",
                message="Dastra refused it",
                status=400,
                field_errors={"areaId": ["unknown area"]},
            ),
        )
    if data.get("label") == "break me":
        return "failed", None, CommandError(kind="retries-exhausted", message="Dastra is down")
    return "succeeded", {"id": 345, "label": data.get("label")}, None


def test_wait_answers_with_the_result_or_the_error_and_202_on_timeout(
    webhook: Running, kafka: KafkaSettings
) -> None:
    client = webhook.client
    with _ResultWriter(kafka, ["create-task", "search-actors"], _reply, delay=0.3):
        created = client.post("/v1/commands/create-task?wait=8", json=TASK)
        assert created.status_code == 200, created.text
        assert created.json() == {"id": 345, "label": TASK["label"]}
        assert created.headers["command-status"] == "succeeded"
        found = client.post("/v1/commands/search-actors?wait=8", json={"q": "acme"})
        assert found.status_code == 200
        assert [a["id"] for a in found.json()] == [2, 7]  # a list, best match first
        rejected = client.post("/v1/commands/create-task?wait=8", json={"label": "reject me"})
        assert rejected.status_code == 422
        assert rejected.json()["error"] == "dastra-rejected"
        assert rejected.json()["field_errors"] == {"areaId": ["unknown area"]}
        assert rejected.json()["command_id"] == rejected.headers["command-id"]
        broken = client.post("/v1/commands/create-task?wait=8", json={"label": "break me"})
        assert broken.status_code == 502 and broken.json()["error"] == "retries-exhausted"
        # A keyed repeat with wait gets the same result again.
        keyed = {"Idempotency-Key": "wait-1"}
        one = client.post("/v1/commands/create-task?wait=8", json=TASK, headers=keyed)
        two = client.post("/v1/commands/create-task?wait=8", json=TASK, headers=keyed)
        assert one.status_code == two.status_code == 200 and one.json() == two.json()
        assert one.headers["command-id"] == two.headers["command-id"]
    # Nobody answers: 202 once the wait is over, the command is still on its topic.
    started = time.monotonic()
    late = client.post("/v1/commands/create-task?wait=1", json=TASK)
    assert late.status_code == 202 and time.monotonic() - started >= 1.0
    assert late.json()["command_id"] in {
        r.key.decode() for r in _records(kafka, "create-task") if r.key
    }


# --- REST hooks ----------------------------------------------------------------------------------


def test_hooks_subscribe_list_unsubscribe_on_the_compacted_topic_seen_by_every_replica(
    webhook: Running,
    kafka: KafkaSettings,
    webhook_settings: WebhookSettings,
    hooks_settings: HooksSettings,
    webhook_dastra: DastraSettings,
) -> None:
    client = webhook.client
    target = "https://127.0.0.1:9/hooks/standard/1/secret-token/"
    created = client.post("/v1/hooks", json={"event": "task.created", "target_url": target})
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["id"].startswith("hook_") and hook["secret"].startswith("whsec_")
    assert hook["event"] == "task.created" and hook["target_url"] == target
    listed = client.get("/v1/hooks").json()
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]

    stored = read_all(kafka, kafka.topic(HOOK_SUBSCRIPTIONS))
    assert [r.key for r in stored] == [hook["id"].encode()]
    assert json.loads(stored[0].value or b"{}")["secret"] == hook["secret"]

    # Another replica, started later, has it from the topic; it sees the removal too.
    other = start_webhook(kafka, webhook_settings, hooks_settings, webhook_dastra)
    try:
        assert [h["id"] for h in other.client.get("/v1/hooks").json()] == [hook["id"]]
        assert client.delete(f"/v1/hooks/{hook['id']}").status_code == 204
        assert client.get("/v1/hooks").json() == []
        wait_for(lambda: other.client.get("/v1/hooks").json() == [], 10, "the removal")
        assert other.client.delete(f"/v1/hooks/{hook['id']}").status_code == 404
    finally:
        stop_webhook(other)
    stored = read_all(kafka, kafka.topic(HOOK_SUBSCRIPTIONS))
    assert [(r.key, r.value) for r in stored][-1] == (hook["id"].encode(), None)  # tombstone
    assert client.delete("/v1/hooks/not-an-id").status_code == 422
    bad = client.post("/v1/hooks", json={"event": "task.exploded", "target_url": target})
    assert bad.status_code == 422 and "event" in bad.json()["field_errors"]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/x",  # not https
        "https://10.1.2.3/x",  # private
        "https://192.168.0.10/x",
        "https://127.0.0.1/x",  # loopback, not admitted here
        "https://localhost/x",
        "https://[::1]/x",
        "https://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "https://[::ffff:10.0.0.1]/x",  # IPv4-mapped private
        "https://0.0.0.0/x",
        "https://no-such-host.invalid/x",
        "ftp://example.com/x",
        "not a url",
    ],
)
def test_subscribing_a_non_public_or_plain_http_target_is_refused(
    url: str, ssrf_webhook: Running
) -> None:
    kafka = ssrf_webhook.service.kafka  # the module's topics, where nothing may be written
    answer = ssrf_webhook.client.post(
        "/v1/hooks", json={"event": "task.created", "target_url": url}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] in ("target-refused", "invalid-hook")
    assert read_all(kafka, kafka.topic(HOOK_SUBSCRIPTIONS)) == []


@pytest.fixture(scope="module")
def ssrf_webhook(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[Running]:
    """A webhook with default hook settings: no network admitted beyond public ones."""
    from tests.kafka_helpers import create_catalogue_topics, delete_topics

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("t") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    running = start_webhook(
        kafka,
        WebhookSettings(tokens=[SecretStr(TOKEN)]),
        HooksSettings(),
        DastraSettings(),
    )
    yield running
    stop_webhook(running)
    delete_topics(kafka, names)


def _publish_task_event(
    kafka: KafkaSettings, ws: int, task_id: int, kind: str, when: datetime
) -> None:
    producer = Producer(kafka.confluent_config())
    headers, value = encode_binary(
        new_event(
            type=f"eu.dastra.task.{kind}",
            source=f"dastra://workspaces/{ws}",
            id=f"dastra:{ws}:task.{kind}:{task_id}",
            subject=str(task_id),
            time=when,
            data={"id": task_id, "label": f"task {task_id}"},
        )
    )
    producer.produce(
        kafka.topic(TASKS), key=f"{ws}:{task_id}".encode(), value=value, headers=headers
    )
    assert producer.flush(10) == 0


def test_samples_are_the_newest_events_of_that_type_as_subscribers_get_them(
    webhook: Running, kafka: KafkaSettings
) -> None:
    client = webhook.client
    assert client.get("/v1/hooks/samples/task.created").json() == []
    base = datetime(2026, 5, 1, tzinfo=UTC)
    for n, ws in ((1, 101), (2, 102), (3, 101)):
        _publish_task_event(kafka, ws, n, "created", base + timedelta(minutes=n))
    _publish_task_event(kafka, 101, 9, "updated", base + timedelta(hours=1))
    samples = client.get("/v1/hooks/samples/task.created").json()
    assert [s["data"]["id"] for s in samples] == [3, 2, 1]  # newest first
    assert samples[0] == {
        "id": "dastra:101:task.created:3",
        "type": "task.created",
        "timestamp": "2026-05-01T00:03:00Z",
        "workspace_id": 101,
        "data": {"id": 3, "label": "task 3"},
    }
    assert [
        s["data"]["id"] for s in client.get("/v1/hooks/samples/task.created?limit=2").json()
    ] == [3, 2]
    assert [s["id"] for s in client.get("/v1/hooks/samples/task.updated").json()] == [
        "dastra:101:task.updated:9"
    ]
    assert client.get("/v1/hooks/samples/rights_request.created").json() == []
    assert client.get("/v1/hooks/samples/task.exploded").status_code == 422


# --- Dastra's webhooks ---------------------------------------------------------------------------


def test_a_dastra_webhook_needs_its_signature_and_makes_the_poller_publish_at_once(
    webhook: Running,
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    body = json.dumps(
        {
            "webhookId": 7,
            "eventType": "TaskCreation",
            "eventName": "Task created",
            "data": {"id": 1},
            "date": "2026-05-01T00:00:00Z",
        }
    ).encode()
    url = f"/v1/dastra/webhook?workspaceId={ws}"
    anonymous = httpx.Client(base_url=webhook.url, timeout=10)
    try:
        assert anonymous.post(url, content=body).status_code == 401
        wrong = anonymous.post(
            url, content=body, headers={"Dastra-Signature": dastra_signature("other-key", body)}
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "bad-signature"
        tampered = anonymous.post(
            url,
            content=body + b" ",
            headers={"Dastra-Signature": dastra_signature(DASTRA_KEY, body)},
        )
        assert tampered.status_code == 401
        assert read_all(kafka, kafka.topic(POLLER_TRIGGERS)) == []

        async def scenario() -> None:
            stop, ready = asyncio.Event(), asyncio.Event()
            slow = PollerSettings(interval_min_s=60, interval_max_s=60)
            async with DastraClient(dastra_settings) as dastra:
                poller = Poller(kafka, slow, topics, dastra, workspaces=[ws], start="now")
                running = asyncio.create_task(poller.run(stop=stop, ready=ready))
                async with asyncio.timeout(30):
                    await ready.wait()
                await asyncio.to_thread(_wait_first_cycle, kafka)
                task = await asyncio.to_thread(sandbox.admin.create_task, label="from Dastra")
                signed = {"Dastra-Signature": dastra_signature(DASTRA_KEY, body)}
                answer = await asyncio.to_thread(anonymous.post, url, content=body, headers=signed)
                assert answer.status_code == 200 and answer.json()["workspaces"] == [ws]
                # Within 10 s while the next scheduled cycle is 60 s away: the push did it
                # (how fast is bench/push.py's question, not a test's).
                records = await asyncio.to_thread(
                    consume, kafka, kafka.topic(TASKS), expected=1, timeout=10
                )
                assert json.loads(records[0].value or b"{}")["id"] == task["id"]
                stop.set()
                await running

        asyncio.run(scenario())
    finally:
        anonymous.close()


def _wait_first_cycle(kafka: KafkaSettings) -> None:
    from bus.topics import POLLER_STATE

    wait_for(
        lambda: len(read_all(kafka, kafka.topic(POLLER_STATE))) >= 2,
        20,
        "the first cycle's cursors",
    )
