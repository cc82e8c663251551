"""What the studio's builder offers (`GET /studio/api/catalogue`): trigger topics with their
event types and data fields, the six actions with their command's JSON Schema and result fields,
the topics a step may publish to, the names an expression may read, and the settings a recipe
may set in its own `settings:` block (name, kind of control, help, and the value RECIPES_* gives
when the recipe sets none).

Consumes the topic catalogue, the published schemas (`schemas/*.schema.json`, the contracts of
the event topics), the command models and Dastra's models. Produces one JSON document, built
once per app; the page builds its forms and its value picker from it, so a field the page offers
is a field the contracts have.

    catalogue = builder_catalogue(topics, recipes_settings)
"""

from __future__ import annotations

import json
from typing import Any

from bus.records.commands import COMMAND_MODELS
from bus.records.event_types import EVENT_TYPES
from bus.records.recipe_runs import Notification
from bus.shipped import shipped_root
from bus.topics import TopicCatalogue
from consumers.recipes.model import EVENT_FIELDS, PUBLISH_TOPICS, STEP_FIELDS, TRIGGER_TOPICS
from consumers.recipes.settings import EXPRESSION_SETTINGS, RecipesSettings
from dastra.models import Actor, ProcessingActor

__all__ = ["builder_catalogue", "schema_fields"]

# What each action's result is (`steps.<id>.result`): the Dastra object it made or found.
_RESULTS: dict[str, tuple[dict[str, Any], bool]] = {
    "create-actor": (Actor.model_json_schema(by_alias=True), False),
    "find-or-create-actor": (Actor.model_json_schema(by_alias=True), False),
    "search-actors": (Actor.model_json_schema(by_alias=True), True),
    "link-actor-to-processing": (ProcessingActor.model_json_schema(by_alias=True), True),
}
# Actions whose result is an event topic's object (its contract is the topic's value schema).
_RESULT_SCHEMAS = {"create-rights-request": "rights-request", "create-task": "task"}
_MAX_DEPTH = 2


def _load_schema(name: str) -> dict[str, Any]:
    path = shipped_root() / "schemas" / f"{name}.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$ref` followed and a nullable `anyOf` reduced to its other branch."""
    for _ in range(5):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            schema = {
                **root.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {}),
                **{k: v for k, v in schema.items() if k != "$ref"},
            }
            continue
        branches = [
            b for b in schema.get("anyOf", schema.get("oneOf", [])) if b.get("type") != "null"
        ]
        if len(branches) == 1:
            schema = {
                **{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")},
                **branches[0],
            }
            continue
        return schema
    return schema


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "any")
    if kind is None and "enum" in schema:
        return "string"
    return str(kind or "any")


def schema_fields(
    schema: dict[str, Any], prefix: str, root: dict[str, Any] | None = None, depth: int = 0
) -> list[dict[str, Any]]:
    """Every field of an object schema as expression paths (`data.email`, `data.area.label`,
    `data.tags[0].label`) with type and description, `_MAX_DEPTH` objects deep."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    found: list[dict[str, Any]] = []
    for name, raw in (schema.get("properties") or {}).items():
        field = _resolve(raw, root)
        path = f"{prefix}.{name}"
        kind = _type_of(field)
        entry: dict[str, Any] = {"path": path, "type": kind}
        if field.get("description"):
            entry["description"] = str(field["description"]).split("\n")[0]
        found.append(entry)
        if depth >= _MAX_DEPTH:
            continue
        if kind == "object":
            found += schema_fields(field, path, root, depth + 1)
        elif kind == "array":
            items = _resolve(field.get("items") or {}, root)
            if _type_of(items) == "object":
                found += schema_fields(items, f"{path}[0]", root, depth + 1)
    return found


def _action(name: str) -> dict[str, Any]:
    model = COMMAND_MODELS[name]
    schema = model.model_json_schema(by_alias=True)
    if name in _RESULT_SCHEMAS:
        result, many = _load_schema(_RESULT_SCHEMAS[name]), False
    else:
        result, many = _RESULTS.get(name, ({}, False))
    prefix = "result[0]" if many else "result"
    return {
        "name": name,
        "description": (model.__doc__ or "").strip().split("\n")[0],
        "schema": schema,
        "result_fields": [
            {"path": "status", "type": "string"},
            {"path": "result", "type": "object"},
            *schema_fields(result, prefix),
        ],
    }


# The control the settings panel shows for each JSON Schema type.
_CONTROLS = {
    "integer": "number",
    "number": "number",
    "boolean": "boolean",
    "array": "list",
    "object": "object",
}


def _recipe_settings(settings: RecipesSettings) -> list[dict[str, Any]]:
    """The settings a recipe may set (`RecipesSettings.for_recipe`), for the settings panel."""
    schema = RecipesSettings.model_json_schema()
    values = settings.expression_settings()
    found = []
    for name in EXPRESSION_SETTINGS:
        raw = schema["properties"][name]
        field = _resolve(raw, schema)
        found.append(
            {
                "name": name,
                "control": _CONTROLS.get(_type_of(field), "text"),
                "nullable": any(b.get("type") == "null" for b in raw.get("anyOf", [])),
                "description": field.get("description", ""),
                "default": values[name],
            }
        )
    return found


def builder_catalogue(topics: TopicCatalogue, settings: RecipesSettings) -> dict[str, Any]:
    """The builder's catalogue; see the module docstring."""
    triggers = []
    for name in TRIGGER_TOPICS:
        spec = topics[name]
        triggers.append(
            {
                "name": name,
                "description": spec.description,
                "event_types": list(EVENT_TYPES.get(name, ())),
                "fields": schema_fields(_load_schema(spec.value_schema), "data"),
            }
        )
    publish = [
        {
            "name": name,
            "description": topics[name].description,
            "schema": Notification.model_json_schema(),
        }
        for name in PUBLISH_TOPICS
    ]
    return {
        "trigger_topics": triggers,
        "actions": [_action(name) for name in COMMAND_MODELS],
        "publish_topics": publish,
        "event_fields": [f"event.{name}" for name in EVENT_FIELDS],
        "step_fields": list(STEP_FIELDS),
        "settings": [f"settings.{name}" for name in settings.expression_settings()],
        "recipe_settings": _recipe_settings(settings),
    }
