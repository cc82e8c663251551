"""The studio's requests in the worker: what a send-once or a retry runs, and for which event.

Consumes nothing itself: the runner (`consumers/recipes/runner.py`) takes the records of
dastra.recipe-requests.v1 in the group `<WORKER_APP_ID>-studio` (next to the studio recipes'
triggers, `StudioTriggers`) and uses these helpers. Produces nothing.

- **send-once**: the named studio recipe, at the version the studio asked for (the one running
  here, enabled or not), runs once for the pasted sample, as if it came on its trigger topic;
  its filter and type are not applied (the user chose the event; the dry run shows whether it
  matches), its steps' `when` are. The run key is the request's id (`ce_id`).
- **retry**: the failed run's trigger record is read again (a send-once's trigger is its
  request record); a new run under `<first run key>~retry-<n>` starts with the failed run's
  steps that succeeded or were skipped (their results are read back, not asked again), and runs
  the failed step and the ones after it with new command ids.

    event = sample_event(request_id, request.event, recipe, time=now)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bus.records.recipe_requests import SampleEvent
from bus.records.recipe_runs import StepState
from consumers.recipes.language import Recipe
from consumers.recipes.render import event_context

__all__ = ["kept_steps", "sample_event"]


def sample_event(
    request_id: str, sample: SampleEvent, recipe: Recipe, *, time: datetime | None
) -> dict[str, Any]:
    """The `event` a send-once runs `recipe` for: the sample, as if on its trigger topic."""
    return event_context(
        id=request_id,
        data=sample.data,
        type=sample.type or (recipe.trigger.type if recipe.trigger else None),
        source=sample.source,
        subject=sample.subject,
        time=time,
        key=sample.key,
        topic=recipe.trigger.topic if recipe.trigger else None,
    )


def kept_steps(recipe: Recipe, steps: Mapping[str, StepState]) -> dict[str, StepState]:
    """The steps of a failed run a retry keeps: those that succeeded or were skipped, in the
    recipe's order, up to the first that did not (the failed step and the rest run again)."""
    kept: dict[str, StepState] = {}
    for step in recipe.steps:
        state = steps.get(step.id)
        if state is None or state.status == "failed":
            break
        kept[step.id] = state
    return kept
