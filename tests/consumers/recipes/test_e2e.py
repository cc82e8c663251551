"""Recipes end to end: one real `dastra-kafka worker` process (shared by this module) running
the agents and the recipes, the session broker, the sandbox over HTTP. Each test produces a
trigger (as the poller, or a system of yours, would) and checks Dastra's state, the command
results, the run state on dastra.recipe-runs.v1, and what was published or dead-lettered."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bus.deadletter import read_dead_letter
from bus.envelope import encode_binary, new_event
from bus.settings import KafkaSettings
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    NOTIFICATIONS,
    RECIPE_RUNS,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
)
from consumers.recipes.language import step_command_id
from dastra.client import DastraClient
from dastra.sandbox import SandboxAdmin, SandboxServer
from dastra_kafka.contracts.registry import validate_record
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from tests.consumers.agents_support import RecordProducer, Tail, WorkerProcess, group_caught_up
from tests.kafka_helpers import (
    Record,
    create_catalogue_topics,
    delete_topics,
    unique,
    wait_for,
)

WS = 101
USER_TOPICS = (
    "crm.customer-deleted",
    "procurement.vendor-onboarded",
    "support.tickets",
    "crm.dastra-updates",
    "tests.bad-input",
)
ENABLED = (
    "new-request-dpo-task",
    "erasure-task-per-system",
    "crm-customer-deleted-erasure",
    "vendor-onboarded-link-processing",
    "high-priority-task-notification",
    "request-closed-to-crm",
    "support-ticket-gdpr-request",
    "new-request-enrich-actors",
    "deadline-escalation",
    "new-task-hook-notification",
    "tests-bad-date",
)
DPO = 302
SYSTEMS = ("CRM", "Billing", "Support")

# A recipe of "yours", loaded from RECIPES_DIRS: its expression fails on some inputs.
BAD_DATE_RECIPE = """
name: tests-bad-date
description: A task due one day after the event's `when`, which must be a date.
trigger:
  topic: tests.bad-input
steps:
  - id: task
    command: create-task
    with:
      label: "Follow up {{ data.ref }}"
      deadline: "{{ add_days(data.when, `1`) }}"
"""


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rkafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    from confluent_kafka.admin import AdminClient, NewTopic

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("recipes") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    admin = AdminClient(kafka.confluent_config())
    mine = [kafka.topic(name) for name in USER_TOPICS]
    for future in admin.create_topics([NewTopic(n, 3, 1) for n in mine]).values():
        future.result(timeout=30)
    # A created topic reaches the broker's metadata a moment after the controller answered;
    # a worker started before that refuses to start (missing topic).
    wanted = {*names, *mine}
    wait_for(
        lambda: wanted <= set(admin.list_topics(timeout=10).topics),
        30,
        "the topics in the broker's metadata",
    )
    yield kafka
    delete_topics(kafka, names + mine)


@pytest.fixture(scope="module")
def admin(sandbox_server: SandboxServer) -> SandboxAdmin:
    # Ids must not repeat within the module (event ids, and so run keys, derive from them):
    # reset once here, not per test.
    sandbox_server.admin.reset()
    sandbox_server.admin.configure(rate_limit=False)
    return sandbox_server.admin


@pytest.fixture(scope="module")
def worker(
    rkafka: KafkaSettings,
    sandbox_server: SandboxServer,
    admin: SandboxAdmin,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    mine = tmp_path_factory.mktemp("my-recipes")
    (mine / "tests-bad-date.yaml").write_text(BAD_DATE_RECIPE)
    process = WorkerProcess(
        rkafka,
        sandbox_server,
        tmp_path_factory.mktemp("recipes-worker"),
        RECIPES_ENABLE=",".join(ENABLED),
        # Some tests count calls to Dastra: no start-up probes (test_agents_strict.py has them).
        WORKER_DETECT="false",
        RECIPES_DIRS=str(mine),
        RECIPES_DPO_USER_ID=str(DPO),
        RECIPES_ERASURE_SYSTEMS=",".join(SYSTEMS),
        RECIPES_VENDOR_PROCESSING_ID=admin.info()["processings"][1],
        RECIPES_DEADLINE_WARNING_DAYS="3",
        RECIPES_SCHEDULE_INTERVAL_S="1",
        RECIPES_STEP_TIMEOUT_S="60",
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def producer(rkafka: KafkaSettings) -> Iterator[RecordProducer]:
    records = RecordProducer(rkafka)
    yield records
    records.close()


@dataclass
class Env:
    kafka: KafkaSettings
    worker: WorkerProcess
    producer: RecordProducer
    admin: SandboxAdmin
    results: Tail
    runs: Tail
    dlq: Tail
    notifications: Tail

    # --- triggers -----------------------------------------------------------------------------

    def dastra_event(self, entity: str, kind: str, obj: dict[str, Any]) -> str:
        """Publish a Dastra change as the poller does; returns its event id."""
        stamp = obj["dateUpdate"] if kind == "updated" else obj["dateCreation"]
        parts = ["dastra", str(WS), f"{entity}.{kind}", str(obj["id"])]
        if kind == "updated":
            parts.append(stamp)
        event_id = ":".join(parts)
        event = new_event(
            type=f"eu.dastra.{entity}.{kind}",
            source=f"dastra://workspaces/{WS}",
            id=event_id,
            subject=str(obj["id"]),
            time=datetime.fromisoformat(stamp.replace("Z", "+00:00")),
            data=obj,
        )
        headers, value = encode_binary(event)
        topic = RIGHTS_REQUESTS if entity == "rights_request" else TASKS
        self.producer.send(topic, [(f"{WS}:{obj['id']}".encode(), list(headers), value)])
        return event_id

    def user_event(self, topic: str, data: dict[str, Any], event_id: str | None = None) -> str:
        """A record of one of your systems: a CloudEvent when `event_id` is given, else plain
        JSON. Returns the id the recipe sees."""
        if event_id is None:
            self.producer.send(topic, [(None, [], json.dumps(data).encode())])
            return ""
        event = new_event(type="com.acme.event", source="urn:acme", id=event_id, data=data)
        headers, value = encode_binary(event)
        self.producer.send(topic, [(event_id.encode(), list(headers), value)])
        return event_id

    # --- observations -------------------------------------------------------------------------

    def run(
        self, recipe: str, run_key: str, status: str = "succeeded", timeout: float = 45.0
    ) -> dict[str, Any]:
        """The latest state of a run, once it has `status`."""
        key = f"{recipe}:{run_key}"

        def latest(tail: Tail) -> dict[str, Any] | None:
            records = tail.by_key().get(key)
            return json.loads(records[-1].value or b"null") if records else None

        def reached(tail: Tail) -> bool:
            state = latest(tail)
            if state is not None and state["status"] != "running" and state["status"] != status:
                raise AssertionError(f"run {key} ended {state['status']}: {state}")
            return state is not None and state["status"] == status

        self.runs.wait(reached, timeout, f"run {key} {status}")
        state = latest(self.runs)
        assert state is not None
        return state

    def run_for(self, recipe: str, prefix: str, status: str = "succeeded") -> dict[str, Any]:
        """The run of `recipe` whose key starts with `prefix` (plain-JSON triggers)."""
        self.runs.wait(
            lambda t: any(k.startswith(f"{recipe}:{prefix}") for k in t.by_key()),
            45,
            f"a run of {recipe}",
        )
        key = next(k for k in self.runs.by_key() if k.startswith(f"{recipe}:{prefix}"))
        return self.run(recipe, key.removeprefix(f"{recipe}:"), status)

    def result(self, command_id: str) -> dict[str, Any]:
        [record] = self.results.wait_for_keys([command_id], 30)[command_id]
        return json.loads(record.value or b"null")

    def tasks_of(self, request_id: int) -> list[dict[str, Any]]:
        return [
            task
            for task in self.admin.objects("tasks")
            if task.get("objectType") == "DataSubject" and task.get("objectId") == str(request_id)
        ]

    def notes(self, key: str, count: int) -> list[Record]:
        self.notifications.wait(
            lambda t: len(t.by_key().get(key, [])) >= count, 30, f"{count} notification(s) {key}"
        )
        return self.notifications.by_key()[key]


@pytest.fixture
def env(
    worker: WorkerProcess, producer: RecordProducer, rkafka: KafkaSettings, admin: SandboxAdmin
) -> Iterator[Env]:
    admin.clear_faults()
    tails = [Tail(rkafka, t) for t in (COMMAND_RESULTS, RECIPE_RUNS, DEAD_LETTER, NOTIFICATIONS)]
    try:
        yield Env(rkafka, worker, producer, admin, *tails)
    finally:
        for tail in tails:
            tail.close()
        assert worker.returncode() is None, worker.log_tail()


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _request(admin: SandboxAdmin, **fields: Any) -> dict[str, Any]:
    tag = unique("rr")
    return admin.create_rights_request(
        **{"title": f"Request {tag}", "purposes": ["Access"], **fields}
    )


# --- the recipes -------------------------------------------------------------------------------


def test_new_request_from_the_poller_gets_a_dpo_task_and_an_enriched_event(
    env: Env, catalogue: TopicCatalogue, sandbox_server: SandboxServer
) -> None:
    email = f"{unique('ada')}@example.eu"
    actor = env.admin.create_actor(givenName="Ada", familyName="Lovelace", email=email)
    since = datetime.now(UTC) - timedelta(seconds=1)
    request = _request(env.admin, email=email)

    async def poll_once() -> None:
        async with DastraClient(sandbox_server.dastra_settings()) as dastra:
            poller = Poller(
                env.kafka, PollerSettings(), catalogue, dastra, workspaces=[WS], start=since
            )
            summary = await poller.run(max_cycles=1)
            assert summary.events[WS] >= 1

    asyncio.run(poll_once())
    event_id = f"dastra:{WS}:rights_request.created:{request['id']}"

    state = env.run("new-request-dpo-task", event_id)
    command_id = step_command_id("new-request-dpo-task", event_id, "task")
    assert state["steps"]["task"]["command_ids"] == [command_id]
    result = env.result(command_id)
    assert result["status"] == "succeeded", result
    [task] = env.tasks_of(request["id"])
    assert task["id"] == result["result"]["id"]
    assert task["label"] == f"Answer rights request #{request['id']}"
    assert _at(task["deadline"]) == _at(request["expiryTime"])
    assert task["assignedToUserId"] == DPO and task["priority"] == "High"
    assert task["areaId"] == request["areaId"]

    env.run("new-request-enrich-actors", event_id)
    [note] = env.notes(f"{WS}:{request['id']}", 1)
    assert validate_record(catalogue, NOTIFICATIONS, note.key, note.value, note.headers) == []
    assert note.headers["ce_id"].decode() == step_command_id(
        "new-request-enrich-actors", event_id, "enriched"
    )
    body = json.loads(note.value or b"{}")
    assert body["object_id"] == str(request["id"]) and body["recipe"] == "new-request-enrich-actors"
    assert [a["id"] for a in body["data"]["actors"]] == [actor["id"]]
    assert body["data"]["request"]["email"] == email


def test_an_erasure_request_gets_one_task_per_system(env: Env) -> None:
    request = _request(env.admin, purposes=["Erasure"])
    event_id = env.dastra_event("rights_request", "created", request)

    state = env.run("erasure-task-per-system", event_id)
    ids = [step_command_id("erasure-task-per-system", event_id, "tasks", i) for i in range(3)]
    assert state["steps"]["tasks"]["command_ids"] == ids
    env.run("new-request-dpo-task", event_id)
    tasks = env.tasks_of(request["id"])
    systems = sorted(t["additionalDatas"].get("erasureSystem") or "dpo" for t in tasks)
    assert systems == sorted([*SYSTEMS, "dpo"])
    for system in SYSTEMS:
        [task] = [t for t in tasks if t["additionalDatas"].get("erasureSystem") == system]
        assert task["label"] == f"Erase the data in {system}: request #{request['id']}"
        assert _at(task["deadline"]) == _at(request["expiryTime"])
    assert {env.result(i)["status"] for i in ids} == {"succeeded"}


def test_a_crm_customer_deleted_event_opens_an_erasure_request_with_the_crm_id(env: Env) -> None:
    customer = unique("C")
    event_id = env.user_event(
        "crm.customer-deleted",
        {"customerId": customer, "email": f"{customer}@example.eu", "givenName": "Marc",
         "familyName": "Leroy", "deletedAt": "2026-03-02T09:00:00Z"},
        event_id=unique("crm-evt"),
    )  # fmt: skip

    env.run("crm-customer-deleted-erasure", event_id)
    result = env.result(step_command_id("crm-customer-deleted-erasure", event_id, "request"))
    [request] = [r for r in env.admin.objects("rightsRequests") if r.get("refId") == customer]
    assert result["result"]["id"] == request["id"]
    assert request["purposes"] == ["Erasure"] and request["personCategory"] == "FormerClient"
    assert request["email"] == f"{customer}@example.eu"
    assert request["description"] == "The customer was deleted in the CRM on 2026-03-02."


def test_a_vendor_is_found_or_created_then_linked_to_the_processing(env: Env) -> None:
    processing = env.admin.info()["processings"][2]
    tag = unique("v")
    vendor = {"name": f"Mailjet {tag}", "privacyEmail": f"dpo@{tag}.example", "country": "FR",
              "service": "e-mail", "processingId": processing}  # fmt: skip
    first = env.user_event("procurement.vendor-onboarded", vendor, event_id=unique("proc"))
    state = env.run("vendor-onboarded-link-processing", first)
    actor = env.result(step_command_id("vendor-onboarded-link-processing", first, "actor"))
    link = env.result(step_command_id("vendor-onboarded-link-processing", first, "link"))
    assert state["steps"]["link"]["status"] == "succeeded"
    [created] = [a for a in env.admin.objects("actors") if a["email"] == vendor["privacyEmail"]]
    assert actor["result"]["id"] == created["id"] and created["companyName"] == vendor["name"]
    assert link["result"]["linked"] == [created["id"]]

    # The same vendor onboarded again (a new event): found, not created; already linked.
    second = env.user_event("procurement.vendor-onboarded", vendor, event_id=unique("proc"))
    env.run("vendor-onboarded-link-processing", second)
    again = env.result(step_command_id("vendor-onboarded-link-processing", second, "link"))
    assert again["result"]["alreadyLinked"] == [created["id"]] and again["result"]["count"] == 0
    assert [
        a["id"] for a in env.admin.objects("actors") if a["email"] == vendor["privacyEmail"]
    ] == [created["id"]]
    recipients = [
        link["actorId"]
        for p in env.admin.objects("processings")
        if p["id"] == processing
        for link in p["recipients"]
    ]
    assert recipients.count(created["id"]) == 1


def test_a_failing_step_dead_letters_its_command_and_other_recipes_keep_running(env: Env) -> None:
    env.admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=400, times=1)
    request = _request(env.admin)  # Access, no e-mail: only the DPO task recipe runs
    event_id = env.dastra_event("rights_request", "created", request)
    customer = unique("C")
    other = env.user_event(
        "crm.customer-deleted", {"customerId": customer}, event_id=unique("crm-evt")
    )

    state = env.run("new-request-dpo-task", event_id, status="failed")
    command_id = step_command_id("new-request-dpo-task", event_id, "task")
    assert state["error"]["kind"] == "step-failed" and state["error"]["step"] == "task"
    assert state["error"]["command_id"] == command_id
    assert "dastra-rejected" in state["error"]["message"]
    failed = env.result(command_id)
    assert failed["status"] == "failed" and failed["error"]["kind"] == "dastra-rejected"
    env.dlq.wait(
        lambda t: any(r.headers.get("ce_id") == command_id.encode() for r in t.records),
        30,
        "the failed command's dead letter",
    )
    [letter] = [r for r in env.dlq.records if r.headers.get("ce_id") == command_id.encode()]
    info = read_dead_letter(list(letter.headers.items()))
    assert info.kind == "dastra-rejected" and info.component == "agents"
    assert env.tasks_of(request["id"]) == []

    env.run("crm-customer-deleted-erasure", other)
    assert [r["refId"] for r in env.admin.objects("rightsRequests") if r.get("refId") == customer]
    # The worker is still there, and the next request gets its task.
    later = _request(env.admin)
    env.run("new-request-dpo-task", env.dastra_event("rights_request", "created", later))
    assert len(env.tasks_of(later["id"])) == 1


def test_a_redelivered_trigger_does_not_run_the_recipe_twice(env: Env) -> None:
    ticket = {"ticketId": unique("T"), "subject": "Delete my account", "tags": ["GDPR"],
              "requester": {"email": f"{unique('m')}@example.eu", "givenName": "Marc"}}  # fmt: skip
    event_id = env.user_event("support.tickets", ticket, event_id=unique("ticket"))
    state = env.run("support-ticket-gdpr-request", event_id)
    command_id = step_command_id("support-ticket-gdpr-request", event_id, "request")
    posts = env.admin.call_counts().get("POST /v1/ws/{ws}/DataSubjectRequests", 0)
    skipped = env.worker.metric(
        "dastra_recipe_runs_total", recipe="support-ticket-gdpr-request", status="skipped"
    )

    # The same event delivered twice more (a producer retry, a replay of the topic).
    env.user_event("support.tickets", ticket, event_id=event_id)
    env.user_event("support.tickets", ticket, event_id=event_id)
    wait_for(
        lambda: (
            env.worker.metric(
                "dastra_recipe_runs_total", recipe="support-ticket-gdpr-request", status="skipped"
            )
            >= skipped + 2
        ),
        30,
        "both repeats skipped",
    )
    assert env.admin.call_counts().get("POST /v1/ws/{ws}/DataSubjectRequests", 0) == posts
    refs = [
        r
        for r in env.admin.objects("rightsRequests")
        if r.get("refId") == f"support-{ticket['ticketId']}"
    ]
    assert len(refs) == 1
    env.results.poll(1.0)
    assert len(env.results.by_key()[command_id]) == 1
    env.runs.poll(0.5)
    states = [json.loads(r.value or b"{}") for r in env.runs.by_key()[state_key(state)]]
    assert [s["status"] for s in states].count("succeeded") == 1
    # Handled triggers are committed, so a restart does not even have to skip them.
    group = env.kafka.topic("dastra-agents")
    wait_for(lambda: group_caught_up(env.kafka, group, ["support.tickets"]), 30, "the commit")


def state_key(state: dict[str, Any]) -> str:
    return f"{state['recipe']}:{state['run_key']}"


def test_an_expression_failing_on_the_data_dead_letters_the_trigger(env: Env) -> None:
    ref = unique("ref")
    value = json.dumps({"ref": ref, "when": "next tuesday"}).encode()
    env.producer.send("tests.bad-input", [(ref.encode(), [], value)])
    state = env.run_for("tests-bad-date", env.kafka.topic("tests.bad-input"), status="failed")
    assert state["error"]["kind"] == "recipe-expression" and state["error"]["step"] == "task"
    assert "not an ISO 8601 date" in state["error"]["message"]
    env.dlq.wait(lambda t: any(r.key == ref.encode() for r in t.records), 30, "the dead letter")
    [letter] = [r for r in env.dlq.records if r.key == ref.encode()]
    assert letter.value == value
    info = read_dead_letter(list(letter.headers.items()))
    assert info.component == "recipes" and info.kind == "recipe-expression"
    assert info.topic == env.kafka.topic("tests.bad-input")
    assert "tests-bad-date" in info.message and "next tuesday" not in info.message
    # Nothing was sent to Dastra for it.
    assert not [t for t in env.admin.objects("tasks") if t["label"] == f"Follow up {ref}"]


def test_a_request_near_its_deadline_gets_one_escalation_task(env: Env) -> None:
    due = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="milliseconds")
    request = _request(env.admin, expiryTime=due.replace("+00:00", "Z"), state="Processing")

    def escalations() -> list[dict[str, Any]]:
        return [t for t in env.tasks_of(request["id"]) if t["label"].startswith("Escalation")]

    wait_for(lambda: len(escalations()) == 1, 30, "the escalation task")
    [task] = escalations()
    assert task["priority"] == "High" and task["assignedToUserId"] == DPO
    assert _at(task["deadline"]) == _at(request["expiryTime"])
    checks = env.worker.metric(
        "dastra_recipe_schedule_checks_total", recipe="deadline-escalation", outcome="ok"
    )
    wait_for(
        lambda: (
            env.worker.metric(
                "dastra_recipe_schedule_checks_total", recipe="deadline-escalation", outcome="ok"
            )
            >= checks + 2
        ),
        30,
        "two more periodic checks",
    )
    assert len(escalations()) == 1


def test_a_closed_request_is_announced_to_the_crm_once(env: Env) -> None:
    ref = unique("crm")
    request = _request(env.admin, refId=ref)
    closed = env.admin.update_rights_request(request["id"], state="Closed", closedReason="Accepted")
    env.dastra_event("rights_request", "updated", closed)
    crm = Tail(env.kafka, "crm.dastra-updates")
    try:
        crm.wait(lambda t: ref in t.by_key(), 30, "the CRM message")
        [message] = crm.by_key()[ref]
        body = json.loads(message.value or b"{}")
        assert body["requestId"] == request["id"] and body["state"] == "Closed"
        assert body["closedReason"] == "Accepted" and body["workspaceId"] == WS
        assert message.headers["ce_type"] == b"eu.dastra.recipe.rights_request.closed"

        # Edited again while closed: a new event, the same closing: no second message.
        skipped = env.worker.metric(
            "dastra_recipe_runs_total", recipe="request-closed-to-crm", status="skipped"
        )
        edited = env.admin.update_rights_request(request["id"], description="archived copy")
        event_id = env.dastra_event("rights_request", "updated", edited)
        wait_for(
            lambda: (
                env.worker.metric(
                    "dastra_recipe_runs_total", recipe="request-closed-to-crm", status="skipped"
                )
                > skipped
            ),
            30,
            f"the repeat of {event_id} skipped",
        )
        crm.poll(0.5)
        assert len(crm.by_key()[ref]) == 1
    finally:
        crm.close()


def test_tasks_are_announced_and_high_priority_ones_flagged(
    env: Env, catalogue: TopicCatalogue
) -> None:
    urgent = env.admin.create_task(label=f"Urgent {unique('t')}", priority="High")
    normal = env.admin.create_task(label=f"Normal {unique('t')}", priority="Medium")
    env.dastra_event("task", "created", urgent)
    env.dastra_event("task", "created", normal)

    notes = env.notes(f"{WS}:{urgent['id']}", 2)
    kinds = sorted(n.headers["ce_type"].decode() for n in notes)
    assert kinds == ["eu.dastra.recipe.task.created", "eu.dastra.recipe.task.high_priority"]
    for note in notes:
        assert validate_record(catalogue, NOTIFICATIONS, note.key, note.value, note.headers) == []
    [flag] = [n for n in notes if n.headers["ce_type"].endswith(b"high_priority")]
    assert json.loads(flag.value or b"{}")["severity"] == "warning"
    [hook] = [n for n in notes if n.headers["ce_type"].endswith(b"task.created")]
    payload = json.loads(hook.value or b"{}")["data"]
    assert payload["type"] == "task.created" and payload["data"]["id"] == urgent["id"]
    assert payload["id"] == f"dastra:{WS}:task.created:{urgent['id']}"

    [only] = env.notes(f"{WS}:{normal['id']}", 1)
    env.notifications.poll(0.5)
    assert len(env.notifications.by_key()[f"{WS}:{normal['id']}"]) == 1
    assert only.headers["ce_type"] == b"eu.dastra.recipe.task.created"


def test_after_a_crash_runs_resume_without_repeating_what_was_done(env: Env) -> None:
    # A vendor onboarded before the crash: its actor step's result is on the results topic.
    tag = unique("v")
    vendor = {"name": f"Globex {tag}", "privacyEmail": f"dpo@{tag}.example"}
    first = env.user_event("procurement.vendor-onboarded", vendor, event_id=unique("proc"))
    env.run("vendor-onboarded-link-processing", first)
    actor_command = step_command_id("vendor-onboarded-link-processing", first, "actor")
    actor = env.result(actor_command)["result"]

    # An erasure run cut by SIGKILL while its tasks are being created (1.5 s each).
    env.admin.inject_fault("/v1/ws/*/Tasks", method="POST", latency_s=1.5, times=3)
    request = _request(env.admin, purposes=["Erasure"])
    event_id = env.dastra_event("rights_request", "created", request)
    wait_for(lambda: len(env.tasks_of(request["id"])) >= 1, 30, "the first task")
    env.worker.kill()
    env.admin.clear_faults()
    env.runs.poll(0.5)
    cut = env.runs.by_key().get(f"erasure-task-per-system:{event_id}", [])
    assert [json.loads(r.value or b"{}")["status"] for r in cut] in ([], ["running"])

    # Another run that, as far as dastra.recipe-runs.v1 says, had finished its first step
    # (with the command above) when the worker died; its trigger is delivered again.
    second = unique("proc")
    now = datetime.now(UTC).isoformat()
    state = {
        "recipe": "vendor-onboarded-link-processing",
        "run_key": second,
        "status": "running",
        "trigger": {"event_id": second},
        "steps": {"actor": {"status": "succeeded", "command_ids": [actor_command],
                            "completed_at": now}},
        "started_at": now,
        "updated_at": now,
    }  # fmt: skip
    key = f"vendor-onboarded-link-processing:{second}"
    env.producer.send(RECIPE_RUNS, [(key.encode(), [], json.dumps(state).encode())])
    other = {"name": f"Initech {tag}", "privacyEmail": f"dpo@initech-{tag}.example"}
    env.user_event("procurement.vendor-onboarded", other, event_id=second)
    finds = env.admin.call_counts().get("GET /v1/ws/{ws}/Actors", 0)

    env.worker.start()

    env.run("erasure-task-per-system", event_id)
    env.run("new-request-dpo-task", event_id)
    tasks = env.tasks_of(request["id"])
    systems = sorted(t["additionalDatas"].get("erasureSystem") or "dpo" for t in tasks)
    assert systems == sorted([*SYSTEMS, "dpo"]), textwrap.shorten(str(tasks), 500)

    done = env.run("vendor-onboarded-link-processing", second)
    assert done["steps"]["actor"]["command_ids"] == [actor_command]
    link = env.result(step_command_id("vendor-onboarded-link-processing", second, "link"))
    assert link["result"]["actorIds"] == [actor["id"]]
    env.results.poll(0.5)
    assert step_command_id("vendor-onboarded-link-processing", second, "actor") not in (
        env.results.by_key()
    )
    assert env.admin.call_counts().get("GET /v1/ws/{ws}/Actors", 0) == finds
    assert not [a for a in env.admin.objects("actors") if a["email"] == other["privacyEmail"]]
