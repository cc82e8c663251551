"""The studio's copy of the studio recipes, and its writer.

Consumes dastra.recipes.v1 from the beginning, every partition, without a consumer group (each
studio process holds the whole table: the newest version of each recipe). Produces, for every
change, the same `StudioRecipeVersion` record on dastra.recipe-changes.v1 (the audit trail,
never compacted) and then on dastra.recipes.v1 (compacted; a tombstone for a deletion), each
acknowledged by the broker (`acks=all`, idempotent producer).

Why two topics and this order: compaction keeps only the newest version of each recipe, so the
history lives on a topic that is never compacted; the audit record goes first, so no change is
ever live without its audit record (a failure between the two leaves an audit record of a change
that did not happen, and the save answers 503).

    async with StudioStore(kafka, studio_settings) as store:
        store.current("web-form")            # StudioRecipeVersion | None
        await store.write(version)           # then read back: the table has it
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

import structlog
from aiokafka.structs import ConsumerRecord
from confluent_kafka.admin import AdminClient
from pydantic import ValidationError

from bus.producer import AsyncProducer
from bus.records.studio_recipes import StudioRecipeVersion
from bus.settings import KafkaSettings
from bus.topics import RECIPE_CHANGES, STUDIO_RECIPES
from consumers.topic_reader import TopicReader
from dastra_kafka.studio.settings import StudioSettings

__all__ = ["StudioStore", "StudioStoreError"]

_log = structlog.get_logger(__name__)


class StudioStoreError(RuntimeError):
    """dastra.recipes.v1 could not be read (unreachable, missing, too slow)."""


class StudioStore:
    """The table of studio recipes (newest version per name) and the writer of changes."""

    def __init__(self, kafka: KafkaSettings, settings: StudioSettings) -> None:
        self._kafka = kafka
        self._settings = settings
        self._table: dict[str, StudioRecipeVersion] = {}
        self._reader = TopicReader(
            kafka,
            kafka.topic(STUDIO_RECIPES),
            self._ingest,
            name="studio store",
            error=StudioStoreError,
        )
        self._producer = AsyncProducer(kafka, timeout_s=settings.kafka_timeout_s)
        self._lock = asyncio.Lock()
        self._open = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the producer, read dastra.recipes.v1 to its end."""
        topic = self._kafka.topic(STUDIO_RECIPES)
        admin = AdminClient(self._kafka.confluent_config())
        metadata = await asyncio.to_thread(admin.list_topics, topic, 15)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise StudioStoreError(f"topic {topic} is missing: run `dastra-kafka topics apply`")
        self._producer.open()
        await self._reader.start(found.partitions)
        await self._reader.catch_up(self._settings.read_timeout_s, hint="STUDIO_READ_TIMEOUT_S")
        self._open = True

    async def stop(self) -> None:
        self._open = False
        await self._reader.stop()
        await asyncio.to_thread(self._producer.close)

    @property
    def kafka(self) -> KafkaSettings:
        """The Kafka settings it was opened with (the studio's other readers use them too)."""
        return self._kafka

    # --- reading -----------------------------------------------------------------------------

    def current(self, name: str) -> StudioRecipeVersion | None:
        """The newest version of a studio recipe (None: none, or deleted)."""
        return self._table.get(name)

    def all(self) -> list[StudioRecipeVersion]:
        return [self._table[name] for name in sorted(self._table)]

    @property
    def lock(self) -> asyncio.Lock:
        """Held from reading the base version to writing the next: one change at a time here."""
        return self._lock

    async def refresh(self) -> None:
        """Read what other studio processes wrote up to now."""
        await self._reader.catch_up(self._settings.read_timeout_s, hint="STUDIO_READ_TIMEOUT_S")

    # --- writing -----------------------------------------------------------------------------

    async def write(self, version: StudioRecipeVersion) -> None:
        """Write the audit record, then the recipe (or its tombstone); return once the table
        shows it. Raises `KafkaUnavailableError` when the broker does not acknowledge."""
        key = version.name.encode()
        value = version.model_dump_json().encode()
        await self._producer.produce(self._kafka.topic(RECIPE_CHANGES), key=key, value=value)
        await self._producer.produce(
            self._kafka.topic(STUDIO_RECIPES),
            key=key,
            value=None if version.change == "deleted" else value,
        )
        await self.refresh()
        _log.info(
            "studio.saved",
            recipe=version.name,
            version=version.version,
            change=version.change,
            saved_by=version.saved_by,
        )

    # --- internals ---------------------------------------------------------------------------

    def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        name = record.key.decode("utf-8", "replace")
        if record.value is None:
            self._table.pop(name, None)
            return
        try:
            version = StudioRecipeVersion.model_validate_json(record.value)
        except ValidationError:
            _log.warning("studio.unreadable", partition=record.partition, offset=record.offset)
            return
        known = self._table.get(name)
        if known is None or version.version > known.version:
            self._table[name] = version
