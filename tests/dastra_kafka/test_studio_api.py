"""The studio's API in process (FastAPI's httpx.Client) on the real broker: tokens and roles,
saves as versions on dastra.recipes.v1 with their audit records on dastra.recipe-changes.v1,
stale versions, the same checks as `recipes validate`, read-only shipped recipes, YAML export
and import (a template's copy with its own settings and message topic included), and a dry run
that sends nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from pydantic import SecretStr

from bus.records.studio_recipes import StudioRecipeVersion
from bus.settings import KafkaSettings
from bus.topics import ACTIONS, RECIPE_CHANGES, STUDIO_RECIPES, TopicCatalogue, command_topic
from consumers.recipes.language import load_recipes
from consumers.recipes.settings import RecipesSettings
from dastra_kafka.studio.app import create_app
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore
from tests.kafka_helpers import wait_for
from tests.producers.webhook_support import ServerThread

EDITOR = "editor-token-0123456789"
VIEWER = "viewer-token-0123456789"
NAME = "web-form-request"


def recipe_document(name: str = NAME, title: str = "Web form {{ data.formId }}") -> dict[str, Any]:
    return {
        "name": name,
        "description": "A web form submission becomes a rights request.",
        "enabled": True,
        "trigger": {"topic": "web.privacy-forms", "filter": "data.consent"},
        "steps": [
            {
                "id": "request",
                "command": "create-rights-request",
                "with": {
                    "title": title,
                    "purposes": ["Access"],
                    "email": "{{ data.email }}",
                    "refId": "web-{{ data.formId }}",
                    "channel": "Form",
                },
            },
            {
                "id": "check",
                "command": "create-task",
                "with": {
                    "label": "Check the identity for request #{{ steps.request.result.id }}",
                    "objectType": "DataSubject",
                    "objectId": "{{ steps.request.result.id }}",
                },
            },
        ],
    }


def broken_document() -> dict[str, Any]:
    document = recipe_document()
    document["steps"][0]["command"] = "create-rights-requests"  # a typo
    document["steps"][1]["with"]["label"] = "{{ steps.later.result.id }}"  # unknown step
    return document


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(kafka: KafkaSettings, topics: TopicCatalogue) -> Iterator[httpx.Client]:
    settings = StudioSettings(tokens=[SecretStr(EDITOR)], read_tokens=[SecretStr(VIEWER)])
    app = create_app(StudioStore(kafka, settings), settings, RecipesSettings(), topics)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def _end_offset(consumer: Consumer, tp: TopicPartition) -> int:
    """The end offset of a partition; a topic just created may not have its leader known to a
    new client yet, so ask until it answers."""
    marks: list[int] = []

    def answered() -> bool:
        try:
            marks.append(consumer.get_watermark_offsets(tp, timeout=5)[1])
        except KafkaException:
            return False
        return True

    wait_for(answered, 30, f"the end offset of {tp.topic}/{tp.partition}", every=0.2)
    return marks[-1]


def _records(kafka: KafkaSettings, topic: str) -> list[tuple[str, bytes | None]]:
    """Every record of a one-partition topic, read to its end."""
    consumer = Consumer(
        {**kafka.confluent_config(), "group.id": "unused", "enable.auto.commit": False}
    )
    try:
        tp = TopicPartition(kafka.topic(topic), 0)
        high = _end_offset(consumer, tp)
        consumer.assign([TopicPartition(tp.topic, 0, 0)])
        found: list[tuple[str, bytes | None]] = []
        while len(found) < high:
            message = consumer.poll(5)
            assert message is not None, f"{topic}: expected {high} records, read {len(found)}"
            assert message.error() is None
            found.append(((message.key() or b"").decode(), message.value()))
        return found
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_tokens_roles_versions_and_audit(client: httpx.Client, kafka: KafkaSettings) -> None:
    body = {"recipe": recipe_document(), "base_version": None}
    assert client.put(f"/studio/api/recipes/{NAME}", json=body).status_code == 401
    wrong = client.put(f"/studio/api/recipes/{NAME}", json=body, headers=_headers("nope"))
    assert wrong.status_code == 401
    refused = client.put(f"/studio/api/recipes/{NAME}", json=body, headers=_headers(VIEWER))
    assert refused.status_code == 403 and refused.json()["error"] == "read-only-token"

    saved = client.put(f"/studio/api/recipes/{NAME}", json=body, headers=_headers(EDITOR))
    assert saved.status_code == 201, saved.text
    assert saved.json()["version"] == 1

    # The read-only token reads; the list has shipped recipes (read-only) and this one.
    listed = client.get("/studio/api/recipes", headers=_headers(VIEWER)).json()["recipes"]
    by_name = {entry["name"]: entry for entry in listed}
    assert by_name[NAME]["source"] == "studio" and by_name[NAME]["version"] == 1
    assert by_name[NAME]["enabled"] is True and by_name[NAME]["valid"] is True
    assert by_name["new-request-dpo-task"]["source"] == "shipped"
    assert by_name["new-request-dpo-task"]["read_only"] is True
    one = client.get(f"/studio/api/recipes/{NAME}", headers=_headers(VIEWER)).json()
    assert one["recipe"] == recipe_document() and one["problems"] == []
    assert one["saved_by"].startswith("tok_") and EDITOR not in json.dumps(one)

    # A second save on version 1 -> 2; a save still based on 1 is stale.
    changed = {"recipe": recipe_document(title="Form {{ data.formId }}"), "base_version": 1}
    second = client.put(f"/studio/api/recipes/{NAME}", json=changed, headers=_headers(EDITOR))
    assert second.status_code == 200 and second.json()["version"] == 2
    stale = client.put(f"/studio/api/recipes/{NAME}", json=changed, headers=_headers(EDITOR))
    assert stale.status_code == 409
    assert stale.json()["error"] == "stale-version" and stale.json()["current_version"] == 2
    new_again = client.put(f"/studio/api/recipes/{NAME}", json=body, headers=_headers(EDITOR))
    assert new_again.status_code == 409  # "new" while it exists: stale too

    disabled = client.post(
        f"/studio/api/recipes/{NAME}/disable", json={"base_version": 2}, headers=_headers(EDITOR)
    )
    assert disabled.status_code == 200 and disabled.json() == {
        "name": NAME,
        "version": 3,
        "change": "disabled",
        "enabled": False,
    }
    viewer_delete = client.delete(
        f"/studio/api/recipes/{NAME}?base_version=3", headers=_headers(VIEWER)
    )
    assert viewer_delete.status_code == 403
    deleted = client.delete(f"/studio/api/recipes/{NAME}?base_version=3", headers=_headers(EDITOR))
    assert deleted.status_code == 200
    gone = client.get(f"/studio/api/recipes/{NAME}", headers=_headers(VIEWER))
    assert gone.status_code == 404

    # The compacted topic: three versions then a tombstone; the audit: four changes, in order.
    state = _records(kafka, STUDIO_RECIPES)
    assert [key for key, _ in state] == [NAME] * 4 and state[-1][1] is None
    audit = [
        StudioRecipeVersion.model_validate_json(v or b"")
        for _, v in _records(kafka, RECIPE_CHANGES)
    ]
    assert [(a.version, a.change) for a in audit] == [
        (1, "saved"),
        (2, "saved"),
        (3, "disabled"),
        (4, "deleted"),
    ]
    assert audit[2].recipe is not None and audit[2].recipe["enabled"] is False
    assert len({a.saved_by for a in audit}) == 1 and audit[0].saved_by.startswith("tok_")


@pytest.mark.timeout(120)
def test_validation_is_recipes_validate_with_field_paths(
    client: httpx.Client, kafka: KafkaSettings, topics: TopicCatalogue, tmp_path: Path
) -> None:
    # The same document as a file, through `recipes validate`'s loader.
    file = tmp_path / f"{NAME}.yaml"
    file.write_text(yaml.safe_dump(broken_document()))
    expected = [
        {"field": p.field, "message": p.message}
        for p in load_recipes(RecipesSettings(), topics, [file]).problems
    ]
    assert expected, "the broken document must have problems"
    assert {p["field"] for p in expected} >= {"steps[0].command", "steps[1].with.label"}

    checked = client.post(
        "/studio/api/validate", json={"recipe": broken_document()}, headers=_headers(VIEWER)
    )
    assert checked.status_code == 200
    assert checked.json() == {"valid": False, "problems": expected}
    good = client.post(
        "/studio/api/validate", json={"recipe": recipe_document()}, headers=_headers(VIEWER)
    )
    assert good.json() == {"valid": True, "problems": []}

    refused = client.put(
        f"/studio/api/recipes/{NAME}",
        json={"recipe": broken_document()},
        headers=_headers(EDITOR),
    )
    assert refused.status_code == 422
    assert refused.json()["error"] == "invalid-recipe" and refused.json()["problems"] == expected

    # A shipped recipe's name is refused at save (read-only source), and a malformed body is a
    # 422 naming the field.
    shipped = recipe_document(name="new-request-dpo-task")
    taken = client.put(
        "/studio/api/recipes/new-request-dpo-task",
        json={"recipe": shipped},
        headers=_headers(EDITOR),
    )
    assert taken.status_code == 409 and taken.json()["error"] == "read-only-recipe"
    malformed = client.put(
        f"/studio/api/recipes/{NAME}", json={"recipe": "x"}, headers=_headers(EDITOR)
    )
    assert malformed.status_code == 422 and malformed.json()["problems"][0]["field"] == "recipe"
    # Nothing was written by any refused save.
    assert _records(kafka, STUDIO_RECIPES) == [] and _records(kafka, RECIPE_CHANGES) == []


@pytest.mark.timeout(120)
def test_yaml_export_then_import_is_identical(client: httpx.Client, kafka: KafkaSettings) -> None:
    saved = client.put(
        f"/studio/api/recipes/{NAME}",
        json={"recipe": recipe_document()},
        headers=_headers(EDITOR),
    )
    assert saved.status_code == 201
    exported = client.get(f"/studio/api/recipes/{NAME}/export", headers=_headers(VIEWER))
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(exported.text) == recipe_document()

    imported = client.post(
        "/studio/api/import?base_version=1",
        content=exported.text.encode(),
        headers={**_headers(EDITOR), "Content-Type": "application/yaml"},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["version"] == 2 and imported.json()["change"] == "imported"
    again = client.get(f"/studio/api/recipes/{NAME}/export", headers=_headers(VIEWER))
    assert again.text == exported.text
    one = client.get(f"/studio/api/recipes/{NAME}", headers=_headers(VIEWER)).json()
    assert one["recipe"] == recipe_document() and one["version"] == 2

    # A shipped recipe exports as its file holds it; importing it under its own name is refused.
    shipped = client.get(
        "/studio/api/recipes/new-request-dpo-task/export", headers=_headers(VIEWER)
    )
    assert shipped.status_code == 200 and "new-request-dpo-task" in shipped.text
    refused = client.post(
        "/studio/api/import", content=shipped.text.encode(), headers=_headers(EDITOR)
    )
    assert refused.status_code == 409
    bad_yaml = client.post(
        "/studio/api/import", content=b"name: [unclosed", headers=_headers(EDITOR)
    )
    assert bad_yaml.status_code == 422 and bad_yaml.json()["error"] == "invalid-yaml"


@pytest.mark.timeout(120)
def test_a_templates_copy_with_its_own_settings_and_topic_round_trips(
    client: httpx.Client,
) -> None:
    """A copy of request-closed-to-crm with a CRM topic of its own (`settings:`) and one more
    message field: saved, exported and read back as written; its test renders the message on
    the recipe's topic with every field; a wrong setting is refused on its field. The erasure
    template's copy makes one task per system of its own list."""
    shipped = client.get(
        "/studio/api/recipes/request-closed-to-crm", headers=_headers(VIEWER)
    ).json()["recipe"]
    copy = {**shipped, "name": "crm-copy", "settings": {"crm_topic": "acme.crm-v2"}}
    copy["steps"][0]["publish"]["data"]["source"] = "studio"
    saved = client.put(
        "/studio/api/recipes/crm-copy", json={"recipe": copy}, headers=_headers(EDITOR)
    )
    assert saved.status_code == 201, saved.text
    exported = client.get("/studio/api/recipes/crm-copy/export", headers=_headers(VIEWER))
    assert yaml.safe_load(exported.text) == copy
    event = {"data": shipped["example"]["data"], "type": "eu.dastra.rights_request.updated"}
    dry = client.post(
        "/studio/api/dry-run", json={"recipe": copy, "event": event}, headers=_headers(VIEWER)
    ).json()
    [message] = dry["messages"]
    assert message["topic"] == "acme.crm-v2" and message["key"] == "crm-88412"
    assert message["data"] == {
        "requestId": 4521,
        "refId": "crm-88412",
        "workspaceId": 101,
        "state": "Closed",
        "closedReason": "Accepted",
        "dateClosed": "2026-03-20T16:02:11.480Z",
        "purposes": ["Access"],
        "source": "studio",
    }
    wrong = {**copy, "settings": {"crm_topic": "acme crm", "dpo_user_id": 0}}
    checked = client.post("/studio/api/validate", json={"recipe": wrong}, headers=_headers(VIEWER))
    problems = {p["field"]: p["message"] for p in checked.json()["problems"]}
    assert set(problems) == {"settings.dpo_user_id", "steps[0].publish.topic"}, problems
    assert "'acme crm' is not a valid topic name" in problems["steps[0].publish.topic"]

    erasure = client.get(
        "/studio/api/recipes/erasure-task-per-system", headers=_headers(VIEWER)
    ).json()["recipe"]
    erasure = {
        **erasure,
        "name": "erasure-copy",
        "settings": {"erasure_systems": ["Payroll", "Archive"]},
    }
    dry = client.post(
        "/studio/api/dry-run",
        json={"recipe": erasure, "event": {"data": erasure["example"]["data"]}},
        headers=_headers(VIEWER),
    ).json()
    assert [c["data"]["additionalDatas"]["erasureSystem"] for c in dry["commands"]] == [
        "Payroll",
        "Archive",
    ]


@pytest.mark.timeout(120)
def test_dry_run_renders_the_commands_and_sends_nothing(
    client: httpx.Client, kafka: KafkaSettings
) -> None:
    sample = {
        "data": {"formId": "F-1", "consent": True, "email": "ada@example.eu"},
        "results": {"request": {"id": 4521}},
    }
    answer = client.post(
        "/studio/api/dry-run",
        json={"recipe": recipe_document(), "event": sample},
        headers=_headers(VIEWER),
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["matches"] is True and body["problems"] == [] and body["messages"] == []
    first, second = body["commands"]
    assert first["action"] == "create-rights-request"
    assert first["topic"] == "dastra.commands.create-rights-request.v1"
    assert first["data"]["title"] == "Web form F-1" and first["data"]["refId"] == "web-F-1"
    assert first["command_id"].startswith(f"recipe:{NAME}:")
    assert second["action"] == "create-task"
    assert second["data"]["label"] == "Check the identity for request #4521"
    assert second["data"]["objectId"] == "4521"  # the command model's type

    # A sample that fails a command's model is shown as problems, not sent.
    invalid = client.post(
        "/studio/api/dry-run",
        json={
            "recipe": recipe_document(title="{{ data.title }}"),
            "event": {
                "data": {"formId": "F-2", "consent": True, "title": ""},
                "results": {"request": {"id": 4522}},
            },
        },
        headers=_headers(VIEWER),
    )
    assert invalid.status_code == 200
    assert [p["field"] for p in invalid.json()["problems"]] == ["steps[0].with.title"]
    skipped = client.post(
        "/studio/api/dry-run",
        json={"recipe": recipe_document(), "event": {"data": {"consent": False}}},
        headers=_headers(VIEWER),
    )
    assert skipped.json()["matches"] is False and skipped.json()["commands"] == []

    # Nothing reached any command topic.
    consumer = Consumer({**kafka.confluent_config(), "group.id": "unused"})
    try:
        for action in ACTIONS:
            topic = kafka.topic(command_topic(action))
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            for partition in partitions:
                high = _end_offset(consumer, TopicPartition(topic, partition))
                assert high == 0, f"{topic}/{partition} has {high} records"
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_the_builders_catalogue_offers_what_the_contracts_have(client: httpx.Client) -> None:
    assert client.get("/studio/api/catalogue").status_code == 401
    reader = client.get("/studio/api/catalogue", headers=_headers(VIEWER)).json()
    assert reader["me"]["role"] == "reader" and VIEWER not in json.dumps(reader)
    editor = client.get("/studio/api/catalogue", headers=_headers(EDITOR)).json()
    assert editor["me"]["role"] == "editor"
    triggers = {topic["name"]: topic for topic in editor["trigger_topics"]}
    requests = triggers["dastra.rights-requests.v1"]
    assert requests["event_types"] == [
        "eu.dastra.rights_request.created",
        "eu.dastra.rights_request.updated",
    ]
    paths = {field["path"] for field in requests["fields"]}
    assert {"data.id", "data.email", "data.expiryTime", "data.area.label"} <= paths
    actions = {action["name"]: action for action in editor["actions"]}
    assert set(actions) == set(ACTIONS)
    schema = actions["create-rights-request"]["schema"]
    assert set(schema["required"]) == {"title", "purposes"}
    assert "Access" in json.dumps(schema["properties"]["purposes"])
    results = {field["path"] for field in actions["create-rights-request"]["result_fields"]}
    assert "result.id" in results
    searched = {field["path"] for field in actions["search-actors"]["result_fields"]}
    assert "result[0].email" in searched  # a search gives a list
    assert "event.key" in editor["event_fields"]
    assert "settings.dpo_user_id" in editor["settings"]
    # The settings a recipe may set itself: a control of its kind and RECIPES_*'s value.
    own = {setting["name"]: setting for setting in editor["recipe_settings"]}
    assert (own["crm_topic"]["control"], own["crm_topic"]["default"]) == (
        "text",
        "crm.dastra-updates",
    )
    assert own["erasure_systems"]["control"] == "list"
    assert own["erasure_systems"]["default"] == RecipesSettings().erasure_systems
    assert (own["dpo_user_id"]["control"], own["dpo_user_id"]["nullable"]) == ("number", True)
    assert own["vars"]["control"] == "object"
    # Every field path the picker offers for a catalogue topic is one its contract declares.
    contract = json.loads((Path("schemas") / "rights-request.schema.json").read_text())
    assert {path.split(".")[1].split("[")[0] for path in paths} <= set(contract["properties"])


@pytest.mark.timeout(120)
def test_the_page_and_a_drafts_yaml_are_served(client: httpx.Client) -> None:
    page = client.get("/studio/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/studio/assets/studio.js">' in page.text
    script = client.get("/studio/assets/studio.js")
    assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
    assert client.get("/studio/assets/studio.css").status_code == 200
    assert client.get("/studio/assets/..%2Fapp.py").status_code == 404
    assert client.get("/studio/assets/app.py").status_code == 404
    draft = recipe_document()
    text = client.post("/studio/api/yaml", json={"recipe": draft}, headers=_headers(VIEWER))
    assert text.status_code == 200 and text.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(text.text) == draft
