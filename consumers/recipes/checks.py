"""Compile one recipe file's structure into a `Recipe`, checking everything before anything
runs: unknown actions or fields, literals a command would refuse, bad expressions, references
to later steps, unknown topics, a recipe that would trigger itself, its own `settings:` values
(as RECIPES_* are checked) and its `example` (a dry run).

Consumes a `RecipeSpec`, the topic catalogue and `RecipesSettings`. Produces a `Recipe` or
problems.

    recipe = compile_recipe(spec, path, settings, catalogue, problems)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, ValidationError

from bus.records.commands import COMMAND_MODELS, Command
from bus.records.event_types import EVENT_TYPES
from bus.records.recipe_runs import Notification
from bus.topics import (
    NOTIFICATIONS,
    TopicCatalogue,
)
from consumers.recipes.expressions import Expression, ExpressionError, Template
from consumers.recipes.model import (
    CONTEXT_NAMES,
    DURATION_PATTERN,
    EVENT_FIELDS,
    PUBLISH_TOPICS,
    STEP_FIELDS,
    STEP_ID_PATTERN,
    TOPIC_PATTERN,
    TRIGGER_TOPICS,
    Problems,
    Recipe,
    RecipeSpec,
    Schedule,
    Step,
    Trigger,
    error_location,
)
from consumers.recipes.render import dry_run
from consumers.recipes.settings import EXPRESSION_SETTINGS, RecipesSettings

__all__ = ["compile_recipe"]


@dataclass
class _Scope:
    """What expressions of one place may read."""

    steps: list[str]  # the ids of earlier steps
    foreach: bool = False
    where: str = ""


def _check_refs(
    expression: Expression, scope: _Scope, field_name: str, problems: Problems, valid: set[str]
) -> None:
    unknown: set[str] = set()
    for root in expression.roots:
        head = root[0]
        if head not in CONTEXT_NAMES:
            if head in unknown:
                continue
            unknown.add(head)
            hint = ""
            if head not in ("data",):
                hint = f" (did you mean data.{'.'.join(root)}?)"
            problems.add(
                field_name,
                f"{expression.text!r}: unknown name {head!r}; expressions start with "
                f"{', '.join(CONTEXT_NAMES)}{hint}",
            )
            continue
        if head in ("item", "index") and not scope.foreach:
            problems.add(field_name, f"{expression.text!r}: {head!r} exists only in a foreach step")
        elif head == "steps" and len(root) > 1:
            step_id = root[1]
            if step_id not in scope.steps:
                later = (
                    " (a later step: a step can only read earlier ones)" if step_id in valid else ""
                )
                known = ", ".join(scope.steps) or "none"
                problems.add(
                    field_name,
                    f"{expression.text!r}: unknown step {step_id!r}{later}; earlier steps: {known}",
                )
            elif len(root) > 2 and root[2] not in STEP_FIELDS:
                problems.add(
                    field_name,
                    f"{expression.text!r}: a step has {' and '.join(STEP_FIELDS)}, not {root[2]!r}",
                )
        elif head == "event" and len(root) > 1 and root[1] not in EVENT_FIELDS:
            problems.add(
                field_name,
                f"{expression.text!r}: the event has no {root[1]!r}; it has "
                f"{', '.join(EVENT_FIELDS)} (the event's data is `data`)",
            )
        elif head == "settings" and len(root) > 1 and root[1] not in _SETTING_NAMES:
            problems.add(
                field_name,
                f"{expression.text!r}: unknown setting {root[1]!r}; known: "
                f"{', '.join(_SETTING_NAMES)}",
            )


_SETTING_NAMES = EXPRESSION_SETTINGS


def _expression(
    text: str | None, scope: _Scope, field_name: str, problems: Problems, valid: set[str]
) -> Expression | None:
    if text is None:
        return None
    if "{{" in text:
        problems.add(field_name, f"{text!r}: write the expression without {{{{ }}}} here")
        return None
    try:
        expression = Expression(text)
    except ExpressionError as exc:
        problems.add(field_name, str(exc))
        return None
    _check_refs(expression, scope, field_name, problems, valid)
    return expression


def _template(
    value: Any, scope: _Scope, field_name: str, problems: Problems, valid: set[str]
) -> Template | None:

    try:
        template = Template.parse(value, field_name)
    except ExpressionError as exc:
        problems.add(exc.field or field_name, exc.reason)
        return None
    for below, expression in template.expressions():
        _check_refs(expression, scope, f"{field_name}{below}", problems, valid)
    return template


def _settings_text(
    value: str, settings: RecipesSettings, field_name: str, problems: Problems
) -> str | None:
    """A topic name, possibly `{{ settings.x }}`: resolved now, from the settings alone."""
    if "{{" not in value:
        return value
    try:
        template = Template.parse(value, field_name)
    except ExpressionError as exc:
        problems.add(exc.field or field_name, exc.reason)
        return None
    for _below, expression in template.expressions():
        if any(root[0] != "settings" for root in expression.roots):
            problems.add(field_name, f"{value!r}: a topic may only use settings.*")
            return None
    try:
        resolved = template.render({"settings": settings.expression_settings()})
    except ExpressionError as exc:
        problems.add(field_name, str(exc))
        return None
    if not isinstance(resolved, str) or not resolved:
        problems.add(field_name, f"{value!r} gives {resolved!r}, not a topic name")
        return None
    return resolved


def _own_settings(
    own: dict[str, Any] | None, settings: RecipesSettings, problems: Problems
) -> dict[str, Any]:
    """The values of a recipe's `settings:` block that pass the checks of RECIPES_* values; a
    problem for each other one."""
    valid: dict[str, Any] = {}
    for name, value in (own or {}).items():
        if name not in EXPRESSION_SETTINGS:
            problems.add(
                f"settings.{name}",
                f"unknown setting; a recipe may set {', '.join(EXPRESSION_SETTINGS)}",
            )
            continue
        try:
            settings.for_recipe({name: value})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                problems.add(f"settings.{error_location(error['loc'])}", str(error["msg"]))
            continue
        valid[name] = value
    return valid


def _topic(
    name: str,
    role: Literal["trigger", "publish"],
    catalogue: TopicCatalogue,
    field_name: str,
    problems: Problems,
) -> bool | None:
    """Whether `name` is a catalogue topic (True) or one of yours (False); None when refused."""
    if not TOPIC_PATTERN.match(name):
        problems.add(field_name, f"{name!r} is not a valid topic name")
        return None
    allowed = TRIGGER_TOPICS if role == "trigger" else PUBLISH_TOPICS
    if name in catalogue.names:
        if name not in allowed:
            what = "listen to" if role == "trigger" else "publish to"
            problems.add(
                field_name,
                f"recipes cannot {what} {name}; of the catalogue they may {what} "
                f"{', '.join(allowed)}, or any topic of yours"
                + ("; to act on Dastra use a `command:` step" if role == "publish" else ""),
            )
            return None
        return True
    if name.startswith("dastra."):
        close = difflib.get_close_matches(name, catalogue.names, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        problems.add(
            field_name,
            f"unknown topic {name!r}: not in {catalogue.path.name} (names starting with "
            f"'dastra.' are the catalogue's){hint}",
        )
        return None
    return False


def _model_fields(model: type[Command]) -> dict[str, set[str]]:
    """Field name -> the names a command may use for it (alias and its alternatives)."""
    names: dict[str, set[str]] = {}
    for name, info in model.model_fields.items():
        accepted = {info.alias or name}
        alias = info.validation_alias
        if isinstance(alias, str):
            accepted.add(alias)
        elif isinstance(alias, AliasChoices):
            accepted |= {choice for choice in alias.choices if isinstance(choice, str)}
        names[name] = accepted
    return names


def _check_command(action: str, fields: Template, where: str, problems: Problems) -> None:
    model = COMMAND_MODELS[action]
    accepted = _model_fields(model)
    everything = {alias: name for name, aliases in accepted.items() for alias in aliases}
    given: dict[str, str] = {}
    for key in fields.field_names():
        if key not in everything:
            close = difflib.get_close_matches(key, list(everything), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.add(
                f"{where}.{key}",
                f"unknown field for {action}{hint}; its fields: "
                + ", ".join(
                    sorted(info.alias or name for name, info in model.model_fields.items())
                ),
            )
            continue
        if everything[key] in given:
            problems.add(f"{where}.{key}", f"the same field as {given[everything[key]]}")
        given[everything[key]] = key
    for name, info in model.model_fields.items():
        if info.is_required() and name not in given:
            field = info.alias or name
            problems.add(f"{where}.{field}", f"{action} needs {field}: map it")
    constants = {
        key: fields.item(key).constant
        for key in fields.field_names()
        if key in everything and fields.item(key).is_constant
    }
    if not constants:
        return
    try:
        model.model_validate(constants)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            if error["loc"] and error["loc"][0] in constants:
                problems.add(f"{where}.{error['loc'][0]}", str(error["msg"]))


def _check_message(topic: str, data: Template, where: str, problems: Problems) -> None:
    if topic != NOTIFICATIONS:
        return
    known = set(Notification.model_fields)
    for key in data.field_names():
        if key not in known:
            problems.add(
                f"{where}.{key}",
                f"unknown field of a notification; its fields: {', '.join(sorted(known))}",
            )
    if "title" not in data.field_names():
        problems.add(where, "a notification needs a title")


def _every(value: str | float | None, problems: Problems) -> float | None:
    if value is None:
        return None
    match = DURATION_PATTERN.match(str(value))
    if match is None:
        problems.add("schedule.every", f"{value!r}: a duration such as 90s, 15m, 1h or 1d")
        return None
    seconds = (
        float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    )
    if seconds < 1:
        problems.add("schedule.every", "at least 1 s")
        return None
    return seconds


def compile_recipe(
    spec: RecipeSpec,
    path: Path,
    enabled: bool,
    settings: RecipesSettings,
    catalogue: TopicCatalogue,
    problems: Problems,
) -> Recipe | None:
    own = _own_settings(spec.settings, settings, problems)
    settings = settings.for_recipe(own)
    top = _Scope(steps=[])
    trigger: Trigger | None = None
    schedule: Schedule | None = None
    step_ids = {step.id or f"step{i + 1}" for i, step in enumerate(spec.steps)}
    if (spec.trigger is None) == (spec.schedule is None):
        problems.add("trigger", "give either a trigger (a topic) or a schedule, not both")
    if spec.trigger is not None:
        topic = _settings_text(spec.trigger.topic, settings, "trigger.topic", problems)
        ours = _topic(topic, "trigger", catalogue, "trigger.topic", problems) if topic else None
        condition = _expression(spec.trigger.filter, top, "trigger.filter", problems, step_ids)
        if topic and ours is not None:
            types = EVENT_TYPES.get(topic, ()) if ours else ()
            if spec.trigger.type and types and spec.trigger.type not in types:
                problems.add(
                    "trigger.type",
                    f"{spec.trigger.type!r} never appears on {topic}; its types: "
                    f"{', '.join(types)}",
                )
            trigger = Trigger(topic=topic, type=spec.trigger.type, filter=condition, ours=ours)
    if spec.schedule is not None:
        schedule = Schedule(
            resource=spec.schedule.list,
            filter=_expression(spec.schedule.filter, top, "schedule.filter", problems, step_ids),
            every_s=_every(spec.schedule.every, problems),
        )
    once_per = (
        _template(spec.once_per, top, "once_per", problems, step_ids) if spec.once_per else None
    )
    steps: list[Step] = []
    seen: list[str] = []
    for index, raw in enumerate(spec.steps):
        where = f"steps[{index}]"
        step_id = raw.id or f"step{index + 1}"
        if not STEP_ID_PATTERN.match(step_id):
            problems.add(f"{where}.id", f"{step_id!r}: letters, digits and '_' (a JMESPath name)")
        if step_id in seen:
            problems.add(f"{where}.id", f"duplicate step id {step_id!r}")
        scope = _Scope(steps=list(seen))
        # Known to later steps even if this one is invalid: one mistake, one problem.
        seen.append(step_id)
        foreach = _expression(raw.foreach, scope, f"{where}.foreach", problems, step_ids)
        inner = _Scope(steps=scope.steps, foreach=raw.foreach is not None)
        when = _expression(raw.when, scope, f"{where}.when", problems, step_ids)
        if (raw.command is None) == (raw.publish is None):
            problems.add(where, "a step is either `command:` (with `with:`) or `publish:`")
            continue
        step: Step
        if raw.command is not None:
            if raw.command not in COMMAND_MODELS:
                close = difflib.get_close_matches(raw.command, list(COMMAND_MODELS), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.add(
                    f"{where}.command",
                    f"unknown action {raw.command!r}{hint}; actions: {', '.join(COMMAND_MODELS)}",
                )
                continue
            fields = _template(raw.with_ or {}, inner, f"{where}.with", problems, step_ids)
            if fields is None:
                continue
            _check_command(raw.command, fields, f"{where}.with", problems)
            step = Step(
                id=step_id,
                kind="command",
                action=raw.command,
                fields=fields,
                foreach=foreach,
                when=when,
            )
        else:
            assert raw.publish is not None
            if raw.with_ is not None:
                problems.add(f"{where}.with", "a publish step has `data:` inside `publish:`")
            publish = raw.publish
            topic = _settings_text(publish.topic, settings, f"{where}.publish.topic", problems)
            ours = (
                _topic(topic, "publish", catalogue, f"{where}.publish.topic", problems)
                if topic
                else None
            )
            if topic and trigger is not None and topic == trigger.topic:
                problems.add(
                    f"{where}.publish.topic",
                    f"{topic} is this recipe's trigger: the recipe would trigger itself",
                )
            data = _template(publish.data, inner, f"{where}.publish.data", problems, step_ids)
            key = (
                _template(publish.key, inner, f"{where}.publish.key", problems, step_ids)
                if publish.key is not None
                else None
            )
            if data is None or topic is None or ours is None:
                continue
            _check_message(topic, data, f"{where}.publish.data", problems)
            step = Step(
                id=step_id,
                kind="publish",
                topic=topic,
                event_type=publish.type,
                key=key,
                data=data,
                foreach=foreach,
                when=when,
            )
        steps.append(step)
    if problems.found:
        return None
    recipe = Recipe(
        name=spec.name,
        description=" ".join(spec.description.split()),
        enabled=enabled,
        source=path,
        steps=tuple(steps),
        trigger=trigger,
        schedule=schedule,
        once_per=once_per,
        example=spec.example,
        enabled_in_file=spec.enabled,
        settings={name: settings.expression_settings()[name] for name in own},
    )
    if spec.example is not None:
        for problem in dry_run(recipe, settings):
            problems.found.append(problem)
    return recipe
