"""The runner's studio side: the recipes made in the studio, and the studio's requests, run.

Consumes dastra.recipes.v1 (`StudioRecipes`, read to its end before anything runs), the trigger
topics of the enabled studio recipes and dastra.recipe-requests.v1 (`StudioTriggers`, group
`<WORKER_APP_ID>-studio`; see `studio.py`), and, for a request, what `requests.py` reads to
resolve it. Produces, through the runner's executor (`execution.py`): the runs of the studio
recipes a trigger record starts (handed to the runner, as for file recipes), the run a request
asks for (a send-once, a retry seeded with the failed run's kept steps), the failed run of a
request that cannot run, and dead letters for requests that are not valid.

Built by the runner once its producer, run store and step results are open (RECIPES_STUDIO=true);
it opens and closes the studio table and the trigger consumer, and nothing else.

    studio = StudioRunner(settings, file_recipes, privacy, metrics, runs=runs, store=store,
                          dastra=dastra, handle=handle, on_crash=crash, default_workspace=None)
    await studio.start(producer)   # ... studio.enabled() ...
    await studio.drain(); await studio.close()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from bus.envelope import header_pairs
from bus.records.recipe_runs import RecipeRun, run_state_key
from bus.topics import RECIPE_REQUESTS, STUDIO_RECIPES, load_catalogue, resolve_topics_file
from consumers.recipes.execution import Run, RunExecutor, TriggerRecord
from consumers.recipes.language import Recipe, load_recipes
from consumers.recipes.privacy import RecipePrivacy
from consumers.recipes.requests import InvalidRequestError, RefusedRequest, StudioRequests
from consumers.recipes.state import RunStore
from consumers.recipes.studio import StudioMetrics, StudioRecipes, StudioTriggers
from consumers.settings import WorkerConfig
from dastra.client import DastraClient

__all__ = ["StudioRunner"]

_log = structlog.get_logger(__name__)


class StudioRunner:
    """Follows the studio recipes and runs them and the studio's requests; see the module
    docstring. `handle(record, recipes)` is the runner's: it runs `recipes` for a trigger record
    and returns when every run it started has ended."""

    def __init__(
        self,
        settings: WorkerConfig,
        files: Sequence[Recipe],
        privacy: RecipePrivacy,
        metrics: StudioMetrics,
        *,
        runs: RunExecutor,
        store: RunStore,
        dastra: DastraClient,
        handle: Callable[[TriggerRecord, list[Recipe]], Awaitable[None]],
        on_crash: Callable[[BaseException], Awaitable[None]],
        default_workspace: int | None,
    ) -> None:
        self._settings = settings
        self._kafka = settings.kafka
        self._options = settings.recipes
        self._files = list(files)
        self._privacy = privacy
        self._metrics = metrics
        self._runs = runs
        self._store = store
        self._dastra = dastra
        self._handle = handle
        self._on_crash = on_crash
        self._default_workspace = default_workspace
        self._studio: StudioRecipes | None = None
        self._triggers: StudioTriggers | None = None
        self._requests: StudioRequests | None = None

    @property
    def caught_up(self) -> bool:
        """dastra.recipes.v1 has been read to its end: the studio recipes are known."""
        return self._studio is not None

    def enabled(self) -> list[Recipe]:
        """The enabled studio recipes, as they are now (none before `start`)."""
        return self._studio.enabled() if self._studio is not None else []

    async def start(self, producer: AIOKafkaProducer) -> None:
        """Follow dastra.recipes.v1 (read to its end first) and the studio recipes' triggers.
        `producer` (the runner's) only tells the partitions of dastra.recipes.v1."""
        catalogue = load_catalogue(resolve_topics_file(self._settings.service.topics_file))
        files = load_recipes(self._options, catalogue)
        reserved = {recipe.name for recipe in files.recipes}
        reserved |= {p.recipe for p in files.problems if p.recipe is not None}
        studio = StudioRecipes(
            self._kafka,
            self._options,
            catalogue,
            reserved=reserved,
            metrics=self._metrics,
            on_change=self._changed,
            on_crash=self._on_crash,
        )
        await studio.start(await producer.partitions_for(self._kafka.topic(STUDIO_RECIPES)))
        await studio.catch_up(self._options.state_timeout_s)
        triggers = StudioTriggers(
            self._kafka,
            f"{self._kafka.topic(self._settings.worker.app_id)}-studio",
            studio,
            handle=self._record,
            on_assigned=self._assigned,
            on_crash=self._on_crash,
            also=(RECIPE_REQUESTS,),
        )
        self._studio, self._triggers = studio, triggers
        self._requests = StudioRequests(
            self._kafka,
            studio,
            self._files,
            self._privacy,
            self._default_workspace,
            self._options.state_timeout_s,
        )
        await triggers.start()
        _log.info("recipes.studio_started", recipes=sorted(studio.versions()))

    async def drain(self) -> None:
        """Stop consuming triggers and requests (the record in hand is cancelled, uncommitted)."""
        triggers, self._triggers = self._triggers, None
        if triggers is not None:
            await triggers.stop()

    async def close(self) -> None:
        """Stop following dastra.recipes.v1 (after `drain`)."""
        studio, self._studio = self._studio, None
        if studio is not None:
            await studio.stop()

    def _changed(self) -> None:
        if self._triggers is not None:
            self._triggers.changed()

    async def _assigned(self) -> None:
        await self._store.catch_up(self._options.state_timeout_s)

    async def _record(self, name: str, message: Any) -> None:
        """One trigger record of studio recipes, run to the end of every run it starts."""
        assert self._studio is not None
        record = TriggerRecord(
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
            await self._request(record)
            return
        await self._handle(record, self._studio.by_topic(name))

    async def _request(self, record: TriggerRecord) -> None:
        """A request of the studio (`consumers/recipes/requests.py`): run a studio recipe once
        for a sample, or retry a failed run; ended when the run has."""
        assert self._requests is not None
        try:
            found = await self._requests.resolve(
                record.headers,
                record.value,
                partition=record.partition,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
                dastra=self._dastra,
            )
        except InvalidRequestError as exc:
            await self._runs.dead_letter(record, "", "invalid-request", str(exc))
            return
        if isinstance(found, RefusedRequest):
            await self._refuse(found)
            return
        key = run_state_key(found.recipe.name, found.run_key)
        if (
            found.seed is not None
            and self._store.get(key) is None
            and self._store.outcome(key) is None
        ):
            now = datetime.now(UTC)
            await self._runs.save(
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
        run = Run(found.recipe, found.event, found.trigger, found.run_key, None)
        run.subjects = found.subjects
        await self._runs.run(run)

    async def _refuse(self, refused: RefusedRequest) -> None:
        """A request that cannot run: its run, failed with the reason (unless it ended)."""
        if self._store.outcome(run_state_key(refused.recipe, refused.run_key)) is not None:
            return
        now = datetime.now(UTC)
        await self._runs.save(
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
