"""The studio's run routes in process on the real broker, without a worker: trigger samples
(newest first, data exactly as the topic holds it, by type, 404 on a missing topic), the run
history from dastra.recipe-runs.v1 (latest record per run, steps in the recipe's order,
filters), what each command of a run did (its result's ids, a dead letter's reason), what send
once and retry write on dastra.recipe-requests.v1, and who may ask."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from pydantic import SecretStr

from bus.deadletter import OriginalRecord, dead_letter
from bus.envelope import encode_binary, header_dict, new_event
from bus.reading import read_to_end
from bus.records.commands import CommandError, CommandResult
from bus.records.recipe_requests import RecipeRequest
from bus.records.recipe_runs import RecipeRun, RunError, StepState, TriggerRef
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, DEAD_LETTER, RECIPE_REQUESTS, RECIPE_RUNS, TopicCatalogue
from consumers.recipes.settings import RecipesSettings
from dastra_kafka.studio.app import create_app
from dastra_kafka.studio.runs import retry_key, retry_of
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore
from tests.consumers.agents_support import RecordProducer
from tests.dastra_kafka.test_studio_api import EDITOR, VIEWER, recipe_document
from tests.kafka_helpers import delete_topics
from tests.producers.webhook_support import ServerThread

FORMS = "web.privacy-forms"
NAME = "web-form-request"


def _as(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(kafka: KafkaSettings, topics: TopicCatalogue) -> Iterator[httpx.Client]:
    admin = AdminClient(kafka.confluent_config())
    for future in admin.create_topics([NewTopic(kafka.topic(FORMS), 2, 1)]).values():
        future.result(timeout=30)
    settings = StudioSettings(tokens=[SecretStr(EDITOR)], read_tokens=[SecretStr(VIEWER)])
    app = create_app(StudioStore(kafka, settings), settings, RecipesSettings(), topics)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http
    delete_topics(kafka, [kafka.topic(FORMS)])


def _run(
    key: str, status: str, steps: dict[str, StepState], at: datetime, **extra: Any
) -> RecipeRun:
    return RecipeRun(
        recipe=NAME,
        run_key=key,
        status=status,  # type: ignore[arg-type]
        trigger=TriggerRef(event_id=key, topic=FORMS, partition=0, offset=3),
        steps=steps,
        started_at=at,
        updated_at=at,
        finished_at=at if status != "running" else None,
        **extra,
    )


def test_retry_keys_name_the_run_they_retry() -> None:
    assert retry_key("web-F-1") == "web-F-1~retry-1"
    assert retry_key("web-F-1~retry-1") == "web-F-1~retry-2"
    assert retry_of("web-F-1") is None
    assert retry_of("web-F-1~retry-1") == "web-F-1"
    assert retry_of("web-F-1~retry-2") == "web-F-1~retry-1"


def test_samples_are_the_latest_records_as_the_topic_holds_them(
    client: httpx.Client, kafka: KafkaSettings
) -> None:
    producer = RecordProducer(kafka)
    # Record times one second apart: produced in the same millisecond, two records on different
    # partitions tie, and their order is then the partitions' (CI once saw F-3 before raw).
    start_ms = int(time.time() * 1000) - 60_000
    try:
        sealed = {"id": 7, "email": {"enc": "v1:kid:AAAA"}}  # as an encrypted mode leaves it
        for n, (kind, data) in enumerate(
            [("com.acme.form.submitted", {"formId": f"F-{n}"}) for n in range(3)]
            + [("com.acme.form.deleted", sealed)]
        ):
            event = new_event(
                type=kind, source="acme://forms", id=f"form-{n}", subject=f"s{n}", data=data
            )
            headers, value = encode_binary(event)
            # Both partitions, in this order in time: newest first is by record time.
            producer.send(
                FORMS,
                [(f"F-{n}".encode(), [(k, v) for k, v in headers], value)],
                partition=n % 2,
                timestamp_ms=start_ms + n * 1000,
            )
        producer.send(
            FORMS, [(b"raw", [], b"not json at all")], partition=0, timestamp_ms=start_ms + 4000
        )
    finally:
        producer.close()

    # A read-only token reads samples; newest first, across partitions.
    answer = client.get(
        "/studio/api/samples", params={"topic": FORMS, "limit": 3}, headers=_as(VIEWER)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["topic"] == FORMS
    assert [s["key"] for s in body["samples"]] == ["raw", "F-3", "F-2"]
    raw, deleted, newest_form = body["samples"]
    assert raw["data"] == "not json at all" and raw["type"] is None
    assert deleted["data"] == sealed  # sealed fields stay sealed: never decrypted
    assert deleted["type"] == "com.acme.form.deleted" and deleted["subject"] == "s3"
    assert newest_form == {
        "id": "form-2",
        "type": "com.acme.form.submitted",
        "source": "acme://forms",
        "subject": "s2",
        "time": newest_form["time"],
        "key": "F-2",
        "partition": 0,
        "offset": 1,
        "data": {"formId": "F-2"},
    }

    # By type; the default limit is 5.
    typed = client.get(
        "/studio/api/samples",
        params={"topic": FORMS, "type": "com.acme.form.submitted"},
        headers=_as(VIEWER),
    ).json()["samples"]
    assert [s["id"] for s in typed] == ["form-2", "form-1", "form-0"]

    # A topic that does not exist: 404 naming it; a bad limit: 422; no token: 401.
    missing = client.get(
        "/studio/api/samples", params={"topic": "web.nothing-here"}, headers=_as(VIEWER)
    )
    assert missing.status_code == 404 and missing.json()["error"] == "unknown-topic"
    assert "web.nothing-here" in missing.json()["message"]
    too_many = client.get(
        "/studio/api/samples", params={"topic": FORMS, "limit": 21}, headers=_as(VIEWER)
    )
    assert too_many.status_code == 422
    assert client.get("/studio/api/samples", params={"topic": FORMS}).status_code == 401

    # An empty topic: no samples.
    empty = client.get(
        "/studio/api/samples", params={"topic": "dastra.tasks.v1"}, headers=_as(VIEWER)
    )
    assert empty.status_code == 200 and empty.json() == {"topic": "dastra.tasks.v1", "samples": []}


def test_runs_history_send_once_and_retry_requests(
    client: httpx.Client, kafka: KafkaSettings
) -> None:
    saved = client.put(
        f"/studio/api/recipes/{NAME}",
        json={"recipe": {**recipe_document(), "enabled": False}},
        headers=_as(EDITOR),
    )
    assert saved.status_code == 201, saved.text

    # Runs as a worker writes them: a run's later record wins; steps recorded out of order.
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    done = StepState(status="succeeded", command_ids=["c-request"], completed_at=t0)
    error = RunError(
        kind="step-failed",
        message="create-task command failed: dastra-rejected: 400 Bad Request",
        step="check",
        command_id="c-check",
    )
    broken = StepState(status="failed", command_ids=["c-check"], error=error, completed_at=t0)
    runs = [
        _run("web-F-1", "running", {"request": done}, t0),
        _run("web-F-1", "failed", {"check": broken, "request": done}, t0, error=error),
        _run("web-F-2", "succeeded", {"request": done}, t0 + timedelta(minutes=1)),
    ]
    producer = RecordProducer(kafka)
    try:
        producer.send(
            RECIPE_RUNS, [(run.key.encode(), [], run.model_dump_json().encode()) for run in runs]
        )
    finally:
        producer.close()

    listed = client.get("/studio/api/runs", headers=_as(VIEWER))
    assert listed.status_code == 200, listed.text
    found = listed.json()["runs"]
    assert [(r["run_key"], r["status"]) for r in found] == [
        ("web-F-2", "succeeded"),
        ("web-F-1", "failed"),
    ]
    failed = found[1]
    assert [s["id"] for s in failed["steps"]] == ["request", "check"]  # the recipe's order
    assert failed["steps"][1] == {
        "id": "check",
        "status": "failed",
        "command_ids": ["c-check"],
        "error": error.model_dump(mode="json"),
    }
    assert failed["error"]["message"].endswith("400 Bad Request")
    assert failed["trigger"]["topic"] == FORMS and failed["retry_of"] is None
    only_failed = client.get(
        "/studio/api/runs", params={"status": "failed"}, headers=_as(VIEWER)
    ).json()["runs"]
    assert [r["run_key"] for r in only_failed] == ["web-F-1"]
    assert client.get(
        "/studio/api/runs", params={"recipe": "another"}, headers=_as(VIEWER)
    ).json() == {"runs": []}

    # A read-only token may not send once nor retry.
    sample = {"event": {"data": {"formId": "F-9", "consent": True}, "key": "F-9"}}
    for path, body in (
        (f"/studio/api/recipes/{NAME}/send-once", sample),
        ("/studio/api/runs/retry", {"recipe": NAME, "run_key": "web-F-1"}),
    ):
        refused = client.post(path, json=body, headers=_as(VIEWER))
        assert refused.status_code == 403 and refused.json()["error"] == "read-only-token"

    # Send once: the saved (disabled) recipe's current version, as one request record.
    sent = client.post(f"/studio/api/recipes/{NAME}/send-once", json=sample, headers=_as(EDITOR))
    assert sent.status_code == 202, sent.text
    answer = sent.json()
    assert answer["recipe"] == NAME and answer["version"] == 1
    assert answer["run_key"] == answer["request_id"]
    unknown = client.post("/studio/api/recipes/nope/send-once", json=sample, headers=_as(EDITOR))
    assert unknown.status_code == 404
    shipped = client.post(
        "/studio/api/recipes/new-request-dpo-task/send-once", json=sample, headers=_as(EDITOR)
    )
    assert shipped.status_code == 409 and shipped.json()["error"] == "read-only-recipe"

    # Retry: only a failed run, and only once.
    for key, status, error_name in (
        ("web-F-404", 404, "unknown-run"),
        ("web-F-2", 409, "not-failed"),
    ):
        answered = client.post(
            "/studio/api/runs/retry", json={"recipe": NAME, "run_key": key}, headers=_as(EDITOR)
        )
        assert answered.status_code == status and answered.json()["error"] == error_name
    again = client.post(
        "/studio/api/runs/retry", json={"recipe": NAME, "run_key": "web-F-1"}, headers=_as(EDITOR)
    )
    assert again.status_code == 202, again.text
    assert again.json() == {"recipe": NAME, "run_key": "web-F-1~retry-1", "retry_of": "web-F-1"}

    records = list(read_to_end(kafka, kafka.topic(RECIPE_REQUESTS), timeout=30))
    assert [r.key for r in records] == [NAME.encode(), NAME.encode()]
    first, second = (RecipeRequest.model_validate(json.loads(r.value or b"")) for r in records)
    headers = header_dict(records[0].headers)
    assert headers["ce_id"].decode() == answer["request_id"]
    assert headers["ce_type"] == b"eu.dastra.studio.recipe.send_once"
    assert first.kind == "send-once" and first.version == 1 and first.event is not None
    assert first.event.data == {"formId": "F-9", "consent": True}
    assert second.kind == "retry" and second.retry_of == "web-F-1"
    assert second.run_key == "web-F-1~retry-1"
    assert list(second.steps) == ["request"]  # the failed step runs again
    assert second.trigger == runs[1].trigger

    # Once the retry's run exists, the failed run is not retried a second time.
    producer = RecordProducer(kafka)
    try:
        retried = _run("web-F-1~retry-1", "running", {"request": done}, t0 + timedelta(hours=1))
        producer.send(RECIPE_RUNS, [(retried.key.encode(), [], retried.model_dump_json().encode())])
    finally:
        producer.close()
    twice = client.post(
        "/studio/api/runs/retry", json={"recipe": NAME, "run_key": "web-F-1"}, headers=_as(EDITOR)
    )
    assert twice.status_code == 409 and twice.json()["error"] == "already-retried"
    newest = client.get("/studio/api/runs", params={"limit": 1}, headers=_as(VIEWER)).json()
    assert newest["runs"][0]["run_key"] == "web-F-1~retry-1"
    assert newest["runs"][0]["retry_of"] == "web-F-1"


def test_a_runs_commands_show_their_result_ids_and_a_dead_letters_reason(
    client: httpx.Client, kafka: KafkaSettings
) -> None:
    """`GET /studio/api/runs/commands`: what each command of a run did, read from
    dastra.command-results.v1 and dastra.dead-letter.v1: the created item's id, a failure's
    reason and its dead letter's; ids, statuses and reasons only, never the objects' content."""
    now = datetime.now(UTC)
    command_topic = kafka.topic("dastra.commands.create-task.v1")
    created = CommandResult(
        command_id="c-request",
        action="create-rights-request",
        status="succeeded",
        result={"id": 4242, "email": "jeanne.dupont@example.org", "title": "Web form F-1"},
        attempts=1,
        received_at=now,
        completed_at=now,
        source_topic=kafka.topic("dastra.commands.create-rights-request.v1"),
        source_partition=0,
        source_offset=5,
    )
    refused = CommandResult(
        command_id="c-check",
        action="create-task",
        status="failed",
        error=CommandError(
            kind="dastra-rejected",
            message="Dastra refused the command: 400",
            status=400,
            field_errors={"label": ["too long"]},
        ),
        attempts=1,
        received_at=now,
        completed_at=now,
        source_topic=command_topic,
        source_partition=2,
        source_offset=17,
    )
    # Another command's dead letter (same offset, another partition) must not be taken for it.
    letters = [
        dead_letter(
            OriginalRecord(command_topic, partition, 17, b"c", b'{"label": "x"}', []),
            kind="dastra-rejected",
            message=message,
            component="agents",
            attempts=3,
        )
        for partition, message in ((1, "another command"), (2, "400 Bad Request: label too long"))
    ]
    check = StepState(
        status="failed",
        command_ids=["c-check"],
        error=RunError(kind="step-failed", message="create-task failed", step="check"),
        completed_at=now,
    )
    run = _run(
        "web-F-5",
        "failed",
        {
            "request": StepState(status="succeeded", command_ids=["c-request"], completed_at=now),
            "check": check,
            "late": StepState(status="succeeded", command_ids=["c-none"], completed_at=now),
        },
        now,
    )
    producer = RecordProducer(kafka)
    try:
        producer.send(DEAD_LETTER, [(key, list(headers), value) for key, value, headers in letters])
        producer.send(
            COMMAND_RESULTS,
            [(r.command_id.encode(), [], r.model_dump_json().encode()) for r in (created, refused)],
        )
        producer.send(RECIPE_RUNS, [(run.key.encode(), [], run.model_dump_json().encode())])
    finally:
        producer.close()

    answer = client.get(
        "/studio/api/runs/commands",
        params={"recipe": NAME, "run_key": "web-F-5"},
        headers=_as(VIEWER),
    )
    assert answer.status_code == 200, answer.text
    assert "jeanne" not in answer.text and "Web form" not in answer.text
    request, failed, missing = answer.json()["commands"]
    assert request["step"] == "request" and request["status"] == "succeeded"
    assert request["result_ids"] == [4242] and request["dead_letter"] is None
    assert failed["step"] == "check" and failed["status"] == "failed"
    assert failed["error"] == {
        "kind": "dastra-rejected",
        "message": "Dastra refused the command: 400",
        "status": 400,
        "fields": ["label"],
    }
    assert failed["dead_letter"]["message"] == "400 Bad Request: label too long"
    assert failed["dead_letter"]["kind"] == "dastra-rejected"
    assert failed["dead_letter"]["attempts"] == 3
    assert missing == {"step": "late", "command_id": "c-none", "status": None}
    unknown = client.get(
        "/studio/api/runs/commands",
        params={"recipe": NAME, "run_key": "web-F-404"},
        headers=_as(VIEWER),
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown-run"
