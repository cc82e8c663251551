"""Recipe runner: the enabled recipes, run by the worker next to the command agents.

Consumes the trigger topics of the enabled recipes (one thin Faust agent per topic, in the
worker's consumer group: `dastra.rights-requests.v1`, `dastra.tasks.v1`, or topics of yours such
as `crm.customer-deleted`), dastra.command-results.v1 (through the agents' result index, see
`consumers/recipes/results.py`) and dastra.recipe-runs.v1 (`consumers/recipes/state.py`); for
periodic recipes, Dastra's rights requests or tasks (GET, every RECIPES_SCHEDULE_INTERVAL_S).
Produces commands on `dastra.commands.<action>.v1` (CloudEvents binary mode, deterministic
`ce_id`), messages on `dastra.notifications.v1` or topics of yours, the run state on
dastra.recipe-runs.v1 (start, after each step, end), and dead letters (component `recipes`) for
trigger records a recipe could not process (not JSON, an expression failing on its data, a step
timing out).

A run, for one recipe and one triggering event:

1. The run key is the event's id (or the recipe's `once_per` value). A finished run with that key
   on dastra.recipe-runs.v1 means: skip. An unfinished one: resume after its last finished step.
2. Each step renders its command (or message) from the event and earlier steps' results. A
   command gets the id `recipe:<name>:<run key>:<step>[:<item>]`. If that id already has a result
   (a resumed run), the result is read back; otherwise the command is sent and its result
   awaited. A redelivered command is skipped by the agents' dedupe, so a repeated run repeats no
   Dastra call. A failed command (its failed result and dead letter come from the agents) fails
   the run; the other recipes go on.
3. The trigger record's offset is acknowledged once every run it started is finished (records
   in offset order per partition, as the agents do), so a crash redelivers it and step 1
   resumes it.

Privacy (README "Privacy"): an event of `dastra.rights-requests.v1` or `dastra.tasks.v1` in a
non-full payload mode is first made whole in memory (`consumers/recipes/privacy.py`): encrypted
fields are decrypted with the key topic's keys, thin or redacted objects are fetched from Dastra
by id; an event that cannot be made whole is dead-lettered with the reason. With
PRIVACY_MODE_COMMANDS=encrypted the commands steps send are sealed as the webhook seals its own
(key records first), and encrypted step results (PRIVACY_MODE_RESULTS=encrypted) are decrypted
for the next steps. Messages steps publish carry what the recipe maps into them.

Records with the same key run in order; other records run concurrently, at most
RECIPES_MAX_IN_FLIGHT taken from Kafka and unfinished (the keyed engine of the agents,
`consumers/_keyed.py`, with one lane per topic and key). On a rebalance, runs in flight get
WORKER_REVOKE_GRACE_S, then are abandoned unacknowledged; the new owner reads
dastra.recipe-runs.v1 to its end before it starts, and resumes them.

Periodic recipes run in one worker of the group, the schedule leader: the worker assigned
partition 0 of `leader_topic`, a topic the whole group consumes (the app passes the command topic
of the worker's first action, `dastra.commands.create-task.v1` by default). Kafka's group
protocol gives each partition to one member, so there is one leader per group, without a topic of
its own; leadership moves with that partition. A worker stops its periodic checks as soon as the
partition is revoked (a check cut short is resumed by the next one: runs are idempotent by their
key and command ids), and the worker assigned it starts them once the run state is caught up.

Traces (`bus/tracing.py`): a trigger record is handled in a `process <topic>` span, in the trace
its `ce_traceparent` carries (a poller event's); each step's command is sent in a child `send`
span and carries the trace on to the agents.

    runner = RecipeRunner(settings, recipes, leader_topic=topic, on_crash=app.crash)
    runner.attach(app)                       # the trigger agents
    await runner.start(dispatcher.index, dispatcher.dastra, dispatcher.keys)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import faust
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bus.deadletter import OriginalRecord, dead_letter
from bus.envelope import (
    Envelope,
    EnvelopeError,
    decode,
    deterministic_id,
    encode_binary,
    header_pairs,
    new_event,
)
from bus.hooks.events import workspace_of
from bus.metrics import role_registry
from bus.privacy import PAYLOAD_EXTENSION
from bus.privacy.keystore import KeyStore
from bus.records.commands import CommandResult, command_record_key
from bus.records.recipe_runs import (
    PublishedRecord,
    RecipeRun,
    RunError,
    StepState,
    TriggerRef,
    run_state_key,
)
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    RECIPE_REQUESTS,
    RECIPE_RUNS,
    RIGHTS_REQUESTS,
    STUDIO_RECIPES,
    TASKS,
    command_topic,
    load_catalogue,
    resolve_topics_file,
)
from bus.tracing import inject, processing, sending
from consumers._keyed import KeyedEngine
from consumers.dispatcher import fallback_id
from consumers.recipes.expressions import ExpressionError
from consumers.recipes.language import (
    Recipe,
    Step,
    build_context,
    event_context,
    iterations,
    load_recipes,
    render_command,
    render_message,
    step_command_id,
)
from consumers.recipes.privacy import RecipePrivacy, TriggerUnreadable
from consumers.recipes.render import record_event
from consumers.recipes.requests import InvalidRequestError, RefusedRequest, StudioRequests
from consumers.recipes.results import StepResults
from consumers.recipes.state import RunStore
from consumers.recipes.studio import StudioMetrics, StudioRecipes, StudioTriggers
from consumers.result_index import ResultIndex
from consumers.settings import WorkerConfig
from dastra.client import DastraClient
from dastra.errors import DastraError

__all__ = ["COMPONENT", "RecipeMetrics", "RecipeRunner"]

_log = structlog.get_logger(__name__)

COMPONENT = "recipes"
_SCHEDULE_CONCURRENCY = 8
_T = TypeVar("_T")


class RecipeMetrics:
    """Prometheus metrics of the recipe runner (served with the agents' at /metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or role_registry()
        r = self.registry
        self.runs = Counter(
            "dastra_recipe_runs",
            "Recipe runs that ended: succeeded, failed, or skipped (already finished)",
            ["recipe", "status"],
            registry=r,
        )
        self.steps = Counter(
            "dastra_recipe_steps",
            "Recipe steps that ended: succeeded, failed or skipped (their `when` was false)",
            ["recipe", "step", "status"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "dastra_recipe_triggers_dead_lettered",
            "Trigger records written to the dead-letter topic by the recipe runner",
            ["recipe", "kind"],
            registry=r,
        )
        self.duration = Histogram(
            "dastra_recipe_run_duration_seconds",
            "From the start (or resumption) of a run to its end",
            ["recipe", "status"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.in_flight = Gauge(
            "dastra_recipe_triggers_in_flight",
            "Trigger records taken from Kafka and not finished",
            registry=r,
        )
        self.checks = Counter(
            "dastra_recipe_schedule_checks",
            "Periodic checks of scheduled recipes (ok, or error when Dastra failed)",
            ["recipe", "outcome"],
            registry=r,
        )
        self.leader = Gauge(
            "dastra_recipe_schedule_leader",
            "1 while this worker is its consumer group's schedule leader (it runs the periodic "
            "recipes), else 0",
            ["group"],
            registry=r,
        )


class _RunFailed(Exception):  # noqa: N818 - control flow inside a run
    def __init__(self, error: RunError, *, dead_letter: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.dead_letter = dead_letter


@dataclass(eq=False)
class _Record:
    """One trigger record on its way through the runner."""

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
class _Run:
    """One run in progress."""

    recipe: Recipe
    event: dict[str, Any]
    trigger: TriggerRef
    run_key: str
    record: _Record | None
    state: RecipeRun | None = None
    steps: dict[str, Any] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)  # keyed-hash ids, for privacy erase

    @property
    def key(self) -> str:
        return run_state_key(self.recipe.name, self.run_key)


def _now() -> datetime:
    return datetime.now(UTC)


class RecipeRunner:
    """Runs the enabled recipes in the worker; see the module docstring."""

    def __init__(
        self,
        settings: WorkerConfig,
        recipes: Sequence[Recipe],
        *,
        leader_topic: str,
        on_crash: Callable[[BaseException], Awaitable[None]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._settings = settings
        self._leader_topic = leader_topic  # physical name; its partition 0 makes the leader
        self._kafka = settings.kafka
        self._options = settings.recipes
        self._worker = settings.worker
        self._recipes = list(recipes)
        self.metrics = RecipeMetrics(registry)
        self._by_topic: dict[str, list[Recipe]] = {}
        for recipe in self._recipes:
            if recipe.trigger is not None:
                self._by_topic.setdefault(recipe.trigger.topic, []).append(recipe)
        self._physical = {self._kafka.topic(name): name for name in self._by_topic}
        # Raises PrivacyError on a privacy setup that cannot work (e.g. no master key).
        self._privacy = RecipePrivacy(settings.kafka, settings.privacy, self._by_topic)
        workspaces = settings.dastra.watched_workspaces()
        default = settings.worker.workspace_id or settings.dastra.workspace_id
        self._workspaces = workspaces or ([default] if default else [])
        self._default_workspace = default

        self._producer: AIOKafkaProducer | None = None
        self._store: RunStore | None = None
        self._results: StepResults | None = None
        self._dastra: DastraClient | None = None
        self._engine = KeyedEngine[_Record](
            max_in_flight=self._options.max_in_flight,
            process=self._traced,
            on_crash=on_crash,
            gauge=self.metrics.in_flight,
            log=_log,
            name="recipes",
            describe=lambda record: {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
            },
            task_name=lambda record: f"recipes {record.topic}",
        )
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._schedules: list[asyncio.Task[None]] = []
        self._leader = False
        self._leader_gauge = self.metrics.leader.labels(self._kafka.topic(self._worker.app_id))
        self._leader_gauge.set(0)
        self._last_check: dict[str, float] = {}  # recipe -> monotonic start of its last check
        self._stop = asyncio.Event()
        self._studio: StudioRecipes | None = None
        self._triggers: StudioTriggers | None = None
        self._requests: StudioRequests | None = None
        self._studio_metrics = (
            StudioMetrics(self.metrics.registry) if self._options.studio else None
        )

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def recipes(self) -> list[Recipe]:
        """The enabled recipes: those of files, then the studio's (as they are now)."""
        studio = self._studio.enabled() if self._studio is not None else []
        return [*self._recipes, *studio]

    @property
    def trigger_topics(self) -> list[str]:
        """The topics the recipe agents consume (as recipes name them, without the prefix)."""
        return list(self._by_topic)

    @property
    def ready(self) -> bool:
        """The run state is caught up after the last assignment: records are being processed."""
        return self._engine.ready and (not self._options.studio or self._studio is not None)

    @property
    def in_flight(self) -> int:
        return self._engine.in_flight

    @property
    def leader(self) -> bool:
        """This worker runs the periodic recipes (it holds partition 0 of the leader topic)."""
        return self._leader

    def attach(self, app: faust.App) -> None:
        """Declare one agent per trigger topic: a thin loop handing every event to `submit`."""
        for name in self._by_topic:
            topic = app.topic(
                self._kafka.topic(name),
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )

            async def agent(stream: Any, _name: str = name) -> None:
                async for event in stream.noack().events():
                    await self.submit(_name, event)
                    del event  # Faust tracks unacked messages by weak reference

            agent.__name__ = agent.__qualname__ = "recipes_" + name.replace(".", "_").replace(
                "-", "_"
            )
            app.agent(topic, name=f"recipes:{name}")(agent)

    async def start(
        self, index: ResultIndex, dastra: DastraClient, keys: KeyStore | None = None
    ) -> None:
        """Open the producer, the run store and the step results (periodic recipes start when
        this worker becomes the schedule leader, at an assignment).
        `index`, `dastra` and `keys` (the key store) are the dispatcher's, which owns them."""
        self._dastra = dastra
        self._privacy.use(keys)
        producer = AIOKafkaProducer(
            **self._kafka.aiokafka_producer_config(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        await producer.start()
        self._producer = producer
        self._store = RunStore(self._kafka, on_crash=self._engine.crash)
        await self._store.start(await producer.partitions_for(self._kafka.topic(RECIPE_RUNS)))
        self._results = StepResults(self._kafka, index)
        await self._results.start(await producer.partitions_for(self._kafka.topic(COMMAND_RESULTS)))
        if self._options.studio:
            await self._start_studio(producer)
        _log.info(
            "recipes.started",
            recipes=[recipe.name for recipe in self._recipes],
            topics=self.trigger_topics,
            leader_topic=self._leader_topic,
        )

    async def _start_studio(self, producer: AIOKafkaProducer) -> None:
        """Follow dastra.recipes.v1 (read to its end first) and the studio recipes' triggers."""
        catalogue = load_catalogue(resolve_topics_file(self._settings.service.topics_file))
        files = load_recipes(self._options, catalogue)
        reserved = {recipe.name for recipe in files.recipes}
        reserved |= {p.recipe for p in files.problems if p.recipe is not None}
        assert self._studio_metrics is not None
        studio = StudioRecipes(
            self._kafka,
            self._options,
            catalogue,
            reserved=reserved,
            metrics=self._studio_metrics,
            on_change=self._studio_changed,
            on_crash=self._engine.crash,
        )
        await studio.start(await producer.partitions_for(self._kafka.topic(STUDIO_RECIPES)))
        await studio.catch_up(self._options.state_timeout_s)
        triggers = StudioTriggers(
            self._kafka,
            f"{self._kafka.topic(self._worker.app_id)}-studio",
            studio,
            handle=self._studio_record,
            on_assigned=self._studio_assigned,
            on_crash=self._engine.crash,
            also=(RECIPE_REQUESTS,),
        )
        self._studio, self._triggers = studio, triggers
        self._requests = StudioRequests(
            self._kafka,
            studio,
            self._recipes,
            self._privacy,
            self._default_workspace,
            self._options.state_timeout_s,
        )
        await triggers.start()
        _log.info("recipes.studio_started", recipes=sorted(studio.versions()))

    def _studio_changed(self) -> None:
        if self._triggers is not None:
            self._triggers.changed()

    async def _studio_assigned(self) -> None:
        store = self._require(self._store, "run store")
        await store.catch_up(self._options.state_timeout_s)

    async def _studio_record(self, name: str, message: Any) -> None:
        """One trigger record of studio recipes, run to the end of every run it starts."""
        studio = self._require(self._studio, "studio recipes")
        record = _Record(
            name=name,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=header_pairs(message.headers),
            timestamp_ms=message.timestamp,
        )
        if name == RECIPE_REQUESTS:
            await self._studio_request(record)
            return
        await self._handle_for(record, studio.by_topic(name))

    async def _studio_request(self, record: _Record) -> None:
        """A request of the studio (`consumers/recipes/requests.py`): run a studio recipe once
        for a sample, or retry a failed run; ended when the run has."""
        requests = self._require(self._requests, "studio requests")
        try:
            found = await requests.resolve(
                record.headers,
                record.value,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                dastra=self._require(self._dastra, "Dastra client"),
            )
        except InvalidRequestError as exc:
            await self._dead_letter(record, "", "invalid-request", str(exc))
            return
        if isinstance(found, RefusedRequest):
            await self._refuse_request(found)
            return
        store = self._require(self._store, "run store")
        key = run_state_key(found.recipe.name, found.run_key)
        if found.seed is not None and store.get(key) is None and store.outcome(key) is None:
            now = _now()
            await self._save(
                RecipeRun(
                    recipe=found.recipe.name,
                    run_key=found.run_key,
                    status="running",
                    trigger=found.trigger,
                    steps=found.seed,
                    subjects=found.subjects,
                    started_at=now,
                    updated_at=now,
                )
            )
        run = _Run(found.recipe, found.event, found.trigger, found.run_key, None)
        run.subjects = found.subjects
        await self._run(run)

    async def _refuse_request(self, refused: RefusedRequest) -> None:
        """A request that cannot run: its run, failed with the reason (unless it ended)."""
        store = self._require(self._store, "run store")
        if store.outcome(run_state_key(refused.recipe, refused.run_key)) is not None:
            return
        now = _now()
        await self._save(
            RecipeRun(
                recipe=refused.recipe,
                run_key=refused.run_key,
                status="failed",
                trigger=refused.trigger,
                error=refused.error,
                started_at=now,
                updated_at=now,
                finished_at=now,
            )
        )
        _log.warning(
            "recipes.studio_request_failed",
            recipe=refused.recipe,
            run_key=refused.run_key,
            kind=refused.error.kind,
        )

    async def drain(self) -> None:
        """Stop taking records and periodic checks; give runs in flight
        WORKER_SHUTDOWN_GRACE_S to finish."""
        self._stop.set()
        await self._stop_schedules()
        triggers, self._triggers = self._triggers, None
        if triggers is not None:
            await triggers.stop()
        await self._engine.drain(self._worker.shutdown_grace_s)

    async def close(self) -> None:
        """Close what `start` opened (after `drain`)."""
        results, self._results = self._results, None
        store, self._store = self._store, None
        studio, self._studio = self._studio, None
        if studio is not None:
            await studio.stop()
        producer, self._producer = self._producer, None
        if results is not None:
            await results.stop()
        if store is not None:
            await store.stop()
        if producer is not None:
            await producer.stop()

    # --- rebalances --------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Before the partitions move: stop the periodic checks if this worker was the leader
        (the partition may go to another worker), then finish or abandon the runs in flight."""
        await self._stop_schedules()
        if self._engine.in_flight:
            _log.info("recipes.revoked", partitions=len(revoked), in_flight=self._engine.in_flight)
        await self._engine.end_epoch(self._worker.revoke_grace_s)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        """After an assignment: read the run state to its end, then process; with partition 0
        of the leader topic, also start the periodic checks."""
        store = self._require(self._store, "run store")
        began = time.monotonic()
        await store.catch_up(self._options.state_timeout_s)
        mine = [tp for tp in assigned if tp.topic in self._physical]
        _log.info(
            "recipes.assigned",
            partitions=len(mine),
            runs_known=len(store),
            took_s=round(time.monotonic() - began, 3),
        )
        self._engine.open()
        if any(tp.topic == self._leader_topic and tp.partition == 0 for tp in assigned):
            self._start_schedules()

    def _start_schedules(self) -> None:
        if self._leader or self._stop.is_set():
            return
        scheduled = [recipe for recipe in self._recipes if recipe.schedule is not None]
        self._leader = True
        self._leader_gauge.set(1)
        _log.info("recipes.schedule_leader", recipes=[recipe.name for recipe in scheduled])
        self._schedules = [
            asyncio.create_task(self._schedule(recipe), name=f"schedule {recipe.name}")
            for recipe in scheduled
        ]

    async def _stop_schedules(self) -> None:
        tasks, self._schedules = self._schedules, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._leader:
            self._leader = False
            self._leader_gauge.set(0)
            _log.info("recipes.schedule_leader_lost")

    # --- trigger records ---------------------------------------------------------------------

    async def submit(self, name: str, event: Any) -> None:
        """Take one trigger record: queue it behind the records with its key, and return
        (waiting only while RECIPES_MAX_IN_FLIGHT records are unfinished)."""
        await self._engine.submit(event, lambda _epoch: self._record(name, event))

    @staticmethod
    def _record(name: str, event: Any) -> _Record:
        message = event.message
        stamp = message.timestamp
        return _Record(
            name=name,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=header_pairs(message.headers),
            timestamp_ms=int(stamp * 1000) if stamp else None,
        )

    async def _traced(self, record: _Record) -> None:
        """`_handle` in the trigger record's span, in the trace its `ce_traceparent` carries."""
        with processing(
            record.topic,
            record.partition,
            record.offset,
            record.headers,
            attributes={"dastra_kafka.recipes.trigger": record.name},
        ):
            await self._handle(record)

    async def _handle(self, record: _Record) -> None:
        """Start every recipe this record triggers and wait for their runs."""
        await self._handle_for(record, self._by_topic.get(record.name, []))

    async def _handle_for(self, record: _Record, recipes: list[Recipe]) -> None:
        try:
            envelope = decode(
                record.headers,
                record.value,
                fallback_id=fallback_id(record.topic, record.partition, record.offset),
            )
        except EnvelopeError as exc:
            await self._dead_letter(record, recipes[0].name if recipes else "", exc.kind, str(exc))
            return
        candidates = [
            recipe
            for recipe in recipes
            if recipe.trigger is None
            or recipe.trigger.type is None
            or envelope.type == recipe.trigger.type
        ]
        if not candidates:
            return
        data = await self._full_data(record, envelope, candidates)
        if data is None:
            return
        subjects = self._privacy.subjects(
            record.name, data, workspace_of(envelope, record.key) or self._default_workspace
        )
        event = record_event(
            envelope,
            data,
            key=record.key,
            topic=record.name,
            partition=record.partition,
            offset=record.offset,
        )
        runs = []
        for recipe in candidates:
            try:
                run_key = self._select(recipe, event)
            except ExpressionError as exc:
                await self._dead_letter(
                    record, recipe.name, "recipe-expression", f"recipe {recipe.name}: {exc}"
                )
                continue
            if run_key is None:
                continue
            trigger = TriggerRef(
                event_id=envelope.id,
                event_type=envelope.type,
                topic=record.name,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
            )
            run = _Run(recipe, event, trigger, run_key, record, subjects=subjects)
            runs.append(self._run(run))
        if runs:
            await asyncio.gather(*runs)

    async def _full_data(
        self, record: _Record, envelope: Envelope, recipes: list[Recipe]
    ) -> Any | None:
        """The event's data as recipes see it: the whole Dastra object, in memory, whatever
        the payload mode of the record (`consumers/recipes/privacy.py`). None: it could not be
        had, and the record was dead-lettered with the reason."""
        dastra = self._require(self._dastra, "Dastra client")
        try:
            return await self._privacy.full_data(record.name, envelope, record.key, dastra)
        except TriggerUnreadable as exc:
            names = ", ".join(recipe.name for recipe in recipes)
            mode = envelope.attributes.get(PAYLOAD_EXTENSION)
            await self._dead_letter(
                record,
                recipes[0].name,
                exc.kind,
                f"recipes {names}: the full object of this {mode} event could not be read: "
                f"{exc.message}",
            )
            return None

    def _select(self, recipe: Recipe, event: dict[str, Any]) -> str | None:
        """The run key when the recipe's filter takes the event, else None."""
        context = build_context(recipe, event, self._options, run_key="")
        condition = recipe.trigger.filter if recipe.trigger else recipe.schedule.filter  # type: ignore[union-attr]
        if condition is not None and not condition.matches(context):
            return None
        if recipe.once_per is None:
            return str(event["id"])
        value = recipe.once_per.render(context)
        if value is None or value == "" or isinstance(value, dict | list):
            raise ExpressionError(f"once_per gives {type(value).__name__}, not a key")
        return str(value)

    # --- one run -----------------------------------------------------------------------------

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

    async def _run(self, run: _Run) -> None:
        store = self._require(self._store, "run store")
        recipe = run.recipe
        where = {"recipe": recipe.name, "run_key": run.run_key}
        async with self._one_at_a_time(run.key):
            outcome = store.outcome(run.key)
            if outcome is not None:
                self.metrics.runs.labels(recipe.name, "skipped").inc()
                _log.info("recipes.skipped", outcome=outcome, **where)
                return
            began = time.monotonic()
            now = _now()
            run.state = store.get(run.key)
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
                await self._save(run.state)
                _log.info("recipes.started_run", event_id=run.trigger.event_id, **where)
            else:
                _log.info("recipes.resumed", steps_done=len(run.state.steps), **where)
            try:
                for step in recipe.steps:
                    await self._step(run, step)
            except _RunFailed as failure:
                await self._finish(run, "failed", failure.error)
                if failure.dead_letter and run.record is not None:
                    await self._dead_letter(
                        run.record,
                        recipe.name,
                        failure.error.kind,
                        f"recipe {recipe.name}: step {failure.error.step}: {failure.error.message}",
                    )
                self.metrics.runs.labels(recipe.name, "failed").inc()
                self.metrics.duration.labels(recipe.name, "failed").observe(
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
            self.metrics.runs.labels(recipe.name, "succeeded").inc()
            self.metrics.duration.labels(recipe.name, "succeeded").observe(time.monotonic() - began)
            _log.info("recipes.succeeded", **where)

    def _context(self, run: _Run) -> dict[str, Any]:
        context = build_context(run.recipe, run.event, self._options, run.run_key, run.steps)
        return context

    def _since_ms(self, run: _Run) -> int:
        assert run.state is not None
        started = int(run.state.started_at.timestamp() * 1000)
        stamp = run.trigger.timestamp_ms
        earliest = min(started, stamp) if stamp is not None else started
        return max(0, earliest - int(self._worker.lookup_skew_s * 1000))

    async def _step(self, run: _Run, step: Step) -> None:
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
                self.metrics.steps.labels(recipe.name, step.id, "skipped").inc()
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
        self.metrics.steps.labels(recipe.name, step.id, "failed").inc()
        return _RunFailed(
            RunError(kind="recipe-expression", message=str(exc), step=step.id), dead_letter=True
        )

    async def _command_step(
        self, run: _Run, step: Step, rounds: list[tuple[int | None, dict[str, Any]]]
    ) -> None:
        assert step.action is not None
        recipe = run.recipe
        results = self._require(self._results, "step results")
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

            return await results.result(
                command_id, send=send, since_ms=since, wait_s=self._options.step_timeout_s
            )

        ids = [command_id for command_id, _ in commands]
        try:
            outcomes = await asyncio.gather(*(one(cid, data) for cid, data in commands))
        except TimeoutError:
            self.metrics.steps.labels(recipe.name, step.id, "failed").inc()
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
            self.metrics.steps.labels(recipe.name, step.id, "failed").inc()
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
        self.metrics.steps.labels(recipe.name, step.id, "succeeded").inc()
        await self._record_step(
            run, step, StepState(status="succeeded", command_ids=ids, completed_at=_now())
        )

    async def _publish_step(
        self, run: _Run, step: Step, rounds: list[tuple[int | None, dict[str, Any]]]
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
        self.metrics.steps.labels(recipe.name, step.id, "succeeded").inc()
        await self._record_step(
            run, step, StepState(status="succeeded", published=published, completed_at=_now())
        )

    async def _recall(self, run: _Run, step: Step, done: StepState) -> dict[str, Any]:
        """The view of a step an earlier attempt of this run finished."""
        if done.status == "skipped":
            return {"status": "skipped", "result": None}
        if step.kind == "publish":
            values = [p.model_dump() for p in done.published]
            return {
                "status": done.status,
                "result": values if step.foreach is not None else (values[0] if values else None),
            }
        results = self._require(self._results, "step results")
        found = []
        for command_id in done.command_ids:
            result = await results.lookup(command_id, self._since_ms(run))
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

    async def _record_step(self, run: _Run, step: Step, state: StepState) -> None:
        assert run.state is not None
        run.state = run.state.model_copy(
            update={"steps": {**run.state.steps, step.id: state}, "updated_at": _now()}
        )
        await self._save(run.state)

    async def _finish(self, run: _Run, status: str, error: RunError | None) -> None:
        assert run.state is not None
        now = _now()
        run.state = run.state.model_copy(
            update={"status": status, "error": error, "updated_at": now, "finished_at": now}
        )
        await self._save(run.state)

    async def _save(self, state: RecipeRun) -> None:
        producer = self._require(self._producer, "producer")
        store = self._require(self._store, "run store")
        await producer.send_and_wait(
            self._kafka.topic(RECIPE_RUNS),
            key=state.key.encode(),
            value=state.model_dump_json().encode(),
        )
        store.note(state)

    async def _send_command(
        self, recipe: Recipe, action: str, command_id: str, data: dict[str, Any]
    ) -> None:
        producer = self._require(self._producer, "producer")
        payload: Any = data
        extensions = None
        sealed = self._privacy.seal_command(
            action, data, data.get("workspaceId") or self._default_workspace, command_id
        )
        if sealed is not None:
            for key_bytes, key_value in sealed.key_records:
                await producer.send_and_wait(sealed.topic, key=key_bytes, value=key_value)
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
            await producer.send_and_wait(
                topic,
                key=command_record_key(action, data, command_id),
                value=value,
                headers=header_pairs(inject(headers)),
            )
        _log.debug("recipes.command_sent", recipe=recipe.name, action=action, command_id=command_id)

    async def _publish(
        self, run: _Run, step: Step, message_id: str, key: str | None, data: dict[str, Any]
    ) -> PublishedRecord:
        producer = self._require(self._producer, "producer")
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
        metadata = await producer.send_and_wait(
            self._kafka.topic(step.topic),
            key=key.encode(),
            value=value,
            headers=header_pairs(headers),
        )
        return PublishedRecord(
            topic=step.topic, partition=metadata.partition, offset=metadata.offset, id=message_id
        )

    async def _dead_letter(self, record: _Record, recipe: str, kind: str, message: str) -> None:
        producer = self._require(self._producer, "producer")
        key, value, headers = dead_letter(
            record.original(), kind=kind, message=message, component=COMPONENT
        )
        await producer.send_and_wait(
            self._kafka.topic(DEAD_LETTER), key=key, value=value, headers=headers
        )
        self.metrics.dead_lettered.labels(recipe, kind).inc()
        _log.warning(
            "recipes.dead_lettered",
            recipe=recipe,
            kind=kind,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        )

    # --- periodic recipes --------------------------------------------------------------------

    async def _schedule(self, recipe: Recipe) -> None:
        assert recipe.schedule is not None
        every = recipe.schedule.every_s or self._options.schedule_interval_s
        store = self._require(self._store, "run store")
        try:
            await store.catch_up(self._options.state_timeout_s)
            # Leader again after a rebalance: keep the pace of the checks already made here.
            last = self._last_check.get(recipe.name)
            if last is not None:
                await self._pause(every - (time.monotonic() - last))
            while not self._engine.stopping and not self._stop.is_set():
                began = self._last_check[recipe.name] = time.monotonic()
                try:
                    runs = await self._check(recipe)
                except DastraError as exc:
                    self.metrics.checks.labels(recipe.name, "error").inc()
                    _log.warning("recipes.check_failed", recipe=recipe.name, kind=exc.kind)
                else:
                    self.metrics.checks.labels(recipe.name, "ok").inc()
                    _log.info("recipes.checked", recipe=recipe.name, runs=runs)
                await self._pause(every - (time.monotonic() - began))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("recipes.crash", recipe=recipe.name)
            await self._engine.crash(exc)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when the runner stops."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stop.wait()

    async def _check(self, recipe: Recipe) -> int:
        """One periodic check: run the recipe for each matching item; the number of runs."""
        assert recipe.schedule is not None
        dastra = self._require(self._dastra, "Dastra client")
        store = self._require(self._store, "run store")
        if not self._workspaces:
            _log.error("recipes.no_workspace", recipe=recipe.name)
            return 0
        entity = "rights_request" if recipe.schedule.resource == "rights-requests" else "task"
        today = date.today().isoformat()
        runs: list[_Run] = []
        for workspace in self._workspaces:
            items: Any = (
                dastra.iter_rights_requests(workspace)
                if entity == "rights_request"
                else dastra.iter_tasks(workspace)
            )
            async for item in items:
                event_id = deterministic_id("dastra", workspace, f"{entity}.check", item.id, today)
                event = event_context(
                    id=event_id,
                    data=item.raw,
                    source=f"dastra://workspaces/{workspace}",
                    subject=str(item.id),
                    time=_now(),
                    workspace_id=workspace,
                )
                try:
                    run_key = self._select(recipe, event)
                except ExpressionError as exc:
                    _log.warning(
                        "recipes.check_item_failed",
                        recipe=recipe.name,
                        item=item.id,
                        error=str(exc),
                    )
                    continue
                if run_key is None or store.outcome(run_state_key(recipe.name, run_key)):
                    continue
                trigger = TriggerRef(event_id=event_id, event_type=None)
                topic = RIGHTS_REQUESTS if entity == "rights_request" else TASKS
                subjects = self._privacy.subjects(topic, item.raw, workspace)
                runs.append(_Run(recipe, event, trigger, run_key, None, subjects=subjects))
        slots = asyncio.Semaphore(_SCHEDULE_CONCURRENCY)

        async def bounded(run: _Run) -> None:
            async with slots:
                await self._run(run)

        await asyncio.gather(*(bounded(run) for run in runs))
        return len(runs)

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _require(value: _T | None, what: str) -> _T:
        if value is None:
            raise RuntimeError(f"the recipe runner's {what} is not open: call `start()` first")
        return value
