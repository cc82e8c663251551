"""The backward compatibility checker: breaking changes are found, additive ones pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dastra_kafka.contracts.compat import backward_incompatibilities

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
