"""The webhook service over real HTTP (uvicorn on loopback) against the real broker: auth,
commands acknowledged only once durable, bad input refused with nothing written, idempotency
across replicas and restarts, ?wait, REST hook management, samples, Dastra's webhooks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from bus.commands import RESULT_FAILED, RESULT_SUCCEEDED, CommandError, CommandResult, parse_command
from bus.envelope import decode, encode_binary, new_event
from bus.settings import (
    DastraSettings,
    HooksSettings,
    KafkaSettings,
    PollerSettings,
    WebhookSettings,
)
from bus.signatures import dastra_signature
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
from producers.poller import Poller
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


# --- auth and probes ---------------------------------------------------------------------------


def test_auth_by_bearer_or_api_key_and_401_otherwise(webhook: Running) -> None:
    with httpx.Client(base_url=webhook.url, timeout=10) as anonymous:
        _check_auth(anonymous)


def _check_auth(anonymous: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": "Bearer"}):
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


# --- commands ----------------------------------------------------------------------------------


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
    both = client.post(
        "/v1/commands/create-task", json={"label": "x", "objectType": "DataSubject"}
    )
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


# --- idempotency ----------------------------------------------------------------------------------


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
    other_action = client.post(
        "/v1/commands/search-actors", json={"q": "acme"}, headers=headers
    )
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
                httpx.AsyncClient(
                    base_url=r.url, headers={"X-API-Key": TOKEN}, timeout=30
                )
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
            by_key.setdefault(body["command_id"], set()).add(json.dumps(
                {k: v for k, v in body.items() if k != "replayed"}, sort_keys=True
            ))
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
