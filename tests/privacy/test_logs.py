"""Logs of a full run hold no personal data: every component as the real command
(`dastra-kafka poller`, `worker`, `webhook`, `hooks`, `privacy erase`, `dlq replay`), at DEBUG,
in `full` mode (the data is in clear everywhere on the bus), fed seeded people through every
path: events, commands that succeed, commands Dastra refuses, commands that are not valid (the
webhook's 422, an invalid record and a record that is not JSON straight on a command topic), a
search by e-mail, hook deliveries, two shipped recipes run on the rights requests (a task for
the DPO naming the request's title, a search by the requester's e-mail and an enriched event),
an erasure and a replay. Their stdout and stderr are read at
the end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER, RECIPE_RUNS, TopicCatalogue, command_topic
from dastra.sandbox import SandboxServer
from tests.consumers.agents_support import WorkerProcess
from tests.kafka_helpers import create_catalogue_topics, delete_topics, read_all, unique, wait_for
from tests.privacy.support import TOKEN, Person, Service, kafka_env, leaks, run_cli
from tests.producers.webhook_support import ServerThread, Subscriber, make_tls

pytestmark = pytest.mark.timeout(240)

# Shipped recipes on the rights requests: their logs are scanned too.
RECIPES = ("new-request-dpo-task", "new-request-enrich-actors")


@pytest.fixture(scope="module")
def bus(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("logs") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


def test_logs_of_a_full_run_hold_no_personal_data(
    bus: KafkaSettings, sandbox_server: SandboxServer, tmp_path: Path
) -> None:
    sandbox_server.admin.reset()
    sandbox_server.admin.configure(rate_limit=False)
    admin = sandbox_server.admin
    seeded, sent = Person.new(), Person.new()
    tls = make_tls(tmp_path)
    env = {
        **kafka_env(bus),
        **sandbox_server.env(),
        "SERVICE_LOG_LEVEL": "debug",
        "DASTRA_RATE_LIMIT_PER_MINUTE": "1000000",
        "WEBHOOK_TOKENS": TOKEN,
        "HOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
        "HOOKS_CA_FILE": str(tls.ca),
        "HOOKS_START_FROM": "earliest",
        "HOOKS_BACKOFF_S": "0.05",
        "POLLER_INTERVAL_MIN_S": "0.5",
        "POLLER_INTERVAL_MAX_S": "1",
    }
    port = free_port()
    recorder = Subscriber()
    services: list[Service] = []
    with (
        ServerThread(recorder, certfile=tls.cert, keyfile=tls.key) as target,
        WorkerProcess(
            bus,
            sandbox_server,
            tmp_path,
            SERVICE_LOG_LEVEL="debug",
            RECIPES_ENABLE=",".join(RECIPES),
            **_privacy(env),
        ) as worker,
    ):
        try:
            services.append(Service("webhook", ["webhook", "--port", str(port)], env, tmp_path))
            services.append(Service("hooks", ["hooks"], env, tmp_path))
            api = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=40,
            )
            wait_for(lambda: services[0].alive() and _answers(api), 30, "the webhook")
            hook = api.post(
                "/v1/hooks",
                json={
                    "event": "rights_request.created",
                    "target_url": f"https://localhost:{target.port}/zap",
                },
            )
            assert hook.status_code == 201, hook.text
            request = admin.create_rights_request(**seeded.request_fields(), purposes=["Access"])
            admin.create_task(
                label=f"Call {seeded.given} back",
                descriptionHtml=f"<p>{seeded.phone}</p>",
                objectType="DataSubject",
                objectId=str(request["id"]),
            )
            services.append(Service("poller", ["poller", "--from", "beginning"], env, tmp_path))

            created = api.post(
                "/v1/commands/create-rights-request?wait=25",
                json={**sent.request_fields(), "purposes": ["Access"]},
            )
            assert created.status_code == 200, created.text
            actor = {"givenName": sent.given, "familyName": sent.family, "email": sent.email}
            assert api.post("/v1/commands/find-or-create-actor?wait=25", json=actor).is_success
            found = api.post("/v1/commands/search-actors?wait=25", json={"email": sent.email})
            assert found.status_code == 200 and found.json()[0]["email"] == sent.email
            invalid = api.post(
                "/v1/commands/create-actor", json={**actor, "email": f"not {sent.email}"}
            )
            assert invalid.status_code == 422
            admin.inject_fault(
                "/v1/ws/*/DataSubjectRequests",
                method="POST",
                status=400,
                times=1,
                body={"errors": {"Email": [f"The value '{seeded.email}' is refused"]}},
            )
            refused = api.post(
                "/v1/commands/create-rights-request?wait=25",
                json={**seeded.request_fields(), "purposes": ["Erasure"]},
            )
            assert refused.status_code == 422, refused.text
            _produce_bad_commands(bus, seeded)

            wait_for(
                lambda: all(s.alive() for s in services) and len(recorder.accepted("/zap")) >= 2,
                60,
                "hook deliveries of both requests",
            )
            wait_for(lambda: len(read_all(bus, bus.topic(DEAD_LETTER))) >= 3, 30, "3 dead letters")
            wait_for(lambda: _recipes_done(bus) >= set(RECIPES), 60, "both recipes ran")
            erase = run_cli("privacy", "erase", "--subject", seeded.email, env=env)
            assert erase.returncode == 0, erase.stderr
            replay = run_cli("dlq", "replay", "--json", env=env)
            assert replay.returncode == 0, replay.stderr
            wait_for(lambda: len(read_all(bus, bus.topic(DEAD_LETTER))) >= 5, 30, "replays fail")
            api.close()
        finally:
            for service in services:
                service.stop()
    logs = [(s.name, s.log()) for s in services]
    logs += [("worker", worker.log_file.read_text(errors="replace"))]
    logs += [("erase", erase.stdout + erase.stderr), ("replay", replay.stderr)]
    # The logs are there, at DEBUG, from every component...
    text = "\n".join(log for _name, log in logs)
    for expected in (
        "agents.failed",
        "poller.published",
        "webhook.command_accepted",
        "recipes.succeeded",
        "recipes.command_sent",
        "[debug",
    ):
        assert expected in text, expected
    assert json.loads(replay.stdout)["replayed"] >= 3
    # ...and they name ids, never the people.
    assert leaks([seeded, sent], logs) == []


def _recipes_done(bus: KafkaSettings) -> set[str]:
    """The recipes with a succeeded run on dastra.recipe-runs.v1."""
    runs = [json.loads(r.value or b"{}") for r in read_all(bus, bus.topic(RECIPE_RUNS))]
    return {run["recipe"] for run in runs if run.get("status") == "succeeded"}


def _privacy(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("PRIVACY_")}


def _answers(api: httpx.Client) -> bool:
    try:
        return api.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _produce_bad_commands(bus: KafkaSettings, person: Person) -> None:
    """What a careless producer might send: a value of the wrong type next to personal data,
    and a record that is not JSON at all."""
    producer = Producer(bus.confluent_config())
    producer.produce(
        bus.topic(command_topic("create-task")),
        key=person.email.encode(),
        value=json.dumps(
            {"label": 42, "descriptionHtml": person.given, "x": person.phone}
        ).encode(),
    )
    producer.produce(
        bus.topic(command_topic("create-actor")),
        value=f"givenName={person.given}&email={person.email}".encode(),
    )
    assert producer.flush(10) == 0
