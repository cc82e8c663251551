"""The recipe runs every worker knows of: dastra.recipe-runs.v1, read into memory.

Consumes dastra.recipe-runs.v1 from the beginning, every partition, without a consumer group
(each worker keeps its own copy, as any worker may own any trigger partition after a
rebalance). Produces nothing itself: the runner writes run records through its producer and
`note()`s them here at once. Keeps the full record of unfinished runs (to resume them) and only
the outcome of finished ones (to skip them), so memory stays small: the topic is compacted and
deleted after 30 days.

A record never replaces a newer one (`updated_at`), so the tail reading the runner's own earlier
writes cannot make a finished run look unfinished.

    store = RunStore(kafka_settings)
    await store.start(partitions=range(3)); await store.catch_up(within_s=120)
    store.outcome("new-request-dpo-task:dastra:101:rights_request.created:7")   # 'succeeded'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

import structlog
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from bus.records.recipe_runs import RecipeRun
from bus.settings import KafkaSettings
from bus.topics import RECIPE_RUNS
from consumers.topic_reader import TopicReader

__all__ = ["RunStore", "RunStoreError"]

_log = structlog.get_logger(__name__)


class RunStoreError(RuntimeError):
    """dastra.recipe-runs.v1 could not be read (unreachable, missing, too slow)."""


class RunStore:
    """The latest state of every recipe run; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        on_crash: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        self._reader = TopicReader(
            kafka,
            kafka.topic(RECIPE_RUNS),
            self._ingest,
            name="recipe run store",
            error=RunStoreError,
            on_crash=on_crash,
        )
        self._running: dict[str, RecipeRun] = {}
        # key -> (status, updated_at) of finished runs
        self._finished: dict[str, tuple[str, datetime]] = {}

    def __len__(self) -> int:
        return len(self._running) + len(self._finished)

    async def start(self, partitions: Iterable[int]) -> None:
        """Connect, assign `partitions` of the topic, read them from the beginning (in the
        background)."""
        await self._reader.start(partitions)

    async def stop(self) -> None:
        await self._reader.stop()

    # --- queries -----------------------------------------------------------------------------

    def get(self, key: str) -> RecipeRun | None:
        """The state of an unfinished run (None: unknown or finished)."""
        return self._running.get(key)

    def outcome(self, key: str) -> str | None:
        """`succeeded` or `failed` for a finished run, else None."""
        finished = self._finished.get(key)
        return finished[0] if finished else None

    def note(self, run: RecipeRun) -> None:
        """Take a run record (one just written, or one read from the topic), unless a newer
        one of the same run is known."""
        key = run.key
        known = self._running.get(key)
        known_at = known.updated_at if known else None
        if key in self._finished:
            known_at = self._finished[key][1]
        if known_at is not None and run.updated_at < known_at:
            return
        if run.finished:
            self._running.pop(key, None)
            self._finished[key] = (run.status, run.updated_at)
        else:
            self._finished.pop(key, None)
            self._running[key] = run

    async def catch_up(self, within_s: float) -> None:
        """Wait until everything on the topic right now has been read."""
        await self._reader.catch_up(within_s, hint="RECIPES_STATE_TIMEOUT_S")

    # --- internals ---------------------------------------------------------------------------

    def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        if record.value is None:  # a tombstone (privacy erasure): forget the run
            key = record.key.decode("utf-8", "replace")
            self._running.pop(key, None)
            self._finished.pop(key, None)
            return
        try:
            run = RecipeRun.model_validate_json(record.value)
        except ValidationError:
            _log.warning(
                "recipes.state_unreadable",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            return
        self.note(run)
