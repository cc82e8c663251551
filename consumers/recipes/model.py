"""What a recipe is, once loaded: the raw file structure, the compiled `Recipe` (trigger or
schedule, steps), the problems found in files, and the names recipes may use.

Consumes nothing at import (pure definitions). Produces the types the loader, the checks, the
renderer and the runner share.

    problems = Problems("recipes/x.yaml", "x"); problems.add("steps[0]", "unknown action")
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus.shipped import shipped_root
from bus.topics import (
    COMMAND_RESULTS,
    NOTIFICATIONS,
    RIGHTS_REQUESTS,
    TASKS,
)
from consumers.recipes.expressions import Expression, Template

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

__all__ = [
    "CONTEXT_NAMES",
    "DURATION_PATTERN",
    "EVENT_FIELDS",
    "MAX_ID_LENGTH",
    "NAME_PATTERN",
    "PUBLISH_TOPICS",
    "SCHEDULE_LISTS",
    "SOURCE_WORKSPACE_PATTERN",
    "STEP_FIELDS",
    "STEP_ID_PATTERN",
    "TOPIC_PATTERN",
    "TRIGGER_TOPICS",
    "Problem",
    "Problems",
    "Recipe",
    "RecipeError",
    "RecipeSpec",
    "Schedule",
    "Step",
    "Trigger",
    "error_location",
    "pydantic_message",
    "shipped_recipes_dir",
]


STEP_FIELDS = ("result", "status")


NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,79}$")


STEP_ID_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")


TOPIC_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


DURATION_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")


SOURCE_WORKSPACE_PATTERN = re.compile(r"^dastra://workspaces/(\d+)$")


MAX_ID_LENGTH = 200


def shipped_recipes_dir() -> Path:
    """`recipes/`: the shipped recipes, the checkout's or the installed wheel's."""
    return shipped_root() / "recipes"


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


class Problems:
    def __init__(self, file: str, recipe: str | None) -> None:
        self.file = file
        self.recipe = recipe
        self.found: list[Problem] = []

    def add(self, where: str, message: str) -> None:
        self.found.append(Problem(self.file, self.recipe, where, message))


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


class RecipeSpec(_Strict):
    name: str
    description: str = Field(min_length=1)
    enabled: bool = False
    trigger: _TriggerSpec | None = None
    schedule: _ScheduleSpec | None = None
    once_per: str | None = Field(default=None, min_length=1)
    # The recipe's own values of settings.* (RecipesSettings.for_recipe), over RECIPES_*.
    settings: dict[str, Any] | None = None
    steps: list[_StepSpec] = Field(min_length=1)
    example: _ExampleSpec | None = None


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
    # Its own values of settings.*, as expressions read them; the others come from RECIPES_*.
    settings: dict[str, Any] = field(default_factory=dict)

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
            "settings": dict(self.settings),
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


def error_location(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("str", "float", "_PublishSpec", "_StepSpec"):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text


def pydantic_message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown field"
    if error["type"] == "missing":
        return "required field is missing"
    return str(error["msg"])
