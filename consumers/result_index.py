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

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from bus.commands import RESULT_SUCCEEDED
from bus.envelope import header_dict
from bus.settings import KafkaSettings

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
        self._kafka = kafka
        self._topic = topic
        self._on_crash = on_crash
        self._consumer: AIOKafkaConsumer | None = None
        # End offsets come from a second client: on the tailing consumer's connection they would
        # wait behind its long-polling fetch.
        self._lookup: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        # command id -> the latest result succeeded
        self._succeeded: dict[str, bool] = {}
        self._replays: set[tuple[str, str]] = set()
        self._progress = asyncio.Event()
        self._listeners: list[Callable[[ConsumerRecord[bytes, bytes]], None]] = []

    def __len__(self) -> int:
        return len(self._succeeded)

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, partitions: Iterable[int]) -> None:
        """Connect, assign `partitions` of the results topic, read them from the beginning."""
        self._partitions = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        if not self._partitions:
            raise ResultIndexError(f"topic {self._topic} has no partitions")
        lookup = AIOKafkaConsumer(**self._kafka.aiokafka_config(), group_id=None)
        await lookup.start()
        self._lookup = lookup
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_config(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=5000,
        )
        await consumer.start()
        self._consumer = consumer
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        self._task = asyncio.create_task(self._run(), name="result-index")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in (self._consumer, self._lookup):
            if client is not None:
                await client.stop()
        self._consumer = self._lookup = None

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
        self._open()
        assert self._lookup is not None
        tps = [TopicPartition(topic, partition) for topic, partition in partitions]
        if not tps:
            return {}
        ends = await self._lookup.end_offsets(tps)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}

    async def catch_up(self, within_s: float) -> None:
        """Wait until the index has read everything on the results topic right now."""
        consumer = self._open()
        assert self._lookup is not None
        targets = await self._lookup.end_offsets(self._partitions)
        deadline = time.monotonic() + within_s
        while True:
            if self._failure is not None:
                raise ResultIndexError(f"the result index failed: {self._failure!r}")
            positions = {tp: await consumer.position(tp) for tp in self._partitions}
            if all(positions[tp] >= end for tp, end in targets.items()):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                behind = {
                    f"{tp.partition}": end - positions[tp]
                    for tp, end in targets.items()
                    if positions[tp] < end
                }
                raise ResultIndexError(
                    f"the result index did not reach the end of {self._topic} within "
                    f"{within_s:.0f} s (records behind per partition: {behind})"
                )
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(left, 0.2))

    # --- internals ---------------------------------------------------------------------------

    def _open(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the result index is not started: call `await index.start()`")
        return self._consumer

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

    async def _run(self) -> None:
        consumer = self._open()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        self._ingest(record)
                self._progress.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure = exc
            self._progress.set()
            _log.exception("result_index.failed", topic=self._topic)
            if self._on_crash is not None:
                await self._on_crash(exc)
            raise
