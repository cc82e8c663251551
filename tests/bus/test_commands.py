"""The command models: what each action accepts, refuses, and sends to Dastra."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bus.commands import COMMAND_MODELS, CreateActor, parse_command
from bus.topics import ACTIONS

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
