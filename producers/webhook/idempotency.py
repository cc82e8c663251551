"""Idempotency-Key for the webhook: one command per key, across restarts and replicas.

Consumes and produces `dastra.webhook-idempotency.v1` (key = `scope`, a SHA-256 of the caller's
token and its Idempotency-Key; the topic keeps broker time, `LogAppendTime`). Every webhook
replica tails the topic from `now - WEBHOOK_IDEMPOTENCY_RETENTION_S` into the same table, by
the same rules, in log order, so all replicas agree:

- `claim`: a replica wants to produce the command for this scope. The FIRST claim in the log
  owns the scope; a later claim wins only once the owner's lease (`WEBHOOK_IDEMPOTENCY_LEASE_S`,
  measured in broker time) ran out without an answer, or after the owner's `release`.
- `answer`: written by the owner after the broker acknowledged the command: the command id and
  where it landed. The first answer is final; every repeat gets it back.
- `release`: the owner could not produce the command (Kafka unavailable): the scope is free.

The command id is derived from the scope, so even a takeover after a crashed owner (the
narrow window between the command's acknowledgement and the answer's) produces the SAME command
id, which the agents execute once. The guarantee: one record per key, except after a replica
crashed inside that window, where a second record carries the same command id.

    store = IdempotencyStore(kafka, settings.webhook, producer)
    store.start()
    outcome = await store.run(scope, fingerprint, command_id, produce_command)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from confluent_kafka import Message
from pydantic import ValidationError

from bus.errors import KafkaUnavailableError, RecordTooLargeError
from bus.producer import AsyncProducer, Delivered
from bus.records.idempotency import IdempotencyRecord
from bus.settings import KafkaSettings
from bus.tailer import TopicTailer
from bus.topics import WEBHOOK_IDEMPOTENCY
from producers.webhook.settings import WebhookSettings

__all__ = [
    "IdempotencyConflictError",
    "IdempotencyInProgressError",
    "IdempotencyRecord",
    "IdempotencyStore",
    "Outcome",
    "command_id_for",
    "scope_of",
]

_log = structlog.get_logger(__name__)
_NAMESPACE = uuid.UUID("6b3c1d0e-8f0a-4c57-9a53-2f3f7f6d9e11")


def scope_of(token: str, key: str) -> str:
    """The table key of an Idempotency-Key: keys of different tokens never collide, and the
    topic holds neither the token nor the caller's key."""
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    return hashlib.sha256(f"v1\0{token_hash}\0{key}".encode()).hexdigest()


def command_id_for(scope: str) -> str:
    """The command id of a keyed request: the same for every replica and every retry."""
    return str(uuid.uuid5(_NAMESPACE, scope))


@dataclass
class _Entry:
    owner: IdempotencyRecord | None = None
    owner_ms: int = 0
    answer: IdempotencyRecord | None = None
    answer_ms: int = 0
    changed: asyncio.Event | None = None
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """What a keyed request gets: the command's place, and whether this is a repeat."""

    command_id: str
    topic: str
    partition: int
    offset: int
    replayed: bool
    at_ms: int  # when the command was accepted (broker time, ms)


class IdempotencyConflictError(ValueError):
    """The key was first used for a different action or body (422)."""


class IdempotencyInProgressError(RuntimeError):
    """Another request with this key is being handled right now (409, retry later)."""


class IdempotencyStore:
    """The idempotency table of this process, fed by its own tailer."""

    def __init__(
        self, kafka: KafkaSettings, settings: WebhookSettings, producer: AsyncProducer
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._producer = producer
        self._topic = kafka.topic(WEBHOOK_IDEMPOTENCY)
        self._entries: dict[str, _Entry] = {}
        self._lease_ms = int(settings.idempotency_lease_s * 1000)
        self._retention_ms = int(settings.idempotency_retention_s * 1000)
        self.tailer = TopicTailer(
            kafka,
            self._topic,
            self._apply,
            start="beginning",
            name="idempotency",
            since_ms=lambda: int(time.time() * 1000) - self._retention_ms,
        )

    def start(self, timeout: float = 30.0) -> None:
        self.tailer.start(timeout)

    def stop(self) -> None:
        self.tailer.stop()

    # --- the table (applied in the tailer's thread, in log order) -----------------------------

    def _apply(self, message: Message) -> None:
        scope = (message.key() or b"").decode()
        value = message.value()
        if not scope or value is None:
            return
        try:
            record = IdempotencyRecord.model_validate_json(value)
        except ValidationError:
            _log.warning("idempotency.bad_record", offset=message.offset())
            return
        at_ms = message.timestamp()[1]
        entry = self._entries.setdefault(scope, _Entry())
        if record.state == "answer":
            if entry.answer is None:
                entry.answer, entry.answer_ms = record, at_ms
        elif entry.answer is not None:
            pass  # answered: final
        elif record.state == "claim":
            if entry.owner is None or at_ms - entry.owner_ms > self._lease_ms:
                entry.owner, entry.owner_ms = record, at_ms
        elif entry.owner is not None and entry.owner.claim_id == record.claim_id:
            entry.owner = None  # released
        for loop, event in entry.waiters:
            loop.call_soon_threadsafe(event.set)

    def _entry(self, scope: str) -> _Entry | None:
        entry = self._entries.get(scope)
        if entry is None:
            return None
        now_ms = int(time.time() * 1000)
        if entry.answer is not None and now_ms - entry.answer_ms > self._retention_ms:
            self._entries.pop(scope, None)
            return None
        return entry

    def sweep(self) -> int:
        """Forget answers older than the retention; return how many were dropped."""
        now_ms = int(time.time() * 1000)
        doomed = [
            scope
            for scope, entry in list(self._entries.items())
            if (entry.answer is not None and now_ms - entry.answer_ms > self._retention_ms)
            or (entry.answer is None and now_ms - entry.owner_ms > self._retention_ms)
        ]
        for scope in doomed:
            self._entries.pop(scope, None)
        return len(doomed)

    # --- a keyed request -----------------------------------------------------------------------

    def _replay(self, answer: IdempotencyRecord, action: str, fingerprint: str) -> Outcome:
        if answer.action != action or answer.fingerprint != fingerprint:
            raise IdempotencyConflictError(
                "this Idempotency-Key was already used with a different action or body"
            )
        assert answer.topic is not None and answer.partition is not None
        assert answer.offset is not None
        at_ms = int(answer.at.timestamp() * 1000)
        return Outcome(
            answer.command_id, answer.topic, answer.partition, answer.offset, True, at_ms
        )

    async def _await_answer(
        self, scope: str, action: str, fingerprint: str, within: float
    ) -> Outcome | None:
        """Wait for the owner's answer; None when the scope became free (released, expired)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            entry = self._entry(scope)
            if entry is None:
                return None
            if entry.answer is not None:
                return self._replay(entry.answer, action, fingerprint)
            if entry.owner is None:
                return None
            if int(time.time() * 1000) - entry.owner_ms > self._lease_ms:
                return None
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise IdempotencyInProgressError(
                    "a request with this Idempotency-Key is still being handled"
                )
            event = asyncio.Event()
            waiter = (loop, event)
            entry.waiters.append(waiter)
            try:
                async with asyncio.timeout(min(remaining, 0.25)):
                    await event.wait()
            except TimeoutError:
                pass
            finally:
                if waiter in entry.waiters:
                    entry.waiters.remove(waiter)

    async def _write(self, scope: str, record: IdempotencyRecord) -> Delivered:
        return await self._producer.produce(
            self._topic, key=scope.encode(), value=record.model_dump_json().encode()
        )

    async def run(
        self,
        scope: str,
        action: str,
        fingerprint: str,
        produce: Callable[[str], Awaitable[Delivered]],
    ) -> Outcome:
        """The first answer for `scope`, producing the command (via `produce(command_id)`) only
        when this request owns the scope. Raises `IdempotencyConflictError`,
        `IdempotencyInProgressError` or `KafkaUnavailableError`."""
        wait_s = self._settings.idempotency_lease_s
        for _round in range(3):
            entry = self._entry(scope)
            if entry is not None and (entry.answer is not None or entry.owner is not None):
                found = await self._await_answer(scope, action, fingerprint, wait_s)
                if found is not None:
                    return found
            command_id = command_id_for(scope)
            claim = IdempotencyRecord(
                state="claim",
                claim_id=uuid.uuid4().hex,
                command_id=command_id,
                action=action,
                fingerprint=fingerprint,
                at=datetime.now(UTC),
            )
            placed = await self._write(scope, claim)
            if not await self.tailer.reached(placed.partition, placed.offset, within=wait_s):
                raise KafkaUnavailableError("could not read back the idempotency claim")
            entry = self._entry(scope)
            if entry is not None and entry.answer is not None:
                return self._replay(entry.answer, action, fingerprint)
            if entry is None or entry.owner is None or entry.owner.claim_id != claim.claim_id:
                continue  # another replica's claim came first: wait for its answer
            try:
                delivered = await produce(command_id)
            except (KafkaUnavailableError, RecordTooLargeError):
                release = claim.model_copy(update={"state": "release", "at": datetime.now(UTC)})
                with contextlib.suppress(KafkaUnavailableError):  # else the lease runs out
                    await self._write(scope, release)
                raise
            answer = claim.model_copy(
                update={
                    "state": "answer",
                    "at": datetime.now(UTC),
                    "topic": delivered.topic,
                    "partition": delivered.partition,
                    "offset": delivered.offset,
                }
            )
            try:
                await self._write(scope, answer)
            except KafkaUnavailableError:
                # The command is durable, so the caller gets its 202; a repeat after the lease
                # would produce the same command id once more (see the module docstring).
                _log.warning("idempotency.answer_not_written", command_id=command_id)
            return Outcome(
                command_id,
                delivered.topic,
                delivered.partition,
                delivered.offset,
                False,
                delivered.timestamp_ms,
            )
        raise IdempotencyInProgressError(
            "a request with this Idempotency-Key is still being handled"
        )
