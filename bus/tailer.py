"""Topic tailer: one topic read in a background thread, every record handed to a callback.

Consumes any topic, by manual assignment (no consumer group, no commits): from the beginning
(optionally from a time), so a process can rebuild a table such as the hook subscriptions, or
from the current end, to follow new records such as command results. Produces nothing; callers
await `reached(partition, offset)` to read their own writes and `caught_up` to know the table is
complete.

The tailer keeps its own position per partition and never lets librdkafka move it. A consumer
that stopped fetching after a broker restart (librdkafka #5153, seen here under `--chaos`) is
replaced where it was: it is judged stuck when, for `stall_s`, a partition has not moved while
its log end is past it, a `reached()` waits for a record already acknowledged, or log-end
queries kept failing. An "offset out of range" (a broker still loading its logs answers one) is
asked again where the tailer was, never reset to an end; only records retention deleted are
skipped.

    tailer = TopicTailer(kafka, kafka.topic(HOOK_SUBSCRIPTIONS), table.apply, start="beginning")
    tailer.start()                    # returns once the topic was read to its end
    await tailer.reached(partition, offset, within=5)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Literal

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from bus.errors import KafkaAuthorizationError, TailerError
from bus.reading import reader_group_id
from bus.settings import KafkaSettings

__all__ = ["TopicTailer"]

_log = structlog.get_logger(__name__)

_OUT_OF_RANGE = frozenset({KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE})


class TopicTailer:
    """Reads one topic in a daemon thread; `apply(message)` runs in that thread, in log order
    per partition, once per record. Survives broker restarts (its consumer is replaced when
    it stops fetching; see the module docstring)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        apply: Callable[[Message], None],
        *,
        start: Literal["beginning", "end"],
        name: str,
        since_ms: Callable[[], int] | None = None,
        stall_s: float = 10.0,
    ) -> None:
        self._kafka = kafka
        self.topic = topic
        self._apply = apply
        self._start = start
        self._name = name
        self._since_ms = since_ms
        self._stall_s = stall_s
        self._positions: dict[int, int] = {}
        # When each partition's position last moved (monotonic), for the stall check.
        self._moved_at: dict[int, float] = {}
        self._unanswered_since: float | None = None  # since when log-end queries fail
        self.renewals = 0  # consumers replaced because they had stopped fetching
        self._targets: dict[int, int] = {}
        self._lock = threading.Lock()
        # (partition, offset, since (monotonic), loop, future) of each `reached()` in progress.
        self._waiters: list[
            tuple[int, int, float, asyncio.AbstractEventLoop, asyncio.Future[None]]
        ] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._assign_deadline = 0.0  # set by start()
        self._caught_up = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._live: Consumer | None = None  # the thread's consumer of the moment
        self.started_at_ms = 0

    @property
    def caught_up(self) -> bool:
        """Every record present when the tailer started has been applied."""
        return self._caught_up.is_set()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 30.0) -> None:
        """Start reading; return once assigned (and, from the beginning, caught up). Raises
        `TailerError` (bus/errors.py) when the topic is missing or Kafka did not answer."""
        if self._thread is not None:
            raise RuntimeError(f"tailer {self._name} already started")
        self.started_at_ms = int(time.time() * 1000)
        # A topic without a leader yet (just created, or a loaded broker) is retried as long as
        # the caller waits, not less.
        self._assign_deadline = time.monotonic() + timeout
        self._thread = threading.Thread(target=self._run, name=f"tail-{self._name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            self.stop()
            if isinstance(self._error, KafkaAuthorizationError):
                raise self._error
            raise TailerError(f"could not start reading {self.topic}: {self._error or 'timeout'}")
        deadline = time.monotonic() + timeout
        while not self._caught_up.wait(0.05):
            if self._error is not None or time.monotonic() > deadline:
                self.stop()
                raise TailerError(
                    f"could not read {self.topic} to its end: {self._error or 'timeout'}"
                )

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(10)
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for _p, _o, _since, loop, future in waiters:
            loop.call_soon_threadsafe(_cancel, future)

    def position(self, partition: int) -> int:
        with self._lock:
            return self._positions.get(partition, 0)

    async def reached(self, partition: int, offset: int, within: float) -> bool:
        """Wait until the record at `offset` of `partition` was applied; False on timeout."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._positions.get(partition, 0) > offset:
                return True
            self._waiters.append((partition, offset, time.monotonic(), loop, future))
        try:
            async with asyncio.timeout(within):
                await future
            return True
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if self._stop.is_set():
                return False
            raise
        finally:
            with self._lock:
                self._waiters = [w for w in self._waiters if w[4] is not future]

    # --- the thread ----------------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        return Consumer(
            self._kafka.confluent_config(
                **{
                    # Never joins a group (manual assignment) and never commits.
                    "group.id": reader_group_id(self._kafka, f"tail-{self._name}"),
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 20,
                    # Never moved by librdkafka: an out-of-range answer is handled in _run.
                    "auto.offset.reset": "error",
                }
            )
        )

    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = consumer.list_topics(self.topic, timeout=10)
        info = metadata.topics.get(self.topic)
        if info is not None and (
            denied := KafkaAuthorizationError.from_error(info.error, topic=self.topic)
        ):
            raise denied
        if info is None or info.error is not None:
            raise TailerError(f"topic {self.topic} does not exist")
        partitions = sorted(info.partitions)
        starts: dict[int, int] = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), 10)
            self._targets[partition] = high
            starts[partition] = high if self._start == "end" else low
        if self._start == "beginning" and self._since_ms is not None:
            since = self._since_ms()
            found = consumer.offsets_for_times(
                [TopicPartition(self.topic, p, since) for p in partitions], timeout=10
            )
            for tp in found:
                if tp.offset >= 0:
                    starts[tp.partition] = max(starts[tp.partition], tp.offset)
                else:  # nothing that recent: start at the end
                    starts[tp.partition] = self._targets[tp.partition]
        now = time.monotonic()
        with self._lock:
            self._positions = dict(starts)
            self._moved_at = dict.fromkeys(partitions, now)
        return [TopicPartition(self.topic, p, starts[p]) for p in partitions]

    def _assign_with_retries(self, consumer: Consumer) -> list[TopicPartition]:
        # A topic created a moment ago may not have a leader yet: retry what can be retried.
        deadline = self._assign_deadline
        while True:
            try:
                return self._assignment(consumer)
            except (KafkaException, TailerError) as exc:
                error = exc.args[0] if isinstance(exc, KafkaException) else None
                retriable = isinstance(error, KafkaError) and (
                    error.retriable()
                    or error.code()
                    in (
                        KafkaError.NOT_LEADER_FOR_PARTITION,
                        KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError._TRANSPORT,
                        KafkaError._TIMED_OUT,
                    )
                )
                if isinstance(exc, TailerError) or not retriable:
                    raise
                if time.monotonic() > deadline or self._stop.is_set():
                    raise
                time.sleep(0.2)

    def _check_caught_up(self) -> None:
        if self._caught_up.is_set():
            return
        with self._lock:
            done = all(self._positions.get(p, 0) >= high for p, high in self._targets.items())
        if done:
            self._caught_up.set()

    def _run(self) -> None:
        consumer = self._live = self._consumer()
        try:
            assignment = self._assign_with_retries(consumer)
            consumer.assign(assignment)
            self._ready.set()
            self._check_caught_up()
            self._notify()
            next_check = time.monotonic() + self._stall_s / 2
            while not self._stop.is_set():
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self._stall_s / 2
                    why = self._stalled(consumer)
                    if why is not None:
                        consumer = self._live = self._renew(consumer, why)
                        continue
                try:
                    message = consumer.poll(0.1)
                    if message is None:
                        # Transaction markers take offsets no message shows: trust the position.
                        self._advance(consumer.position(consumer.assignment()))
                        continue
                except KafkaException as exc:  # the broker is away: librdkafka reconnects
                    _log.debug("tailer.poll_failed", topic=self.topic, error=str(exc))
                    self._stop.wait(0.2)
                    continue
                error = message.error()
                if error is not None:
                    if error.code() in _OUT_OF_RANGE:
                        # A broker still loading its logs answers this: ask again where we were.
                        self._stop.wait(0.5)
                        consumer = self._live = self._renew(consumer, "offset out of range")
                    elif error.code() != KafkaError._PARTITION_EOF:
                        _log.debug("tailer.error", topic=self.topic, code=error.code())
                    continue
                self._take(message)
        except (KafkaException, TailerError) as exc:
            self._error = exc
            _log.error("tailer.stopped", topic=self.topic, error=str(exc))
        finally:
            self._ready.set()
            consumer.close()

    def _take(self, message: Message) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        with self._lock:
            if offset < self._positions.get(partition, 0):
                return  # read again by a replaced consumer: applied already
        try:
            self._apply(message)
        except Exception:
            # One bad record must not stop the table; it is skipped, by offset.
            _log.exception(
                "tailer.apply_failed", topic=self.topic, partition=partition, offset=offset
            )
        with self._lock:
            self._positions[partition] = offset + 1
            self._moved_at[partition] = time.monotonic()
        self._check_caught_up()
        self._notify()

    # --- stuck consumers ------------------------------------------------------------------------

    def _stalled(self, consumer: Consumer) -> str | None:
        """Why the consumer looks stuck (a partition not moving for `stall_s` while there is
        more to read), or None."""
        now = time.monotonic()
        with self._lock:
            quiet = {
                p: pos
                for p, pos in self._positions.items()
                if now - self._moved_at.get(p, now) > self._stall_s
            }
            overdue = [
                (p, o) for p, o, since, _l, _f in self._waiters if now - since > self._stall_s
            ]
        for partition, offset in overdue:
            if partition in quiet and quiet[partition] <= offset:
                return f"partition {partition}: offset {offset} acknowledged, not read"
        for partition, position in quiet.items():
            if self._stop.is_set():
                return None
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), 2.0, cached=False
                )
            except KafkaException as exc:
                # The broker is away, or this consumer no longer gets answers: a fresh one is
                # tried once it has been so for a while.
                _log.debug("tailer.no_log_end", topic=self.topic, error=str(exc))
                if self._unanswered_since is None:
                    self._unanswered_since = now
                elif now - self._unanswered_since > 3 * self._stall_s:
                    self._unanswered_since = None
                    return f"no log end from the broker for {3 * self._stall_s:.0f} s"
                return None
            self._unanswered_since = None
            if high > position:
                # Read_committed: an open transaction looks the same; a renewal costs little.
                return f"partition {partition}: log end {high}, read to {position}"
        return None

    def _renew(self, consumer: Consumer, why: str) -> Consumer:
        """A new consumer, assigned at the tailer's own positions (records retention deleted
        meanwhile are skipped). The stuck one is closed aside: its close could hang too."""
        threading.Thread(target=consumer.close, name=f"close-{self._name}", daemon=True).start()
        consumer = self._consumer()
        now = time.monotonic()
        with self._lock:
            positions = dict(self._positions)
            self._moved_at = dict.fromkeys(positions, now)
        for partition, position in positions.items():
            try:
                low, _high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), 2.0, cached=False
                )
            except KafkaException:
                continue
            if position < low:
                positions[partition] = low
                with self._lock:
                    self._positions[partition] = low
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in positions.items()])
        self.renewals += 1
        _log.warning("tailer.renewed", topic=self.topic, why=why, renewals=self.renewals)
        return consumer

    def _advance(self, positions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in positions:
                if tp.offset >= 0 and tp.offset > self._positions.get(tp.partition, 0):
                    self._positions[tp.partition] = tp.offset
                    self._moved_at[tp.partition] = time.monotonic()
        self._check_caught_up()
        self._notify()

    def _notify(self) -> None:
        with self._lock:
            done = [w for w in self._waiters if self._positions.get(w[0], 0) > w[1]]
            if not done:
                return
            self._waiters = [w for w in self._waiters if w not in done]
        for _p, _o, _since, loop, future in done:
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _cancel(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.cancel()
