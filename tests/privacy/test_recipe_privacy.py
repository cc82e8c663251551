"""Recipes under the bus's payload modes: one real `dastra-kafka worker` (recipes on, commands
and results encrypted), the session broker, the sandbox over HTTP, and the real poller
publishing rights requests in `encrypted` or `thin` mode. The recipes must see the whole
request (decrypted, or fetched by id), the commands they send must be sealed, an event whose
object cannot be fetched is dead-lettered with the reason, and `privacy erase` tombstones the
runs of the erased subject (they name it by keyed hashes only)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bus.deadletter import read_dead_letter
from bus.envelope import encode_binary, new_event
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import (
    DEAD_LETTER,
    NOTIFICATIONS,
    RECIPE_RUNS,
    RIGHTS_REQUESTS,
    TopicCatalogue,
    command_topic,
)
from consumers.recipes.language import step_command_id
from dastra.client import DastraClient
from dastra.sandbox import SandboxAdmin, SandboxServer
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from tests.consumers.agents_support import RecordProducer, Tail, WorkerProcess
from tests.kafka_helpers import create_catalogue_topics, delete_topics, read_all, unique
from tests.privacy.support import MASTER_KEY, Person, kafka_env, leaks, privacy, run_cli

DPO = 302
RECIPES = ("new-request-dpo-task", "new-request-enrich-actors")


@pytest.fixture(scope="module")
def pkafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("rprv") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


@pytest.fixture(scope="module")
def admin(sandbox_server: SandboxServer) -> SandboxAdmin:
    sandbox_server.admin.reset()  # ids (so event ids, so run keys) must not repeat here
    sandbox_server.admin.configure(rate_limit=False)
    return sandbox_server.admin


@pytest.fixture(scope="module")
def worker(
    pkafka: KafkaSettings,
    sandbox_server: SandboxServer,
    admin: SandboxAdmin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        pkafka,
        sandbox_server,
        tmp_path_factory.mktemp("recipes-privacy"),
        RECIPES_ENABLE=",".join(RECIPES),
        RECIPES_DPO_USER_ID=str(DPO),
        RECIPES_STEP_TIMEOUT_S="60",
        PRIVACY_MASTER_KEY=MASTER_KEY,
        PRIVACY_MODE_RIGHTS_REQUESTS="encrypted",
        PRIVACY_MODE_COMMANDS="encrypted",
        PRIVACY_MODE_RESULTS="encrypted",
    )
    process.start()
    yield process
    process.stop()


@dataclass
class Env:
    kafka: KafkaSettings
    admin: SandboxAdmin
    sandbox: SandboxServer
    catalogue: TopicCatalogue
    runs: Tail
    dlq: Tail
    notifications: Tail
    ws: int

    def poll(self, since: datetime, settings: PrivacySettings) -> None:
        async def once() -> None:
            async with DastraClient(self.sandbox.dastra_settings()) as dastra:
                poller = Poller(
                    self.kafka,
                    PollerSettings(),
                    self.catalogue,
                    dastra,
                    workspaces=[self.ws],
                    start=since,
                    privacy=settings,
                )
                summary = await poller.run(max_cycles=1)
                assert summary.events[self.ws] >= 1

        asyncio.run(once())

    def run(self, recipe: str, run_key: str, timeout: float = 60.0) -> dict[str, Any]:
        """The run's final state, once it succeeded (fails at once if it failed)."""
        key = f"{recipe}:{run_key}"

        def latest(tail: Tail) -> dict[str, Any] | None:
            records = tail.by_key().get(key)
            return json.loads(records[-1].value or b"null") if records else None

        def done(tail: Tail) -> bool:
            state = latest(tail)
            if state is not None and state["status"] == "failed":
                raise AssertionError(f"run {key} failed: {state}")
            return state is not None and state["status"] == "succeeded"

        self.runs.wait(done, timeout, f"run {key} succeeded")
        state = latest(self.runs)
        assert state is not None
        return state

    def commands(self, action: str, command_id: str) -> list[Any]:
        return [
            r
            for r in read_all(self.kafka, self.kafka.topic(command_topic(action)))
            if r.key == command_id.encode()
        ]

    def task_of(self, request_id: int) -> dict[str, Any]:
        [task] = [
            t
            for t in self.admin.objects("tasks")
            if t.get("objectType") == "DataSubject" and t.get("objectId") == str(request_id)
        ]
        return task


@pytest.fixture
def env(
    worker: WorkerProcess,
    pkafka: KafkaSettings,
    admin: SandboxAdmin,
    sandbox_server: SandboxServer,
    catalogue: TopicCatalogue,
) -> Iterator[Env]:
    admin.clear_faults()
    tails = [Tail(pkafka, t) for t in (RECIPE_RUNS, DEAD_LETTER, NOTIFICATIONS)]
    try:
        yield Env(
            pkafka,
            admin,
            sandbox_server,
            catalogue,
            *tails,
            ws=int(admin.info()["defaultWorkspace"]),
        )
    finally:
        for tail in tails:
            tail.close()
        assert worker.returncode() is None, worker.log_tail()


def test_encrypted_events_are_decrypted_for_recipes_whose_commands_are_sealed(env: Env) -> None:
    person = Person.new()
    since = datetime.now(UTC) - timedelta(seconds=1)
    request = env.admin.create_rights_request(purposes=["Access"], **person.request_fields())
    env.poll(since, privacy(mode_rights_requests="encrypted"))
    event_id = f"dastra:{env.ws}:rights_request.created:{request['id']}"
    trigger = [
        r
        for r in read_all(env.kafka, env.kafka.topic(RIGHTS_REQUESTS))
        if r.key == f"{env.ws}:{request['id']}".encode()
    ]
    assert trigger and trigger[0].headers.get("ce_dastrapayload") == b"encrypted"
    assert leaks([person], [("trigger", r.value) for r in trigger]) == []

    # The task carries the request's real (decrypted) title.
    state = env.run("new-request-dpo-task", event_id)
    task = env.task_of(request["id"])
    assert f"{person.given} {person.family}" in (task.get("descriptionHtml") or ""), task
    assert task["assignedToUserId"] == DPO
    # The filter on the requester's e-mail fired on the decrypted e-mail.
    env.run("new-request-enrich-actors", event_id)

    # The commands the recipes sent are sealed: nothing personal in clear on the bus.
    [task_id] = state["steps"]["task"]["command_ids"]
    search_id = step_command_id("new-request-enrich-actors", event_id, "search")
    sent = env.commands("create-task", task_id) + env.commands("search-actors", search_id)
    assert len(sent) == 2
    assert all(r.headers.get("ce_dastrapayload") == b"encrypted" for r in sent)
    assert leaks([person], [(f"command {r.key!r}", r.value) for r in sent]) == []


def test_thin_events_are_fetched_by_id_so_filters_on_personal_fields_fire(env: Env) -> None:
    person = Person.new()
    actor = env.admin.create_actor(
        givenName=person.given, familyName=person.family, email=person.email
    )
    since = datetime.now(UTC) - timedelta(seconds=1)
    request = env.admin.create_rights_request(purposes=["Access"], **person.request_fields())
    env.poll(since, privacy(mode_rights_requests="thin"))
    event_id = f"dastra:{env.ws}:rights_request.created:{request['id']}"
    [trigger] = [
        r
        for r in read_all(env.kafka, env.kafka.topic(RIGHTS_REQUESTS))
        if r.key == f"{env.ws}:{request['id']}".encode()
    ]
    assert trigger.headers.get("ce_dastrapayload") == b"thin"
    assert "email" not in json.loads(trigger.value or b"{}")

    # `filter: data.email` fired: the recipe saw the whole request, fetched from Dastra.
    env.run("new-request-enrich-actors", event_id)
    key = f"{env.ws}:{request['id']}"
    env.notifications.wait(lambda t: key in t.by_key(), 30, "the enriched event")
    [note] = env.notifications.by_key()[key]
    body = json.loads(note.value or b"{}")
    assert body["data"]["request"]["email"] == person.email
    # The search result was encrypted on the results topic and decrypted for the next step.
    assert [(a["id"], a["email"]) for a in body["data"]["actors"]] == [(actor["id"], person.email)]

    env.run("new-request-dpo-task", event_id)
    task = env.task_of(request["id"])
    assert f"{person.given} {person.family}" in (task.get("descriptionHtml") or ""), task


def test_a_thin_event_whose_object_is_gone_is_dead_lettered_with_the_reason(env: Env) -> None:
    missing = 987654321
    event_id = f"dastra:{env.ws}:rights_request.created:{missing}"
    event = new_event(
        type="eu.dastra.rights_request.created",
        source=f"dastra://workspaces/{env.ws}",
        id=event_id,
        subject=str(missing),
        data={
            "id": missing,
            "state": "Open",
            "dataref": f"/v1/ws/{env.ws}/DataSubjectRequests/{missing}",
        },
        extensions={"dastrapayload": "thin"},
    )
    headers, value = encode_binary(event)
    producer = RecordProducer(env.kafka)
    try:
        producer.send(RIGHTS_REQUESTS, [(f"{env.ws}:{missing}".encode(), list(headers), value)])
    finally:
        producer.close()

    def dead(tail: Tail) -> bool:
        return any(r.headers.get("ce_id") == event_id.encode() for r in tail.records)

    env.dlq.wait(dead, 60, "the trigger dead-lettered")
    [record] = [r for r in env.dlq.records if r.headers.get("ce_id") == event_id.encode()]
    letter = read_dead_letter(list(record.headers.items()))
    assert letter.kind == "dastra-not-found" and letter.component == "recipes"
    assert "could not fetch" in letter.message and "new-request-dpo-task" in letter.message
    env.runs.poll(0.5)
    assert not [k for k in env.runs.by_key() if k.endswith(event_id)]


def test_privacy_erase_tombstones_the_recipe_runs_of_the_erased_subject(env: Env) -> None:
    erased, kept = Person.new(), Person.new()
    since = datetime.now(UTC) - timedelta(seconds=1)
    requests = {
        person: env.admin.create_rights_request(purposes=["Access"], **person.request_fields())
        for person in (erased, kept)
    }
    env.poll(since, privacy(mode_rights_requests="thin"))
    keys: dict[Person, list[str]] = {}
    for person, request in requests.items():
        event_id = f"dastra:{env.ws}:rights_request.created:{request['id']}"
        keys[person] = [f"{recipe}:{event_id}" for recipe in RECIPES]
        for recipe in RECIPES:
            # The run names its subject by keyed hashes only: no e-mail, no name.
            state = env.run(recipe, event_id)
            assert state["subjects"] and all(s.startswith("s_") for s in state["subjects"])
            assert leaks([person], [("run", json.dumps(state))]) == []

    erase = run_cli(
        "privacy", "erase", "--subject", erased.email, "--json", env=kafka_env(env.kafka)
    )
    assert erase.returncode == 0, erase.stderr
    assert json.loads(erase.stdout)["tombstones"][RECIPE_RUNS] == len(RECIPES)

    # The last record of each (key, partition): a tombstone must land on its record's
    # partition (whatever partitioner wrote the run), or compaction keeps the record.
    last: dict[tuple[str, int], bytes | None] = {}
    for record in read_all(env.kafka, env.kafka.topic(RECIPE_RUNS)):
        last[((record.key or b"").decode(), record.partition)] = record.value
    erased_runs = [value for (key, _p), value in last.items() if key in keys[erased]]
    kept_runs = [value for (key, _p), value in last.items() if key in keys[kept]]
    assert len(erased_runs) == len(RECIPES) and all(v is None for v in erased_runs), erased_runs
    assert len(kept_runs) == len(RECIPES) and all(v is not None for v in kept_runs)
