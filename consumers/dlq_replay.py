"""Replaying dead letters (`dastra-kafka dlq replay`), once their cause is fixed.

Consumes dastra.dead-letter.v1 from its beginning up to its end at the start of the run, and
dastra.command-results.v1 (to know which commands already succeeded). Produces, for each dead
letter that matches the filters, its original record again, on its original topic and partition:
the original key, value and headers (minus the `dlq.*` headers), plus two headers the agents
understand: `dastra.replay.id` (this run) and `dastra.replay.command-id` (the command id the
original record had, so a plain-JSON command keeps its id although its position changes).

By default only dead letters of commands are replayed (original topic a `dastra.commands.*`
topic): the others are events the hook dispatcher could not deliver or records a recipe could not
use, and re-publishing them onto their event topic (`dastra.tasks.v1`, ...) would hand them to
every consumer of that topic again. `include_events` opts in to those; `component` narrows the
run to the dead letters of one writer (`agents`, `hooks`, `recipes`).

Idempotent where it can be: a command that already succeeded is not re-published (and the agents
would skip it anyway); a command dead-lettered twice is re-published once per run; the agents
skip a replayed record redelivered to them (its replay id has a result).

A dead letter sealed whole (`dlq.value.encrypted`, PRIVACY_MODE_DEAD_LETTERS=encrypted) is
decrypted with the keys of `dastra.privacy-keys.v1` and PRIVACY_MASTER_KEY before it is
re-published; one whose data subject was erased is not replayed (`erased`), nor one this run
cannot decrypt (`undecryptable`: no or another master key).

    summary = replay_dead_letters(settings.kafka, ReplayFilter(kind="dastra-rejected"))
    print(summary.replayed, [r.dlq_offset for r in summary.records])
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from bus.deadletter import DeadLetterInfo, read_dead_letter
from bus.envelope import header_dict, record_headers
from bus.privacy import Decryptor, KeyRing, MasterKey, PrivacyError
from bus.privacy.keystore import load_ring
from bus.reading import end_offsets
from bus.records.commands import RESULT_SUCCEEDED
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import ACTIONS, COMMAND_RESULTS, DEAD_LETTER, RECORD_MAX_BYTES, command_topic
from consumers.dispatcher import command_id_of, fallback_id
from consumers.result_index import REPLAY_COMMAND_ID_HEADER, REPLAY_ID_HEADER

__all__ = [
    "ReplayError",
    "ReplayFilter",
    "ReplaySummary",
    "ReplayedRecord",
    "is_command_topic",
    "replay_dead_letters",
]

Outcome = Literal[
    "replayed", "would-replay", "already-succeeded", "duplicate", "erased", "undecryptable"
]
Progress = Callable[[int, int], None]  # (records scanned, records to scan)


class ReplayError(RuntimeError):
    """The replay could not read or write Kafka (unreachable, missing topic, delivery failed)."""


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters to replay: by original topic (catalogue or physical name), error
    kind, the component that wrote it (`dlq.component`), and failure time (`since` inclusive,
    `until` exclusive). Only commands unless `include_events` (see the module doc)."""

    topic: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    component: str | None = None
    include_events: bool = False

    def selects(self, info: DeadLetterInfo, kafka: KafkaSettings) -> bool:
        """The filters other than the commands-only default."""
        if self.topic is not None and info.topic not in (self.topic, kafka.topic(self.topic)):
            return False
        if self.kind is not None and info.kind != self.kind:
            return False
        if self.component is not None and info.component != self.component:
            return False
        if self.since is not None and info.failed_at < self.since:
            return False
        return not (self.until is not None and info.failed_at >= self.until)

    def matches(self, info: DeadLetterInfo, kafka: KafkaSettings) -> bool:
        """Replay this dead letter: selected, and a command's unless events are included."""
        return self.selects(info, kafka) and (
            self.include_events or is_command_topic(info.topic, kafka)
        )


def is_command_topic(topic: str, kafka: KafkaSettings) -> bool:
    """`topic` (a physical name) is one of the six command topics."""
    return topic in {kafka.topic(command_topic(action)) for action in ACTIONS}


@dataclass(frozen=True)
class ReplayedRecord:
    """One dead letter the run considered, where it sits and what was done with it."""

    dlq_partition: int
    dlq_offset: int
    topic: str
    partition: int
    offset: int
    kind: str
    command_id: str
    outcome: Outcome

    def as_json(self) -> dict[str, Any]:
        return {
            "dlq": {"partition": self.dlq_partition, "offset": self.dlq_offset},
            "original": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "kind": self.kind,
            "commandId": self.command_id,
            "outcome": self.outcome,
        }


@dataclass
class ReplaySummary:
    """What a run did."""

    replay_id: str
    dry_run: bool
    scanned: int = 0
    not_dead_letters: int = 0
    # Selected by the filters but not commands, so left alone (no `include_events`).
    events_skipped: int = 0
    records: list[ReplayedRecord] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for record in self.records if record.outcome == outcome)

    @property
    def replayed(self) -> int:
        return self.count("would-replay" if self.dry_run else "replayed")

    def as_json(self) -> dict[str, Any]:
        return {
            "replayId": self.replay_id,
            "dryRun": self.dry_run,
            "scanned": self.scanned,
            "matched": len(self.records),
            "replayed": self.replayed,
            "alreadySucceeded": self.count("already-succeeded"),
            "duplicates": self.count("duplicate"),
            "erased": self.count("erased"),
            "undecryptable": self.count("undecryptable"),
            "notDeadLetters": self.not_dead_letters,
            "eventsSkipped": self.events_skipped,
            "records": [record.as_json() for record in self.records],
        }


def _position(message: Message) -> tuple[int, int]:
    partition, offset = message.partition(), message.offset()
    return (partition if partition is not None else -1, offset if offset is not None else -1)


def _read_to_end(
    kafka: KafkaSettings,
    topic: str,
    on_record: Callable[[Message], None],
    *,
    timeout_s: float,
    on_progress: Progress | None = None,
) -> None:
    """Call `on_record` for every record of `topic` up to its end offsets of now."""
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": f"dastra-kafka-dlq-replay-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=15)
        except Exception as exc:
            raise ReplayError(f"Kafka is unreachable at {kafka.bootstrap_servers}: {exc}") from exc
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise ReplayError(f"topic {topic} does not exist: run `dastra-kafka topics apply`")
        deadline = time.monotonic() + timeout_s
        try:
            ends = end_offsets(kafka, topic, list(described.partitions), timeout_s)
        except KafkaException as exc:
            raise ReplayError(f"could not read the offsets of {topic}: {exc}") from exc
        total = sum(ends.values())  # at most: what retention removed is no longer there
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        scanned = 0
        pending = dict(ends)
        while pending:
            if time.monotonic() > deadline:
                raise ReplayError(f"could not read {topic} to its end within {timeout_s:.0f} s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.pop(_position(message)[0], None)
                    continue
                raise ReplayError(f"reading {topic}: {error.str()}")
            partition, offset = _position(message)
            if partition in pending and offset < pending[partition]:
                on_record(message)
                scanned += 1
                if on_progress is not None:
                    on_progress(scanned, total)
            if partition in pending and offset + 1 >= pending[partition]:
                del pending[partition]
    finally:
        consumer.close()


def _succeeded_commands(kafka: KafkaSettings, timeout_s: float) -> set[str]:
    succeeded: set[str] = set()

    def on_result(message: Message) -> None:
        key = message.key()
        if key is None:
            return
        if header_dict(record_headers(message)).get("ce_type") == RESULT_SUCCEEDED.encode():
            succeeded.add(key.decode("utf-8", "replace"))

    _read_to_end(kafka, kafka.topic(COMMAND_RESULTS), on_result, timeout_s=timeout_s)
    return succeeded


def replay_dead_letters(
    kafka: KafkaSettings,
    flt: ReplayFilter,
    *,
    dry_run: bool = False,
    on_progress: Progress | None = None,
    timeout_s: float = 120.0,
    privacy: PrivacySettings | None = None,
) -> ReplaySummary:
    """Re-publish the matching dead letters to their original topics (see the module doc)."""
    summary = ReplaySummary(replay_id=str(uuid.uuid4()), dry_run=dry_run)
    raw_master = (privacy or PrivacySettings()).master_key_bytes()
    rings: list[KeyRing] = []

    def opened(value: bytes | None) -> bytes | Literal["erased", "undecryptable"]:
        """The original value of an encrypted dead letter."""
        if raw_master is None or value is None:
            return "undecryptable"
        if not rings:
            try:
                rings.append(load_ring(kafka, timeout=timeout_s))
            except KafkaException as exc:
                raise ReplayError(f"could not read the privacy keys: {exc}") from exc
        try:
            found = Decryptor(MasterKey(raw_master), rings[0]).open_bytes(value)
        except PrivacyError:
            return "undecryptable"
        return "erased" if found is None else found

    succeeded = _succeeded_commands(kafka, timeout_s)
    producer = (
        None
        if dry_run
        else Producer(
            kafka.producer_config(
                **{
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    # An original record may be as large as its command topic allows.
                    "message.max.bytes": RECORD_MAX_BYTES,
                }
            )
        )
    )
    partitions: dict[str, int] = {}
    seen: set[str] = set()
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    def partition_of(topic: str, wanted: int) -> int:
        if topic not in partitions:
            assert producer is not None
            described = producer.list_topics(topic, timeout=15).topics.get(topic)
            if described is None or described.error is not None:
                raise ReplayError(f"the original topic {topic} does not exist")
            partitions[topic] = len(described.partitions)
        # The original partition keeps the order of the record's key; if the topic shrank (it
        # cannot in Kafka, but a re-created one may), let the partitioner choose.
        return wanted if wanted < partitions[topic] else -1

    def on_dead_letter(message: Message) -> None:
        summary.scanned += 1
        try:
            info = read_dead_letter(record_headers(message))
        except ValueError:
            summary.not_dead_letters += 1
            return
        if not flt.matches(info, kafka):
            if flt.selects(info, kafka):
                summary.events_skipped += 1
            return
        headers: list[tuple[str, str | bytes | None]] = [
            (name, value)
            for name, value in info.original_headers
            # dlq.* headers of a writer's own (e.g. the hooks' dlq.hook.id) are not the original's
            if name not in (REPLAY_ID_HEADER, REPLAY_COMMAND_ID_HEADER)
            and not name.startswith("dlq.")
        ]
        original = message.value()
        sealed: Outcome | None = None
        if info.encrypted:
            found = opened(original)
            if found == "erased" or found == "undecryptable":
                sealed, original = found, None
            else:
                original = found
        command_id = command_id_of(
            info.original_headers,
            original,
            fallback=fallback_id(info.topic, info.partition, info.offset),
        )
        outcome: Outcome
        if sealed is not None:
            outcome = sealed
        elif command_id in succeeded:
            outcome = "already-succeeded"
        elif command_id in seen:
            outcome = "duplicate"
        elif producer is None:
            outcome = "would-replay"
        else:
            outcome = "replayed"
            headers += [
                (REPLAY_ID_HEADER, summary.replay_id.encode()),
                (REPLAY_COMMAND_ID_HEADER, command_id.encode()),
            ]
            producer.produce(
                info.topic,
                key=message.key(),
                value=original,
                headers=headers,
                partition=partition_of(info.topic, info.partition),
                on_delivery=delivered,
            )
            producer.poll(0)
        seen.add(command_id)
        dlq_partition, dlq_offset = _position(message)
        summary.records.append(
            ReplayedRecord(
                dlq_partition=dlq_partition,
                dlq_offset=dlq_offset,
                topic=info.topic,
                partition=info.partition,
                offset=info.offset,
                kind=info.kind,
                command_id=command_id,
                outcome=outcome,
            )
        )

    _read_to_end(
        kafka,
        kafka.topic(DEAD_LETTER),
        on_dead_letter,
        timeout_s=timeout_s,
        on_progress=on_progress,
    )
    if producer is not None:
        left = producer.flush(30)
        if left:
            raise ReplayError(f"{left} replayed record(s) were not delivered within 30 s")
        if failures:
            raise ReplayError(f"{len(failures)} replayed record(s) failed: {failures[0]}")
    return summary
