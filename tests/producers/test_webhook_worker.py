"""End to end through the real worker (`dastra-kafka worker`, the Faust agents) and the Dastra
sandbox: `?wait` answers with what Dastra returned (a search: a list, best match first), a
failed command with its error; and the whole loop Zapier sees: a command creates a task, the
poller publishes it, the dispatcher delivers it signed to a REST hook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from bus.settings import (
    DastraSettings,
    HooksSettings,
    KafkaSettings,
    PollerSettings,
    WebhookSettings,
)
from bus.topics import TASKS, TopicCatalogue
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from producers.poller import Poller
from tests.consumers.agents_support import WorkerProcess
from tests.consumers.test_hooks import DispatcherThread
from tests.kafka_helpers import create_catalogue_topics, delete_topics, read_all, unique, wait_for
from tests.producers.conftest import LOOPBACK, TOKEN, Running, start_webhook, stop_webhook
from tests.producers.webhook_support import ServerThread, Subscriber, TLSFiles


@pytest.fixture(scope="module")
def e2e_kafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("e2e") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


@pytest.fixture(scope="module")
def worker(
    e2e_kafka: KafkaSettings,
    sandbox_server: SandboxServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    with WorkerProcess(e2e_kafka, sandbox_server, tmp_path_factory.mktemp("worker")) as process:
        yield process


@pytest.fixture(scope="module")
def api(e2e_kafka: KafkaSettings, sandbox_server: SandboxServer) -> Iterator[Running]:
    running = start_webhook(
        e2e_kafka,
        WebhookSettings(tokens=[SecretStr(TOKEN)]),
        HooksSettings(allow_networks=LOOPBACK),
        DastraSettings(workspace_id=sandbox_server.workspace_id),
    )
    yield running
    stop_webhook(running)


@pytest.fixture
def dastra(sandbox: SandboxServer) -> SandboxServer:
    sandbox.admin.configure(rate_limit=False)
    return sandbox


def test_wait_returns_what_dastra_created_and_searches_best_match_first(
    api: Running, worker: WorkerProcess, dastra: SandboxServer
) -> None:
    client = api.client
    created = client.post(
        "/v1/commands/create-task?wait=20",
        json={"label": "Answer the access request", "priority": "High"},
    )
    assert created.status_code == 200, created.text
    task = created.json()
    assert task["label"] == "Answer the access request" and task["priority"] == "High"
    assert task["id"] in {t["id"] for t in dastra.admin.objects("tasks")}

    company = f"Acme {unique()}"
    exact = client.post(
        "/v1/commands/create-actor?wait=20",
        json={"companyName": company, "email": f"dpo@{company.split()[1]}.example"},
    )
    partial = client.post(
        "/v1/commands/create-actor?wait=20", json={"companyName": f"{company} Holding"}
    )
    assert exact.status_code == partial.status_code == 200, (exact.text, partial.text)
    found = client.post(
        "/v1/commands/search-actors?wait=20",
        json={"companyName": company, "email": exact.json()["email"]},
    )
    assert found.status_code == 200, found.text
    ids = [actor["id"] for actor in found.json()]
    assert ids[0] == exact.json()["id"] and partial.json()["id"] in ids
    nothing = client.post("/v1/commands/search-actors?wait=20", json={"q": unique("nobody")})
    assert nothing.status_code == 200 and nothing.json() == []

    # Find-or-create: the second call finds what the first created.
    body = {"companyName": f"Beta {unique()}", "email": f"privacy@{unique()}.example"}
    first = client.post("/v1/commands/find-or-create-actor?wait=20", json=body)
    second = client.post("/v1/commands/find-or-create-actor?wait=20", json=body)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["id"] == second.json()["id"]
    assert [a["email"] for a in dastra.admin.objects("actors")].count(body["email"]) == 1


def test_a_command_dastra_refuses_comes_back_as_an_error(
    api: Running, worker: WorkerProcess, dastra: SandboxServer
) -> None:
    dastra.admin.inject_fault(
        "/v1/ws/*/Tasks", method="POST", status=400, body={"errors": {"Label": ["too odd"]}}
    )
    refused = api.client.post("/v1/commands/create-task?wait=20", json={"label": "odd"})
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["error"] == "dastra-rejected"
    assert problem["command_id"] == refused.headers["command-id"]
    assert refused.headers["command-status"] == "failed"


def test_a_zapier_loop_command_to_dastra_to_poller_to_signed_hook(
    api: Running,
    worker: WorkerProcess,
    dastra: SandboxServer,
    e2e_kafka: KafkaSettings,
    catalogue: TopicCatalogue,
    tls: TLSFiles,
    hooks_settings: HooksSettings,
) -> None:
    recorder = Subscriber()
    with ServerThread(recorder, certfile=tls.cert, keyfile=tls.key) as server:
        hook = api.client.post(
            "/v1/hooks",
            json={"event": "task.created", "target_url": f"https://localhost:{server.port}/zap"},
        ).json()
        ws = dastra.workspace_id
        with DispatcherThread(e2e_kafka, hooks_settings) as dispatcher:
            wait_for(lambda: dispatcher.knows(hook["id"]), 10, "the subscription")

            async def cycle() -> None:
                async with DastraClient(dastra.dastra_settings()) as client:
                    poller = Poller(
                        e2e_kafka, PollerSettings(), catalogue, client, workspaces=[ws], start="now"
                    )
                    await poller.run(max_cycles=1)

            asyncio.run(cycle())  # the cursor starts now
            created = api.client.post(
                "/v1/commands/create-task?wait=20", json={"label": "Call back the data subject"}
            )
            assert created.status_code == 200, created.text
            asyncio.run(cycle())  # publishes the new task
            wait_for(lambda: recorder.accepted("/zap"), 20, "the hook delivery")
    [received] = recorder.at("/zap")
    payload = Webhook(hook["secret"]).verify(received.body, received.headers)
    assert payload["data"]["id"] == created.json()["id"]
    assert payload["data"]["label"] == "Call back the data subject"
    events = [json.loads(r.value or b"{}") for r in read_all(e2e_kafka, e2e_kafka.topic(TASKS))]
    assert [e["id"] for e in events] == [created.json()["id"]]
