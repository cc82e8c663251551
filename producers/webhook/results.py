"""Command results for `?wait=N`: one tailer per process reads dastra.command-results.v1 from
its end and wakes the requests waiting for a command id; a result older than the tailer is
looked up on the topic.

    result = await results.wait(command_id, within=10.0, since_ms=accepted_at_ms)
"""

import asyncio
import threading
import time
import uuid
from collections import OrderedDict
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from pydantic import ValidationError

from bus.envelope import EnvelopeError, decode, record_headers
from bus.records.commands import CommandResult
from bus.settings import KafkaSettings
from bus.tailer import TopicTailer
from bus.topics import COMMAND_RESULTS

__all__ = ["ResultWaiter"]

_log = structlog.get_logger(__name__)


class ResultWaiter:
    """The newest command results, from one tailer of the results topic per process."""

    def __init__(self, kafka: KafkaSettings, capacity: int) -> None:
        self._kafka = kafka
        self._capacity = capacity
        self._cache: OrderedDict[str, CommandResult] = OrderedDict()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}
        self._lock = threading.Lock()  # the tailer's thread and the event loop share both maps
        self.topic = kafka.topic(COMMAND_RESULTS)
        self.tailer = TopicTailer(kafka, self.topic, self._apply, start="end", name="results")

    def _apply(self, message: Message) -> None:
        result = _parse_result(message)
        if result is None:
            return
        with self._lock:
            self._cache[result.command_id] = result
            self._cache.move_to_end(result.command_id)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
            waiters = self._waiters.pop(result.command_id, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_settle, future, result)

    async def wait(self, command_id: str, within: float, since_ms: int) -> CommandResult | None:
        """The result of `command_id`, waiting up to `timeout`; None if it did not come."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            found = self._cache.get(command_id)
            if found is not None:
                return found
            self._waiters.setdefault(command_id, []).append((loop, future))
        try:
            if since_ms < self.tailer.started_at_ms:
                # Produced before this process started to follow results: look back once.
                earlier = await asyncio.to_thread(_find_result, self._kafka, command_id, since_ms)
                if earlier is not None:
                    return earlier
            result: CommandResult = await asyncio.wait_for(future, within)
            return result
        except TimeoutError:
            return None
        finally:
            with self._lock:
                waiters = self._waiters.get(command_id, [])
                remaining = [w for w in waiters if w[1] is not future]
                if remaining:
                    self._waiters[command_id] = remaining
                else:
                    self._waiters.pop(command_id, None)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _parse_result(message: Message) -> CommandResult | None:
    try:
        envelope = decode(record_headers(message), message.value(), fallback_id="")
        return CommandResult.model_validate(envelope.data)
    except (EnvelopeError, ValidationError):
        _log.warning("webhook.bad_result_record", offset=message.offset())
        return None


def _find_result(kafka: KafkaSettings, command_id: str, since_ms: int) -> CommandResult | None:
    """Scan the results topic from `since_ms` to its end for one command's result."""
    topic = kafka.topic(COMMAND_RESULTS)
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": kafka.topic(f"dastra-webhook-lookup-{uuid.uuid4().hex}"),
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=5)
        partitions = list(metadata.topics[topic].partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=5
        )
        assignment = [tp for tp in starts if tp.offset >= 0]
        if not assignment:
            return None
        consumer.assign(assignment)
        pending = {tp.partition for tp in assignment}
        deadline = time.monotonic() + 10
        key = command_id.encode()
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition() or 0)
                continue
            if message.key() == key:
                result = _parse_result(message)
                if result is not None and result.command_id == command_id:
                    return result
        return None
    except KafkaException:
        return None
    finally:
        consumer.close()
