"""Studio recipes in the worker: the recipes made in the studio, followed live.

Consumes dastra.recipes.v1 from the beginning, every partition, without a consumer group
(`StudioRecipes`: every worker holds the same table) and, for the enabled studio recipes, their
trigger topics in the consumer group `<WORKER_APP_ID>-studio` (`StudioTriggers`: subscribed to
whatever topics the enabled studio recipes name now, changed without a restart, and
dastra.recipe-requests.v1: the studio's send-once and retry requests). Produces
nothing itself: the runner (`consumers/recipes/runner.py`) runs the recipes for each trigger
record, exactly as it runs file recipes.

A version replaces the running one only if it passes the checks of `recipes validate`
(`language.load_document`), its name is not a shipped or file recipe's, and its number is
higher. A version refused is logged (recipe name, version, the fields at fault; never the
recipe's values) and counted in `dastra_studio_recipe_versions_refused_total{recipe,reason}`;
the last good version goes on running. A tombstone removes the recipe.

Trigger records of studio recipes are processed one at a time per worker, in offset order, the
offset committed after every run the record started has ended (a crash redelivers it and the
run resumes, as for file recipes).

    studio = StudioRecipes(kafka, recipes_settings, catalogue, reserved={"new-request-dpo-task"})
    await studio.start(partitions); await studio.catch_up(60)
    studio.by_topic("web.privacy-forms")      # the enabled studio recipes it triggers
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from bus.records.studio_recipes import StudioRecipeVersion
from bus.settings import KafkaSettings
from bus.topics import STUDIO_RECIPES, TopicCatalogue
from consumers.recipes.language import Problem, Recipe, load_document
from consumers.recipes.settings import RecipesSettings
from consumers.topic_reader import TopicReader

__all__ = [
    "StudioMetrics",
    "StudioRecipeError",
    "StudioRecipes",
    "StudioTriggers",
    "check_studio_document",
]

_log = structlog.get_logger(__name__)


class StudioRecipeError(RuntimeError):
    """dastra.recipes.v1 could not be read (unreachable, missing, too slow)."""


class StudioMetrics:
    """Prometheus metrics of the studio recipes (in the worker's registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "dastra_studio_recipe_versions_refused",
            "Studio recipe versions the worker refused to run (invalid-record, invalid-recipe, "
            "name-taken); the last good version of the recipe goes on running",
            ["recipe", "reason"],
            registry=registry,
        )
        self.applied = Counter(
            "dastra_studio_recipe_versions_applied",
            "Studio recipe versions the worker took (and tombstones that removed one)",
            ["recipe"],
            registry=registry,
        )
        self.running = Gauge(
            "dastra_studio_recipes_enabled",
            "Studio recipes enabled and running in this worker",
            registry=registry,
        )


def check_studio_document(
    document: Any,
    source: str,
    settings: RecipesSettings,
    catalogue: TopicCatalogue,
    reserved: Collection[str],
) -> tuple[Recipe | None, list[Problem]]:
    """The checks a studio recipe passes before it runs (the studio's API and every worker use
    this one function): those of `recipes validate`, plus two of the studio's own: the name is
    not that of a shipped or file recipe (read-only sources), and the recipe has a trigger (a
    periodic recipe belongs in a file for now)."""
    recipe, problems = load_document(document, source, settings, catalogue)
    name = document.get("name") if isinstance(document, dict) else None
    extra: list[Problem] = []
    if isinstance(name, str) and name in reserved:
        extra.append(
            Problem(
                source,
                name,
                "name",
                f"{name!r} is a shipped or file recipe (read-only): choose another name",
            )
        )
    if isinstance(document, dict) and document.get("schedule") is not None:
        extra.append(
            Problem(
                source,
                name if isinstance(name, str) else None,
                "schedule",
                "periodic recipes are not run from the studio yet: use a trigger, or a file",
            )
        )
    if extra:
        return None, [*problems, *extra]
    return recipe, problems


@dataclass(frozen=True)
class _Running:
    version: int
    recipe: Recipe


class StudioRecipes:
    """The studio recipes this worker runs: the newest valid version of each; see the module
    docstring. `on_change()` is called after every change of the table."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: RecipesSettings,
        catalogue: TopicCatalogue,
        *,
        reserved: Collection[str],
        metrics: StudioMetrics,
        on_change: Callable[[], None] = lambda: None,
        on_crash: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        self._settings = settings
        self._catalogue = catalogue
        self._reserved = frozenset(reserved)
        self._metrics = metrics
        self._on_change = on_change
        self._running: dict[str, _Running] = {}
        self._reader = TopicReader(
            kafka,
            kafka.topic(STUDIO_RECIPES),
            self._ingest,
            name="studio recipes",
            error=StudioRecipeError,
            on_crash=on_crash,
        )

    async def start(self, partitions: Iterable[int]) -> None:
        await self._reader.start(partitions)

    async def stop(self) -> None:
        await self._reader.stop()

    async def catch_up(self, within_s: float) -> None:
        await self._reader.catch_up(within_s, hint="RECIPES_STATE_TIMEOUT_S")

    @property
    def recipes(self) -> list[Recipe]:
        """Every studio recipe running (enabled or not), with its version."""
        return [entry.recipe for entry in self._running.values()]

    def versions(self) -> dict[str, int]:
        return {name: entry.version for name, entry in self._running.items()}

    def get(self, name: str) -> tuple[int, Recipe] | None:
        """The version running of a studio recipe (enabled or not), and the recipe."""
        entry = self._running.get(name)
        return (entry.version, entry.recipe) if entry is not None else None

    def enabled(self) -> list[Recipe]:
        return [entry.recipe for entry in self._running.values() if entry.recipe.enabled]

    def trigger_topics(self) -> set[str]:
        """The trigger topics of the enabled studio recipes (as recipes name them)."""
        return {r.trigger.topic for r in self.enabled() if r.trigger is not None}

    def by_topic(self, topic: str) -> list[Recipe]:
        return [r for r in self.enabled() if r.trigger is not None and r.trigger.topic == topic]

    # --- internals ---------------------------------------------------------------------------

    def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        name = record.key.decode("utf-8", "replace")
        if record.value is None:
            if self._running.pop(name, None) is not None:
                self._metrics.applied.labels(name).inc()
                _log.info("recipes.studio_removed", recipe=name)
                self._changed()
            return
        try:
            version = StudioRecipeVersion.model_validate_json(record.value)
        except ValidationError as exc:
            self._refuse(
                name, None, "invalid-record", [str(e["loc"]) for e in exc.errors()], record
            )
            return
        if version.name != name:
            self._refuse(name, version.version, "invalid-record", ["name"], record)
            return
        current = self._running.get(name)
        if current is not None and version.version <= current.version:
            return  # an older version, or one already running
        recipe, problems = check_studio_document(
            version.recipe,
            f"studio:{name}@{version.version}",
            self._settings,
            self._catalogue,
            self._reserved,
        )
        if recipe is None or problems:
            reason = "name-taken" if name in self._reserved else "invalid-recipe"
            self._refuse(name, version.version, reason, [p.field for p in problems], record)
            return
        self._running[name] = _Running(version.version, recipe)
        self._metrics.applied.labels(name).inc()
        _log.info(
            "recipes.studio_applied",
            recipe=name,
            version=version.version,
            enabled=recipe.enabled,
            saved_by=version.saved_by,
        )
        self._changed()

    def _refuse(
        self,
        name: str,
        version: int | None,
        reason: str,
        fields: list[str],
        record: ConsumerRecord[bytes, bytes],
    ) -> None:
        self._metrics.refused.labels(name, reason).inc()
        running = self._running.get(name)
        _log.warning(
            "recipes.studio_refused",
            recipe=name,
            version=version,
            reason=reason,
            fields=fields[:20],
            running_version=running.version if running else None,
            partition=record.partition,
            offset=record.offset,
        )

    def _changed(self) -> None:
        self._metrics.running.set(len(self.enabled()))
        self._on_change()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, assigned: Callable[[], Awaitable[None]]) -> None:
        self._assigned = assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._assigned()


class StudioTriggers:
    """The trigger topics of the enabled studio recipes (and the topics in `also`), consumed in
    the group `<WORKER_APP_ID>-studio`; each record goes to `handle(name, record)` (name: the
    topic as recipes name it), then its offset is committed. `changed()` re-reads the wanted
    topics."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        studio: StudioRecipes,
        *,
        handle: Callable[[str, ConsumerRecord[bytes, bytes]], Awaitable[None]],
        on_assigned: Callable[[], Awaitable[None]],
        on_crash: Callable[[BaseException], Awaitable[None]],
        also: Collection[str] = (),
    ) -> None:
        self._kafka = kafka
        self._also = tuple(also)  # consumed whatever the recipes (the studio's requests)
        self._group_id = group_id
        self._studio = studio
        self._handle = handle
        self._on_assigned = on_assigned
        self._on_crash = on_crash
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def changed(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_config(),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A new trigger topic is found within seconds, not the default 5 minutes.
            metadata_max_age_ms=3000,
            # One record's runs may wait up to RECIPES_STEP_TIMEOUT_S per step.
            max_poll_interval_ms=3_600_000,
            max_poll_records=50,
        )
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(consumer), name="studio triggers")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self._loop(consumer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("recipes.studio_crash")
            await self._on_crash(exc)

    async def _loop(self, consumer: AIOKafkaConsumer) -> None:
        subscribed: dict[str, str] = {}  # physical topic -> name in recipes
        while True:
            self._wake.clear()
            names = {*self._studio.trigger_topics(), *self._also}
            wanted = {self._kafka.topic(name): name for name in names}
            if wanted != subscribed:
                if wanted:
                    consumer.subscribe(topics=sorted(wanted), listener=_Listener(self._on_assigned))
                else:
                    consumer.unsubscribe()
                subscribed = wanted
                _log.info("recipes.studio_subscribed", topics=sorted(wanted.values()))
            if not subscribed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        await self._wake.wait()
                continue
            batches = await consumer.getmany(timeout_ms=300)
            for tp, records in batches.items():
                name = subscribed.get(tp.topic)
                if name is None:
                    continue
                for record in records:
                    await self._handle(name, record)
                    await self._commit(consumer, tp, record.offset + 1)

    @staticmethod
    async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
        try:
            await consumer.commit({tp: offset})
        except (CommitFailedError, KafkaError) as exc:
            # Rebalanced away: the next owner gets the record again, and the run resumes.
            _log.warning(
                "recipes.studio_commit_failed",
                topic=tp.topic,
                partition=tp.partition,
                error=type(exc).__name__,
            )
