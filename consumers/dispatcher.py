"""The one dispatcher behind the six command agents: decoding, validation, dedupe, ordering,
retries, classification, results, dead letters and offsets.

Consumes the records the agents take from `dastra.commands.<action>.v1` (a thin Faust agent per
action hands every event to `submit`) and dastra.command-results.v1 (through `ResultIndex`).
Produces exactly one result per command on dastra.command-results.v1 (CloudEvents binary mode,
key = command id, `ce_type` eu.dastra.command.succeeded|failed, data = `CommandResult`), plus a
record on dastra.dead-letter.v1 (original key, bytes and headers untouched, `dlq.*` headers added)
for every malformed record and every permanent failure. Calls Dastra through the action handlers,
always with the client's own retries off (`retry=False`): the retry policy lives here.
Traces (`bus/tracing.py`): each record is processed in a `process <topic>` span, a child of the
trace context its `ce_traceparent` header carries; the result carries that trace on.

How it works, and why this shape (capacity, key order, epochs and in-order acks are the keyed
engine's, `consumers/_keyed.py`, shared with the recipe runner):

- **Manual acks, in offset order.** Agents read with `stream.noack()`. A record is acked to Faust
  only once its result (and dead letter) is acknowledged by the broker, and only when every
  earlier record of its partition is acked too: faust-streaming commits the end of the first run
  of consecutive acked offsets it holds, without checking that this run starts at the committed
  offset, so acking out of order could commit past a record still in flight. Faust commits the
  acked offsets every WORKER_COMMIT_INTERVAL_S, and once more on shutdown.
- **Ordering by key, not by lane.** Each record gets ordering keys: its Kafka key (per topic),
  its command id, and for actor commands the normalised e-mail, company or names
  (`actor_lane_key`).
  A record waits for the earlier records sharing any of its keys, then takes one of
  WORKER_CONCURRENCY slots per Dastra attempt. Same key: in order. Different keys: concurrent,
  with no head-of-line blocking from a fixed number of lanes. A slow or retrying command delays
  only its own keys (and the commit point of its partition, never its processing); at most
  WORKER_MAX_IN_FLIGHT records are taken from Kafka and not finished.
- **Dedupe.** Before calling Dastra, a command id with a result on the results topic is skipped:
  acked, no Dastra call, no second result. The index is caught up to the results topic's end
  offsets after every assignment, before any newly assigned record is processed.
- **Dead letter, then result.** A failure's dead letter is written and acknowledged before its
  result is sent: the result is what dedupe trusts, so it must never exist without its dead
  letter. If the dead letter cannot be written, the worker crashes with no result and the record
  unacked; a crash between the two re-processes the record, so a dead letter may appear twice
  (same command id: dead letters are at least once, dedupe them by command id).
- **Crash window.** Records below the end offset a partition had when it was assigned may have
  been started by a previous owner that died before writing their result ("suspects"); so may
  an attempt whose outcome is unknown (timeout, dropped connection, 500/502/504 on a POST). For
  those, the handler gets `ctx.recheck` and looks its object up by natural key first.
- **Retries.** Timeouts, connection errors, 5xx and 429 are retried with jittered exponential
  backoff (429: at least `Retry-After`) until WORKER_RETRY_DEADLINE_S after the first attempt;
  then a failed result (`retries-exhausted`) and a dead letter. Invalid records and Dastra's
  400/401/403/404 fail at once, with a dead letter. Anything else is a bug: it crashes the worker
  loudly (the record is not acked, so it is redelivered after the fix).
- **Rebalances and shutdown.** On revocation, commands not started are dropped, and those in
  flight get WORKER_REVOKE_GRACE_S (WORKER_SHUTDOWN_GRACE_S on SIGTERM) to finish; the rest are
  cancelled unacked, never writing a result after the partition has moved on. Faust's own
  `stream_wait_empty` is off, because it would wait for every retry to run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import faust
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError

from bus.deadletter import ErrorKind, OriginalRecord, dead_letter
from bus.envelope import (
    Envelope,
    EnvelopeError,
    RecordHeaders,
    decode,
    deterministic_id,
    encode_binary,
    header_dict,
    header_pairs,
    new_event,
)
from bus.metrics import role_registry
from bus.privacy import PrivacyError
from bus.privacy.keystore import KeyStore
from bus.records.commands import (
    RESULT_FAILED,
    RESULT_SUCCEEDED,
    Command,
    CommandError,
    CommandResult,
    command_type,
)
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import COMMAND_RESULTS, DEAD_LETTER, RECORD_MAX_BYTES, command_topic
from bus.tracing import inject, processing, sending
from consumers._keyed import Abandoned, KeyedEngine
from consumers.actions import ActionSpec, AreaDefaults, CommandContext, CommandRejected, Result
from consumers.agent_privacy import AgentPrivacy
from consumers.result_index import REPLAY_COMMAND_ID_HEADER, REPLAY_ID_HEADER, ResultIndex
from consumers.settings import WorkerSettings
from dastra.client import DastraClient
from dastra.doctor import detect
from dastra.errors import (
    DastraAuthError,
    DastraConfigError,
    DastraError,
    DastraNotFound,
    DastraRejected,
    DastraResponseError,
    DastraRetryable,
)
from dastra.metrics import DastraMetrics
from dastra.retry import backoff_delay
from dastra.settings import DastraSettings

__all__ = [
    "COMPONENT",
    "AgentMetrics",
    "Dispatcher",
    "command_id_of",
    "fallback_id",
]

_log = structlog.get_logger(__name__)

COMPONENT = "agents"
_TP = tuple[str, int]
_T = TypeVar("_T")


def fallback_id(topic: str, partition: int, offset: int) -> str:
    """The id of a command that carries none: its position, `topic/partition/offset`."""
    return f"{topic}/{partition}/{offset}"


def command_id_of(headers: Any, value: bytes | None, *, fallback: str) -> str:
    """The command id of a record, even one that cannot be decoded: its CloudEvent id (`ce_id`
    header, or `id` of a structured event), else the id a `dlq replay` kept for it, else
    `fallback` (its position)."""
    try:
        envelope: Envelope | None = decode(headers, value, fallback_id="")
    except EnvelopeError:
        envelope = None
    return _id_of(envelope, headers, fallback)


def _id_of(envelope: Envelope | None, headers: Any, fallback: str) -> str:
    found = header_dict(headers)
    if envelope is None:
        ce_id = found.get("ce_id")
        if ce_id:
            return ce_id.decode("utf-8", "replace")
    elif envelope.mode != "plain":
        return envelope.id
    replayed = found.get(REPLAY_COMMAND_ID_HEADER)
    return replayed.decode("utf-8", "replace") if replayed else fallback


class AgentMetrics:
    """Prometheus metrics of the agents, per action (served at /metrics by the Faust web)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or role_registry()
        r = self.registry
        self.dastra = DastraMetrics(r)
        self.succeeded = Counter(
            "dastra_agent_commands_succeeded", "Commands that succeeded", ["action"], registry=r
        )
        self.failed = Counter(
            "dastra_agent_commands_failed",
            "Commands that ended in a failed result",
            ["action", "kind"],
            registry=r,
        )
        self.retried = Counter(
            "dastra_agent_commands_retried",
            "Dastra attempts retried (timeouts, 5xx, 429)",
            ["action", "kind"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "dastra_agent_commands_dead_lettered",
            "Records written to the dead-letter topic",
            ["action", "kind"],
            registry=r,
        )
        self.duplicates = Counter(
            "dastra_agent_commands_duplicate",
            "Redelivered commands skipped because they already have a result",
            ["action"],
            registry=r,
        )
        self.latency = Histogram(
            "dastra_agent_command_latency_seconds",
            "From the command record's timestamp to its result acknowledged by Kafka",
            ["action", "status"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.duration = Histogram(
            "dastra_agent_command_duration_seconds",
            "From the first Dastra attempt to the result acknowledged by Kafka",
            ["action", "status"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.in_flight = Gauge(
            "dastra_agent_commands_in_flight",
            "Records taken from Kafka and not finished",
            registry=r,
        )


# A result value larger than this (the results topic's limit, less room for the headers) is
# written with its Dastra object(s) reduced to their ids (`_truncated`).
_MAX_RESULT_BYTES = RECORD_MAX_BYTES - 50_000


def _truncated(result: Result) -> Result:
    """Dastra objects reduced to their ids, marked `truncated`."""
    if isinstance(result, list):
        return [{"id": item.get("id"), "truncated": True} for item in result]
    return {"id": result.get("id"), "truncated": True}


@dataclass(eq=False)
class _Work:
    """One consumed record on its way through the dispatcher."""

    spec: ActionSpec
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    produced_at: datetime
    received_at: datetime
    epoch: int
    command_id: str
    replay_id: str | None
    suspect: bool = False
    command: Command | None = None
    workspace_id: int | None = None
    failure: CommandError | None = None
    keys: list[str] = field(default_factory=list)

    @property
    def tp(self) -> _TP:
        return (self.topic, self.partition)

    def original(self) -> OriginalRecord:
        return OriginalRecord(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            key=self.key,
            value=self.value,
            headers=self.headers,
        )


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(command)"
        errors.setdefault(where, []).append(str(error["msg"]))
    return errors


def _failure_kind(exc: BaseException) -> str:
    if isinstance(exc, DastraNotFound):
        return ErrorKind.DASTRA_NOT_FOUND
    if isinstance(exc, DastraAuthError):
        return ErrorKind.DASTRA_AUTH
    if isinstance(exc, DastraRejected):
        return ErrorKind.DASTRA_REJECTED
    if isinstance(exc, DastraResponseError):
        return "dastra-invalid-response"
    if isinstance(exc, CommandRejected):
        return exc.kind
    return ErrorKind.INVALID_COMMAND


class Dispatcher:
    """Runs the commands the agents hand over; owns the Dastra client, the result/dead-letter
    producer and the result index (opened by `start`, closed by `close`).

    dispatcher = Dispatcher(settings.kafka, settings.worker, settings.dastra, on_crash=app.crash)
    dispatcher.attach(app, create_task.SPEC)      # one thin agent per action
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        worker: WorkerSettings,
        dastra: DastraSettings,
        *,
        on_crash: Callable[[BaseException], Awaitable[None]],
        metrics: AgentMetrics | None = None,
        privacy: PrivacySettings | None = None,
    ) -> None:
        self._kafka = kafka
        # Raises PrivacyError on a privacy setup that cannot work (e.g. no master key).
        self._privacy = AgentPrivacy(kafka, privacy or PrivacySettings())
        self._worker = worker
        self._dastra_settings = dastra
        self.metrics = metrics or AgentMetrics()
        self._default_workspace = worker.workspace_id or dastra.workspace_id
        self._areas = AreaDefaults(worker.area_id)
        self._results_topic = kafka.topic(COMMAND_RESULTS)
        self._dlq_topic = kafka.topic(DEAD_LETTER)
        self._command_topics: set[str] = set()

        self._dastra: DastraClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._detection: asyncio.Task[None] | None = None
        self._index: ResultIndex | None = None

        self._engine = KeyedEngine[_Work](
            max_in_flight=worker.max_in_flight,
            process=self._traced,
            on_crash=on_crash,
            gauge=self.metrics.in_flight,
            log=_log,
            name="agents",
            describe=lambda work: {
                "action": work.spec.action,
                "command_id": work.command_id,
                "topic": work.topic,
                "partition": work.partition,
                "offset": work.offset,
            },
            task_name=lambda work: f"command {work.command_id}",
        )
        self._slots = asyncio.Semaphore(worker.concurrency)
        self._suspect_below: dict[_TP, int] = {}
        self._assigned: list[_TP] = []

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the Dastra client, the producer and the result index."""
        self._dastra = DastraClient(self._dastra_settings, metrics=self.metrics.dastra)
        await self._dastra.__aenter__()
        producer = AIOKafkaProducer(
            **self._kafka.aiokafka_producer_config(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            # A dead letter carries a command record up to its topic's limit (perhaps encrypted
            # whole), plus dlq.* headers.
            max_request_size=RECORD_MAX_BYTES,
        )
        await producer.start()
        self._producer = producer
        partitions = await producer.partitions_for(self._results_topic)
        self._index = ResultIndex(self._kafka, self._results_topic, on_crash=self._engine.crash)
        await self._index.start(partitions)
        await self._privacy.start()
        if self._worker.detect and self._default_workspace is not None:
            self._detection = asyncio.create_task(
                self._adapt(self._dastra, self._default_workspace), name="dastra detection"
            )

    async def _adapt(self, client: DastraClient, ws: int) -> None:
        """Detect Dastra's filter casing and filter time zone (dastra.doctor) and adapt the
        client's filters; commands taken meanwhile use the defaults (camelCase, UTC). Best
        effort: an unreachable Dastra leaves the defaults, logged."""
        try:
            async with DastraClient(
                self._dastra_settings, retries=False, metrics=self.metrics.dastra
            ) as probe:
                detection = await detect(probe, ws)
        except DastraError as exc:
            _log.warning("worker.dastra_profile_unknown", workspace=ws, error=type(exc).__name__)
            return
        profile = detection.profile
        client.adapt(filter_case=profile.filter_case, filter_shift=profile.filter_shift)
        _log.info(
            "worker.dastra_profile",
            workspace=ws,
            filter_case=profile.filter_case,
            filter_shift_s=profile.filter_shift.total_seconds(),
            warnings=[f"{f.name}: {f.summary}" for f in detection.findings if f.status != "PASS"],
        )

    async def drain(self) -> None:
        """Stop taking records; give those in flight WORKER_SHUTDOWN_GRACE_S to finish."""
        await self._engine.drain(self._worker.shutdown_grace_s)

    async def close(self) -> None:
        """Close what `start` opened (after `drain`)."""
        detection, self._detection = self._detection, None
        if detection is not None:
            detection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await detection
        index, self._index = self._index, None
        producer, self._producer = self._producer, None
        dastra, self._dastra = self._dastra, None
        if index is not None:
            await index.stop()
        await self._privacy.stop()
        if producer is not None:
            await producer.stop()
        if dastra is not None:
            await dastra.aclose()

    @property
    def ready(self) -> bool:
        """Partitions assigned and the result index caught up: records are being processed."""
        return self._engine.ready

    @property
    def in_flight(self) -> int:
        return self._engine.in_flight

    @property
    def index(self) -> ResultIndex:
        """The result index (open between `start` and `close`); the recipe runner shares it."""
        return self._require(self._index, "result index")

    @property
    def keys(self) -> KeyStore | None:
        """The key store (None without PRIVACY_MASTER_KEY), shared with the recipe runner: one
        copy of the key topic per worker."""
        return self._privacy.store

    @property
    def dastra(self) -> DastraClient:
        """The Dastra client (open between `start` and `close`), shared with the recipe runner
        so that one rate limiter covers every call of the worker."""
        return self._require(self._dastra, "Dastra client")

    @property
    def assigned(self) -> list[tuple[str, int]]:
        """The command topic partitions this worker owns."""
        return list(self._assigned)

    # --- the agents --------------------------------------------------------------------------

    def attach(self, app: faust.App, spec: ActionSpec) -> None:
        """Declare `spec`'s command topic and its agent on `app`: a thin loop that hands every
        event to `submit` without acking it."""
        name = self._kafka.topic(command_topic(spec.action))
        self._command_topics.add(name)
        topic = app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

        async def agent(stream: Any) -> None:
            async for event in stream.noack().events():
                await self.submit(spec, event)
                del event  # Faust tracks unacked messages by weak reference

        agent.__name__ = agent.__qualname__ = f"{spec.action.replace('-', '_')}_agent"
        app.agent(topic, name=f"{spec.action}-agent")(agent)

    async def submit(self, spec: ActionSpec, event: Any) -> None:
        """Take one record: prepare it, queue it behind the records sharing its keys, and
        return (waiting only while WORKER_MAX_IN_FLIGHT records are unfinished)."""
        await self._engine.submit(
            event,
            lambda epoch: self._prepare(spec, event, epoch),
            before=lambda: self._privacy.prepare(event.message.value),
        )

    # --- rebalances --------------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        """Before the partitions move: finish or abandon what is in flight."""
        _log.info("agents.revoked", partitions=len(revoked), in_flight=self._engine.in_flight)
        await self._engine.end_epoch(self._worker.revoke_grace_s)

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        """After an assignment: note the suspects, catch the index up, then process."""
        index = self._require(self._index, "result index")
        began = time.monotonic()
        commands = [(tp.topic, tp.partition) for tp in assigned if tp.topic in self._command_topics]
        self._assigned = sorted(commands)
        self._suspect_below = await index.end_offsets(commands)
        await index.catch_up(self._worker.index_timeout_s)
        _log.info(
            "agents.assigned",
            partitions=len(commands),
            results_known=len(index),
            took_s=round(time.monotonic() - began, 3),
        )
        self._engine.open()

    # --- one record --------------------------------------------------------------------------

    def _prepare(self, spec: ActionSpec, event: Any, epoch: int) -> _Work:
        message = event.message
        topic, partition, offset = message.topic, message.partition, message.offset
        headers = header_pairs(message.headers)
        value: bytes | None = message.value
        stamp = message.timestamp
        now = datetime.now(UTC)
        found = header_dict(headers)
        replay = found.get(REPLAY_ID_HEADER)
        work = _Work(
            spec=spec,
            topic=topic,
            partition=partition,
            offset=offset,
            key=message.key,
            value=value,
            headers=headers,
            produced_at=datetime.fromtimestamp(stamp, UTC) if stamp else now,
            received_at=now,
            epoch=epoch,
            command_id=fallback_id(topic, partition, offset),
            replay_id=replay.decode("utf-8", "replace") if replay else None,
        )
        work.keys = [f"id:{work.command_id}"]
        if value is not None and len(value) > self._worker.max_record_bytes:
            work.command_id = command_id_of(headers, None, fallback=work.command_id)
            work.failure = CommandError(
                kind=ErrorKind.OVERSIZED,
                message=f"the record value has {len(value)} bytes; the limit is "
                f"{self._worker.max_record_bytes} (WORKER_MAX_RECORD_BYTES)",
            )
            work.keys = [f"id:{work.command_id}"]
            return work
        try:
            envelope: Envelope | None = decode(headers, value, fallback_id="")
        except EnvelopeError as exc:
            envelope = None
            work.failure = CommandError(kind=exc.kind, message=str(exc))
        work.command_id = _id_of(envelope, headers, work.command_id)
        work.keys = [f"id:{work.command_id}"]
        if work.key is not None:
            work.keys.append(f"key:{topic}:{work.key.hex()}")
        if envelope is None:
            return work
        expected = command_type(spec.action)
        if envelope.mode != "plain" and envelope.type != expected:
            # Another action's command (or an event) on this topic: never run it as this action.
            work.failure = CommandError(
                kind=ErrorKind.UNKNOWN_ACTION,
                message=f"the CloudEvent type {(envelope.type or '')[:120]!r} is not a command "
                f"of this topic: {topic} takes {expected!r} only",
            )
            return work
        data = envelope.data
        try:
            opened = self._privacy.open_command(data)
        except PrivacyError as exc:
            work.failure = CommandError(kind=ErrorKind.INVALID_COMMAND, message=str(exc))
            return work
        if opened is not None:
            if opened.is_erased:
                work.failure = CommandError(
                    kind=ErrorKind.INVALID_COMMAND,
                    message="the command's personal fields were erased (privacy erase)",
                )
                return work
            data = opened.data
        try:
            work.command = spec.model.model_validate(data)
        except ValidationError as exc:
            errors = _field_errors(exc)
            work.failure = CommandError(
                kind=ErrorKind.INVALID_COMMAND,
                message=f"not a valid {spec.action} command: "
                + "; ".join(f"{where}: {', '.join(msgs)}" for where, msgs in errors.items()),
                field_errors=errors,
            )
            return work
        work.workspace_id = work.command.workspace_id or self._default_workspace
        if work.workspace_id is None:
            work.failure = CommandError(
                kind=ErrorKind.INVALID_COMMAND,
                message="workspaceId: the command names no workspace and no default is set "
                "(WORKER_WORKSPACE_ID or DASTRA_WORKSPACE_ID)",
                field_errors={"workspaceId": ["required: no default workspace"]},
            )
            return work
        work.keys += spec.ordering_keys(work.command, work.workspace_id)
        return work

    async def _traced(self, work: _Work) -> None:
        """`_process` in the record's span: a child of the webhook's (or recipe's) send span."""
        with processing(
            work.topic,
            work.partition,
            work.offset,
            work.headers,
            message_id=work.command_id,
            attributes={"dastra_kafka.action": work.spec.action},
        ):
            await self._process(work)

    async def _process(self, work: _Work) -> None:
        """Run one record to its result (then the engine acks it); raises `Abandoned` when its
        epoch ends first (left unacked)."""
        # Known only once the assignment is processed (the engine opened), not when it came.
        work.suspect = work.offset < self._suspect_below.get(work.tp, 0)
        index = self._require(self._index, "result index")
        if index.seen(work.command_id, work.replay_id):
            self.metrics.duplicates.labels(work.spec.action).inc()
            _log.info(
                "agents.duplicate",
                action=work.spec.action,
                command_id=work.command_id,
                topic=work.topic,
                partition=work.partition,
                offset=work.offset,
            )
            return
        if work.failure is not None:
            await self._finish(work, failure=work.failure, attempts=0, started=time.monotonic())
            return
        await self._execute(work)

    async def _execute(self, work: _Work) -> None:
        assert work.command is not None and work.workspace_id is not None
        dastra = self._require(self._dastra, "Dastra client")
        action = work.spec.action
        started = time.monotonic()
        deadline = started + self._worker.retry_deadline_s
        recheck = work.suspect
        attempt = 0
        while True:
            if not self._engine.current(work.epoch):
                raise Abandoned
            attempt += 1
            ctx = CommandContext(
                command_id=work.command_id,
                workspace_id=work.workspace_id,
                recheck=recheck,
                produced_at=work.produced_at,
                lookup_skew=timedelta(seconds=self._worker.lookup_skew_s),
                areas=self._areas,
            )
            try:
                async with self._slots:
                    if not self._engine.current(work.epoch):
                        raise Abandoned
                    result = await work.spec.handle(work.command, dastra, ctx)
            except DastraRetryable as exc:
                recheck = recheck or exc.outcome_unknown
                delay = self._delay(exc, attempt, deadline)
                if delay is None:
                    failure = CommandError(
                        kind=ErrorKind.RETRIES_EXHAUSTED,
                        message=f"gave up after {attempt} attempts in "
                        f"{time.monotonic() - started:.1f} s (WORKER_RETRY_DEADLINE_S="
                        f"{self._worker.retry_deadline_s:g}); last error: {exc.message}",
                        status=exc.status,
                    )
                    await self._finish(work, failure=failure, attempts=attempt, started=started)
                    return
                self.metrics.retried.labels(action, exc.kind).inc()
                self.metrics.dastra.retried(exc)
                _log.warning(
                    "agents.retry",
                    action=action,
                    command_id=work.command_id,
                    kind=exc.kind,
                    status=exc.status,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._engine.epoch_over.wait()
                continue
            except (DastraRejected, DastraResponseError, DastraConfigError, CommandRejected) as exc:
                failure = CommandError(
                    kind=_failure_kind(exc),
                    message=str(exc),
                    status=getattr(exc, "status", None),
                    field_errors=getattr(exc, "field_errors", {}),
                )
                await self._finish(work, failure=failure, attempts=attempt, started=started)
                return
            await self._finish(work, result=result, attempts=attempt, started=started)
            return

    def _delay(self, error: DastraRetryable, attempt: int, deadline: float) -> float | None:
        left = deadline - time.monotonic()
        delay = backoff_delay(
            attempt,
            base=self._worker.retry_backoff_s,
            cap=self._worker.retry_backoff_max_s,
            retry_after=error.retry_after,
            jitter="equal",
            rule="pad_more",
        )
        if error.retry_after is not None:  # Dastra said how long (429, 503, ...)
            return delay if delay <= left else None
        if left <= 0.05:
            return None
        return min(delay, left)

    # --- results and dead letters ------------------------------------------------------------

    async def _finish(
        self,
        work: _Work,
        *,
        result: Result | None = None,
        failure: CommandError | None = None,
        attempts: int,
        started: float,
    ) -> None:
        """Write the dead letter of a failure and wait for its ack; then the result, and wait."""
        producer = self._require(self._producer, "producer")
        index = self._require(self._index, "result index")
        action = work.spec.action
        status: Any = "failed" if failure is not None else "succeeded"
        sealed = self._privacy.seal(
            action=action,
            workspace_id=work.workspace_id,
            command_id=work.command_id,
            command_data=(
                work.command.model_dump(mode="json", by_alias=True, exclude_unset=True)
                if work.command is not None
                else None
            ),
            result=result,
            dead_letter_value=work.value if failure is not None else None,
        )
        if sealed.key_records:
            # The keys first: a reader of the result must find them.
            await asyncio.gather(
                *(self._send(producer, t, k, v, []) for t, k, v in sealed.key_records)
            )
        if sealed.batch is not None:
            sealed.batch.commit()
        completed = datetime.now(UTC)
        data = CommandResult(
            command_id=work.command_id,
            action=action,
            status=status,
            workspace_id=work.workspace_id,
            result=sealed.result,
            error=failure,
            attempts=attempts,
            received_at=work.received_at,
            completed_at=completed,
            source_topic=work.topic,
            source_partition=work.partition,
            source_offset=work.offset,
        )
        parts = ["dastra-kafka", "result", work.command_id]
        if work.replay_id is not None:
            parts.append(work.replay_id)

        def encoded(data: CommandResult) -> tuple[RecordHeaders, bytes | None]:
            return encode_binary(
                new_event(
                    type=RESULT_FAILED if failure is not None else RESULT_SUCCEEDED,
                    source=(
                        f"dastra://workspaces/{work.workspace_id}"
                        if work.workspace_id is not None
                        else "dastra-kafka://agents"
                    ),
                    id=deterministic_id(*parts),
                    subject=work.command_id,
                    time=completed,
                    data=data.model_dump(mode="json"),
                    extensions=sealed.extensions,
                )
            )

        headers, value = encoded(data)
        if value is not None and len(value) > _MAX_RESULT_BYTES and data.result is not None:
            # Dastra's object does not fit the results topic (a task returns a long description
            # twice): the result names it by id, and the worker does not crash on it.
            _log.warning("agents.result_truncated", command_id=work.command_id, size=len(value))
            data = data.model_copy(update={"result": _truncated(data.result)})
            headers, value = encoded(data)
        if work.replay_id is not None:
            headers.append((REPLAY_ID_HEADER, work.replay_id.encode()))
        if failure is not None:
            # The dead letter first, acknowledged, then the result: a result on the topic means
            # "done" (a redelivery is skipped as a duplicate), so it must never exist without its
            # dead letter. A crash between the two re-processes the record: its dead letter may
            # then be written twice (same command id), never lost.
            key, dlq_value, dlq_headers = dead_letter(
                dataclasses.replace(work.original(), value=sealed.dead_letter_value),
                kind=failure.kind,
                message=failure.message,
                component=COMPONENT,
                attempts=attempts,
            )
            dlq_headers += sealed.dead_letter_headers
            await self._send(producer, self._dlq_topic, key, dlq_value, dlq_headers)
        result_type = RESULT_FAILED if failure is not None else RESULT_SUCCEEDED
        with sending(self._results_topic, message_id=work.command_id, event_type=result_type):
            inject(headers)
            await self._send(
                producer, self._results_topic, work.command_id.encode(), value, headers
            )
        index.record(work.command_id, succeeded=failure is None, replay_id=work.replay_id)

        elapsed = time.monotonic() - started
        self.metrics.duration.labels(action, status).observe(elapsed)
        self.metrics.latency.labels(action, status).observe(
            max(0.0, (completed - work.produced_at).total_seconds())
        )
        where = {
            "action": action,
            "command_id": work.command_id,
            "topic": work.topic,
            "partition": work.partition,
            "offset": work.offset,
            "attempts": attempts,
        }
        if failure is None:
            self.metrics.succeeded.labels(action).inc()
            _log.debug("agents.succeeded", **where)
        else:
            self.metrics.failed.labels(action, failure.kind).inc()
            self.metrics.dead_lettered.labels(action, failure.kind).inc()
            _log.warning("agents.failed", kind=failure.kind, status=failure.status, **where)

    async def _send(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | str | None]] | RecordHeaders,
    ) -> None:
        # aiokafka retries retriable errors itself (idempotently) until its delivery timeout;
        # what escapes is a real failure: it crashes the worker, the record stays unacked.
        await producer.send_and_wait(topic, value=value, key=key, headers=header_pairs(headers))

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _require(value: _T | None, what: str) -> _T:
        if value is None:
            raise RuntimeError(f"the dispatcher's {what} is not open: call `await start()` first")
        return value
