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

The parts, one module each: `execution.py` runs one run (steps, commands, messages, run
state), `schedules.py` makes the periodic checks, `studio_runner.py` follows the studio's
recipes and requests, `metrics.py` counts. This module owns what they share (the producer, the
run store, the step results, opened in `start` and closed in `close`) and takes the trigger
records.

    runner = RecipeRunner(settings, recipes, leader_topic=topic, on_crash=app.crash)
    runner.attach(app)                       # the trigger agents
    await runner.start(dispatcher.index, dispatcher.dastra, dispatcher.keys)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import faust
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from bus.envelope import Envelope, EnvelopeError, decode, header_pairs
from bus.hooks.events import workspace_of
from bus.privacy import PAYLOAD_EXTENSION
from bus.privacy.keystore import KeyStore
from bus.records.recipe_runs import TriggerRef
from bus.topics import COMMAND_RESULTS, RECIPE_RUNS
from bus.tracing import processing
from consumers._keyed import KeyedEngine
from consumers.dispatcher import fallback_id
from consumers.recipes.execution import COMPONENT, Run, RunExecutor, TriggerRecord, run_key_for
from consumers.recipes.expressions import ExpressionError
from consumers.recipes.language import Recipe
from consumers.recipes.metrics import RecipeMetrics
from consumers.recipes.privacy import RecipePrivacy, TriggerUnreadable
from consumers.recipes.render import record_event
from consumers.recipes.results import StepResults
from consumers.recipes.schedules import Schedules
from consumers.recipes.state import RunStore
from consumers.recipes.studio import StudioMetrics
from consumers.recipes.studio_runner import StudioRunner
from consumers.result_index import ResultIndex
from consumers.settings import WorkerConfig
from dastra.client import DastraClient

__all__ = ["COMPONENT", "RecipeMetrics", "RecipeRunner"]

_log = structlog.get_logger(__name__)

_T = TypeVar("_T")


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
        self._default_workspace = default

        self._producer: AIOKafkaProducer | None = None
        self._store: RunStore | None = None
        self._results: StepResults | None = None
        self._dastra: DastraClient | None = None
        self._runs: RunExecutor | None = None
        self._engine = KeyedEngine[TriggerRecord](
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
        self._stop = asyncio.Event()
        self._schedules = Schedules(
            self._recipes,
            self._options,
            self._privacy,
            self.metrics,
            workspaces=workspaces or ([default] if default else []),
            group=self._kafka.topic(self._worker.app_id),
            stop=self._stop,
            stopping=lambda: self._engine.stopping,
            on_crash=self._engine.crash,
        )
        self._studio: StudioRunner | None = None
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
        return self._engine.ready and (
            not self._options.studio or (self._studio is not None and self._studio.caught_up)
        )

    @property
    def in_flight(self) -> int:
        return self._engine.in_flight

    @property
    def leader(self) -> bool:
        """This worker runs the periodic recipes (it holds partition 0 of the leader topic)."""
        return self._schedules.leader

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
        self._runs = RunExecutor(
            producer,
            self._store,
            self._results,
            self._privacy,
            self.metrics,
            kafka=self._kafka,
            options=self._options,
            lookup_skew_s=self._worker.lookup_skew_s,
            default_workspace=self._default_workspace,
        )
        if self._studio_metrics is not None:
            self._studio = StudioRunner(
                self._settings,
                self._recipes,
                self._privacy,
                self._studio_metrics,
                runs=self._runs,
                store=self._store,
                dastra=dastra,
                handle=self._handle_for,
                on_crash=self._engine.crash,
                default_workspace=self._default_workspace,
            )
            await self._studio.start(producer)
        _log.info(
            "recipes.started",
            recipes=[recipe.name for recipe in self._recipes],
            topics=self.trigger_topics,
            leader_topic=self._leader_topic,
        )

    async def drain(self) -> None:
        """Stop taking records and periodic checks; give runs in flight
        WORKER_SHUTDOWN_GRACE_S to finish."""
        self._stop.set()
        await self._schedules.stop()
        if self._studio is not None:
            await self._studio.drain()
        await self._engine.drain(self._worker.shutdown_grace_s)

    async def close(self) -> None:
        """Close what `start` opened (after `drain`)."""
        self._runs = None
        results, self._results = self._results, None
        store, self._store = self._store, None
        studio, self._studio = self._studio, None
        if studio is not None:
            await studio.close()
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
        await self._schedules.stop()
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
            self._schedules.start(
                self._require(self._runs, "run executor"),
                store,
                self._require(self._dastra, "Dastra client"),
            )

    # --- trigger records ---------------------------------------------------------------------

    async def submit(self, name: str, event: Any) -> None:
        """Take one trigger record: queue it behind the records with its key, and return
        (waiting only while RECIPES_MAX_IN_FLIGHT records are unfinished)."""
        await self._engine.submit(event, lambda _epoch: self._record(name, event))

    @staticmethod
    def _record(name: str, event: Any) -> TriggerRecord:
        message = event.message
        stamp = message.timestamp
        return TriggerRecord(
            name=name,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=header_pairs(message.headers),
            timestamp_ms=int(stamp * 1000) if stamp else None,
        )

    async def _traced(self, record: TriggerRecord) -> None:
        """`_handle` in the trigger record's span, in the trace its `ce_traceparent` carries."""
        with processing(
            record.topic,
            record.partition,
            record.offset,
            record.headers,
            attributes={"dastra_kafka.recipes.trigger": record.name},
        ):
            await self._handle(record)

    async def _handle(self, record: TriggerRecord) -> None:
        """Start every recipe this record triggers and wait for their runs."""
        await self._handle_for(record, self._by_topic.get(record.name, []))

    async def _handle_for(self, record: TriggerRecord, recipes: list[Recipe]) -> None:
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
                run_key = run_key_for(recipe, event, self._options)
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
            run = Run(recipe, event, trigger, run_key, record, subjects=subjects)
            runs.append(self._require(self._runs, "run executor").run(run))
        if runs:
            await asyncio.gather(*runs)

    async def _full_data(
        self, record: TriggerRecord, envelope: Envelope, recipes: list[Recipe]
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

    async def _dead_letter(
        self, record: TriggerRecord, recipe: str, kind: str, message: str
    ) -> None:
        await self._require(self._runs, "run executor").dead_letter(record, recipe, kind, message)

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _require(value: _T | None, what: str) -> _T:
        if value is None:
            raise RuntimeError(f"the recipe runner's {what} is not open: call `start()` first")
        return value
