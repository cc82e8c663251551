"""The studio's send once and retry with a real `dastra-kafka worker` (RECIPES_STUDIO=true), the
studio's API in process, the session broker and the sandbox: a saved but disabled studio recipe
sent once creates its items exactly once and its run shows as succeeded; records on the request
topic that are not requests are dead-lettered with their bytes, and the request behind them
runs; a run whose second step Dastra refuses shows as failed with the step's error, and its
retry (the fault gone) runs the failed step again without creating the first step's item
twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bus.deadletter import read_dead_letter
from bus.envelope import encode_binary, new_event
from bus.reading import read_to_end
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER, RECIPE_REQUESTS, TopicCatalogue
from consumers.recipes.settings import RecipesSettings
from dastra.sandbox import SandboxAdmin, SandboxServer
from dastra_kafka.studio.app import create_app
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore
from tests.consumers.agents_support import RecordProducer, WorkerProcess
from tests.consumers.recipes.test_studio_worker import (  # noqa: F401 - fixtures
    EDITOR,
    NAME,
    PICKUP_S,
    _document,
    _form,
    skafka,
    worker,
)
from tests.kafka_helpers import wait_for
from tests.producers.webhook_support import ServerThread

VIEWER = "studio-viewer-token-42"
RUN_S = 90.0  # a run of two commands ends within this


@pytest.fixture
def studio(skafka: KafkaSettings, catalogue: TopicCatalogue) -> Iterator[httpx.Client]:  # noqa: F811
    settings = StudioSettings(tokens=[SecretStr(EDITOR)], read_tokens=[SecretStr(VIEWER)])
    app = create_app(StudioStore(skafka, settings), settings, RecipesSettings(), catalogue)
    with (
        ServerThread(app) as server,
        httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {EDITOR}"}
        ) as http,
    ):
        yield http


def _requests(admin: SandboxAdmin, form_id: str) -> list[dict[str, Any]]:
    return [r for r in admin.objects("rightsRequests") if r.get("refId") == f"web-{form_id}"]


def _tasks(admin: SandboxAdmin, form_id: str) -> list[dict[str, Any]]:
    return [t for t in admin.objects("tasks") if t.get("label", "").endswith(f" {form_id}")]


def _run_of(studio: httpx.Client, run_key: str) -> dict[str, Any] | None:
    runs = studio.get("/studio/api/runs", params={"recipe": NAME}).json()["runs"]
    return next((run for run in runs if run["run_key"] == run_key), None)


def _ended(studio: httpx.Client, run_key: str, found: dict[str, Any]) -> bool:
    run = _run_of(studio, run_key)
    if run is not None and run["status"] != "running":
        found[run_key] = run
        return True
    return False


@pytest.mark.timeout(300)
def test_send_once_and_a_retry_that_repeats_no_finished_step(
    skafka: KafkaSettings,  # noqa: F811
    sandbox: SandboxServer,
    studio: httpx.Client,
    worker: WorkerProcess,  # noqa: F811
) -> None:
    admin = sandbox.admin
    found: dict[str, Any] = {}

    # 1. Saved disabled: no trigger runs it, but "send once" does, once, for the sample.
    disabled = {**_document("Web form {{ data.formId }}"), "enabled": False}
    saved = studio.put(f"/studio/api/recipes/{NAME}", json={"recipe": disabled})
    assert saved.status_code == 201, saved.text
    wait_for(
        lambda: worker.metric("dastra_studio_recipe_versions_applied_total", recipe=NAME) >= 1,
        PICKUP_S,
        "the worker to take version 1",
    )
    # Two records on the request topic that are not requests (not JSON; a request without its
    # fields), ahead of the real one on the topic's one partition: each is dead-lettered with
    # its bytes and the reason, and the send-once behind them still runs.
    not_json = b"not json at all"
    headers, no_fields = encode_binary(
        new_event(
            type="eu.dastra.recipe.request",
            source="tests",
            id="bad-2",
            data={"recipe": NAME, "email": "jane@example.org"},
        )
    )
    assert no_fields is not None
    bad = RecordProducer(skafka)
    try:
        bad.send(RECIPE_REQUESTS, [(b"bad-1", [], not_json), (b"bad-2", list(headers), no_fields)])
    finally:
        bad.close()
    sample = {"event": {"data": {"formId": "S-1", "consent": True}, "key": "S-1"}}
    sent = studio.post(f"/studio/api/recipes/{NAME}/send-once", json=sample)
    assert sent.status_code == 202, sent.text
    run_key = sent.json()["run_key"]
    wait_for(lambda: _ended(studio, run_key, found), RUN_S, "the send-once run to end", every=0.3)
    run = found[run_key]
    assert run["status"] == "succeeded", run
    assert [(s["id"], s["status"]) for s in run["steps"]] == [
        ("request", "succeeded"),
        ("check", "succeeded"),
    ]
    assert run["trigger"]["topic"] == "dastra.recipe-requests.v1"
    requests, tasks = _requests(admin, "S-1"), _tasks(admin, "S-1")
    assert len(requests) == 1 and len(tasks) == 1
    assert requests[0]["title"] == "Web form S-1"
    assert str(tasks[0]["objectId"]) == str(requests[0]["id"])
    letters = {
        r.key: r
        for r in read_to_end(skafka, skafka.topic(DEAD_LETTER), timeout=30)
        if r.key in (b"bad-1", b"bad-2")
    }
    assert sorted(letters) == [b"bad-1", b"bad-2"], "a bad request was not dead-lettered"
    assert letters[b"bad-1"].value == not_json and letters[b"bad-2"].value == no_fields
    for letter in letters.values():
        info = read_dead_letter(letter.headers)
        assert info.component == "recipes" and info.kind == "invalid-request", info
        assert info.topic == skafka.topic(RECIPE_REQUESTS)
        assert info.message.startswith("not a recipe request"), info.message
        assert "jane@example.org" not in info.message  # fields are named, never their values
    assert "fields" in read_dead_letter(letters[b"bad-2"].headers).message  # names them

    # 2. Enabled; Dastra refuses every new task: a real form's run fails at its second step.
    enabled = studio.post(f"/studio/api/recipes/{NAME}/enable", json={"base_version": 1})
    assert enabled.status_code == 200, enabled.text
    wait_for(
        lambda: worker.metric("dastra_studio_recipes_enabled") == 1,
        PICKUP_S,
        "the worker to run the enabled recipe",
    )
    admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=400, body={"message": "no"})
    producer = RecordProducer(skafka)
    try:
        _form(producer, "F-7")
    finally:
        producer.close()

    def failed_run() -> bool:
        runs = studio.get("/studio/api/runs", params={"status": "failed"}).json()["runs"]
        if runs:
            found["failed"] = runs[0]
        return bool(runs)

    wait_for(failed_run, RUN_S, "the form's run to fail", every=0.3)
    failed = found["failed"]
    request_step, check_step = failed["steps"]
    assert (request_step["id"], request_step["status"]) == ("request", "succeeded")
    assert (check_step["id"], check_step["status"]) == ("check", "failed")
    assert check_step["error"]["kind"] == "step-failed"
    assert check_step["error"]["command_id"] == check_step["command_ids"][0]
    assert failed["error"] == check_step["error"]
    assert len(_requests(admin, "F-7")) == 1 and _tasks(admin, "F-7") == []

    # 3. The fault gone, the retry reads the first step back and runs the second again.
    admin.clear_faults()
    retried = studio.post(
        "/studio/api/runs/retry", json={"recipe": NAME, "run_key": failed["run_key"]}
    )
    assert retried.status_code == 202, retried.text
    new_key = retried.json()["run_key"]
    assert retried.json()["retry_of"] == failed["run_key"]
    wait_for(lambda: _ended(studio, new_key, found), RUN_S, "the retry to end", every=0.3)
    retry = found[new_key]
    assert retry["status"] == "succeeded", retry
    assert retry["retry_of"] == failed["run_key"]
    again_request, again_check = retry["steps"]
    assert again_request["command_ids"] == request_step["command_ids"]  # read back, not resent
    assert again_check["status"] == "succeeded"
    assert again_check["command_ids"] != check_step["command_ids"]  # a new command
    requests, tasks = _requests(admin, "F-7"), _tasks(admin, "F-7")
    assert len(requests) == 1, "the retry created the first step's rights request again"
    assert len(tasks) == 1 and str(tasks[0]["objectId"]) == str(requests[0]["id"])
    assert len(_requests(admin, "S-1")) == 1 and len(_tasks(admin, "S-1")) == 1

    # The failed run stays failed in the history, and is not retried a second time.
    assert _run_of(studio, failed["run_key"])["status"] == "failed"  # type: ignore[index]
    twice = studio.post(
        "/studio/api/runs/retry", json={"recipe": NAME, "run_key": failed["run_key"]}
    )
    assert twice.status_code == 409 and twice.json()["error"] == "already-retried"
    log = worker.log_file.read_text(errors="replace")
    assert "recipes.studio_request" in log and "S-1" not in log  # no sample data in logs
    assert "recipes.dead_lettered" in log and "jane@example.org" not in log
