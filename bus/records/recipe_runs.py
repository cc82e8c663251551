"""The records the recipe runner writes besides commands: run state and notifications.

Consumes nothing. Defines the value of `dastra.recipe-runs.v1` (`RecipeRun`, compacted, key
`<recipe>:<run key>`: the progress and outcome of one recipe run, so a redelivered trigger or a
restart resumes or skips it) and of `dastra.notifications.v1` (`Notification`, what recipes tell
people and systems). The JSON Schemas under schemas/ are generated from these models.

    run = RecipeRun(recipe="new-request-dpo-task", run_key="dastra:101:rights_request.created:7",
                    status="running", trigger=TriggerRef(event_id="..."), started_at=now,
                    updated_at=now)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Notification",
    "PublishedRecord",
    "RecipeRun",
    "RunError",
    "RunStatus",
    "StepState",
    "TriggerRef",
    "run_state_key",
]

RunStatus = Literal["running", "succeeded", "failed"]


def run_state_key(recipe: str, run_key: str) -> str:
    """The key of a run on dastra.recipe-runs.v1: `<recipe>:<run key>`."""
    return f"{recipe}:{run_key}"


class RunError(BaseModel):
    """Why a run (or one of its steps) failed. Never quotes personal data: it names fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(description="e.g. step-failed, step-timeout, recipe-expression")
    message: str
    step: str | None = Field(default=None, description="The step that failed")
    command_id: str | None = Field(default=None, description="Its command, when it had one")


class PublishedRecord(BaseModel):
    """Where a publish step's message went."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str
    partition: int
    offset: int
    id: str = Field(description="The message's ce_id")


class StepState(BaseModel):
    """One finished step of a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["succeeded", "failed", "skipped"]
    command_ids: list[str] = Field(
        default_factory=list,
        description="Its commands (one, or one per item of a foreach); their results are on "
        "dastra.command-results.v1",
    )
    published: list[PublishedRecord] = Field(default_factory=list)
    error: RunError | None = None
    completed_at: datetime


class TriggerRef(BaseModel):
    """What started a run: a record (topic, partition, offset) or a periodic check."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    event_type: str | None = None
    topic: str | None = Field(default=None, description="Null for a periodic (schedule) run")
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = Field(default=None, description="The trigger record's timestamp")


class RecipeRun(BaseModel):
    """The state of one recipe run (value of dastra.recipe-runs.v1, key `<recipe>:<run key>`).

    Written when the run starts, after each step, and when it ends; the latest per key counts.
    Step results are not copied here (they are on dastra.command-results.v1, keyed by command
    id), so this topic holds ids and outcomes, not Dastra objects.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    recipe: str
    run_key: str = Field(description="The triggering event id, or the recipe's `once_per` value")
    status: RunStatus
    trigger: TriggerRef
    steps: dict[str, StepState] = Field(default_factory=dict)
    error: RunError | None = None
    subjects: list[str] = Field(
        default_factory=list,
        description="Keyed-hash ids (`s_...`, as on dastra.privacy-keys.v1) of the data subject of "
        "a trigger from a Dastra event topic (its requester, also by e-mail), written when "
        "PRIVACY_MASTER_KEY is set: `privacy erase` tombstones the runs of an erased subject",
    )
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None

    @property
    def key(self) -> str:
        return run_state_key(self.recipe, self.run_key)

    @property
    def finished(self) -> bool:
        return self.status != "running"


class Notification(BaseModel):
    """A message from a recipe to people or systems (value of dastra.notifications.v1).

    The record is a CloudEvent (binary mode): `ce_type` says what happened (chosen by the recipe,
    e.g. `eu.dastra.recipe.task.high_priority`), `ce_source` is `dastra-kafka://recipes/<name>`,
    `ce_id` is stable for a recipe run and step, so consumers can drop repeats.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = Field(min_length=1, max_length=500, description="One line for a human")
    severity: Literal["info", "warning", "critical"] = "info"
    recipe: str | None = Field(default=None, description="The recipe that sent it")
    event: str | None = Field(
        default=None,
        max_length=100,
        description="What it is about, as a REST hook event name (e.g. `task.created`)",
    )
    workspace_id: int | None = Field(default=None, ge=1)
    object_type: str | None = Field(
        default=None, max_length=50, description="Dastra's object type: DataSubject, Task, Actor"
    )
    object_id: str | None = Field(default=None, max_length=100)
    data: Any = Field(default=None, description="Details: free JSON (may hold personal data)")

    @field_validator("object_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
