"""One recipe run, from its first step to its end: the runner's executor.

Consumes the run state (`RunStore`: dastra.recipe-runs.v1, read by the runner) and the step
results (`StepResults`: dastra.command-results.v1). Produces, through the runner's producer,
commands on `dastra.commands.<action>.v1` (CloudEvents binary mode, the id
`recipe:<name>:<run key>:<step>[:<item>]`, sealed when PRIVACY_MODE_COMMANDS=encrypted), messages
on `dastra.notifications.v1` or topics of yours, the run state on dastra.recipe-runs.v1 (start,
after each step, end), and dead letters (component `recipes`) for the trigger records it is
given (`dead_letter`) and those whose run failed for a reason of the recipe's (an expression, a
step timing out, a step's result gone from its topic).

A run goes as `runner.py` tells (skipped when finished, resumed after its last finished step),
one at a time per run key. The executor opens and closes nothing: the runner owns the producer,
the run store and the step results, and builds it once they are open.

    runs = RunExecutor(producer, store, results, privacy, metrics, kafka=settings.kafka,
                       options=settings.recipes, lookup_skew_s=300.0, default_workspace=None)
    await runs.run(Run(recipe, event, trigger, run_key, record))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from bus.deadletter import OriginalRecord
from bus.deadletter import dead_letter as dead_letter_record
from bus.envelope import encode_binary, header_pairs, new_event
from bus.privacy import PAYLOAD_EXTENSION
from bus.records.commands import CommandResult, command_record_key
from bus.records.recipe_runs import (
    PublishedRecord,
    RecipeRun,
    RunError,
    StepState,
    TriggerRef,
    run_state_key,
)
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER, RECIPE_RUNS, command_topic
from bus.tracing import inject, sending
from consumers.recipes.expressions import ExpressionError
from consumers.recipes.language import (
    Recipe,
    Step,
    build_context,
    iterations,
    render_command,
    render_message,
    step_command_id,
)
from consumers.recipes.metrics import RecipeMetrics
from consumers.recipes.privacy import RecipePrivacy
from consumers.recipes.results import StepResults
from consumers.recipes.settings import RecipesSettings
from consumers.recipes.state import RunStore

__all__ = ["COMPONENT", "Run", "RunExecutor", "TriggerRecord", "run_key_for"]

_log = structlog.get_logger(__name__)

COMPONENT = "recipes"


class _RunFailed(Exception):  # noqa: N818 - control flow inside a run
    def __init__(self, error: RunError, *, dead_letter: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.dead_letter = dead_letter


@dataclass(eq=False)
class TriggerRecord:
    """One trigger record on its way through the runner (a file recipe's, a studio recipe's or
    a studio request)."""

    name: str  # the topic as recipes name it (no prefix)
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int | None

    @property
    def keys(self) -> list[str]:
        """One lane per key of its topic; a record without a key waits for none."""
        return [f"{self.topic}:{self.key.hex()}"] if self.key is not None else []

    def original(self) -> OriginalRecord:
        return OriginalRecord(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            key=self.key,
            value=self.value,
            headers=self.headers,
        )


@dataclass
class Run:
    """One run in progress: a recipe, the event it runs for, and what its steps gave."""

    recipe: Recipe
    event: dict[str, Any]
    trigger: TriggerRef
    run_key: str
    record: TriggerRecord | None
    state: RecipeRun | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)  # keyed-hash ids, for privacy erase

    @property
    def key(self) -> str:
        return run_state_key(self.recipe.name, self.run_key)


def _now() -> datetime:
    return datetime.now(UTC)


def run_key_for(recipe: Recipe, event: dict[str, Any], options: RecipesSettings) -> str | None:
    """The run key when the recipe's filter takes the event, else None."""
    context = build_context(recipe, event, options, run_key="")
    condition = recipe.trigger.filter if recipe.trigger else recipe.schedule.filter  # type: ignore[union-attr]
    if condition is not None and not condition.matches(context):
        return None
    if recipe.once_per is None:
        return str(event["id"])
    value = recipe.once_per.render(context)
    if value is None or value == "" or isinstance(value, dict | list):
        raise ExpressionError(f"once_per gives {type(value).__name__}, not a key")
    return str(value)


class RunExecutor:
    """Runs one run at a time per run key, with the runner's producer, run store and step
    results; see the module docstring."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        store: RunStore,
        results: StepResults,
        privacy: RecipePrivacy,
        metrics: RecipeMetrics,
        *,
        kafka: KafkaSettings,
        options: RecipesSettings,
        lookup_skew_s: float,
        default_workspace: int | None,
    ) -> None:
        self._producer = producer
        self._store = store
        self._results = results
        self._privacy = privacy
        self._metrics = metrics
        self._kafka = kafka
        self._options = options
        self._lookup_skew_s = lookup_skew_s
        self._default_workspace = default_workspace
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def run(self, run: Run) -> None:
        """Run `run` to its end (or skip it: already finished), one at a time per run key."""
        recipe = run.recipe
        where = {"recipe": recipe.name, "run_key": run.run_key}
        async with self._one_at_a_time(run.key):
            outcome = self._store.outcome(run.key)
            if outcome is not None:
                self._metrics.runs.labels(recipe.name, "skipped").inc()
                _log.info("recipes.skipped", outcome=outcome, **where)
                return
            began = time.monotonic()
            now = _now()
            run.state = self._store.get(run.key)
            if run.state is None:
                run.state = RecipeRun(
                    recipe=recipe.name,
                    run_key=run.run_key,
                    status="running",
                    trigger=run.trigger,
                    subjects=run.subjects,
                    started_at=now,
                    updated_at=now,
                )
                await self.save(run.state)
                _log.info("recipes.started_run", event_id=run.trigger.event_id, **where)
            else:
                _log.info("recipes.resumed", steps_done=len(run.state.steps), **where)
            try:
                for step in recipe.steps:
                    await self._step(run, step)
            except _RunFailed as failure:
                await self._finish(run, "failed", failure.error)
                if failure.dead_letter and run.record is not None:
                    await self.dead_letter(
                        run.record,
                        recipe.name,
                        failure.error.kind,
                        f"recipe {recipe.name}: step {failure.error.step}: {failure.error.message}",
                    )
                self._metrics.runs.labels(recipe.name, "failed").inc()
                self._metrics.duration.labels(recipe.name, "failed").observe(
                    time.monotonic() - began
                )
                _log.warning(
                    "recipes.failed",
                    kind=failure.error.kind,
                    step=failure.error.step,
                    command_id=failure.error.command_id,
                    **where,
                )
                return
            await self._finish(run, "succeeded", None)
            self._metrics.runs.labels(recipe.name, "succeeded").inc()
            self._metrics.duration.labels(recipe.name, "succeeded").observe(
                time.monotonic() - began
            )
            _log.info("recipes.succeeded", **where)

    def _context(self, run: Run) -> dict[str, Any]:
        context = build_context(run.recipe, run.event, self._options, run.run_key, run.steps)
        return context

    def _since_ms(self, run: Run) -> int:
        assert run.state is not None
        started = int(run.state.started_at.timestamp() * 1000)
        stamp = run.trigger.timestamp_ms
        earliest = min(started, stamp) if stamp is not None else started
        return max(0, earliest - int(self._lookup_skew_s * 1000))

    async def _step(self, run: Run, step: Step) -> None:
        assert run.state is not None
        recipe = run.recipe
        done = run.state.steps.get(step.id)
        if done is not None and done.status == "failed":
            # Recorded before a crash that came before the run's end: the run failed.
            error = done.error or RunError(kind="step-failed", message="failed", step=step.id)
            raise _RunFailed(error, dead_letter=False)
        if done is not None:
            run.steps[step.id] = await self._recall(run, step, done)
            return
        context = self._context(run)
        try:
            if step.when is not None and not step.when.matches(context):
                run.steps[step.id] = {"status": "skipped", "result": None}
                self._metrics.steps.labels(recipe.name, step.id, "skipped").inc()
                await self._record_step(run, step, StepState(status="skipped", completed_at=_now()))
                return
            rounds = iterations(step, context)
        except ExpressionError as exc:
            raise self._expression_failure(recipe, step, exc) from None
        if step.kind == "command":
            await self._command_step(run, step, rounds)
        else:
            await self._publish_step(run, step, rounds)

    def _expression_failure(self, recipe: Recipe, step: Step, exc: Exception) -> _RunFailed:
        self._metrics.steps.labels(recipe.name, step.id, "failed").inc()
        return _RunFailed(
            RunError(kind="recipe-expression", message=str(exc), step=step.id), dead_letter=True
        )

    async def _command_step(
        self, run: Run, step: Step, rounds: list[tuple[int | None, dict[str, Any]]]
    ) -> None:
        assert step.action is not None
        recipe = run.recipe
        try:
            commands = [
                (step_command_id(recipe.name, run.run_key, step.id, index), render_command(step, c))
                for index, c in rounds
            ]
        except ExpressionError as exc:
            raise self._expression_failure(recipe, step, exc) from None
        since = self._since_ms(run)

        async def one(command_id: str, data: dict[str, Any]) -> CommandResult:
            async def send() -> None:
                await self._send_command(recipe, step.action or "", command_id, data)

            return await self._results.result(
                command_id, send=send, since_ms=since, wait_s=self._options.step_timeout_s
            )

        ids = [command_id for command_id, _ in commands]
        try:
            outcomes = await asyncio.gather(*(one(cid, data) for cid, data in commands))
        except TimeoutError:
            self._metrics.steps.labels(recipe.name, step.id, "failed").inc()
            error = RunError(
                kind="step-timeout",
                message=f"no result for {step.action} within {self._options.step_timeout_s:g} s "
                "(RECIPES_STEP_TIMEOUT_S): is a worker running this action?",
                step=step.id,
            )
            await self._record_step(
                run,
                step,
                StepState(status="failed", command_ids=ids, error=error, completed_at=_now()),
            )
            raise _RunFailed(error, dead_letter=True) from None
        failed = [outcome for outcome in outcomes if outcome.status != "succeeded"]
        if failed:
            first = failed[0]
            reason = first.error
            error = RunError(
                kind="step-failed",
                message=f"{step.action} command failed"
                + (f": {reason.kind}: {reason.message}" if reason else ""),
                step=step.id,
                command_id=first.command_id,
            )
            self._metrics.steps.labels(recipe.name, step.id, "failed").inc()
            await self._record_step(
                run,
                step,
                StepState(status="failed", command_ids=ids, error=error, completed_at=_now()),
            )
            raise _RunFailed(error, dead_letter=False)
        values = [await self._privacy.open_result(outcome.result) for outcome in outcomes]
        run.steps[step.id] = {
            "status": "succeeded",
            "result": values if step.foreach is not None else values[0],
        }
        self._metrics.steps.labels(recipe.name, step.id, "succeeded").inc()
        await self._record_step(
            run, step, StepState(status="succeeded", command_ids=ids, completed_at=_now())
        )

    async def _publish_step(
        self, run: Run, step: Step, rounds: list[tuple[int | None, dict[str, Any]]]
    ) -> None:
        recipe = run.recipe
        published: list[PublishedRecord] = []
        for index, context in rounds:
            try:
                key, data = render_message(recipe, step, context)
            except (ExpressionError, ValueError) as exc:
                kind = (
                    "recipe-expression" if isinstance(exc, ExpressionError) else "invalid-message"
                )
                raise _RunFailed(
                    RunError(kind=kind, message=str(exc), step=step.id), dead_letter=True
                ) from None
            message_id = step_command_id(recipe.name, run.run_key, step.id, index)
            published.append(await self._publish(run, step, message_id, key, data))
        run.steps[step.id] = {
            "status": "succeeded",
            "result": [p.model_dump() for p in published]
            if step.foreach is not None
            else (published[0].model_dump() if published else None),
        }
        self._metrics.steps.labels(recipe.name, step.id, "succeeded").inc()
        await self._record_step(
            run, step, StepState(status="succeeded", published=published, completed_at=_now())
        )

    async def _recall(self, run: Run, step: Step, done: StepState) -> dict[str, Any]:
        """The view of a step an earlier attempt of this run finished."""
        if done.status == "skipped":
            return {"status": "skipped", "result": None}
        if step.kind == "publish":
            values = [p.model_dump() for p in done.published]
            return {
                "status": done.status,
                "result": values if step.foreach is not None else (values[0] if values else None),
            }
        found = []
        for command_id in done.command_ids:
            result = await self._results.lookup(command_id, self._since_ms(run))
            if result is None:
                raise _RunFailed(
                    RunError(
                        kind="result-expired",
                        message="the result of a finished step is no longer on "
                        "dastra.command-results.v1 (retention)",
                        step=step.id,
                        command_id=command_id,
                    ),
                    dead_letter=True,
                )
            found.append(await self._privacy.open_result(result.result))
        return {
            "status": done.status,
            "result": found if step.foreach is not None else (found[0] if found else None),
        }

    # --- writing -----------------------------------------------------------------------------

    async def _record_step(self, run: Run, step: Step, state: StepState) -> None:
        assert run.state is not None
        run.state = run.state.model_copy(
            update={"steps": {**run.state.steps, step.id: state}, "updated_at": _now()}
        )
        await self.save(run.state)

    async def _finish(self, run: Run, status: str, error: RunError | None) -> None:
        assert run.state is not None
        now = _now()
        run.state = run.state.model_copy(
            update={"status": status, "error": error, "updated_at": now, "finished_at": now}
        )
        await self.save(run.state)

    async def save(self, state: RecipeRun) -> None:
        """Write a run's state on dastra.recipe-runs.v1 and note it in the run store."""
        await self._producer.send_and_wait(
            self._kafka.topic(RECIPE_RUNS),
            key=state.key.encode(),
            value=state.model_dump_json().encode(),
        )
        self._store.note(state)

    async def _send_command(
        self, recipe: Recipe, action: str, command_id: str, data: dict[str, Any]
    ) -> None:
        payload: Any = data
        extensions = None
        sealed = self._privacy.seal_command(
            action, data, data.get("workspaceId") or self._default_workspace, command_id
        )
        if sealed is not None:
            for key_bytes, key_value in sealed.key_records:
                await self._producer.send_and_wait(sealed.topic, key=key_bytes, value=key_value)
            if sealed.batch is not None:
                sealed.batch.commit()
            payload = sealed.data
            extensions = {PAYLOAD_EXTENSION: "encrypted"}
        event = new_event(
            type=f"eu.dastra.command.{action}",
            source=f"dastra-kafka://recipes/{recipe.name}",
            id=command_id,
            data=payload,
            extensions=extensions,
        )
        headers, value = encode_binary(event)
        topic = self._kafka.topic(command_topic(action))
        with sending(topic, message_id=command_id, event_type=event.get_type()) as span:
            span.set_attribute("dastra_kafka.recipe", recipe.name)
            await self._producer.send_and_wait(
                topic,
                key=command_record_key(action, data, command_id),
                value=value,
                headers=header_pairs(inject(headers)),
            )
        _log.debug("recipes.command_sent", recipe=recipe.name, action=action, command_id=command_id)

    async def _publish(
        self, run: Run, step: Step, message_id: str, key: str | None, data: dict[str, Any]
    ) -> PublishedRecord:
        assert step.topic is not None and step.event_type is not None
        subject = run.event.get("subject")
        event = new_event(
            type=step.event_type,
            source=f"dastra-kafka://recipes/{run.recipe.name}",
            id=message_id,
            subject=str(subject) if subject is not None else None,
            data=data,
        )
        headers, value = encode_binary(event)
        if key is None:
            key = run.event.get("key") or run.run_key
        metadata = await self._producer.send_and_wait(
            self._kafka.topic(step.topic),
            key=key.encode(),
            value=value,
            headers=header_pairs(headers),
        )
        return PublishedRecord(
            topic=step.topic, partition=metadata.partition, offset=metadata.offset, id=message_id
        )

    async def dead_letter(
        self, record: TriggerRecord, recipe: str, kind: str, message: str
    ) -> None:
        """Write `record` to the dead-letter topic (component `recipes`), with the reason."""
        key, value, headers = dead_letter_record(
            record.original(), kind=kind, message=message, component=COMPONENT
        )
        await self._producer.send_and_wait(
            self._kafka.topic(DEAD_LETTER), key=key, value=value, headers=headers
        )
        self._metrics.dead_lettered.labels(recipe, kind).inc()
        _log.warning(
            "recipes.dead_lettered",
            recipe=recipe,
            kind=kind,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )
