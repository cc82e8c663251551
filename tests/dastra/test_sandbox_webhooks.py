"""The sandbox sends Dastra's webhooks: `/v1/WebHookUrls` registrations, one signed delivery per
subscribed creation, never inside the API call, errors counted and the URL blocked after more
than 5 of them."""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from bus.hooks.signatures import verify_dastra_signature
from dastra.sandbox import SandboxServer
from tests.kafka_helpers import wait_for
from tests.producers.webhook_support import ServerThread


@dataclass
class _Receiver:
    """A subscriber that records each delivery, answers `status`, and holds its answer while
    `gate` is closed."""

    status: int = 200
    deliveries: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    gate: threading.Event = field(default_factory=threading.Event)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/dastra")
        async def receive(request: Request) -> Response:
            self.deliveries.append((dict(request.headers), await request.body()))
            while not self.gate.is_set():
                await _pause()
            return Response(status_code=self.status)

        return app


async def _pause() -> None:
    await asyncio.sleep(0.01)


@pytest.fixture
def receiver() -> Iterator[tuple[_Receiver, str]]:
    subscriber = _Receiver()
    subscriber.gate.set()
    with ServerThread(subscriber.app()) as server:
        yield subscriber, f"{server.url}/dastra"
    subscriber.gate.set()


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key}, timeout=10
    ) as client:
        yield client


def _register(api: httpx.Client, url: str, ws: int, events: list[str]) -> dict[str, Any]:
    answer = api.post(
        "/v1/WebHookUrls", json={"url": url, "workSpaceId": ws, "subscribedEvents": events}
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_a_registered_url_gets_each_subscribed_creation_signed_with_its_key(
    sandbox: SandboxServer, api: httpx.Client, receiver: tuple[_Receiver, str]
) -> None:
    subscriber, url = receiver
    ws = sandbox.workspace_id
    hook = _register(api, url, ws, ["TaskCreation", "DataSubjectCreation"])
    assert hook["nbErrors"] == 0 and hook["inError"] is False and len(hook["signatureKey"]) == 36
    assert api.get("/v1/WebHookUrls", params={"workspaceId": ws}).json() == [hook]
    assert api.get(f"/v1/WebHookUrls/{hook['id']}").json() == hook

    task = api.post(f"/v1/ws/{ws}/Tasks", json={"label": "Call back", "priority": "High"}).json()
    request = sandbox.admin.create_rights_request(title="Access")
    sandbox.admin.create_actor(name="Not subscribed")
    wait_for(lambda: len(subscriber.deliveries) == 2, 10, "two deliveries")

    received = {}
    for headers, body in subscriber.deliveries:
        assert verify_dastra_signature(hook["signatureKey"], body, headers["dastra-signature"])
        assert headers["content-type"] == "application/json"
        payload = json.loads(body)
        assert set(payload) == {
            "webhookId",
            "signatureUrl",
            "userId",
            "eventType",
            "eventName",
            "data",
            "date",
        }
        assert payload["webhookId"] == hook["id"]
        received[payload["eventType"]] = payload["data"]["id"]
    assert received == {"TaskCreation": task["id"], "DataSubjectCreation": request["id"]}

    # Unsubscribing from tasks (saved with PUT, same key) stops their deliveries.
    saved = api.put(
        f"/v1/WebHookUrls/{hook['id']}",
        json={"url": url, "workSpaceId": ws, "subscribedEvents": ["DataSubjectCreation"]},
    )
    assert saved.status_code == 200
    assert api.get(f"/v1/WebHookUrls/{hook['id']}").json()["signatureKey"] == hook["signatureKey"]
    sandbox.admin.create_task(label="Not delivered")
    sandbox.admin.create_rights_request(title="Delivered")
    wait_for(lambda: len(subscriber.deliveries) == 3, 10, "the third delivery")
    assert json.loads(subscriber.deliveries[2][1])["eventType"] == "DataSubjectCreation"

    assert api.delete(f"/v1/WebHookUrls/{hook['id']}").status_code == 200
    assert api.get(f"/v1/WebHookUrls/{hook['id']}").status_code == 404
    assert (
        api.post(
            "/v1/WebHookUrls", json={"url": url, "workSpaceId": 999, "subscribedEvents": []}
        ).status_code
        == 403
    )
    bad = api.post("/v1/WebHookUrls", json={"url": url, "subscribedEvents": ["NoSuchEvent"]})
    assert bad.status_code == 400


def test_the_api_answers_before_the_delivery_is_answered(
    sandbox: SandboxServer, api: httpx.Client, receiver: tuple[_Receiver, str]
) -> None:
    subscriber, url = receiver
    ws = sandbox.workspace_id
    _register(api, url, ws, ["TaskCreation"])
    subscriber.gate.clear()  # the subscriber holds every answer until the gate opens
    created = api.post(f"/v1/ws/{ws}/Tasks", json={"label": "Fast", "priority": "Low"})
    assert created.status_code == 200
    wait_for(lambda: len(subscriber.deliveries) == 1, 10, "the delivery, still unanswered")
    subscriber.gate.set()


def test_more_than_five_errors_block_the_url_until_it_is_saved_again(
    sandbox: SandboxServer, api: httpx.Client, receiver: tuple[_Receiver, str]
) -> None:
    subscriber, url = receiver
    subscriber.status = 500
    ws = sandbox.workspace_id
    hook = _register(api, url, ws, ["TaskCreation"])

    def counted(n: int) -> bool:
        errors = api.get(f"/v1/WebHookUrls/{hook['id']}").json()["nbErrors"]
        return bool(errors == len(subscriber.deliveries) == n)

    for n in range(1, 7):
        sandbox.admin.create_task(label=f"Failing {n}")
        wait_for(functools.partial(counted, n), 10, f"error {n} counted")
    blocked = api.get(f"/v1/WebHookUrls/{hook['id']}").json()
    assert blocked["inError"] is True and blocked["errorMessage"] == "HTTP 500"
    assert blocked["dateLastError"] is not None

    # Blocked: a seventh creation is not delivered, and saving again replays nothing.
    sandbox.admin.create_task(label="Not delivered")
    subscriber.status = 200
    api.put(
        f"/v1/WebHookUrls/{hook['id']}",
        json={"url": url, "workSpaceId": ws, "subscribedEvents": ["TaskCreation"]},
    )
    assert api.get(f"/v1/WebHookUrls/{hook['id']}").json()["inError"] is False
    sandbox.admin.create_task(label="Delivered again")
    wait_for(lambda: len(subscriber.deliveries) == 7, 10, "the delivery after saving")
    labels = [json.loads(body)["data"]["label"] for _, body in subscriber.deliveries]
    assert "Not delivered" not in labels and labels[-1] == "Delivered again"
