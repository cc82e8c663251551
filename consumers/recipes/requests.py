"""The studio's requests in the worker: what a send-once or a retry runs, and for which event.

Consumes the records of dastra.recipe-requests.v1 the runner's studio side
(`consumers/recipes/studio_runner.py`) takes in the group `<WORKER_APP_ID>-studio` (next to the
studio recipes' triggers, `StudioTriggers`), the studio recipes' table, and for a retry its
trigger record again (one record, by offset) and, for an event in a non-full payload mode,
Dastra (the whole object, as for any trigger). Produces the run each request asks for
(`RequestedRun`), or why it cannot run (`RefusedRequest`); the runner runs it as any run and
records it.

- **send-once**: the named studio recipe, at the version the studio asked for (the one running
  here, enabled or not), runs once for the pasted sample, as if it came on its trigger topic;
  its filter and type are not applied (the user chose the event; the dry run shows whether it
  matches), its steps' `when` are. The run key is the request's id (`ce_id`).
- **retry**: the failed run's trigger record is read again (a send-once's trigger is its
  request record); a new run under `<first run key>~retry-<n>` starts with the failed run's
  steps that succeeded or were skipped (their results are read back, not asked again), and runs
  the failed step and the ones after it with new command ids.

    requests = StudioRequests(kafka, studio, file_recipes, privacy, default_workspace)
    found = await requests.resolve(headers, value, partition, offset, timestamp_ms, dastra)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from confluent_kafka import KafkaException
from pydantic import ValidationError

from bus.envelope import EnvelopeError, decode
from bus.errors import TopicMissingError
from bus.hooks.events import workspace_of
from bus.reading import read_record
from bus.records.recipe_requests import RecipeRequest, SampleEvent
from bus.records.recipe_runs import RunError, StepState, TriggerRef
from bus.settings import KafkaSettings
from bus.topics import RECIPE_REQUESTS
from consumers.dispatcher import fallback_id
from consumers.recipes.language import Recipe
from consumers.recipes.privacy import RecipePrivacy, TriggerUnreadable
from consumers.recipes.render import event_context, record_event
from consumers.recipes.studio import StudioRecipes
from dastra.client import DastraClient

__all__ = [
    "InvalidRequestError",
    "RefusedRequest",
    "RequestedRun",
    "StudioRequests",
    "kept_steps",
    "sample_event",
]

_log = structlog.get_logger(__name__)


class InvalidRequestError(ValueError):
    """The record is not a recipe request (its message names fields, never values)."""


@dataclass(frozen=True)
class RequestedRun:
    """The run a request asks for: `recipe` on `event` under `run_key`, with its trigger and the
    subjects of its data; a retry starts with `seed`, the failed run's steps it keeps."""

    recipe: Recipe
    event: dict[str, Any]
    trigger: TriggerRef
    run_key: str
    subjects: list[str]
    seed: dict[str, StepState] | None = None


@dataclass(frozen=True)
class RefusedRequest:
    """A request that cannot run: its run is recorded as failed with `error`."""

    recipe: str
    run_key: str
    trigger: TriggerRef
    error: RunError


class StudioRequests:
    """Resolves the studio's requests; see the module docstring. `files` are the recipes of
    files this worker runs (a retry may name one)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        studio: StudioRecipes,
        files: Sequence[Recipe],
        privacy: RecipePrivacy,
        default_workspace: int | None,
        state_timeout_s: float,
    ) -> None:
        self._kafka = kafka
        self._studio = studio
        self._files = {recipe.name: recipe for recipe in files}
        self._privacy = privacy
        self._default_workspace = default_workspace
        self._state_timeout_s = state_timeout_s

    async def resolve(
        self,
        headers: list[tuple[str, bytes]],
        value: bytes | None,
        *,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        dastra: DastraClient,
    ) -> RequestedRun | RefusedRequest:
        """The run the request record at `partition`/`offset` asks for. Raises
        `InvalidRequestError`."""
        physical = self._kafka.topic(RECIPE_REQUESTS)
        try:
            envelope = decode(headers, value, fallback_id=fallback_id(physical, partition, offset))
            request = RecipeRequest.model_validate(envelope.data)
        except (EnvelopeError, ValidationError) as exc:
            fields = exc.errors() if isinstance(exc, ValidationError) else []
            raise InvalidRequestError(
                f"not a recipe request ({type(exc).__name__}"
                + (f": fields {[str(e['loc']) for e in fields][:10]}" if fields else "")
                + ")"
            ) from None
        own = TriggerRef(
            event_id=envelope.id,
            event_type=envelope.type,
            topic=RECIPE_REQUESTS,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
        )
        await self._studio.catch_up(self._state_timeout_s)
        running = self._studio.get(request.recipe)
        recipe = running[1] if running is not None else self._files.get(request.recipe)
        _log.info(
            "recipes.studio_request",
            recipe=request.recipe,
            kind=request.kind,
            run_key=request.run_key,
            retry_of=request.retry_of,
            requested_by=request.requested_by,
        )
        if recipe is None or (
            request.version is not None and (running is None or running[0] != request.version)
        ):
            here = running[0] if running is not None else None
            return RefusedRequest(
                request.recipe,
                request.run_key,
                request.trigger or own,
                RunError(
                    kind="recipe-unavailable",
                    message=f"version {request.version} of {request.recipe!r} is not the one "
                    f"this worker runs (it runs version {here}): a newer save, or an invalid "
                    "version",
                ),
            )
        if request.kind == "send-once":
            assert request.event is not None
            event = sample_event(envelope.id, request.event, recipe, time=envelope.time)
            subjects = self._sample_subjects(recipe, request.event, event)
            return RequestedRun(recipe, event, own, request.run_key, subjects)
        trigger = request.trigger
        assert trigger is not None
        found = await self._retried_event(trigger, recipe, dastra)
        if isinstance(found, RunError):
            return RefusedRequest(request.recipe, request.run_key, trigger, found)
        event, subjects = found
        seed = kept_steps(recipe, request.steps)
        return RequestedRun(recipe, event, trigger, request.run_key, subjects, seed=seed)

    def _sample_subjects(
        self, recipe: Recipe, sample: SampleEvent, event: Mapping[str, Any]
    ) -> list[str]:
        topic = recipe.trigger.topic if recipe.trigger else ""
        workspace = event.get("workspace_id") or self._default_workspace
        return self._privacy.subjects(topic, sample.data, workspace)

    async def _retried_event(
        self, trigger: TriggerRef, recipe: Recipe, dastra: DastraClient
    ) -> tuple[dict[str, Any], list[str]] | RunError:
        """The event of a failed run, read again from its trigger record (a send-once's: its
        request), with its subjects; or why it cannot be had."""
        if trigger.topic is None or trigger.partition is None or trigger.offset is None:
            return RunError(
                kind="trigger-unknown",
                message="the run was not started by a record (a periodic check): it is run "
                "again by the next check",
            )
        where = f"{trigger.topic}/{trigger.partition}@{trigger.offset}"
        physical = self._kafka.topic(trigger.topic)
        try:
            found = await asyncio.to_thread(
                read_record, self._kafka, physical, trigger.partition, trigger.offset
            )
        except TopicMissingError:
            found = None
        except KafkaException as exc:
            return RunError(kind="trigger-unreadable", message=f"{where}: {exc.args[0]}")
        if found is None:
            return RunError(
                kind="trigger-expired",
                message=f"the trigger record {where} is no longer on its topic (retention)",
            )
        try:
            envelope = decode(
                found.headers,
                found.value,
                fallback_id=fallback_id(physical, found.partition, found.offset),
            )
            if trigger.topic == RECIPE_REQUESTS:
                first = RecipeRequest.model_validate(envelope.data)
                if first.event is None:
                    raise ValueError("a retry's run cannot have a retry request as trigger")
                event = sample_event(envelope.id, first.event, recipe, time=envelope.time)
                return event, self._sample_subjects(recipe, first.event, event)
            data = await self._privacy.full_data(trigger.topic, envelope, found.key, dastra)
        except TriggerUnreadable as exc:
            return RunError(kind=exc.kind, message=f"{where}: {exc.message}")
        except (EnvelopeError, ValidationError, ValueError) as exc:
            return RunError(kind="trigger-unreadable", message=f"{where}: {type(exc).__name__}")
        event = record_event(
            envelope,
            data,
            key=found.key,
            topic=trigger.topic,
            partition=found.partition,
            offset=found.offset,
        )
        workspace = workspace_of(envelope, found.key) or self._default_workspace
        return event, self._privacy.subjects(trigger.topic, data, workspace)


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
