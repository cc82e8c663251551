"""The dedupe index of the command agents: which command ids already have a result.

Consumes dastra.command-results.v1 from the beginning, every partition (no consumer group: each
worker keeps its own copy), reading keys and headers only: the key is the command id, `ce_type`
says succeeded or failed, `dastra.replay.id` marks the result of a `dlq replay`. Produces
nothing; the dispatcher asks `seen(...)` before it calls Dastra and `record(...)` after each
result it writes. Before a worker processes newly assigned partitions it waits in
`catch_up()` until the index has read up to the results topic's end offsets of that moment, so a
result written by another worker (or before a crash) is known whoever owned the partition then.

The state survives restarts and rebalances because it is the results topic itself (retention
7 days, as the command topics: a command older than that cannot be redelivered). Memory: one
entry per command id in the retention window.

    index = ResultIndex(kafka_settings, "dastra.command-results.v1")
    await index.start(partitions=range(6)); await index.catch_up(within_s=60)
    index.seen("c-42", replay_id=None)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from bus.envelope import header_dict
from bus.records.commands import RESULT_SUCCEEDED
from bus.settings import KafkaSettings
from consumers.topic_reader import TopicReader

__all__ = ["REPLAY_COMMAND_ID_HEADER", "REPLAY_ID_HEADER", "ResultIndex", "ResultIndexError"]

_log = structlog.get_logger(__name__)

# Set by `dlq replay` on the records it re-publishes: the replay run (copied by the agents onto
# the result, so a redelivered replayed record is recognised) and the command id the original
# record had (a plain-JSON command's id is derived from its position, which a replay changes).
REPLAY_ID_HEADER = "dastra.replay.id"
REPLAY_COMMAND_ID_HEADER = "dastra.replay.command-id"


class ResultIndexError(RuntimeError):
    """The index could not read the results topic (unreachable, missing, too slow)."""


class ResultIndex:
    """Command ids with a result on dastra.command-results.v1; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        on_crash: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        self._reader = TopicReader(
            kafka,
            topic,
            self._ingest,
            name="result index",
            error=ResultIndexError,
            on_crash=on_crash,
        )
        # command id -> the latest result succeeded
        self._succeeded: dict[str, bool] = {}
        self._replays: set[tuple[str, str]] = set()
        self._listeners: list[Callable[[ConsumerRecord[bytes, bytes]], None]] = []

    def __len__(self) -> int:
        return len(self._succeeded)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, partitions: Iterable[int]) -> None:
        """Connect, assign `partitions` of the results topic, read them from the beginning."""
        await self._reader.start(partitions)

    async def stop(self) -> None:
        await self._reader.stop()

    def add_listener(self, listener: Callable[[ConsumerRecord[bytes, bytes]], None]) -> None:
        """Also hand every result record read to `listener` (synchronous, quick: the recipe
        runner waits for its steps' results this way instead of reading the topic again)."""
        self._listeners.append(listener)

    # --- queries -----------------------------------------------------------------------------

    def seen(self, command_id: str, replay_id: str | None = None) -> bool:
        """True when this command needs no further work: it has a result, or (for a replayed
        record) this replay already has a result or the command already succeeded."""
        if replay_id is None:
            return command_id in self._succeeded
        return (command_id, replay_id) in self._replays or self._succeeded.get(command_id, False)

    def record(self, command_id: str, *, succeeded: bool, replay_id: str | None = None) -> None:
        """Note a result (ours just written, or one read from the topic)."""
        self._succeeded[command_id] = succeeded or self._succeeded.get(command_id, False)
        if replay_id is not None:
            self._replays.add((command_id, replay_id))

    async def end_offsets(
        self, partitions: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """The current end offsets of any partitions (e.g. the command topics'), now."""
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        ends = await self._reader.end_offsets(tps)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def catch_up(self, within_s: float) -> None:
        """Wait until the index has read everything on the results topic right now."""
        await self._reader.catch_up(within_s)

    # --- internals ---------------------------------------------------------------------------

    def _ingest(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        headers = header_dict(record.headers)
        replay = headers.get(REPLAY_ID_HEADER)
        self.record(
            record.key.decode("utf-8", "replace"),
            succeeded=headers.get("ce_type") == RESULT_SUCCEEDED.encode(),
            replay_id=replay.decode("utf-8", "replace") if replay is not None else None,
        )
        for listener in self._listeners:
            listener(record)
