"""What the studio asks the workers to run: "send once" and "retry" requests.

Consumes nothing. Defines the value of `dastra.recipe-requests.v1` (`RecipeRequest`, key = the
recipe's name; a CloudEvent in binary mode whose `ce_id` is the request's id): run a studio
recipe once, for real, for a sample event (`send-once`; the run key is the request's id), or
run a failed run again (`retry`: the steps that succeeded are read back, the failed step and the
ones after it run again under the new run key). Workers with RECIPES_STUDIO=true consume it.
The JSON Schemas under schemas/ are generated from these models.

    request = RecipeRequest(kind="send-once", recipe="web-form", version=3, run_key=request_id,
                            event=SampleEvent(data={"formId": "F-1"}), requested_by="tok_...",
                            requested_at=now)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bus.records.recipe_runs import StepState, TriggerRef

__all__ = [
    "REQUEST_TYPES",
    "RETRY_SEPARATOR",
    "RecipeRequest",
    "RequestKind",
    "SampleEvent",
]

RequestKind = Literal["send-once", "retry"]

# The CloudEvent type of each kind of request.
REQUEST_TYPES: dict[str, str] = {
    "send-once": "eu.dastra.studio.recipe.send_once",
    "retry": "eu.dastra.studio.recipe.retry",
}

# A retry's run key: `<the first run's key>~retry-<n>`.
RETRY_SEPARATOR = "~retry-"


class SampleEvent(BaseModel):
    """The event a send-once runs the recipe for: its data and CloudEvent attributes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: Any = Field(default=None, description="The event's data (may hold personal data)")
    type: str | None = None
    key: str | None = None
    source: str | None = None
    subject: str | None = None


class RecipeRequest(BaseModel):
    """A request of the studio to the workers (value of dastra.recipe-requests.v1, key = the
    recipe's name)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RequestKind
    recipe: str = Field(min_length=1, description="The recipe to run")
    version: int | None = Field(
        default=None,
        ge=1,
        description="The studio recipe's version to run (send-once); null: the one running",
    )
    run_key: str = Field(
        min_length=1,
        description="The run's key: the request's id (send-once), or `<first run key>~retry-<n>`",
    )
    event: SampleEvent | None = Field(default=None, description="The sample (send-once)")
    retry_of: str | None = Field(default=None, description="The failed run's key (retry)")
    trigger: TriggerRef | None = Field(
        default=None, description="What triggered the failed run (retry): it is read again"
    )
    steps: dict[str, StepState] = Field(
        default_factory=dict,
        description="The failed run's steps that succeeded or were skipped before the failed "
        "one (retry): their results are read back, not asked again",
    )
    requested_by: str = Field(
        min_length=1, description="The id of the studio token (`tok_` and 12 hex digits)"
    )
    requested_at: datetime

    @model_validator(mode="after")
    def _complete(self) -> RecipeRequest:
        if self.kind == "send-once" and self.event is None:
            raise ValueError("a send-once request carries its event")
        if self.kind == "retry" and (self.retry_of is None or self.trigger is None):
            raise ValueError("a retry carries the failed run's key and trigger")
        return self
