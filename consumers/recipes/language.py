"""Recipes: ready-made workflows that turn an event into Dastra commands and messages.

Consumes recipe files (YAML, one recipe per file: the shipped ones in `recipes/`, yours in
RECIPES_DIRS), the topic catalogue and `RecipesSettings`. Produces validated `Recipe`s, every
problem found (`Problem`: file, recipe, field, message), and the pure functions the runner
(`consumers/recipes/runner.py`) uses to render a step: the command or message a step sends for one
event, with deterministic ids.

A recipe file:

    name: new-request-dpo-task              # [a-z0-9-], unique
    description: A new rights request gets a task for the DPO, due at its legal deadline.
    enabled: false                          # RECIPES_ENABLE=name switches it on
    trigger:                                # or `schedule:` (a periodic look at Dastra)
      topic: dastra.rights-requests.v1      # a catalogue topic, or one of yours
      type: eu.dastra.rights_request.created
      filter: "data.state != 'Closed'"      # JMESPath, optional
    once_per: "{{ data.id }}"               # optional: the idempotency key (default: event id)
    steps:
      - id: task
        command: create-task                # one of the six actions
        with:                               # the command's fields, Dastra's names
          label: "Answer rights request #{{ data.id }}"
          deadline: "{{ data.expiryTime }}"
          objectType: DataSubject
          objectId: "{{ data.id }}"
      - id: notify
        when: "steps.task.status == 'succeeded'"
        publish: {topic: dastra.notifications.v1, type: eu.dastra.recipe.x, data: {title: ...}}
    example: {data: {...}, results: {task: {...}}}    # checked by `recipes validate`

Expressions (see `consumers/recipes/expressions.py`) read one context: `event` (id, type,
source, subject, time, key, topic, partition, offset, workspace_id), `data` (the event's data),
`steps.<id>` (`status`, and `result`: the command's result, a list for a `foreach` step), `item`
and `index` (inside a `foreach`), `settings` (`RecipesSettings.expression_settings()`),
`recipe` (name) and `run` (key).

Why this shape: everything a recipe can do is checked before anything runs (unknown action or
field, a literal a command would refuse, bad expressions, references to later steps, unknown
topics, a recipe that would trigger itself), so the worker never starts half-configured. Each
step is an ordinary command on the command topics, so it gets the agents' results, retries,
dead letters and dedupe; its id is derived from (recipe, run key, step, item index), so
repeating a run repeats the same ids and the agents' dedupe turns a repeat into a no-op.

    found = load_recipes(settings.recipes, catalogue)
    runnable = found.require_runnable()     # RecipeError when an enabled recipe is invalid
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from bus.envelope import deterministic_id
from bus.records.commands import COMMAND_MODELS, Command
from bus.records.event_types import EVENT_TYPES
from bus.records.recipe_runs import Notification
from bus.topics import (
    COMMAND_RESULTS,
    NOTIFICATIONS,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
    default_topics_file,
    load_catalogue,
)
from consumers.recipes.expressions import Expression, ExpressionError, Template, format_datetime
from consumers.recipes.settings import RecipesSettings
from consumers.settings import WorkerConfig

__all__ = [
    "CONTEXT_NAMES",
    "EVENT_FIELDS",
    "PUBLISH_TOPICS",
    "SCHEDULE_LISTS",
    "TRIGGER_TOPICS",
    "Problem",
    "Recipe",
    "RecipeError",
    "RecipeSet",
    "Schedule",
    "Step",
    "Trigger",
    "build_context",
    "dry_run",
    "event_context",
    "iterations",
    "load_recipes",
    "render_command",
    "render_message",
    "runnable_recipes",
    "shipped_recipes_dir",
    "step_command_id",
    "workspace_of_source",
]

# Topics of ours a recipe may listen to, and publish to (others have their own writers).
TRIGGER_TOPICS = (RIGHTS_REQUESTS, TASKS, COMMAND_RESULTS, NOTIFICATIONS)
PUBLISH_TOPICS = (NOTIFICATIONS,)
SCHEDULE_LISTS = {"rights-requests": RIGHTS_REQUESTS, "tasks": TASKS}

CONTEXT_NAMES = ("event", "data", "steps", "item", "index", "settings", "recipe", "run")
EVENT_FIELDS = (
    "id",
    "type",
    "source",
    "subject",
    "time",
    "key",
    "topic",
    "partition",
    "offset",
    "workspace_id",
)
_STEP_FIELDS = ("result", "status")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")
_STEP_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_SOURCE_WS = re.compile(r"^dastra://workspaces/(\d+)$")
_MAX_ID = 200


def shipped_recipes_dir() -> Path:
    """`recipes/` of this checkout: the shipped recipes."""
    return Path(__file__).resolve().parents[2] / "recipes"


# --- problems --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe: where (file, recipe, field) and what."""

    file: str
    recipe: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: recipe {self.recipe}" if self.recipe else self.file
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "recipe": self.recipe,
            "field": self.field,
            "message": self.message,
        }


class RecipeError(ValueError):
    """Recipes that cannot run; `problems` lists each one (file, recipe, field, message)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class _Problems:
    def __init__(self, file: str, recipe: str | None) -> None:
        self.file = file
        self.recipe = recipe
        self.found: list[Problem] = []

    def add(self, where: str, message: str) -> None:
        self.found.append(Problem(self.file, self.recipe, where, message))


# --- the raw file structure ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _TriggerSpec(_Strict):
    topic: str = Field(min_length=1)
    type: str | None = Field(default=None, min_length=1)
    filter: str | None = None


class _ScheduleSpec(_Strict):
    list: Literal["rights-requests", "tasks"]
    filter: str | None = None
    every: str | float | None = None


class _PublishSpec(_Strict):
    topic: str = Field(min_length=1)
    type: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._:/-]+$")
    key: str | None = None
    data: dict[str, Any]


class _StepSpec(_Strict):
    id: str | None = None
    when: str | None = None
    foreach: str | None = None
    command: str | None = None
    with_: dict[str, Any] | None = Field(default=None, alias="with")
    publish: _PublishSpec | None = None


class _ExampleSpec(_Strict):
    type: str | None = None
    key: str | None = None
    source: str | None = None
    subject: str | None = None
    data: Any = None
    results: dict[str, Any] = Field(default_factory=dict)


class _RecipeSpec(_Strict):
    name: str
    description: str = Field(min_length=1)
    enabled: bool = False
    trigger: _TriggerSpec | None = None
    schedule: _ScheduleSpec | None = None
    once_per: str | None = Field(default=None, min_length=1)
    steps: list[_StepSpec] = Field(min_length=1)
    example: _ExampleSpec | None = None


# --- compiled recipes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """The records a recipe listens to: a topic (catalogue name, or one of yours), an optional
    CloudEvent type and an optional filter."""

    topic: str
    type: str | None
    filter: Expression | None
    ours: bool  # a catalogue topic

    def describe(self) -> str:
        return self.topic + (f" ({self.type})" if self.type else "")


@dataclass(frozen=True)
class Schedule:
    """A periodic look at Dastra: every item of `resource` that passes `filter` runs the steps
    (once per `once_per` value; default once per item and day)."""

    resource: str  # rights-requests | tasks
    filter: Expression | None
    every_s: float | None  # None: RECIPES_SCHEDULE_INTERVAL_S

    def describe(self) -> str:
        every = f"every {self.every_s:g} s" if self.every_s else "every RECIPES_SCHEDULE_INTERVAL_S"
        return f"schedule: {self.resource}, {every}"


@dataclass(frozen=True)
class Step:
    """One step: a command of one of the six actions, or a message to a topic."""

    id: str
    kind: Literal["command", "publish"]
    action: str | None = None
    fields: Template | None = None  # the command's fields
    topic: str | None = None
    event_type: str | None = None
    key: Template | None = None
    data: Template | None = None
    foreach: Expression | None = None
    when: Expression | None = None

    def describe(self) -> str:
        what = self.action if self.kind == "command" else f"publish to {self.topic}"
        return f"{self.id}: {what}" + (" (foreach)" if self.foreach else "")


@dataclass(frozen=True)
class Recipe:
    """A validated recipe."""

    name: str
    description: str
    enabled: bool
    source: Path
    steps: tuple[Step, ...]
    trigger: Trigger | None = None
    schedule: Schedule | None = None
    once_per: Template | None = None
    example: _ExampleSpec | None = None
    enabled_in_file: bool = False

    def topics(self) -> list[str]:
        """The topics it reads and writes (catalogue names or yours), without the prefix."""
        found = [self.trigger.topic] if self.trigger else []
        found += [step.topic for step in self.steps if step.topic]
        return list(dict.fromkeys(found))

    def describe_trigger(self) -> str:
        if self.trigger is not None:
            return self.trigger.describe()
        assert self.schedule is not None
        return self.schedule.describe()

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "enabled": self.enabled,
            "description": self.description,
            "file": str(self.source),
            "trigger": (
                {
                    "topic": self.trigger.topic,
                    "type": self.trigger.type,
                    "filter": self.trigger.filter.text if self.trigger.filter else None,
                }
                if self.trigger
                else None
            ),
            "schedule": (
                {
                    "list": self.schedule.resource,
                    "filter": self.schedule.filter.text if self.schedule.filter else None,
                    "every_s": self.schedule.every_s,
                }
                if self.schedule
                else None
            ),
            "steps": [
                {
                    "id": step.id,
                    "kind": step.kind,
                    "action": step.action,
                    "topic": step.topic,
                    "foreach": step.foreach.text if step.foreach else None,
                    "when": step.when.text if step.when else None,
                }
                for step in self.steps
            ],
        }


# --- loading ---------------------------------------------------------------------------------


@dataclass
class RecipeSet:
    """Every recipe found: the valid ones (a recipe of yours replaces a shipped one of the same
    name) and every problem, with what the worker needs to decide whether it may start."""

    recipes: list[Recipe] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Problems the worker cannot ignore: in enabled recipes, in files whose recipe (or whether
    # it is enabled) cannot be told, and names in RECIPES_ENABLE/DISABLE that no recipe has.
    blocking: list[Problem] = field(default_factory=list)

    @property
    def enabled(self) -> list[Recipe]:
        return [recipe for recipe in self.recipes if recipe.enabled]

    def __getitem__(self, name: str) -> Recipe:
        for recipe in self.recipes:
            if recipe.name == name:
                return recipe
        raise KeyError(name)

    def require_runnable(self) -> list[Recipe]:
        """The enabled recipes; `RecipeError` when any of them (or anything blocking) is wrong."""
        if self.blocking:
            raise RecipeError(self.blocking)
        return self.enabled


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += [
                file
                for file in sorted(path.iterdir())
                if file.suffix in (".yaml", ".yml") and file.is_file()
            ]
        else:
            found.append(path)
    return found


def load_recipes(
    settings: RecipesSettings,
    catalogue: TopicCatalogue,
    paths: Sequence[Path] | None = None,
) -> RecipeSet:
    """Load and check recipes: from `paths` (files or directories) when given, else the shipped
    ones (unless RECIPES_SHIPPED=false) then RECIPES_DIRS. Never raises for a bad recipe: every
    problem is in the result."""
    result = RecipeSet()
    sources: list[tuple[Path, bool]] = []
    if paths is not None:
        sources = [(file, False) for file in _files(paths)]
    else:
        if settings.shipped:
            sources += [(file, True) for file in _files([shipped_recipes_dir()])]
        sources += [(file, False) for file in _files(Path(entry) for entry in settings.dirs)]
    by_name: dict[str, tuple[Recipe | None, bool, Path]] = {}
    for file, shipped in sources:
        recipe, problems, name, enabled = _load_file(file, settings, catalogue)
        result.problems += problems
        if name is None or enabled is None:
            result.blocking += problems
            continue
        previous = by_name.get(name)
        if previous is not None:
            earlier_shipped, earlier_file = previous[1], previous[2]
            if not earlier_shipped or shipped:
                problem = Problem(
                    str(file), name, "name", f"duplicate recipe name (also in {earlier_file})"
                )
                result.problems.append(problem)
                result.blocking.append(problem)
                continue
        by_name[name] = (recipe, shipped, file)
        if problems and enabled:
            result.blocking += problems
    result.recipes = [entry[0] for entry in by_name.values() if entry[0] is not None]
    if paths is None:
        for variable, names in (
            ("RECIPES_ENABLE", settings.enable),
            ("RECIPES_DISABLE", settings.disable),
        ):
            for name in names:
                if name not in by_name:
                    close = difflib.get_close_matches(name, list(by_name), n=1)
                    hint = f"; did you mean {close[0]}?" if close else ""
                    problem = Problem(variable, name, "", f"no recipe is named {name!r}{hint}")
                    result.problems.append(problem)
                    result.blocking.append(problem)
    return result


def runnable_recipes(
    settings: WorkerConfig, catalogue: TopicCatalogue | None = None
) -> list[Recipe]:
    """The recipes the settings enable, all valid; `RecipeError` otherwise (the worker refuses
    to start half-configured)."""
    if catalogue is None:
        path = settings.service.topics_file
        if not path.is_absolute() and not path.is_file():
            path = default_topics_file()
        catalogue = load_catalogue(path)
    return load_recipes(settings.recipes, catalogue).require_runnable()


def _load_file(
    path: Path, settings: RecipesSettings, catalogue: TopicCatalogue
) -> tuple[Recipe | None, list[Problem], str | None, bool | None]:
    """(recipe or None, problems, its name if known, whether it is enabled if known)."""
    problems = _Problems(str(path), None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add("", f"cannot read the file: {exc.strerror or exc}")
        return None, problems.found, None, None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        lines = text.splitlines()
        line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
        hint = ""
        if "{{" in line or "unhashable" in str(exc):
            hint = ' (quote templates: label: "Call {{ data.name }}")'
        problems.add(where, f"not valid YAML: {reason}{hint}")
        return None, problems.found, None, None
    if not isinstance(document, Mapping):
        problems.add("", "a recipe file holds one mapping (name, description, trigger, steps)")
        return None, problems.found, None, None
    name = document.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.add("name", "required: lower-case letters, digits and '-' (at most 80)")
        return None, problems.found, None, None
    problems.recipe = name
    in_file = document.get("enabled", False)
    if not isinstance(in_file, bool):
        problems.add("enabled", f"true or false, not {in_file!r}")
        return None, problems.found, name, None
    enabled = name in settings.enable or (in_file and name not in settings.disable)
    try:
        spec = _RecipeSpec.model_validate(document)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            problems.add(_loc(error["loc"]), _pydantic_message(error))
        return None, problems.found, name, enabled
    recipe = _compile(spec, path, enabled, settings, catalogue, problems)
    if problems.found:
        return None, problems.found, name, enabled
    return recipe, [], name, enabled


def _loc(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("str", "float", "_PublishSpec", "_StepSpec"):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text


def _pydantic_message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"])


# --- compiling and checking ------------------------------------------------------------------


@dataclass
class _Scope:
    """What expressions of one place may read."""

    steps: list[str]  # the ids of earlier steps
    foreach: bool = False
    where: str = ""


def _check_refs(
    expression: Expression, scope: _Scope, field_name: str, problems: _Problems, valid: set[str]
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
            elif len(root) > 2 and root[2] not in _STEP_FIELDS:
                problems.add(
                    field_name,
                    f"{expression.text!r}: a step has "
                    f"{' and '.join(_STEP_FIELDS)}, not {root[2]!r}",
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


# model_construct: the names only, without reading the environment at import time.
_SETTING_NAMES = tuple(RecipesSettings.model_construct().expression_settings())


def _expression(
    text: str | None, scope: _Scope, field_name: str, problems: _Problems, valid: set[str]
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
    value: Any, scope: _Scope, field_name: str, problems: _Problems, valid: set[str]
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
    value: str, settings: RecipesSettings, field_name: str, problems: _Problems
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


def _topic(
    name: str,
    role: Literal["trigger", "publish"],
    catalogue: TopicCatalogue,
    field_name: str,
    problems: _Problems,
) -> bool | None:
    """Whether `name` is a catalogue topic (True) or one of yours (False); None when refused."""
    if not _TOPIC.match(name):
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


def _check_command(action: str, fields: Template, where: str, problems: _Problems) -> None:
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
            problems.add(where, f"{action} needs {info.alias or name}: map it")
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


def _check_message(topic: str, data: Template, where: str, problems: _Problems) -> None:
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


def _every(value: str | float | None, problems: _Problems) -> float | None:
    if value is None:
        return None
    match = _DURATION.match(str(value))
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


def _compile(
    spec: _RecipeSpec,
    path: Path,
    enabled: bool,
    settings: RecipesSettings,
    catalogue: TopicCatalogue,
    problems: _Problems,
) -> Recipe | None:
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
        if not _STEP_ID.match(step_id):
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
    )
    if spec.example is not None:
        for problem in dry_run(recipe, settings):
            problems.found.append(problem)
    return recipe


# --- rendering -------------------------------------------------------------------------------


def workspace_of_source(source: str | None) -> int | None:
    """The workspace of a Dastra event's `ce_source` (`dastra://workspaces/101` -> 101)."""
    match = _SOURCE_WS.match(source or "")
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
        "settings": settings.expression_settings(),
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
    if len(candidate) <= _MAX_ID:
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
                f"{_loc(error['loc'])}: {error['msg']}"
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


def dry_run(recipe: Recipe, settings: RecipesSettings) -> list[Problem]:
    """Run the recipe's `example` through its filter and steps without any I/O: every command
    must validate against its action's model and every message against its topic's contract."""
    example = recipe.example
    problems = _Problems(str(recipe.source), recipe.name)
    if example is None:
        return []
    ours = recipe.trigger.ours if recipe.trigger else True
    event_type = example.type or (recipe.trigger.type if recipe.trigger else None)
    source = example.source or ("dastra://workspaces/101" if ours else None)
    event = event_context(
        id=f"example:{recipe.name}",
        data=example.data,
        type=event_type,
        source=source,
        subject=example.subject,
        time=datetime(2026, 3, 2, 9, 14, 7, tzinfo=UTC),
        key=example.key,
        topic=recipe.trigger.topic if recipe.trigger else None,
        partition=0,
        offset=0,
    )
    context = build_context(recipe, event, settings, run_key=f"example:{recipe.name}")
    condition = recipe.trigger.filter if recipe.trigger else recipe.schedule.filter  # type: ignore[union-attr]
    try:
        if recipe.once_per is not None:
            recipe.once_per.render(context)
        if condition is not None and not condition.matches(context):
            problems.add("example", f"the filter {condition.text!r} does not match the example")
            return problems.found
    except ExpressionError as exc:
        problems.add("example", str(exc))
        return problems.found
    steps: dict[str, Any] = {}
    for index, step in enumerate(recipe.steps):
        where = f"steps[{index}] ({step.id}) on the example"
        context["steps"] = dict(steps)
        try:
            if step.when is not None and not step.when.matches(context):
                steps[step.id] = {"status": "skipped", "result": None}
                continue
            rounds = iterations(step, context)
        except ExpressionError as exc:
            problems.add(where, str(exc))
            continue
        for item_index, item_context in rounds:
            label = where if item_index is None else f"{where}[{item_index}]"
            try:
                if step.kind == "command":
                    assert step.action is not None
                    data = render_command(step, item_context)
                    try:
                        COMMAND_MODELS[step.action].model_validate(data)
                    except ValidationError as exc:
                        for error in exc.errors(include_url=False, include_input=False):
                            problems.add(f"{label}.{_loc(error['loc'])}", str(error["msg"]))
                else:
                    render_message(recipe, step, item_context)
            except (ExpressionError, ValueError) as exc:
                problems.add(label, str(exc))
        result = example.results.get(step.id)
        steps[step.id] = {"status": "succeeded", "result": result}
    return problems.found
