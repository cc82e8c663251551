"""Studio recipes in a real `dastra-kafka worker` (RECIPES_STUDIO=true), with the studio's API
in process, the session broker and the sandbox: a recipe saved in the studio is picked up
without a restart and runs on a real event; a bad version forced onto dastra.recipes.v1 by a
foreign producer is refused (a metric) and never replaces the good one; a new good version does
replace it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from bus.records.studio_recipes import StudioRecipeVersion
from bus.settings import KafkaSettings
from bus.topics import STUDIO_RECIPES, TopicCatalogue
from consumers.recipes.settings import RecipesSettings
from dastra.sandbox import SandboxAdmin, SandboxServer
from dastra_kafka.studio.app import create_app
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore
from tests.consumers.agents_support import RecordProducer, WorkerProcess
from tests.consumers.recipes.studio_support import FORMS, studio_kafka, studio_worker
from tests.kafka_helpers import wait_for
from tests.producers.webhook_support import ServerThread

EDITOR = "studio-editor-token-42"
NAME = "web-form-request"
PICKUP_S = 30.0  # a saved version runs within this (seconds, not a restart)


def _document(title: str) -> dict[str, Any]:
    return {
        "name": NAME,
        "description": "A web form submission becomes a rights request, then a task.",
        "enabled": True,
        "trigger": {"topic": FORMS, "filter": "data.consent"},
        "steps": [
            {
                "id": "request",
                "command": "create-rights-request",
                "with": {
                    "title": title,
                    "purposes": ["Access"],
                    "refId": "web-{{ data.formId }}",
                    "channel": "Form",
                },
            },
            {
                "id": "check",
                "command": "create-task",
                "with": {
                    "label": "Check the identity for {{ data.formId }}",
                    "objectType": "DataSubject",
                    "objectId": "{{ steps.request.result.id }}",
                },
            },
        ],
    }


@pytest.fixture
def skafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    with studio_kafka(kafka_bootstrap, catalogue, "studio") as kafka:
        yield kafka


@pytest.fixture
def studio(skafka: KafkaSettings, catalogue: TopicCatalogue) -> Iterator[httpx.Client]:
    settings = StudioSettings(tokens=[SecretStr(EDITOR)])
    app = create_app(StudioStore(skafka, settings), settings, RecipesSettings(), catalogue)
    with (
        ServerThread(app) as server,
        httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {EDITOR}"}
        ) as http,
    ):
        yield http


@pytest.fixture
def worker(
    skafka: KafkaSettings, sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    with studio_worker(skafka, sandbox, tmp_path_factory.mktemp("studio-worker")) as process:
        yield process


def _form(producer: RecordProducer, form_id: str) -> None:
    data = {"formId": form_id, "consent": True}
    producer.send(FORMS, [(form_id.encode(), [], json.dumps(data).encode())])


def _created(admin: SandboxAdmin, form_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The rights request and the task the recipe creates for a form, once both exist."""
    requests = [r for r in admin.objects("rightsRequests") if r.get("refId") == f"web-{form_id}"]
    if not requests:
        return None
    tasks = [t for t in admin.objects("tasks") if t.get("label", "").endswith(form_id)]
    return (requests[0], tasks[0]) if tasks else None


@pytest.mark.timeout(240)
def test_a_saved_recipe_runs_without_restart_and_a_bad_version_never_replaces_it(
    skafka: KafkaSettings,
    sandbox: SandboxServer,
    studio: httpx.Client,
    worker: WorkerProcess,
) -> None:
    admin = sandbox.admin
    producer = RecordProducer(skafka)
    try:
        # 1. Saved in the studio while the worker runs: picked up, then a real event runs it.
        saved = studio.put(
            f"/studio/api/recipes/{NAME}", json={"recipe": _document("Web form {{ data.formId }}")}
        )
        assert saved.status_code == 201, saved.text
        wait_for(
            lambda: worker.metric("dastra_studio_recipe_versions_applied_total", recipe=NAME) >= 1,
            PICKUP_S,
            "the worker to take version 1",
        )
        _form(producer, "F-1")
        found: dict[str, Any] = {}

        def created(form_id: str) -> bool:
            both = _created(admin, form_id)
            if both is not None:
                found[form_id] = both
            return both is not None

        wait_for(lambda: created("F-1"), 60, "the rights request and task of F-1", every=0.3)
        request, task = found["F-1"]
        assert request["title"] == "Web form F-1"
        assert str(task["objectId"]) == str(request["id"])

        # 2. A foreign producer forces a broken version 2 onto the topic: refused, counted, and
        # version 1 goes on running.
        broken = _document("Broken {{ data.formId }}")
        broken["steps"][0]["command"] = "create-rights-requests"
        forced = StudioRecipeVersion(
            name=NAME,
            version=2,
            change="saved",
            recipe=broken,
            saved_by="foreign-producer",
            saved_at=datetime.now(UTC),
        )
        producer.send(STUDIO_RECIPES, [(NAME.encode(), [], forced.model_dump_json().encode())])
        wait_for(
            lambda: (
                worker.metric(
                    "dastra_studio_recipe_versions_refused_total",
                    recipe=NAME,
                    reason="invalid-recipe",
                )
                == 1
            ),
            PICKUP_S,
            "the worker to refuse version 2",
        )
        _form(producer, "F-2")
        wait_for(lambda: created("F-2"), 60, "the rights request and task of F-2", every=0.3)
        assert found["F-2"][0]["title"] == "Web form F-2"  # version 1's title
        log = worker.log_file.read_text(errors="replace")
        assert "recipes.studio_refused" in log and "Broken" not in log

        # 3. A good version 3 (the studio sees 2 as the current one) replaces version 1.
        current = studio.get(f"/studio/api/recipes/{NAME}").json()
        assert current["version"] == 2 and current["valid"] is False
        assert current["problems"][0]["field"] == "steps[0].command"
        third = studio.put(
            f"/studio/api/recipes/{NAME}",
            json={"recipe": _document("Form v3 {{ data.formId }}"), "base_version": 2},
        )
        assert third.status_code == 200 and third.json()["version"] == 3
        wait_for(
            lambda: worker.metric("dastra_studio_recipe_versions_applied_total", recipe=NAME) >= 2,
            PICKUP_S,
            "the worker to take version 3",
        )
        _form(producer, "F-3")
        wait_for(lambda: created("F-3"), 60, "the rights request and task of F-3", every=0.3)
        assert found["F-3"][0]["title"] == "Form v3 F-3"

        # 4. Disabled in the studio: the next form creates nothing (the worker unsubscribes).
        off = studio.post(f"/studio/api/recipes/{NAME}/disable", json={"base_version": 3})
        assert off.status_code == 200
        wait_for(
            lambda: worker.metric("dastra_studio_recipes_enabled") == 0,
            PICKUP_S,
            "the worker to stop the recipe",
        )
    finally:
        producer.close()
