"""Compatibility by role: topics.yaml states each topic's mode, it agrees with who reads the topic,
and `breaking_changes` judges each schema by the modes of the topics that carry it."""

from __future__ import annotations

import json

import pytest
from pydantic import create_model

from bus.privacy import private_model
from bus.records.commands import COMMAND_MODELS
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    POLLER_STATE,
    TASKS,
    TopicCatalogue,
    command_topic,
)
from dastra_kafka.contracts.compat import incompatibilities
from dastra_kafka.contracts.registry import (
    CONTRACTS,
    TOPIC_CONTRACTS,
    Contract,
    Role,
    TopicContract,
    derived_compatibility,
)
from dastra_kafka.contracts.schemagen import (
    breaking_changes,
    committed_files,
    generate,
    schema_compatibility,
    schema_path,
)
from tests.conftest import PROJECT_ROOT


def test_topics_yaml_states_the_compatibility_the_roles_need(catalogue: TopicCatalogue) -> None:
    stated = {spec.name: spec.compatibility for spec in catalogue}
    derived = {name: derived_compatibility(TOPIC_CONTRACTS[name]) for name in stated}
    assert stated == derived
    # The ones the issue names, spelled out.
    assert stated[TASKS] == "FULL"  # hooks and recipes read events, and so do other teams
    assert stated[COMMAND_RESULTS] == "FULL"
    assert stated[DEAD_LETTER] == "FORWARD"
    assert stated[command_topic("create-task")] == "BACKWARD"
    assert stated[POLLER_STATE] == "BACKWARD"


def _contract(receivers: tuple[Role, ...]) -> TopicContract:
    return TopicContract("t", "M", "s", "none", (Role.POLLER,), receivers, ())


def test_the_derivation_by_readers() -> None:
    assert derived_compatibility(_contract((Role.AGENTS,))) == "BACKWARD"
    assert derived_compatibility(_contract((Role.ANY_CONSUMER,))) == "FORWARD"
    assert derived_compatibility(_contract((Role.OPERATORS,))) == "FORWARD"
    assert derived_compatibility(_contract((Role.HOOKS, Role.ANY_CONSUMER))) == "FULL"


def test_a_schema_shared_by_topics_takes_their_modes_together(catalogue: TopicCatalogue) -> None:
    modes = schema_compatibility(catalogue)
    assert modes[schema_path("command-key")] == "BACKWARD"
    assert modes[schema_path("entity-key")] == "FULL"
    assert modes[schema_path("task")] == "FULL"
    assert modes[schema_path("original-key")] == "FORWARD"
    forward_only = catalogue.topics[0].model_copy(update={"compatibility": "FORWARD"})
    backward_only = catalogue.topics[0].model_copy(update={"compatibility": "BACKWARD"})
    both = catalogue.model_copy(update={"topics": (forward_only, backward_only)})
    assert set(schema_compatibility(both).values()) == {"FULL"}


def _breaking(catalogue: TopicCatalogue, name: str, model: object) -> dict[str, list[str]]:
    contracts = dict(CONTRACTS)
    original = contracts[name]
    contracts[name] = Contract(
        original.name, model, original.title, original.description, lenient=original.lenient
    )
    found = breaking_changes(
        committed_files(PROJECT_ROOT),
        generate(catalogue, contracts),
        schema_compatibility(catalogue),
    )
    return {path: [f"{p.path} {p.kind}" for p in problems] for path, problems in found.items()}


def test_an_event_id_made_nullable_breaks_its_readers(catalogue: TopicCatalogue) -> None:
    task = CONTRACTS["task"].type
    changed = create_model("Task", __base__=task, id=(int | None, ...))
    assert _breaking(catalogue, "task", changed) == {schema_path("task"): ["$.id type-widened"]}


def test_a_command_may_gain_an_optional_field(catalogue: TopicCatalogue) -> None:
    command = COMMAND_MODELS["create-task"]
    changed = create_model(command.__name__, __base__=command, riskScore=(int | None, None))
    private = private_model("command.create-task", changed, {})
    as_committed = private_model("command.create-task", command, {})
    assert _breaking(catalogue, "command.create-task", as_committed) == {}
    assert _breaking(catalogue, "command.create-task", private) == {}


def test_a_result_may_not_gain_a_field_its_closed_schema_refuses(
    catalogue: TopicCatalogue,
) -> None:
    result = CONTRACTS["command-result"].type
    changed = create_model(result.__name__, __base__=result, region=(str | None, None))
    assert _breaking(catalogue, "command-result", changed) == {
        schema_path("command-result"): ["$.region property-added"]
    }


@pytest.mark.parametrize("path", sorted(committed_files(PROJECT_ROOT)))
def test_every_committed_schema_is_fully_compatible_with_itself(path: str) -> None:
    # A nested anyOf with siblings (`{"anyOf": [...], "maxLength": 250}`, the commands' personal
    # fields) once made a command schema "break" itself: any edit of it failed the check.
    schema = json.loads(committed_files(PROJECT_ROOT)[path])
    assert incompatibilities(schema, schema, "FULL") == []
