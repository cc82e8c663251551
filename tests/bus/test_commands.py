"""The command models: what each action accepts, refuses, and sends to Dastra."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from bus.records.commands import (
    COMMAND_MODELS,
    CreateActor,
    FindOrCreateActor,
    actor_identity,
    actor_record_key,
    command_record_key,
    parse_command,
)
from bus.topics import ACTIONS
from consumers.actions import actor_lane_key
from consumers.link_actor_to_processing import processing_lane_key

PROCESSING = "6f0b5d3e-7a4b-4a8e-9a47-6a1c1e0e7b11"


def test_there_is_one_model_per_action() -> None:
    assert set(COMMAND_MODELS) == set(ACTIONS)


@pytest.mark.parametrize(
    ("action", "data", "body"),
    [
        (
            "create-task",
            {"label": "Answer", "objectType": "DataSubject", "objectId": 12, "priority": "High"},
            {"label": "Answer", "objectType": "DataSubject", "objectId": "12", "priority": "High"},
        ),
        (
            "create-task",
            {"label": "x", "description": "<p>y</p>"},
            {"label": "x", "descriptionHtml": "<p>y</p>"},
        ),
        ("create-actor", {"companyName": "Acme"}, {"companyName": "Acme", "actorType": "Morale"}),
        ("create-actor", {"givenName": "Ada"}, {"givenName": "Ada", "actorType": "Physical"}),
        (
            "create-rights-request",
            {"title": "Erase me", "purposes": ["Erasure"], "areaId": 3},
            {"title": "Erase me", "purposes": ["Erasure"], "areaId": 3, "locale": "en"},
        ),
        (
            "link-actor-to-processing",
            {"actorId": 4, "processingId": PROCESSING, "type": "DataController"},
            {"actorIds": [4], "dataProcessingId": PROCESSING, "type": "DataController"},
        ),
        ("search-actors", {"email": "a@b.eu"}, {"email": "a@b.eu", "limit": 10}),
        # The fields users map in Dastra's Zapier app: tags (a label, or {label, color, id})
        # become Dastra's TagDto with the type of what is created; custom fields by slug.
        (
            "create-rights-request",
            {
                "title": "t",
                "purposes": ["Access"],
                "areaId": 3,
                "workFlowStepId": 5,
                "operatorId": 2,
                "expiryTime": "2027-01-31T23:00:00Z",
                "tags": [" CRM ", {"label": "VIP", "color": "#eb5757", "id": 4}],
                "customFields": {"customer-no": "C-1", "score": 3.5, "opts": ["a"], "x": None},
            },
            {
                "title": "t",
                "purposes": ["Access"],
                "areaId": 3,
                "locale": "en",
                "workFlowStepId": 5,
                "operatorId": 2,
                "expiryTime": "2027-01-31T23:00:00Z",
                "tags": [
                    {"label": "CRM", "type": "DataSubject"},
                    {"label": "VIP", "color": "#eb5757", "id": 4, "type": "DataSubject"},
                ],
                "customFields": {"customer-no": "C-1", "score": 3.5, "opts": ["a"], "x": None},
            },
        ),
        (
            "create-task",
            {"label": "x", "tags": ["Audit"]},
            {"label": "x", "tags": [{"label": "Audit", "type": "Task"}]},
        ),
        (
            "create-actor",
            {"companyName": "Acme", "logoUrl": "https://acme.example/logo.png", "tags": ["SaaS"]},
            {
                "companyName": "Acme",
                "logoUrl": "https://acme.example/logo.png",
                "tags": [{"label": "SaaS", "type": "Actor"}],
                "actorType": "Morale",
            },
        ),
        (
            "find-or-create-actor",
            {"email": "a@b.eu", "familyName": "Lovelace", "workspaceId": 9},
            {"email": "a@b.eu", "familyName": "Lovelace", "actorType": "Physical"},
        ),
    ],
)
def test_valid_commands_become_dastra_bodies(
    action: str, data: dict[str, object], body: dict[str, object]
) -> None:
    assert parse_command(action, data).dastra_body() == body


@pytest.mark.parametrize(
    ("action", "data", "field"),
    [
        ("create-task", {}, "label"),
        ("create-task", {"label": "x" * 121}, "label"),
        ("create-task", {"label": "x", "lable": "typo"}, "lable"),
        ("create-task", {"label": "x", "priority": "Urgent"}, "priority"),
        ("create-task", {"label": "x", "objectType": "DataSubject"}, ""),
        ("create-actor", {"actorType": "Morale", "givenName": "x"}, ""),
        ("create-actor", {"companyName": "Acme", "email": "not-an-email"}, "email"),
        ("create-rights-request", {"title": "t", "purposes": []}, "purposes"),
        (
            "create-rights-request",
            {"title": "t", "purposes": ["Erasure"], "countryCode": "FRA"},
            "countryCode",
        ),
        (
            "link-actor-to-processing",
            {"actorIds": [1], "dataProcessingId": "nope"},
            "dataProcessingId",
        ),
        ("search-actors", {}, ""),
        ("find-or-create-actor", {"givenName": "Ada"}, ""),
        ("create-task", ["not", "an", "object"], ""),
        ("create-task", {"label": "x", "workspaceId": 0}, "workspaceId"),
        ("create-task", {"label": "x", "tags": [""]}, "tags.0.constrained-str"),
        (
            "create-task",
            {"label": "x", "tags": [{"label": "x", "type": "Task"}]},
            "tags.0.TagRef.type",
        ),
        ("create-actor", {"companyName": "A", "tags": ["t"] * 51}, "tags"),
        (
            "create-rights-request",
            {"title": "t", "purposes": ["Access"], "customFields": {"two words": 1}},
            "customFields.two words.[key]",
        ),
        (
            "create-rights-request",
            {"title": "t", "purposes": ["Access"], "customFields": {"nested": {"a": 1}}},
            "customFields.nested.constrained-str",
        ),
        (
            "create-rights-request",
            {"title": "t", "purposes": ["Access"], "customFields": {"long": "x" * 4001}},
            "customFields.long.constrained-str",
        ),
        (
            "create-rights-request",
            {"title": "t", "purposes": ["Access"], "operatorId": 0},
            "operatorId",
        ),
        (
            "create-rights-request",
            {"title": "t", "purposes": ["Access"], "expiryTime": "soon"},
            "expiryTime",
        ),
        ("create-actor", {"companyName": "A", "logoUrl": "x" * 2001}, "logoUrl"),
    ],
)
def test_invalid_commands_name_the_field(action: str, data: object, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_command(action, data)
    locations = {".".join(str(p) for p in error["loc"]) for error in caught.value.errors()}
    assert field in locations


def test_unknown_actions_are_refused() -> None:
    with pytest.raises(KeyError):
        parse_command("delete-everything", {})


def test_a_repr_never_shows_personal_data() -> None:
    actor = CreateActor.model_validate({"givenName": "Ada", "email": "ada@example.org"})
    assert "ada@example.org" not in repr(actor)
    assert "Ada" not in repr(actor)
    assert "email" in repr(actor)


def test_one_actor_has_one_identity_and_one_record_key_however_it_is_spelled() -> None:
    spellings = [
        FindOrCreateActor(email="DPO@Acme.EU", companyName="Acme"),
        FindOrCreateActor(email="  dpo@acme.eu ", companyName="Other name"),
        CreateActor(email="dpo@ACME.eu", givenName="Ada"),
    ]
    assert {actor_identity(c) for c in spellings} == {"email:dpo@acme.eu"}
    key = hashlib.sha256(b"email:dpo@acme.eu").hexdigest()
    assert {actor_record_key(c) for c in spellings} == {f"actor:{key}".encode()}
    # The agents' lane is the same identity, in its workspace.
    assert actor_lane_key(spellings[0], 7) == ["actor:7:email:dpo@acme.eu"]

    company = [
        CreateActor(companyName="  ACME   Holding "),
        CreateActor(companyName="acme holding"),
    ]
    assert {actor_identity(c) for c in company} == {"company:acme holding"}
    person = CreateActor(givenName=" Ada ", familyName="LOVELACE")
    assert actor_identity(person) == "names:ada/lovelace"
    assert actor_identity(CreateActor(familyName="Lovelace")) == "names:/lovelace"
    assert actor_record_key(parse_command("create-task", {"label": "x"})) is None
    assert actor_lane_key(parse_command("create-task", {"label": "x"}), 7) == []
    # Different actors, different keys; no e-mail or name in clear in a key.
    assert actor_record_key(company[0]) != actor_record_key(person)
    assert b"acme" not in (actor_record_key(spellings[0]) or b"").lower()


def test_producers_key_actor_commands_by_the_actor_and_the_others_by_their_id() -> None:
    data = {"email": "DPO@acme.eu", "companyName": "Acme"}
    by_actor = actor_record_key(FindOrCreateActor.model_validate(data))
    assert command_record_key("find-or-create-actor", data, "c-1") == by_actor
    assert command_record_key("create-actor", CreateActor.model_validate(data), "c-2") == by_actor
    assert command_record_key("create-task", {"label": "x"}, "c-3") == b"c-3"
    assert command_record_key("search-actors", {"email": "dpo@acme.eu"}, "c-4") == b"c-4"
    assert command_record_key("find-or-create-actor", {"unknown": 1}, "c-5") == b"c-5"


def test_link_commands_are_keyed_and_ordered_by_their_processing() -> None:
    spellings = [
        {"actorId": 4, "processingId": PROCESSING.upper()},
        {"actorIds": [9, 4], "dataProcessingId": PROCESSING, "type": "DataController"},
    ]
    keys = {command_record_key("link-actor-to-processing", data, "c-1") for data in spellings}
    assert keys == {f"processing:{PROCESSING}".encode()}
    command = parse_command("link-actor-to-processing", spellings[0])
    assert processing_lane_key(command, 7) == [f"processing:7:{PROCESSING}"]  # type: ignore[arg-type]
    assert command_record_key("link-actor-to-processing", {"actorId": 1}, "c-2") == b"c-2"
