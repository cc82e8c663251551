"""A topic read from the beginning in the background: the ground under in-memory state built
from a topic (the agents' result index, the recipe run store).

Consumes every given partition of one topic with aiokafka, without a consumer group (each
process keeps its own copy), and hands each record to a callback, in offset order per
partition. Produces nothing. `catch_up` waits until everything on the topic at that moment has
been handed over; `end_offsets` answers for any partitions from a second client, because on the
tailing consumer's connection the request would wait behind its long-polling fetch. A failure
while reading is reported to `on_crash` and raised by the next `catch_up`.

    reader = TopicReader(kafka, topic, on_record, name="result-index", error=ResultIndexError)
    await reader.start(partitions=range(6)); await reader.catch_up(within_s=60)
    await reader.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from bus.settings import KafkaSettings

__all__ = ["TopicReader"]

_log = structlog.get_logger(__name__)


class TopicReader:
    """Reads `topic` into `on_record`; see the module docstring. `error` is the exception
    type its callers raise (say `ResultIndexError`), `name` names it in logs and messages."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        on_record: Callable[[ConsumerRecord[bytes, bytes]], None],
        *,
        name: str,
        error: type[Exception],
        on_crash: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        self._kafka = kafka
        self.topic = topic
        self._on_record = on_record
        self._name = name
        self._error = error
        self._on_crash = on_crash
        self._consumer: AIOKafkaConsumer | None = None
        self._lookup: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._progress = asyncio.Event()

    async def start(self, partitions: Iterable[int]) -> None:
        """Connect, assign `partitions` of the topic and read them from the beginning (in the
        background)."""
        self._partitions = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        if not self._partitions:
            raise self._error(f"topic {self.topic} has no partitions")
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
        self._task = asyncio.create_task(self._run(), name=self._name)

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

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offsets of any partitions, now."""
        _consumer, lookup = self._open()
        return dict(await lookup.end_offsets(partitions)) if partitions else {}

    async def catch_up(self, within_s: float, *, hint: str = "") -> None:
        """Wait until everything on the topic right now has been handed to `on_record`;
        `error` after `within_s` seconds (`hint`: the setting that bounds it, for the message)."""
        consumer, lookup = self._open()
        targets = await lookup.end_offsets(self._partitions)
        deadline = time.monotonic() + within_s
        while True:
            if self._failure is not None:
                raise self._error(f"{self._name}: reading {self.topic} failed: {self._failure!r}")
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
                raise self._error(
                    f"{self._name}: did not read {self.topic} to its end within "
                    f"{within_s:.0f} s{f' ({hint})' if hint else ''} "
                    f"(records behind per partition: {behind})"
                )
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, 0.2)):
                    await self._progress.wait()

    def _open(self) -> tuple[AIOKafkaConsumer, AIOKafkaConsumer]:
        if self._consumer is None or self._lookup is None:
            raise RuntimeError(f"the {self._name} is not started: call `await start()` first")
        return self._consumer, self._lookup

    async def _run(self) -> None:
        consumer, _lookup = self._open()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for record in records:
                        self._on_record(record)
                self._progress.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure = exc
            self._progress.set()
            _log.exception("topic_reader.failed", reader=self._name, topic=self.topic)
            if self._on_crash is not None:
                await self._on_crash(exc)
            raise
