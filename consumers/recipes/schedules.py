"""Periodic recipes: the checks the schedule leader makes, every RECIPES_SCHEDULE_INTERVAL_S.

Consumes Dastra's rights requests or tasks (GET, every workspace watched) for each periodic
recipe, and the run state (`RunStore`, to skip the items whose run has ended). Produces runs,
through the runner's executor (`execution.py`): one per item the recipe's filter takes, with the
event id `deterministic_id("dastra", workspace, "<entity>.check", item id, today)`, so an item
runs at most once a day per run key. Counts the checks and the leadership in `RecipeMetrics`.

The runner decides who leads (the worker assigned partition 0 of its leader topic, see the
module docstring of `runner.py`): it calls `start` on that assignment and `stop` on a revocation
or at shutdown. A check cut short is resumed by the next one: runs are idempotent by their key
and command ids. Leader again after a rebalance, a worker keeps the pace of its earlier checks.

    schedules = Schedules(recipes, settings.recipes, privacy, metrics, workspaces=[42],
                          group="dastra-agents", stop=stop_event, stopping=lambda: False,
                          on_crash=crash)
    schedules.start(runs, store, dastra)      # this worker leads now
    await schedules.stop()                    # not any more
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

import structlog

from bus.envelope import deterministic_id
from bus.records.recipe_runs import TriggerRef, run_state_key
from bus.topics import RIGHTS_REQUESTS, TASKS
from consumers.recipes.execution import Run, RunExecutor, run_key_for
from consumers.recipes.expressions import ExpressionError
from consumers.recipes.language import Recipe, event_context
from consumers.recipes.metrics import RecipeMetrics
from consumers.recipes.privacy import RecipePrivacy
from consumers.recipes.settings import RecipesSettings
from consumers.recipes.state import RunStore
from dastra.client import DastraClient
from dastra.errors import DastraError

__all__ = ["Schedules"]

_log = structlog.get_logger(__name__)

_SCHEDULE_CONCURRENCY = 8


class Schedules:
    """The periodic checks of the recipes with a `schedule`, while this worker leads; see the
    module docstring. `stop` is the runner's stop event (set when it drains), `stopping` its
    engine's state."""

    def __init__(
        self,
        recipes: Sequence[Recipe],
        options: RecipesSettings,
        privacy: RecipePrivacy,
        metrics: RecipeMetrics,
        *,
        workspaces: list[int],
        group: str,
        stop: asyncio.Event,
        stopping: Callable[[], bool],
        on_crash: Callable[[BaseException], Awaitable[None]],
    ) -> None:
        self._recipes = [recipe for recipe in recipes if recipe.schedule is not None]
        self._options = options
        self._privacy = privacy
        self._metrics = metrics
        self._workspaces = workspaces
        self._stop = stop
        self._stopping = stopping
        self._on_crash = on_crash
        self._tasks: list[asyncio.Task[None]] = []
        self._leader = False
        self._leader_gauge = metrics.leader.labels(group)
        self._leader_gauge.set(0)
        self._last_check: dict[str, float] = {}  # recipe -> monotonic start of its last check

    @property
    def leader(self) -> bool:
        """The checks are running: this worker is the schedule leader."""
        return self._leader

    def start(self, runs: RunExecutor, store: RunStore, dastra: DastraClient) -> None:
        """Become the leader: start one check loop per periodic recipe (unless leading already,
        or the runner is stopping)."""
        if self._leader or self._stop.is_set():
            return
        self._leader = True
        self._leader_gauge.set(1)
        _log.info("recipes.schedule_leader", recipes=[recipe.name for recipe in self._recipes])
        self._tasks = [
            asyncio.create_task(
                self._schedule(recipe, runs, store, dastra), name=f"schedule {recipe.name}"
            )
            for recipe in self._recipes
        ]

    async def stop(self) -> None:
        """Stop leading: cancel the check loops and wait for them."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._leader:
            self._leader = False
            self._leader_gauge.set(0)
            _log.info("recipes.schedule_leader_lost")

    async def _schedule(
        self, recipe: Recipe, runs: RunExecutor, store: RunStore, dastra: DastraClient
    ) -> None:
        assert recipe.schedule is not None
        every = recipe.schedule.every_s or self._options.schedule_interval_s
        try:
            await store.catch_up(self._options.state_timeout_s)
            # Leader again after a rebalance: keep the pace of the checks already made here.
            last = self._last_check.get(recipe.name)
            if last is not None:
                await self._pause(every - (time.monotonic() - last))
            while not self._stopping() and not self._stop.is_set():
                began = self._last_check[recipe.name] = time.monotonic()
                try:
                    count = await self._check(recipe, runs, store, dastra)
                except DastraError as exc:
                    self._metrics.checks.labels(recipe.name, "error").inc()
                    _log.warning("recipes.check_failed", recipe=recipe.name, kind=exc.kind)
                else:
                    self._metrics.checks.labels(recipe.name, "ok").inc()
                    _log.info("recipes.checked", recipe=recipe.name, runs=count)
                await self._pause(every - (time.monotonic() - began))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            _log.exception("recipes.crash", recipe=recipe.name)
            await self._on_crash(exc)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less when the runner stops."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stop.wait()

    async def _check(
        self, recipe: Recipe, runs: RunExecutor, store: RunStore, dastra: DastraClient
    ) -> int:
        """One periodic check: run the recipe for each matching item; the number of runs."""
        assert recipe.schedule is not None
        if not self._workspaces:
            _log.error("recipes.no_workspace", recipe=recipe.name)
            return 0
        entity = "rights_request" if recipe.schedule.resource == "rights-requests" else "task"
        today = date.today().isoformat()
        found: list[Run] = []
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
                    time=datetime.now(UTC),
                    workspace_id=workspace,
                )
                try:
                    run_key = run_key_for(recipe, event, self._options)
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
                found.append(Run(recipe, event, trigger, run_key, None, subjects=subjects))
        slots = asyncio.Semaphore(_SCHEDULE_CONCURRENCY)

        async def bounded(run: Run) -> None:
            async with slots:
                await runs.run(run)

        await asyncio.gather(*(bounded(run) for run in found))
        return len(found)
