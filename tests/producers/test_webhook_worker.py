"""End to end through the real worker (`dastra-kafka worker`, the Faust agents) and the Dastra
sandbox: `?wait` answers with what Dastra returned (a search: a list, best match first), a
failed command with its error; and the whole loop Zapier sees: a command creates a task, the
poller publishes it, the dispatcher delivers it signed to a REST hook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import SecretStr
from standardwebhooks import Webhook

from bus.hooks.settings import HooksSettings
from bus.records.commands import FindOrCreateActor, actor_record_key
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER, TASKS, TopicCatalogue, command_topic
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from producers.webhook.settings import WebhookSettings
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


def _body_of_size(size: int, label: str) -> bytes:
    """A create-task body of exactly `size` bytes (its bulk in additionalDatas)."""
    empty = json.dumps({"label": label, "additionalDatas": {"blob": ""}}).encode()
    body = json.dumps({"label": label, "additionalDatas": {"blob": "x" * (size - len(empty))}})
    assert len(body.encode()) == size
    return body.encode()


def test_a_body_at_the_size_limit_is_accepted_and_run_and_one_byte_more_is_413(
    api: Running, worker: WorkerProcess, dastra: SandboxServer, e2e_kafka: KafkaSettings
) -> None:
    """Issue 6: the webhook's limit (1 MiB) is one the whole pipeline takes: the command record
    (over librdkafka's 1 000 000 default) reaches its topic, the worker runs it (not
    `oversized`), its result and its dead letter (carrying the original bytes) are written."""
    limit = api.service.settings.max_body_bytes
    assert limit == 1_048_576
    client = api.client
    json_type = {"content-type": "application/json"}

    over = client.post("/v1/commands/create-task", content=_body_of_size(limit + 1, "Over"),
                       headers=json_type)  # fmt: skip
    assert over.status_code == 413 and over.json()["error"] == "too-large", over.text

    # At the limit, and Dastra refuses it: a failed result and a dead letter for that reason.
    rejection = {"errors": {"AdditionalDatas": ["too much"]}}
    dastra.admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=400, body=rejection, times=1)
    refused_body = _body_of_size(limit, f"Refused {unique()}")
    refused = client.post("/v1/commands/create-task?wait=25", content=refused_body,
                          headers=json_type)  # fmt: skip
    assert refused.status_code == 422, refused.text[:300]
    assert refused.json()["error"] == "dastra-rejected"
    # At the limit, and Dastra takes it: the task, with all of it.
    label = f"Accepted {unique()}"
    accepted = client.post("/v1/commands/create-task?wait=25",
                           content=_body_of_size(limit, label), headers=json_type)  # fmt: skip
    assert accepted.status_code == 200, accepted.text[:300]
    task = accepted.json()
    assert task["label"] == label and len(task["additionalDatas"]["blob"]) > 1_000_000
    [stored] = [t for t in dastra.admin.objects("tasks") if t["label"] == label]
    assert stored["additionalDatas"]["blob"] == task["additionalDatas"]["blob"]

    commands = {
        r.headers["ce_id"].decode(): r
        for r in read_all(e2e_kafka, e2e_kafka.topic(command_topic("create-task")))
    }
    refused_record = commands[refused.headers["command-id"]]
    assert len(refused_record.value or b"") > 1_000_000  # over librdkafka's default limit
    assert accepted.headers["command-id"] in commands
    letters = [
        r for r in read_all(e2e_kafka, e2e_kafka.topic(DEAD_LETTER))
        if r.headers.get("ce_id") == refused.headers["command-id"].encode()
    ]  # fmt: skip
    [letter] = letters
    assert letter.headers["dlq.error.kind"] == b"dastra-rejected"  # not oversized
    assert letter.value == refused_record.value  # the original bytes, all of them


def test_a_dastra_object_too_large_for_the_results_topic_comes_back_as_its_id(
    api: Running, worker: WorkerProcess, dastra: SandboxServer
) -> None:
    """Dastra returns a task's description twice (HTML and plain text): 2 x 1 MB does not fit
    the results topic. The result names the task by id instead of crashing the worker (which
    would redeliver the command for ever)."""
    label = f"Long {unique()}"
    body = {"label": label, "descriptionHtml": "<p>" + "word " * 200_000 + "</p>"}
    answer = api.client.post("/v1/commands/create-task?wait=25", json=body)
    assert answer.status_code == 200, answer.text[:300]
    [task] = [t for t in dastra.admin.objects("tasks") if t["label"] == label]
    assert answer.json() == {"id": task["id"], "truncated": True}
    after = api.client.post("/v1/commands/create-task?wait=25", json={"label": f"After {label}"})
    assert after.status_code == 200 and after.json()["label"] == f"After {label}"
    assert worker.returncode() is None


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


def test_two_workers_racing_on_one_new_actor_create_it_once(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    """Issue 5: concurrent find-or-create commands for one actor, sent through the webhook to
    two workers of one group, create one actor: the webhook keys them by the actor, so they
    share a partition and one worker runs them one after the other."""
    sandbox.admin.configure(rate_limit=False)
    # Slow searches and creates widen the window in which two workers would both miss.
    sandbox.admin.inject_fault("/v1/ws/*/Actors", latency_s=0.1)
    api = start_webhook(
        kafka,
        WebhookSettings(tokens=[SecretStr(TOKEN)]),
        HooksSettings(allow_networks=LOOPBACK),
        DastraSettings(workspace_id=sandbox.workspace_id),
    )
    first = WorkerProcess(kafka, sandbox, tmp_path, name="first")
    second = WorkerProcess(kafka, sandbox, tmp_path, name="second")
    try:
        first.start()
        second.start()
        topic = kafka.topic(command_topic("find-or-create-actor"))

        def owned(worker: WorkerProcess) -> list[str]:
            return [p for p in worker.partitions() if p.startswith(f"{topic}/")]

        wait_for(
            lambda: (
                len(owned(first)) + len(owned(second)) == 6
                and bool(owned(first))
                and bool(owned(second))
            ),
            60,
            "the find-or-create partitions shared by both workers",
        )
        tag = unique("race")
        spellings = [f"dpo@{tag}.example", f"DPO@{tag}.EXAMPLE", f"  Dpo@{tag}.example "]
        bodies = [{"email": spellings[i % 3], "companyName": f"Race {tag} {i}"} for i in range(12)]

        def send(body: dict[str, str]) -> tuple[int, str, str]:
            answer = api.client.post("/v1/commands/find-or-create-actor?wait=25", json=body)
            return answer.status_code, answer.headers.get("command-id", ""), answer.text

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(send, bodies))
        assert all(status == 200 for status, _id, _text in answers), answers
        actor_ids = {json.loads(text)["id"] for _status, _id, text in answers}
        assert len(actor_ids) == 1
        actors = [
            a for a in sandbox.admin.objects("actors") if (a["email"] or "").lower() == spellings[0]
        ]
        assert [a["id"] for a in actors] == list(actor_ids)

        # One key (a pseudonym, not the e-mail), one partition; the command ids are the
        # CloudEvent ids the webhook answered with, not derived from the key.
        records = read_all(kafka, topic)
        key = actor_record_key(FindOrCreateActor(email=spellings[0], companyName="Any"))
        assert {r.key for r in records} == {key} and len({r.partition for r in records}) == 1
        assert all(tag.encode() not in (r.key or b"") for r in records)
        assert sorted(r.headers["ce_id"].decode() for r in records) == sorted(
            command_id for _status, command_id, _text in answers
        )
    finally:
        first.stop()
        second.stop()
        stop_webhook(api)
