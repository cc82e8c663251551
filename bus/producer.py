"""An asyncio face on one idempotent, acks=all confluent-kafka producer.

Consumes records to write. Produces them and resolves each `await produce(...)` only when the
broker acknowledged the record (all in-sync replicas), with its partition and offset, or raises
`KafkaUnavailableError` when it did not within `timeout_s` (the record is then given up by
librdkafka: never written later) or when the cluster is known to be down (the request fails
fast; nothing is queued), or `RecordTooLargeError` when the record is larger than the producer
or the topic accepts (permanent: a retry cannot succeed); both errors are in `bus/errors.py`.
A background thread serves delivery
reports and, while the cluster is down, probes it every second.

    async with AsyncProducer(settings.kafka, timeout_s=5) as producer:
        delivered = await producer.produce(topic, key=b"k", value=b"{}")
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import structlog
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bus.envelope import RecordHeaders
from bus.errors import KafkaAuthorizationError, KafkaUnavailableError, RecordTooLargeError
from bus.settings import KafkaSettings

__all__ = ["AsyncProducer", "Delivered"]

_log = structlog.get_logger(__name__)


# MSG_SIZE_TOO_LARGE: librdkafka's own check at produce time, or the broker's MESSAGE_TOO_LARGE
# (same code); RECORD_LIST_TOO_LARGE: the broker refused the batch for its size.
_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)


@dataclass(frozen=True)
class Delivered:
    """Where an acknowledged record landed."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class AsyncProducer:
    """Owns one confluent-kafka Producer (idempotent, acks=all) and its poll thread."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        timeout_s: float,
        linger_ms: int = 1,
        max_record_bytes: int | None = None,
    ) -> None:
        self._kafka = kafka
        self._timeout_s = timeout_s
        self._linger_ms = linger_ms
        # librdkafka's `message.max.bytes` (default 1 000 000): a larger record is refused at
        # once with RecordTooLargeError.
        self._max_record_bytes = max_record_bytes
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._down_since: float | None = None
        self._lock = threading.Lock()

    # --- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        if self._producer is not None:
            raise RuntimeError("the producer is already open")
        timeout_ms = int(self._timeout_s * 1000)
        sizes = (
            {} if self._max_record_bytes is None else {"message.max.bytes": self._max_record_bytes}
        )
        self._producer = Producer(
            self._kafka.producer_config(
                **sizes,
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": self._linger_ms,
                    "message.timeout.ms": timeout_ms,
                    "request.timeout.ms": max(1000, min(timeout_ms, 30_000)),
                    "socket.connection.setup.timeout.ms": max(1000, min(timeout_ms, 30_000)),
                    "reconnect.backoff.max.ms": 1000,
                    "error_cb": self._on_error,
                },
            )
        )
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="producer-poll", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 10.0) -> None:
        producer, self._producer = self._producer, None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if producer is not None:
            remaining = producer.flush(timeout_s)
            if remaining:
                _log.warning("producer.unflushed_on_close", records=remaining)

    async def __aenter__(self) -> Self:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- state -----------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """False while the cluster is known to be unreachable."""
        return self._down_since is None

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            with self._lock:
                if self._down_since is None and error.code() == KafkaError._ALL_BROKERS_DOWN:
                    self._down_since = time.monotonic()
                    _log.warning("producer.kafka_down")
        elif error.fatal():
            _log.error("producer.fatal", code=error.code())

    def _mark_up(self) -> None:
        with self._lock:
            if self._down_since is not None:
                _log.info("producer.kafka_back")
            self._down_since = None

    def _serve(self) -> None:
        next_probe = 0.0
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                return
            try:
                producer.poll(0.05)
            except Exception:  # a callback that raised must not end delivery reports
                _log.exception("producer.callback_failed")
            if self._down_since is not None and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + 1.0
                try:
                    metadata = producer.list_topics(timeout=1.0)
                    if metadata.brokers:
                        self._mark_up()
                except KafkaException:
                    pass

    def probe(self, timeout_s: float = 2.0) -> bool:
        """Ask the cluster for metadata (blocking; run it in a thread)."""
        producer = self._producer
        if producer is None:
            return False
        try:
            metadata = producer.list_topics(timeout=timeout_s)
        except KafkaException:
            return False
        if metadata.brokers:
            self._mark_up()
            return True
        return False

    # --- producing ---------------------------------------------------------------------------

    async def produce(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: RecordHeaders | None = None,
        partition: int | None = None,
    ) -> Delivered:
        """Write one record and wait for the broker's acknowledgement."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("the producer is not open: use `async with AsyncProducer(...)`")
        if self._down_since is not None:
            raise KafkaUnavailableError("Kafka is unreachable")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            if error is None:
                self._mark_up()
                result = Delivered(
                    message.topic() or topic,
                    message.partition() or 0,
                    message.offset() or 0,
                    message.timestamp()[1],
                )
                loop.call_soon_threadsafe(_settle, future, result, None)
            elif error.code() in _TOO_LARGE:
                loop.call_soon_threadsafe(
                    _settle, future, None, RecordTooLargeError(f"refused: {error.str()}")
                )
            else:
                # A missing ACL is named (callers still treat it as unavailable: an operator
                # fixes it, and what was refused can be sent again then).
                denied = KafkaAuthorizationError.from_error(
                    error, topic=message.topic() or topic, topic_operation="WRITE"
                )
                reason = str(denied) if denied is not None else error.str()
                loop.call_soon_threadsafe(
                    _settle, future, None, KafkaUnavailableError(f"not acknowledged: {reason}")
                )

        try:
            producer.produce(
                topic,
                key=key,
                value=value,
                headers=headers,
                # -1: the configured partitioner (librdkafka's RD_KAFKA_PARTITION_UA)
                partition=-1 if partition is None else partition,
                on_delivery=on_delivery,
            )
        except BufferError as exc:
            raise KafkaUnavailableError("the producer queue is full") from exc
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in _TOO_LARGE:
                raise RecordTooLargeError(
                    f"the record ({len(value or b'') + len(key or b'')} bytes with its key) is "
                    f"larger than the producer accepts: {error.str()}"
                ) from exc
            raise KafkaUnavailableError(f"not accepted: {error.str()}") from exc
        return await future


def _settle(
    future: asyncio.Future[Delivered], result: Delivered | None, error: Exception | None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
