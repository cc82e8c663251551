"""Command results for `?wait=N`: one tailer per process reads dastra.command-results.v1 from
its end and wakes the requests waiting for a command id; a result older than the tailer is
looked up on the topic. The trace context each result record carries (`ce_traceparent`) is
kept beside it, so the `?wait` answer's span continues the agent's trace.

    result = await results.wait(command_id, within=10.0, since_ms=accepted_at_ms)
"""

import asyncio
import threading
from collections import OrderedDict
from typing import Any

import structlog
from confluent_kafka import KafkaException, Message
from pydantic import ValidationError

from bus.envelope import EnvelopeError, Headers, decode, record_headers
from bus.reading import read_to_end
from bus.records.commands import CommandResult
from bus.settings import KafkaSettings
from bus.tailer import TopicTailer
from bus.topics import COMMAND_RESULTS
from bus.tracing import TRACEPARENT_HEADER, TRACESTATE_HEADER

__all__ = ["ResultWaiter"]

_log = structlog.get_logger(__name__)


class ResultWaiter:
    """The newest command results, from one tailer of the results topic per process."""

    def __init__(self, kafka: KafkaSettings, capacity: int) -> None:
        self._kafka = kafka
        self._capacity = capacity
        self._cache: OrderedDict[str, CommandResult] = OrderedDict()
        # The trace headers of the cached results that carried some (tracing on in the worker).
        self._traces: dict[str, list[tuple[str, bytes | str | None]]] = {}
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}
        self._lock = threading.Lock()  # the tailer's thread and the event loop share both maps
        self.topic = kafka.topic(COMMAND_RESULTS)
        self.tailer = TopicTailer(kafka, self.topic, self._apply, start="end", name="results")

    def _apply(self, message: Message) -> None:
        result = _parse_result(message)
        if result is None:
            return
        traced = [
            (name, value)
            for name, value in record_headers(message)
            if name in (TRACEPARENT_HEADER, TRACESTATE_HEADER)
        ]
        with self._lock:
            self._cache[result.command_id] = result
            self._cache.move_to_end(result.command_id)
            if traced:
                self._traces[result.command_id] = traced
            else:
                self._traces.pop(result.command_id, None)
            while len(self._cache) > self._capacity:
                evicted, _ = self._cache.popitem(last=False)
                self._traces.pop(evicted, None)
            waiters = self._waiters.pop(result.command_id, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_settle, future, result)

    def trace_headers(self, command_id: str) -> list[tuple[str, bytes | str | None]]:
        """The trace headers of `command_id`'s result record, if it carried any and is cached."""
        with self._lock:
            return list(self._traces.get(command_id, ()))

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
            async with asyncio.timeout(within):
                result: CommandResult = await future
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
    return _result_of(record_headers(message), message.value(), message.offset())


def _result_of(headers: Headers, value: bytes | None, offset: int | None) -> CommandResult | None:
    try:
        envelope = decode(headers, value, fallback_id="")
        return CommandResult.model_validate(envelope.data)
    except (EnvelopeError, ValidationError):
        _log.warning("webhook.bad_result_record", offset=offset)
        return None


def _find_result(kafka: KafkaSettings, command_id: str, since_ms: int) -> CommandResult | None:
    """Scan the results topic from `since_ms` to its end for one command's result."""
    key = command_id.encode()
    try:
        for record in read_to_end(
            kafka,
            kafka.topic(COMMAND_RESULTS),
            timeout=10,
            since_ms=since_ms,
            keep=lambda k: k == key,
        ):
            result = _result_of(record.headers, record.value, record.offset)
            if result is not None and result.command_id == command_id:
                return result
    except KafkaException:
        return None
    return None
