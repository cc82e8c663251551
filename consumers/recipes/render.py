"""Render a recipe's steps for one event, without I/O: the expression context, the command or
message each step sends, with deterministic ids; and the dry run of a recipe's `example`.

Consumes a compiled `Recipe`, an event's attributes and data, and the results of earlier steps.
Produces command data (Dastra's DTO names), messages for the notification topics, and ids that
are the same on every repeat of a run (so the agents' dedupe turns a repeat into a no-op).

    context = build_context(recipe, event_context(...), settings, run_key=key)
    data = render_command(step, context)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bus.envelope import Envelope, deterministic_id
from bus.records.commands import COMMAND_MODELS
from bus.records.recipe_runs import Notification
from bus.topics import NOTIFICATIONS, command_topic
from consumers.recipes.expressions import ExpressionError, format_datetime
from consumers.recipes.model import (
    EVENT_FIELDS,
    MAX_ID_LENGTH,
    SOURCE_WORKSPACE_PATTERN,
    Problem,
    Problems,
    Recipe,
    Step,
    error_location,
)
from consumers.recipes.settings import RecipesSettings

__all__ = [
    "PreviewProblem",
    "RunPreview",
    "build_context",
    "dry_run",
    "event_context",
    "iterations",
    "preview_run",
    "record_event",
    "render_command",
    "render_message",
    "step_command_id",
    "workspace_of_source",
]


def workspace_of_source(source: str | None) -> int | None:
    """The workspace of a Dastra event's `ce_source` (`dastra://workspaces/101` -> 101)."""
    match = SOURCE_WORKSPACE_PATTERN.match(source or "")
    return int(match.group(1)) if match else None


def event_context(
    *,
    id: str,
    data: Any,
    type: str | None = None,
    source: str | None = None,
    subject: str | None = None,
    time: datetime | None = None,
    key: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    workspace_id: int | None = None,
) -> dict[str, Any]:
    """The `event` a recipe sees (its data is `data` in the context)."""
    if workspace_id is None:
        workspace_id = workspace_of_source(source)
    if workspace_id is None and isinstance(data, Mapping):
        candidate = data.get("workspaceId")
        if isinstance(candidate, int) and not isinstance(candidate, bool) and candidate > 0:
            workspace_id = candidate
    return {
        "id": id,
        "type": type,
        "source": source,
        "subject": subject,
        "time": format_datetime(time) if time else None,
        "key": key,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "workspace_id": workspace_id,
        "data": data,
    }


def record_event(
    envelope: Envelope,
    data: Any,
    *,
    key: bytes | None,
    topic: str,
    partition: int | None,
    offset: int | None,
) -> dict[str, Any]:
    """The `event` recipes see for a trigger record of `topic` (as recipes name it) whose data,
    made whole, is `data`."""
    return event_context(
        id=envelope.id,
        data=data,
        type=envelope.type,
        source=envelope.source,
        subject=envelope.subject,
        time=envelope.time,
        key=key.decode("utf-8", "replace") if key is not None else None,
        topic=topic,
        partition=partition,
        offset=offset,
    )


def build_context(
    recipe: Recipe,
    event: Mapping[str, Any],
    settings: RecipesSettings,
    run_key: str,
    steps: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON document a recipe's expressions read."""
    return {
        "event": {name: event.get(name) for name in EVENT_FIELDS},
        "data": event.get("data"),
        "steps": dict(steps or {}),
        "settings": {**settings.expression_settings(), **recipe.settings},
        "recipe": recipe.name,
        "run": {"key": run_key},
    }


def step_command_id(recipe: str, run_key: str, step: str, index: int | None = None) -> str:
    """The deterministic command id of a step (of item `index` of a foreach): the same run always
    sends the same ids, so the agents' dedupe turns a repeat into a no-op."""
    parts: list[str | int] = ["recipe", recipe, run_key, step]
    if index is not None:
        parts.append(index)
    candidate = deterministic_id(*parts)
    if len(candidate) <= MAX_ID_LENGTH:
        return candidate
    digest = hashlib.sha256(run_key.encode()).hexdigest()[:32]
    parts[2] = f"sha256-{digest}"
    return deterministic_id(*parts)


def render_command(step: Step, context: Mapping[str, Any]) -> dict[str, Any]:
    """The command data of a step for one context (null fields left out; `workspaceId` from the
    event when the step sets none). Raises `ExpressionError`."""
    assert step.fields is not None
    data: dict[str, Any] = step.fields.render(context, drop_nulls=True)
    workspace = context.get("event", {}).get("workspace_id")
    if "workspaceId" not in data and workspace is not None:
        data["workspaceId"] = workspace
    return _canonical_command(step.action, data)


def _canonical_command(action: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """The command as its published schema spells it (what the webhook sends too): field
    names and types of the action's model, e.g. `description` -> `descriptionHtml`, an id
    number -> its string. Data the model refuses is sent as rendered: the agents answer it with
    a failed result (invalid-command) and a dead letter, as for any bad command."""
    model = COMMAND_MODELS.get(action or "")
    if model is None:
        return data
    try:
        command = model.model_validate(data)
    except ValidationError:
        return data
    canonical: dict[str, Any] = command.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return canonical


def render_message(
    recipe: Recipe, step: Step, context: Mapping[str, Any]
) -> tuple[str | None, dict[str, Any]]:
    """(key, data) of a publish step's message; a notification is validated and completed
    (recipe, workspace). Raises `ExpressionError`, or `ValueError` for an invalid
    notification."""
    assert step.data is not None
    data: dict[str, Any] = step.data.render(context)
    key = step.key.render(context) if step.key is not None else None
    if key is not None and not isinstance(key, str):
        key = str(key)
    if step.topic == NOTIFICATIONS:
        data.setdefault("recipe", recipe.name)
        workspace = context.get("event", {}).get("workspace_id")
        if data.get("workspace_id") is None and workspace is not None:
            data["workspace_id"] = workspace
        try:
            note = Notification.model_validate(data)
        except ValidationError as exc:
            details = "; ".join(
                f"{error_location(error['loc'])}: {error['msg']}"
                for error in exc.errors(include_url=False, include_input=False)
            )
            raise ValueError(f"not a valid notification: {details}") from None
        data = note.model_dump(mode="json", exclude_none=True)
    return key or None, data


def iterations(step: Step, context: Mapping[str, Any]) -> list[tuple[int | None, dict[str, Any]]]:
    """The contexts a step runs with: one, or one per item of its foreach (with `item` and
    `index`). Raises `ExpressionError`."""
    if step.foreach is None:
        return [(None, dict(context))]
    items = step.foreach.search(context)
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ExpressionError(
            f"{step.foreach.text}: foreach needs a list, got {type(items).__name__}"
        )
    return [(i, {**context, "item": item, "index": i}) for i, item in enumerate(items)]


@dataclass(frozen=True)
class PreviewProblem:
    """Something a preview found: at a step (`step` its index, `item` its foreach item) or, with
    `step` None, at the recipe's filter or `once_per`; `field` is a command field's location
    (`label`, `tags[0]`) or empty."""

    step: int | None
    step_id: str | None
    item: int | None
    field: str
    message: str


@dataclass
class RunPreview:
    """What a run would do for one event: whether the filter takes it, each command (step,
    action, topic, command id, data) and message (step, topic, type, key, data), and the
    problems found; nothing is sent."""

    matches: bool = True
    commands: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    problems: list[PreviewProblem] = field(default_factory=list)


def preview_run(
    recipe: Recipe,
    event: Mapping[str, Any],
    settings: RecipesSettings,
    *,
    run_key: str,
    results: Mapping[str, Any],
) -> RunPreview:
    """Run the recipe's filter and steps on `event` without any I/O, assuming `results[step id]`
    as each command step's result: every command is checked against its action's model and
    every message against its topic's contract (a notification's). The one renderer behind the
    example check of `recipes validate` and the studio's test."""
    context = build_context(recipe, event, settings, run_key=run_key)
    preview = RunPreview()
    condition = recipe.trigger.filter if recipe.trigger else recipe.schedule.filter  # type: ignore[union-attr]
    try:
        if recipe.once_per is not None:
            recipe.once_per.render(context)
        if condition is not None and not condition.matches(context):
            preview.matches = False
            return preview
    except ExpressionError as exc:
        preview.problems.append(PreviewProblem(None, None, None, "", str(exc)))
        return preview
    steps: dict[str, Any] = {}
    for index, step in enumerate(recipe.steps):
        context["steps"] = dict(steps)
        try:
            if step.when is not None and not step.when.matches(context):
                steps[step.id] = {"status": "skipped", "result": None}
                continue
            rounds = iterations(step, context)
        except ExpressionError as exc:
            preview.problems.append(PreviewProblem(index, step.id, None, "", str(exc)))
            continue
        for item, item_context in rounds:
            try:
                if step.kind == "command":
                    assert step.action is not None
                    data = render_command(step, item_context)
                    try:
                        COMMAND_MODELS[step.action].model_validate(data)
                    except ValidationError as exc:
                        for error in exc.errors(include_url=False, include_input=False):
                            preview.problems.append(
                                PreviewProblem(
                                    index,
                                    step.id,
                                    item,
                                    error_location(error["loc"]),
                                    str(error["msg"]),
                                )
                            )
                    preview.commands.append(
                        {
                            "step": step.id,
                            "action": step.action,
                            "topic": command_topic(step.action),
                            "command_id": step_command_id(recipe.name, run_key, step.id, item),
                            "data": data,
                        }
                    )
                else:
                    key, message = render_message(recipe, step, item_context)
                    preview.messages.append(
                        {
                            "step": step.id,
                            "topic": step.topic,
                            "type": step.event_type,
                            "key": key,
                            "data": message,
                        }
                    )
            except (ExpressionError, ValueError) as exc:
                preview.problems.append(PreviewProblem(index, step.id, item, "", str(exc)))
        steps[step.id] = {"status": "succeeded", "result": results.get(step.id)}
    return preview


def dry_run(recipe: Recipe, settings: RecipesSettings) -> list[Problem]:
    """Run the recipe's `example` through its filter and steps without any I/O
    (`preview_run`): every command must validate against its action's model and every message
    against its topic's contract."""
    example = recipe.example
    problems = Problems(str(recipe.source), recipe.name)
    if example is None:
        return []
    ours = recipe.trigger.ours if recipe.trigger else True
    event = event_context(
        id=f"example:{recipe.name}",
        data=example.data,
        type=example.type or (recipe.trigger.type if recipe.trigger else None),
        source=example.source or ("dastra://workspaces/101" if ours else None),
        subject=example.subject,
        time=datetime(2026, 3, 2, 9, 14, 7, tzinfo=UTC),
        key=example.key,
        topic=recipe.trigger.topic if recipe.trigger else None,
        partition=0,
        offset=0,
    )
    preview = preview_run(
        recipe, event, settings, run_key=f"example:{recipe.name}", results=example.results
    )
    if not preview.matches:
        condition = recipe.trigger.filter if recipe.trigger else recipe.schedule.filter  # type: ignore[union-attr]
        assert condition is not None
        problems.add("example", f"the filter {condition.text!r} does not match the example")
    for found in preview.problems:
        if found.step is None:
            problems.add("example", found.message)
            continue
        label = f"steps[{found.step}] ({found.step_id}) on the example"
        if found.item is not None:
            label += f"[{found.item}]"
        problems.add(f"{label}.{found.field}" if found.field else label, found.message)
    return problems.found
