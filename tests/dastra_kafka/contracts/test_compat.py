"""The compatibility checker: breaking changes are found by direction (BACKWARD: new readers of
old data; FORWARD: old readers of new data; FULL: both), harmless ones pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bus.topics import Compatibility
from dastra_kafka.contracts.compat import (
    backward_incompatibilities,
    forward_incompatibilities,
    incompatibilities,
)

STRING = {"type": "string"}
BASE: dict[str, Any] = {
    "$defs": {
        "State": {"enum": ["Open", "Closed"], "type": "string"},
        "Area": {
            "type": "object",
            "properties": {"id": {"type": "integer"}, "label": {"type": "string"}},
            "required": ["id"],
        },
    },
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "title": {"type": "string", "maxLength": 100},
        "score": {"type": "number"},
        "state": {"$ref": "#/$defs/State"},
        "lenient": {"anyOf": [{"$ref": "#/$defs/State"}, {"type": "string"}, {"type": "null"}]},
        "area": {"anyOf": [{"$ref": "#/$defs/Area"}, {"type": "null"}]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["id", "title"],
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """BASE with the node at `path` (slash-separated) replaced (None: deleted)."""
    schema = copy.deepcopy(BASE)
    *parents, last = path.split("/")
    node: Any = schema
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is None:
        if isinstance(node, list):
            node.pop(int(last))
        else:
            del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return schema


BREAKING = [
    ("property removed", changed("properties/score", None), "property-removed"),
    ("newly required", changed("required", ["id", "title", "score"]), "property-required"),
    ("number to integer", changed("properties/score", {"type": "integer"}), "type-narrowed"),
    ("string to integer", changed("properties/title", {"type": "integer"}), "type-narrowed"),
    ("nullable no more", changed("properties/note", {"type": "string"}), "type-narrowed"),
    ("enum value removed", changed("$defs/State/enum", ["Open"]), "enum-value-removed"),
    ("closed", changed("additionalProperties", False), "additional-properties-closed"),
    ("maxLength lowered", changed("properties/title/maxLength", 50), "constraint-tightened"),
    ("minimum raised", changed("properties/id/minimum", 10), "constraint-tightened"),
    ("pattern added", changed("properties/title/pattern", "^[A-Z]"), "constraint-tightened"),
    ("format added", changed("properties/title/format", "date-time"), "constraint-tightened"),
    ("items narrowed", changed("properties/tags/items", {"type": "integer"}), "type-narrowed"),
    (
        "nested required",
        changed("$defs/Area/required", ["id", "label"]),
        "property-required",
    ),
    (
        "dict values narrowed",
        changed("properties/extra/additionalProperties", {"type": "integer", "minimum": 0}),
        "constraint-tightened",
    ),
    ("anything to string", changed("properties/free", {"type": "string"}), "type-narrowed"),
]


@pytest.mark.parametrize(("name", "new", "kind"), BREAKING)
def test_breaking_changes_are_found(name: str, new: dict[str, Any], kind: str) -> None:
    old = BASE
    if name == "anything to string":
        old = changed("properties/free", {})
    problems = backward_incompatibilities(old, new)
    assert kind in {p.kind for p in problems}, (name, problems)


ADDITIVE = [
    ("new optional property", changed("properties/new", {"type": "string"})),
    ("new enum value", changed("$defs/State/enum", ["Open", "Closed", "Archived"])),
    ("integer to number", changed("properties/id", {"type": "number", "minimum": 1})),
    (
        "nullable now",
        changed("properties/title", {"anyOf": [{"type": "string"}, {"type": "null"}]}),
    ),
    ("maxLength raised", changed("properties/title/maxLength", 200)),
    ("maxLength dropped", changed("properties/title", {"type": "string"})),
    ("no longer required", changed("required", ["id"])),
    ("new branch", changed("properties/note/anyOf/1", {"type": ["null", "integer"]})),
    ("descriptions and titles", changed("properties/id/description", "The object id")),
    ("nothing", copy.deepcopy(BASE)),
]


@pytest.mark.parametrize(("name", "new"), ADDITIVE)
def test_additive_changes_pass(name: str, new: dict[str, Any]) -> None:
    assert backward_incompatibilities(BASE, new) == []


def test_a_lenient_enum_may_lose_a_known_value() -> None:
    # Only the lenient field uses the enum here: it still takes any string, as Dastra's do.
    old = changed("properties/state", None)
    new = copy.deepcopy(old)
    new["$defs"]["State"]["enum"] = ["Open"]
    assert backward_incompatibilities(old, new) == []


def test_removing_a_known_value_of_a_strict_enum_names_the_value() -> None:
    new = changed("$defs/State/enum", ["Open"])
    problems = backward_incompatibilities(BASE, new)
    assert [(p.path, p.kind) for p in problems] == [("$.state", "enum-value-removed")]
    assert "'Closed'" in problems[0].detail


def test_a_new_property_typed_against_an_old_typed_map_is_checked() -> None:
    old = {"type": "object", "additionalProperties": {"type": "integer"}}
    new = {
        "type": "object",
        "properties": {"count": {"type": "string"}},
        "additionalProperties": {"type": "integer"},
    }
    assert [p.kind for p in backward_incompatibilities(old, new)] == ["type-narrowed"]


def test_recursive_schemas_terminate() -> None:
    node = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    "name": {"type": "string"},
                },
            }
        },
        "$ref": "#/$defs/Node",
    }
    narrower = copy.deepcopy(node)
    narrower["$defs"]["Node"]["properties"]["name"]["maxLength"] = 3
    assert backward_incompatibilities(node, node) == []
    assert [p.path for p in backward_incompatibilities(node, narrower)] == ["$.name"]


def test_boolean_and_empty_schemas() -> None:
    assert backward_incompatibilities({}, True) == []
    assert backward_incompatibilities(False, {"type": "string"}) == []
    assert backward_incompatibilities({"type": "string"}, {}) == []
    assert [p.kind for p in backward_incompatibilities(True, {"type": "string"})] == [
        "type-narrowed"
    ]
    assert [p.kind for p in backward_incompatibilities({}, False)] == ["type-narrowed"]


# --- compatibility by role --------------------------------------------------------------------

# An event as the poller writes it: open (unknown fields allowed), lenient enums (known values,
# any string), a closed enum, and a command as the agents read it: closed.
EVENT: dict[str, Any] = {
    "$defs": {
        "State": {"enum": ["Open", "Closed"], "type": "string"},
        "Kind": {"enum": ["a", "b"], "type": "string"},
    },
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "id": {"type": "integer"},
        "label": {"type": "string", "maxLength": 100},
        "state": {"anyOf": [{"$ref": "#/$defs/State"}, {"type": "string"}, {"type": "null"}]},
        "kind": {"$ref": "#/$defs/Kind"},
        "code": {"type": "string", "pattern": "^[A-Z]+$"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
    "required": ["id", "label"],
}
COMMAND: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"label": {"type": "string"}, "areaId": {"type": "integer"}},
    "required": ["label"],
}


def edit(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`base` with the node at `path` (slash-separated) replaced (None: deleted)."""
    schema = copy.deepcopy(base)
    *parents, last = path.split("/")
    node: Any = schema
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return schema


NULLABLE_INT = {"anyOf": [{"type": "integer"}, {"type": "null"}]}

# name, old, new, kinds under BACKWARD, kinds under FORWARD (FULL: both).
BY_ROLE: list[tuple[str, dict[str, Any], dict[str, Any], set[str], set[str]]] = [
    (
        "event id made nullable",
        EVENT,
        edit(EVENT, "properties/id", NULLABLE_INT),
        set(),
        {"type-widened"},
    ),
    (
        "event id integer to number",
        EVENT,
        edit(EVENT, "properties/id", {"type": "number"}),
        set(),
        {"type-widened"},
    ),
    (
        "closed enum value dropped",
        EVENT,
        edit(EVENT, "$defs/Kind/enum", ["a"]),
        {"enum-value-removed"},
        set(),
    ),
    (
        "closed enum value added",
        EVENT,
        edit(EVENT, "$defs/Kind/enum", ["a", "b", "c"]),
        set(),
        {"enum-value-added"},
    ),
    (
        "closed enum dropped",
        EVENT,
        edit(EVENT, "properties/kind", {"type": "string"}),
        set(),
        {"enum-removed"},
    ),
    (
        "enum put on a plain string",
        EVENT,
        edit(EVENT, "properties/label/enum", ["x"]),
        {"enum-added"},
        set(),
    ),
    (
        "lenient enum value added",
        EVENT,
        edit(EVENT, "$defs/State/enum", ["Open", "Closed", "New"]),
        set(),
        set(),
    ),
    ("lenient enum value dropped", EVENT, edit(EVENT, "$defs/State/enum", ["Open"]), set(), set()),
    (
        "optional field added to an event",
        EVENT,
        edit(EVENT, "properties/extra", {"type": "string"}),
        set(),
        set(),
    ),
    (
        "field newly required",
        EVENT,
        edit(EVENT, "required", ["id", "label", "note"]),
        {"property-required"},
        set(),
    ),
    (
        "field no longer required",
        EVENT,
        edit(EVENT, "required", ["id"]),
        set(),
        {"property-no-longer-required"},
    ),
    (
        "event field removed",
        EVENT,
        edit(EVENT, "properties/note", None),
        {"property-removed"},
        set(),
    ),
    (
        "maxLength raised",
        EVENT,
        edit(EVENT, "properties/label/maxLength", 200),
        set(),
        {"constraint-loosened"},
    ),
    (
        "maxLength lowered",
        EVENT,
        edit(EVENT, "properties/label/maxLength", 50),
        {"constraint-tightened"},
        set(),
    ),
    (
        "pattern dropped",
        EVENT,
        edit(EVENT, "properties/code/pattern", None),
        set(),
        {"constraint-loosened"},
    ),
    (
        "map values widened",
        EVENT,
        edit(EVENT, "properties/counts/additionalProperties", {"type": "number"}),
        set(),
        {"type-widened"},
    ),
    (
        "event closed",
        EVENT,
        edit(EVENT, "additionalProperties", False),
        {"additional-properties-closed"},
        set(),
    ),
    (
        "optional field added to a command",
        COMMAND,
        edit(COMMAND, "properties/color", {"type": "string"}),
        set(),
        {"property-added"},
    ),
    (
        "command opened",
        COMMAND,
        edit(COMMAND, "additionalProperties", True),
        set(),
        {"additional-properties-opened"},
    ),
    (
        "command field made nullable",
        COMMAND,
        edit(COMMAND, "properties/areaId", NULLABLE_INT),
        set(),
        {"type-widened"},
    ),
    (
        "command field removed",
        COMMAND,
        edit(COMMAND, "properties/areaId", None),
        {"property-removed"},
        set(),
    ),
    ("nothing changed", EVENT, copy.deepcopy(EVENT), set(), set()),
]


@pytest.mark.parametrize("mode", ["BACKWARD", "FORWARD", "FULL"])
@pytest.mark.parametrize(
    ("name", "old", "new", "backward", "forward"), BY_ROLE, ids=[case[0] for case in BY_ROLE]
)
def test_compatibility_by_role(
    mode: Compatibility,
    name: str,
    old: dict[str, Any],
    new: dict[str, Any],
    backward: set[str],
    forward: set[str],
) -> None:
    expected = {"BACKWARD": backward, "FORWARD": forward, "FULL": backward | forward}[mode]
    problems = incompatibilities(old, new, mode)
    assert {p.kind for p in problems} == expected, (name, [str(p) for p in problems])
    assert {p.rule for p in problems} <= ({"BACKWARD", "FORWARD"} if mode == "FULL" else {mode})


def test_a_forward_problem_reads_from_old_to_new() -> None:
    problems = forward_incompatibilities(EVENT, edit(EVENT, "properties/id", NULLABLE_INT))
    assert [str(p) for p in problems] == [
        "$.id: type-widened: integer -> null (readers of the old schema reject: null)"
    ]
    problems = forward_incompatibilities(EVENT, edit(EVENT, "$defs/Kind/enum", ["a", "b", "c"]))
    assert [str(p) for p in problems] == [
        "$.kind: enum-value-added: 'c' is new; readers of the old schema reject it"
    ]


def test_a_length_bound_beside_an_anyof_binds_only_the_strings() -> None:
    # The commands' personal fields, as pydantic writes them and flattened: the same values.
    defs = {"Sealed": {"type": "object", "properties": {"ct": {"type": "string"}}}}
    nested = {
        "$defs": defs,
        "anyOf": [{"type": "string"}, {"$ref": "#/$defs/Sealed"}],
        "maxLength": 10,
    }
    flat = {
        "$defs": defs,
        "anyOf": [{"type": "string", "maxLength": 10}, {"$ref": "#/$defs/Sealed"}],
    }
    assert incompatibilities(nested, flat, "FULL") == []
    assert incompatibilities(flat, nested, "FULL") == []
    looser = copy.deepcopy(flat)
    looser["anyOf"][0]["maxLength"] = 20
    assert [p.kind for p in incompatibilities(nested, looser, "FULL")] == ["constraint-loosened"]
