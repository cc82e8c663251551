"""Dastra's webhook pushing a poll, end to end with the sandbox sending it: a task created in
Dastra reaches dastra.tasks.v1 long before the poller's next scheduled cycle (300 s), once, from
the poller's own read through the API; a delivery with a bad signature is refused and wakes
nothing."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import SecretStr

from bus.hooks.settings import HooksSettings
from bus.hooks.signatures import dastra_signature
from bus.settings import KafkaSettings
from bus.topics import POLLER_STATE, POLLER_TRIGGERS, TASKS, TopicCatalogue
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from producers.webhook.settings import WebhookSettings
from tests.kafka_helpers import consume, read_all, wait_for
from tests.producers.conftest import Running, start_webhook, stop_webhook

# Far longer than any deadline below: an event that arrives in time came through the push.
_INTERVAL_S = 300.0
_DEADLINE_S = 5.0


@dataclass
class _Pushed:
    """The webhook service, registered in the sandbox as Dastra's webhook of the workspace."""

    running: Running
    hook: dict[str, Any]
    api: httpx.Client


@pytest.fixture
def pushed(
    sandbox: SandboxServer,
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    webhook_settings: WebhookSettings,
    hooks_settings: HooksSettings,
) -> Iterator[_Pushed]:
    """As an operator does it: register the webhook in Dastra, copy its signatureKey into
    DASTRA_WEBHOOK_SIGNING_KEY, deploy, and save the webhook with the deployed URL."""
    ws = sandbox.workspace_id
    # Topics created a moment ago on a loaded machine may still lack a leader for longer than
    # the webhook's start-up retries: wait for every one to answer first.
    wait_for(functools.partial(_leaders_ready, kafka, topics), 90, "the topics' leaders")
    api = httpx.Client(base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key})
    events = ["TaskCreation", "DataSubjectCreation"]
    hook = api.post(
        "/v1/WebHookUrls",
        json={"url": "http://127.0.0.1:9/later", "workSpaceId": ws, "subscribedEvents": events},
    ).json()
    # Another workspace's webhook key first: every workspace's webhook has its own key.
    keys = [SecretStr("0d4c7f52-another-workspace-key"), SecretStr(hook["signatureKey"])]
    dastra = DastraSettings(webhook_signing_keys=keys, workspace_id=ws)
    running = start_webhook(kafka, webhook_settings, hooks_settings, dastra)
    url = f"{running.url}/v1/dastra/webhook?workspaceId={ws}"
    saved = api.put(
        f"/v1/WebHookUrls/{hook['id']}",
        json={"url": url, "workSpaceId": ws, "subscribedEvents": events},
    )
    assert saved.status_code == 200
    try:
        yield _Pushed(running, {**hook, "url": url}, api)
    finally:
        stop_webhook(running)
        api.close()


def _leaders_ready(kafka: KafkaSettings, catalogue: TopicCatalogue) -> bool:
    consumer = Consumer(kafka.confluent_config(**{"group.id": f"t-{uuid.uuid4().hex}"}))
    try:
        for spec in catalogue:
            topic = kafka.topic(spec.name)
            info = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if info is None or info.error is not None:
                return False
            for partition in info.partitions:
                consumer.get_watermark_offsets(TopicPartition(topic, partition), 5)
        return True
    except KafkaException:
        return False
    finally:
        consumer.close()


def test_a_pushed_task_is_published_once_without_waiting_for_the_poll_interval(
    pushed: _Pushed,
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    cycles: list[int] = []

    async def scenario() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        slow = PollerSettings(interval_min_s=_INTERVAL_S, interval_max_s=_INTERVAL_S)
        async with DastraClient(dastra_settings) as dastra:
            poller = Poller(kafka, slow, topics, dastra, workspaces=[ws], start="now")
            running = asyncio.create_task(
                poller.run(stop=stop, ready=ready, on_cycle=lambda _ws, n: cycles.append(n))
            )
            try:
                async with asyncio.timeout(30):
                    await ready.wait()
                await asyncio.to_thread(wait_for, lambda: len(cycles) >= 1, 20, "the first cycle")

                # A Dastra user creates a task; only Dastra's push can make it appear in time.
                task = await asyncio.to_thread(
                    pushed.api.post,
                    f"/v1/ws/{ws}/Tasks",
                    json={"label": "Pushed", "priority": "High"},
                )
                created = task.json()
                records = await asyncio.to_thread(
                    consume, kafka, kafka.topic(TASKS), expected=1, timeout=_DEADLINE_S
                )
                event = json.loads(records[0].value or b"{}")
                assert event["id"] == created["id"] and event["label"] == "Pushed"
                assert records[0].key == f"{ws}:{created['id']}".encode()

                # The same delivery again (as a second push for one item): another poll, and
                # still the item once: the cursor, not the push, decides what is published.
                polled = len(cycles)
                again = json.dumps(
                    {"webhookId": pushed.hook["id"], "eventType": "TaskCreation", "data": created}
                ).encode()
                answer = await asyncio.to_thread(
                    pushed.running.client.post,
                    pushed.hook["url"],
                    content=again,
                    headers={
                        "Dastra-Signature": dastra_signature(pushed.hook["signatureKey"], again)
                    },
                )
                assert answer.status_code == 200 and answer.json()["triggered"] is True
                await asyncio.to_thread(
                    wait_for, lambda: len(cycles) > polled, _DEADLINE_S, "the second pushed poll"
                )
                everything = await asyncio.to_thread(read_all, kafka, kafka.topic(TASKS))
                assert [json.loads(r.value or b"{}")["id"] for r in everything] == [created["id"]]
            finally:
                stop.set()
                await running

    asyncio.run(scenario())
    # Two pushes, two triggers; Dastra's webhook stayed healthy.
    triggers = read_all(kafka, kafka.topic(POLLER_TRIGGERS))
    assert [json.loads(t.value or b"{}")["reason"] for t in triggers] == [
        "dastra-webhook:TaskCreation"
    ] * 2
    hook = pushed.api.get(f"/v1/WebHookUrls/{pushed.hook['id']}").json()
    assert hook["nbErrors"] == 0 and hook["inError"] is False


def test_a_bad_signature_is_refused_with_401_and_wakes_nothing(
    pushed: _Pushed, kafka: KafkaSettings, sandbox: SandboxServer
) -> None:
    body = json.dumps({"webhookId": pushed.hook["id"], "eventType": "TaskCreation"}).encode()
    with httpx.Client(timeout=10) as anonymous:
        forged = anonymous.post(
            pushed.hook["url"],
            content=body,
            headers={"Dastra-Signature": dastra_signature("not-the-key", body)},
        )
        missing = anonymous.post(pushed.hook["url"], content=body)
    assert forged.status_code == 401 and forged.json()["error"] == "bad-signature"
    assert "signatureKey" in forged.json()["message"]
    assert missing.status_code == 401 and missing.json()["error"] == "missing-signature"
    # Both answers came after anything the request could have written: nothing was.
    assert read_all(kafka, kafka.topic(POLLER_TRIGGERS)) == []
    assert read_all(kafka, kafka.topic(POLLER_STATE)) == []


def test_one_signing_key_per_workspace_webhook_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASTRA_WEBHOOK_SIGNING_KEY", "k0")
    monkeypatch.setenv("DASTRA_WEBHOOK_SIGNING_KEYS", "k1, k2,")
    settings = DastraSettings()
    assert [k.get_secret_value() for k in settings.webhook_keys()] == ["k0", "k1", "k2"]
    assert "k1" not in repr(settings)
