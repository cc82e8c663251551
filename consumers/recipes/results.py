"""The results of recipe steps: wait for a step's command result, or find it when it exists.

Consumes dastra.command-results.v1 twice over, without a consumer of its own for the waiting: the
worker's `ResultIndex` (which tails the whole topic for the agents' dedupe) hands every record it
reads to `StepResults`, which parses the ones a step is waiting for. A result written before the
wait began (a resumed run, a redelivered trigger) is found by a short scan of the one partition
its key hashes to, from a timestamp before the run started. Produces nothing; the runner sends
the commands.

Why it is race-free: a step first asks the index whether its command id has a result. If yes,
the result is on the topic and the scan finds it. If not, the waiter is registered before the
command is sent (and with no await in between), so the result, whenever the index reads it,
reaches the waiter.

    results = StepResults(kafka, dispatcher.index)
    await results.start(partitions=range(6))
    result = await results.result("recipe:x:evt-1:task", send=send, since_ms=t0, wait_s=600)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError

from bus.records.commands import CommandResult
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS
from consumers.result_index import ResultIndex

__all__ = ["StepResults"]

_log = structlog.get_logger(__name__)


class StepResults:
    """Results of recipe steps' commands; see the module docstring."""

    def __init__(self, kafka: KafkaSettings, index: ResultIndex) -> None:
        self._kafka = kafka
        self._index = index
        self._topic = kafka.topic(COMMAND_RESULTS)
        self._waiters: dict[str, list[asyncio.Future[CommandResult]]] = {}
        self._scanner: AIOKafkaConsumer | None = None
        self._partitions: list[int] = []
        self._scan_lock = asyncio.Lock()
        self._partitioner = DefaultPartitioner()

    async def start(self, partitions: Iterable[int]) -> None:
        """Open the scanning consumer (`partitions`: those of the results topic) and start
        listening to the index."""
        self._partitions = sorted(partitions)
        if not self._partitions:
            raise RuntimeError(f"topic {self._topic} has no partitions")
        scanner = AIOKafkaConsumer(
            **self._kafka.aiokafka_config(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await scanner.start()
        self._scanner = scanner
        self._index.add_listener(self._on_record)

    async def stop(self) -> None:
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self._waiters.clear()
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            await scanner.stop()

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values())

    def _on_record(self, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            return
        command_id = record.key.decode("utf-8", "replace")
        futures = self._waiters.get(command_id)
        if not futures:
            return
        result = _parse(record.value, command_id)
        if result is None:
            return
        for future in futures:
            if not future.done():
                future.set_result(result)

    async def result(
        self,
        command_id: str,
        *,
        send: Callable[[], Awaitable[None]],
        since_ms: int,
        wait_s: float,
    ) -> CommandResult:
        """The result of `command_id`: found if it already has one, else awaited after
        `send()` put the command on its topic. Raises `TimeoutError` after `wait_s` seconds."""
        if self._index.seen(command_id):
            found = await self.lookup(command_id, since_ms)
            if found is not None:
                return found
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(command_id, []).append(future)
        try:
            await send()
            async with asyncio.timeout(wait_s):
                return await asyncio.shield(future)
        finally:
            futures = self._waiters.get(command_id, [])
            if future in futures:
                futures.remove(future)
            if not futures:
                self._waiters.pop(command_id, None)
            future.cancel()

    async def lookup(self, command_id: str, since_ms: int) -> CommandResult | None:
        """The latest result of `command_id` on the topic (None when there is none), read from
        the partition its key hashes to, starting at `since_ms` (then, if not found there, from
        the partition's beginning)."""
        scanner = self._scanner
        if scanner is None:
            raise RuntimeError("step results are not started: call `await results.start()`")
        key = command_id.encode()
        partition = self._partitioner(key, self._partitions, self._partitions)
        tp = TopicPartition(self._topic, partition)
        async with self._scan_lock:
            found = await self._scan(scanner, tp, key, since_ms)
            if found is None and since_ms > 0:
                found = await self._scan(scanner, tp, key, 0)
        return found

    async def _scan(
        self, scanner: AIOKafkaConsumer, tp: TopicPartition, key: bytes, since_ms: int
    ) -> CommandResult | None:
        end = (await scanner.end_offsets([tp]))[tp]
        if since_ms > 0:
            start = (await scanner.offsets_for_times({tp: since_ms})).get(tp)
            if start is None:
                return None
            first = start.offset
        else:
            first = (await scanner.beginning_offsets([tp]))[tp]
        if first >= end:
            return None
        scanner.assign([tp])
        scanner.seek(tp, first)
        latest: bytes | None = None
        try:
            while await scanner.position(tp) < end:
                batch = await scanner.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    if record.offset >= end:
                        break
                    if record.key == key:
                        latest = record.value
        finally:
            with contextlib.suppress(Exception):
                scanner.unsubscribe()
        if latest is None:
            return None
        return _parse(latest, key.decode("utf-8", "replace"))


def _parse(value: bytes | None, command_id: str) -> CommandResult | None:
    if value is None:
        return None
    try:
        return CommandResult.model_validate_json(value)
    except ValidationError:
        _log.warning("recipes.result_unreadable", command_id=command_id)
        return None
