"""Kafka goes away under the webhook and comes back: 503 with Retry-After while it is gone,
nothing half-written, and afterwards every acknowledged command is on its topic exactly once
and no refused one is. A dedicated broker (stopped and restarted on the same data directory
and port), so that the session broker other tests share is never touched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from bus.hooks.settings import HooksSettings
from bus.hooks.signatures import dastra_signature
from bus.localkafka import LocalKafka
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue, command_topic
from dastra.settings import DastraSettings
from producers.webhook.settings import WebhookSettings
from tests.kafka_helpers import create_catalogue_topics, read_all, unique, wait_for
from tests.producers.conftest import DASTRA_KEY, TOKEN, start_webhook, stop_webhook

TASK = {"label": "Answer the access request"}


def test_kafka_down_means_503_with_retry_after_and_nothing_lost_or_doubled_after(
    tmp_path: Path, catalogue: TopicCatalogue
) -> None:
    data_dir = tmp_path / "kafka"
    broker = LocalKafka(data_dir=data_dir, quick_jit=True)
    broker.start()
    running = None
    try:
        kafka = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers, topic_prefix=unique() + "."
        )
        create_catalogue_topics(kafka, catalogue)
        settings = WebhookSettings(tokens=[SecretStr(TOKEN)], kafka_timeout_s=3.0, retry_after_s=2)
        dastra = DastraSettings(webhook_signing_key=SecretStr(DASTRA_KEY), workspace_id=101)
        running = start_webhook(kafka, settings, HooksSettings(), dastra)
        client = running.client
        accepted: list[str] = []

        def send(key: str | None = None) -> httpx.Response:
            headers = {"Idempotency-Key": key} if key else {}
            return client.post("/v1/commands/create-task", json=TASK, headers=headers)

        for key in (None, None, "before-1", None, "before-2"):
            answer = send(key)
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["command_id"])

        broker.stop()
        refused = 0
        for key in (None, "during-1", None, "during-2"):
            started = time.monotonic()
            answer = send(key)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "2"
            assert answer.json()["error"] == "kafka-unavailable"
            assert time.monotonic() - started < settings.kafka_timeout_s + 2
            refused += 1
        assert client.get("/readyz").status_code == 503
        # Dastra's push is only a nudge: answered 200 (Dastra blocks a webhook after more than 5
        # errors and never replays), saying that no poll was triggered.
        push = json.dumps({"webhookId": 1, "eventType": "TaskCreation", "data": {}}).encode()
        nudged = client.post(
            "/v1/dastra/webhook",
            content=push,
            headers={"Dastra-Signature": dastra_signature(DASTRA_KEY, push)},
        )
        assert nudged.status_code == 200, nudged.text
        assert nudged.json() == {"status": "ok", "workspaces": [101], "triggered": False}

        broker.start()  # same data directory, same port
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "readiness after restart")
        for key in ("during-1", "during-2", None, "before-1"):
            answer = send(key)
            assert answer.status_code == 202, answer.text
            if key == "before-1":
                assert answer.json()["replayed"] is True
                assert answer.json()["command_id"] == accepted[2]
            else:
                accepted.append(answer.json()["command_id"])

        records = read_all(kafka, kafka.topic(command_topic("create-task")))
        keys = [r.key.decode() for r in records if r.key]
        assert sorted(keys) == sorted(accepted)  # every 202 once; no 503 ever written
        assert len(records) == len(accepted) == 8 and refused == 4
    finally:
        if running is not None:
            stop_webhook(running)
        broker.stop()
