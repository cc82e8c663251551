"""The studio's runs: trigger samples, run history, "send once" and retries (routes under
`/studio/api/`, added to the studio's app by `runs_router`).

Consumes dastra.recipe-runs.v1 from the beginning, every partition, without a consumer group
(`StudioRuns` keeps the latest record of every run), and, for samples, the last records of a
trigger topic (`bus/reading.read_to_end`, by offsets, never in a group). Produces one
`RecipeRequest` CloudEvent per send-once or retry on dastra.recipe-requests.v1 (key: the
recipe's name), acknowledged by the broker (`acks=all`); workers with RECIPES_STUDIO=true run
it (`consumers/recipes/requests.py`) and write the run on dastra.recipe-runs.v1 as any run.

    GET  /studio/api/samples?topic=&type=&limit=   the latest records of a topic, newest first,
                                                  data as the topic holds it (never decrypted)
    GET  /studio/api/runs?recipe=&status=&limit=   recent runs, newest first, steps in order
    GET  /studio/api/runs/commands?recipe=&run_key=  what each command of one run did: its
                                                  result (ids, status) and, failed, its dead
                                                  letter's reason (`outcomes.py`)
    POST /studio/api/recipes/{name}/send-once      {"event"} -> 202 {"recipe", "version",
                                                  "run_key", "request_id"}
    POST /studio/api/runs/retry                   {"recipe", "run_key"} -> 202 {"recipe",
                                                  "run_key", "retry_of"}

A retry of run `K` runs under `K'` = `<first run key>~retry-<n + 1>` (`K` = `...~retry-<n>`, or
n = 0): one retry per failed run (409 `already-retried` once `K'` exists), so which run a retry
retries is read from its key (`retry_of`), and two clicks on "retry" make one run. Logs carry
recipe names, run keys and token ids, never sample data.

    async with StudioRuns(kafka, studio_settings) as runs:
        app.include_router(runs_router(runs, store, reader=..., editor=..., ...))
"""

# No `from __future__ import annotations`: FastAPI must see the route signatures.

import asyncio
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Annotated, Any, Literal, Protocol, Self

import structlog
from aiokafka.structs import ConsumerRecord
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bus.envelope import EnvelopeError, decode, encode_binary, new_event
from bus.errors import KafkaUnavailableError, TopicMissingError
from bus.producer import AsyncProducer
from bus.reading import StateRecord, read_to_end
from bus.records.recipe_requests import (
    REQUEST_TYPES,
    RETRY_SEPARATOR,
    RecipeRequest,
    SampleEvent,
)
from bus.records.recipe_runs import RecipeRun, StepState, run_state_key
from bus.settings import KafkaSettings
from bus.topics import RECIPE_REQUESTS, RECIPE_RUNS
from consumers.recipes.language import Problem, Recipe
from consumers.topic_reader import TopicReader
from dastra_kafka.studio.outcomes import command_outcomes
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore, StudioStoreError

__all__ = ["StudioRuns", "retry_key", "retry_of", "runs_router"]

_log = structlog.get_logger(__name__)

REQUEST_SOURCE = "dastra-kafka://studio"
# With a `type`, the samples are looked for among this many last records of each partition.
_SCAN_WITH_TYPE = 200
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_RETRY = re.compile(re.escape(RETRY_SEPARATOR) + r"([0-9]+)$")


def retry_key(run_key: str) -> str:
    """The key of the retry of run `run_key`: `<first run key>~retry-<n + 1>`."""
    found = _RETRY.search(run_key)
    if found is None:
        return f"{run_key}{RETRY_SEPARATOR}1"
    return f"{run_key[: found.start()]}{RETRY_SEPARATOR}{int(found.group(1)) + 1}"


def retry_of(run_key: str) -> str | None:
    """The key of the run a retry retries (None: not a retry)."""
    found = _RETRY.search(run_key)
    if found is None:
        return None
    n = int(found.group(1))
    first = run_key[: found.start()]
    return first if n <= 1 else f"{first}{RETRY_SEPARATOR}{n - 1}"


class StudioRuns:
    """The runs of dastra.recipe-runs.v1 (latest record per run), the writer of the studio's
    requests, and the reader of trigger samples; see the module docstring."""

    def __init__(self, kafka: KafkaSettings, settings: StudioSettings) -> None:
        self._kafka = kafka
        self._settings = settings
        self._table: dict[str, RecipeRun] = {}
        self._reader = TopicReader(
            kafka,
            kafka.topic(RECIPE_RUNS),
            self._ingest,
            name="studio runs",
            error=StudioStoreError,
        )
        self._producer = AsyncProducer(kafka, timeout_s=settings.kafka_timeout_s)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the producer, read dastra.recipe-runs.v1 to its end."""
        admin = AdminClient(self._kafka.confluent_config())
        runs, requests = self._kafka.topic(RECIPE_RUNS), self._kafka.topic(RECIPE_REQUESTS)
        metadata = await asyncio.to_thread(admin.list_topics, None, 15)
        for topic in (runs, requests):
            found = metadata.topics.get(topic)
            if found is None or found.error is not None or not found.partitions:
                raise StudioStoreError(f"topic {topic} is missing: run `dastra-kafka topics apply`")
        self._producer.open()
        await self._reader.start(metadata.topics[runs].partitions)
        await self.refresh()

    async def stop(self) -> None:
        await self._reader.stop()
        await asyncio.to_thread(self._producer.close)

    async def refresh(self) -> None:
        """Read the runs written up to now."""
        await self._reader.catch_up(self._settings.read_timeout_s, hint="STUDIO_READ_TIMEOUT_S")

    def topic(self, name: str) -> str:
        """A topic's name on the cluster (with the deployment's prefix)."""
        return self._kafka.topic(name)

    def runs(self) -> list[RecipeRun]:
        """Every run known, newest first (by start)."""
        return sorted(self._table.values(), key=lambda run: run.started_at, reverse=True)

    def get(self, recipe: str, run_key: str) -> RecipeRun | None:
        return self._table.get(run_state_key(recipe, run_key))

    async def request(self, request: RecipeRequest, request_id: str) -> None:
        """Write one request for the workers; returns once the broker acknowledged it."""
        event = new_event(
            type=REQUEST_TYPES[request.kind],
            source=REQUEST_SOURCE,
            id=request_id,
            data=request.model_dump(mode="json"),
            time=request.requested_at,
        )
        headers, value = encode_binary(event)
        await self._producer.produce(
            self._kafka.topic(RECIPE_REQUESTS),
            key=request.recipe.encode(),
            value=value,
            headers=headers,
        )
        _log.info(
            "studio.requested",
            recipe=request.recipe,
            kind=request.kind,
            run_key=request.run_key,
            retry_of=request.retry_of,
            requested_by=request.requested_by,
        )

    async def outcomes(self, run: RecipeRun) -> dict[str, dict[str, Any]]:
        """What the run's commands did (`outcomes.command_outcomes`), by command id, read from a
        minute before the run, or the first run it retries, started."""
        first = self.get(run.recipe, _RETRY.sub("", run.run_key)) or run
        since = min(run.started_at, first.started_at)
        ids = [command_id for step in run.steps.values() for command_id in step.command_ids]
        if not ids:
            return {}
        return await asyncio.to_thread(
            command_outcomes,
            self._kafka,
            ids,
            since_ms=int(since.timestamp() * 1000) - 60_000,
            timeout=self._settings.read_timeout_s,
        )

    async def samples(self, topic: str, event_type: str | None, limit: int) -> list[dict[str, Any]]:
        """The latest `limit` records of `topic` (as recipes name it), newest first, of type
        `event_type` when given. Raises `TopicMissingError`."""
        scan = _SCAN_WITH_TYPE if event_type else limit
        return await asyncio.to_thread(
            _latest, self._kafka, self._kafka.topic(topic), event_type, limit, scan
        )

    def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        key = record.key.decode("utf-8", "replace")
        if record.value is None:  # a tombstone (privacy erasure)
            self._table.pop(key, None)
            return
        try:
            run = RecipeRun.model_validate_json(record.value)
        except ValidationError:
            _log.warning("studio.run_unreadable", partition=record.partition, offset=record.offset)
            return
        known = self._table.get(key)
        if known is None or run.updated_at >= known.updated_at:
            self._table[key] = run


def _latest(
    kafka: KafkaSettings, topic: str, event_type: str | None, limit: int, scan: int
) -> list[dict[str, Any]]:
    found: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
    try:
        for record in read_to_end(kafka, topic, timeout=10, last=scan):
            sample = _sample(record)
            if event_type is not None and sample["type"] != event_type:
                continue
            found.append(((record.timestamp_ms, record.partition, record.offset), sample))
    except TopicMissingError:
        raise
    except KafkaException as exc:
        # Not read to the end in time: the samples found so far.
        if exc.args[0].code() != KafkaError._TIMED_OUT:
            raise KafkaUnavailableError(str(exc)) from exc
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [sample for _order, sample in found[:limit]]


def _sample(record: StateRecord) -> dict[str, Any]:
    """One record as the studio shows it: its CloudEvent attributes and its data exactly as the
    topic holds it (sealed fields stay sealed); a record that is not JSON: its value as text."""
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    sample: dict[str, Any] = {
        "id": None,
        "type": None,
        "source": None,
        "subject": None,
        "time": None,
        "key": key,
        "partition": record.partition,
        "offset": record.offset,
        "data": None,
    }
    try:
        envelope = decode(record.headers, record.value, fallback_id="")
    except EnvelopeError:
        text = record.value.decode("utf-8", "replace") if record.value is not None else None
        return {**sample, "data": text}
    return {
        **sample,
        "id": envelope.id or None,
        "type": envelope.type,
        "source": envelope.source,
        "subject": envelope.subject,
        "time": envelope.time.isoformat() if envelope.time else None,
        "data": envelope.data,
    }


# --- routes ------------------------------------------------------------------------------------


class _Who(Protocol):
    token_id: str


class SendOnceEvent(BaseModel):
    """The sample to run the recipe for (as the dry run takes it; `results` is ignored)."""

    model_config = ConfigDict(extra="ignore")

    data: Any = None
    type: str | None = None
    key: str | None = None
    source: str | None = None
    subject: str | None = None


class SendOnceBody(BaseModel):
    event: SendOnceEvent


class RetryBody(BaseModel):
    recipe: str = Field(min_length=1)
    run_key: str = Field(min_length=1)


def _answer(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"status": status, "error": error, "message": message, **extra}, status_code=status
    )


def _step_view(step: str, state: StepState) -> dict[str, Any]:
    return {
        "id": step,
        "status": state.status,
        "command_ids": state.command_ids,
        "error": state.error.model_dump(mode="json") if state.error else None,
    }


def _run_view(run: RecipeRun, order: list[str] | None) -> dict[str, Any]:
    ids = [step for step in (order or []) if step in run.steps]
    ids += [step for step in run.steps if step not in ids]
    return {
        "recipe": run.recipe,
        "run_key": run.run_key,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "trigger": run.trigger.model_dump(mode="json"),
        "steps": [_step_view(step, run.steps[step]) for step in ids],
        "error": run.error.model_dump(mode="json") if run.error else None,
        "retry_of": retry_of(run.run_key),
    }


def runs_router(
    runs: StudioRuns,
    store: StudioStore,
    *,
    reader: Callable[..., Any],
    editor: Callable[..., Any],
    read_only: Mapping[str, Recipe],
    check: Callable[[Any, str], tuple[Recipe | None, list[Problem]]],
) -> APIRouter:
    """The routes of the module docstring. `reader` and `editor` are the app's dependencies
    (a caller with a `token_id`), `read_only` the shipped and file recipes, `check` the
    studio's checks of a recipe document."""
    router = APIRouter(prefix="/studio/api")
    Reader = Annotated[_Who, Depends(reader)]  # noqa: N806 - a type alias
    Editor = Annotated[_Who, Depends(editor)]  # noqa: N806 - a type alias

    def step_order(name: str) -> list[str] | None:
        if name in read_only:
            return [step.id for step in read_only[name].steps]
        version = store.current(name)
        steps = (version.recipe or {}).get("steps") if version is not None else None
        if not isinstance(steps, list):
            return None
        return [str(s["id"]) for s in steps if isinstance(s, dict) and "id" in s]

    @router.get("/samples", tags=["runs"], response_model=None)
    async def samples(
        _who: Reader,
        topic: Annotated[str, Query(min_length=1, max_length=249)],
        type: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=20)] = 5,
    ) -> dict[str, Any] | JSONResponse:
        if not _TOPIC_NAME.match(topic):
            return _answer(422, "invalid-topic", f"{topic!r} is not a Kafka topic name")
        try:
            found = await runs.samples(topic, type, limit)
        except TopicMissingError:
            return _answer(
                404,
                "unknown-topic",
                f"topic {topic!r} does not exist (with the deployment's prefix: "
                f"{runs.topic(topic)!r}); a topic of your own must be created before "
                "recipes can read it",
                topic=topic,
            )
        return {"topic": topic, "samples": found}

    @router.get("/runs", tags=["runs"])
    async def list_runs(
        _who: Reader,
        recipe: Annotated[str | None, Query(max_length=100)] = None,
        status: Annotated[Literal["running", "succeeded", "failed"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        await runs.refresh()
        await store.refresh()
        chosen = [
            run
            for run in runs.runs()
            if (recipe is None or run.recipe == recipe) and (status is None or run.status == status)
        ][:limit]
        orders: dict[str, list[str] | None] = {}
        for run in chosen:
            if run.recipe not in orders:
                orders[run.recipe] = step_order(run.recipe)
        return {"runs": [_run_view(run, orders[run.recipe]) for run in chosen]}

    @router.get("/runs/commands", tags=["runs"], response_model=None)
    async def run_commands(
        _who: Reader,
        recipe: Annotated[str, Query(min_length=1, max_length=100)],
        run_key: Annotated[str, Query(min_length=1, max_length=1000)],
    ) -> dict[str, Any] | JSONResponse:
        await runs.refresh()
        run = runs.get(recipe, run_key)
        if run is None:
            return _answer(404, "unknown-run", f"no run {run_key!r} of {recipe!r} is known")
        found = await runs.outcomes(run)
        commands = [
            {"step": step, **found.get(command_id, {"command_id": command_id, "status": None})}
            for step, state in run.steps.items()
            for command_id in state.command_ids
        ]
        return {"recipe": recipe, "run_key": run_key, "commands": commands}

    @router.post("/recipes/{name}/send-once", tags=["runs"], status_code=202, response_model=None)
    async def send_once(name: str, body: SendOnceBody, who: Editor) -> JSONResponse:
        if name in read_only:
            return _answer(
                409,
                "read-only-recipe",
                f"{name!r} is a shipped or file recipe: send once runs studio recipes (make a "
                "copy in the studio)",
            )
        await store.refresh()
        current = store.current(name)
        if current is None:
            return _answer(404, "unknown-recipe", f"no studio recipe is named {name!r}")
        recipe, problems = check(current.recipe, f"studio:{name}@{current.version}")
        if recipe is None or problems:
            return _answer(
                409,
                "invalid-recipe",
                f"version {current.version} of {name!r} is invalid: fix it, save, then send once",
                problems=[{"field": p.field, "message": p.message} for p in problems],
            )
        request_id = f"studio-{uuid.uuid4().hex}"
        request = RecipeRequest(
            kind="send-once",
            recipe=name,
            version=current.version,
            run_key=request_id,
            event=SampleEvent(**body.event.model_dump()),
            requested_by=who.token_id,
            requested_at=datetime.now(UTC),
        )
        await runs.request(request, request_id)
        return JSONResponse(
            {
                "recipe": name,
                "version": current.version,
                "run_key": request_id,
                "request_id": request_id,
            },
            status_code=202,
        )

    @router.post("/runs/retry", tags=["runs"], status_code=202, response_model=None)
    async def retry(body: RetryBody, who: Editor) -> JSONResponse:
        await runs.refresh()
        failed = runs.get(body.recipe, body.run_key)
        if failed is None:
            return _answer(
                404, "unknown-run", f"no run {body.run_key!r} of {body.recipe!r} is known"
            )
        if failed.status != "failed":
            return _answer(
                409,
                "not-failed",
                f"the run is {failed.status}: only a failed run can be retried",
                run_status=failed.status,
            )
        new_key = retry_key(failed.run_key)
        again = runs.get(body.recipe, new_key)
        if again is not None:
            return _answer(
                409,
                "already-retried",
                f"the run was retried already, as {new_key!r} ({again.status}): retry that one "
                "if it failed",
                retry_run_key=new_key,
            )
        request_id = f"studio-{uuid.uuid4().hex}"
        request = RecipeRequest(
            kind="retry",
            recipe=body.recipe,
            run_key=new_key,
            retry_of=failed.run_key,
            trigger=failed.trigger,
            steps={k: v for k, v in failed.steps.items() if v.status != "failed"},
            requested_by=who.token_id,
            requested_at=datetime.now(UTC),
        )
        await runs.request(request, request_id)
        return JSONResponse(
            {"recipe": body.recipe, "run_key": new_key, "retry_of": failed.run_key},
            status_code=202,
        )

    return router
