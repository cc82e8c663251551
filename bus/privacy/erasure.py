"""Erasure of a data subject from the bus (`dastra-kafka privacy erase`, and the poller's
automatic erasure when an Erasure rights request is closed).

Consumes `dastra.privacy-keys.v1` (which keys and aliases belong to the subject) and, to count
and clean, every other topic of the catalogue. Produces, on the key topic: a tombstone for each
of the subject's data keys (crypto-shredding: every copy of their encrypted fields, on every
topic and in every consumer's copy, becomes unreadable), tombstones for their alias records and
an erasure marker per erased Dastra object (new data about it is written as erased); on every
other compacted topic: a tombstone for each key whose latest record was sealed with an erased
key or names an erased subject id (the recipe runs of `dastra.recipe-runs.v1`); and one audit
event on `dastra.privacy-audit.v1` saying what was erased, where, when and
by whom, without any personal data (subject ids are keyed hashes).

    request = parse_subject("jeanne@example.org", workspace=None)
    report = erase(settings.kafka, settings.privacy, catalogue, request, by="cli")
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from bus.errors import BusError, KafkaAuthorizationError
from bus.privacy import ErasedMarker, KeyRing, MasterKey, PrivacyError, find_kids
from bus.privacy.keystore import key_record, master_key_of
from bus.reading import read_to_end, reader_group_id
from bus.records.privacy_audit import AuditRequest, ErasureAudit, audit_record
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import PRIVACY_AUDIT, PRIVACY_KEYS, TopicCatalogue

__all__ = [
    "ErasureError",
    "ErasurePlan",
    "ErasureRequest",
    "erase",
    "parse_subject",
    "plan_erasure",
]

Progress = Callable[[str, int], None]  # (topic, records scanned so far)
# How long `erase` waits for the cluster's first answer before it says Kafka is unreachable.
_PROBE_TIMEOUT_S = 5.0
# librdkafka's own log lines (one per failed connection attempt) go nowhere: an unreachable
# cluster is reported once, by the exception.
_QUIET = logging.getLogger("dastra_kafka.erasure.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


class ErasureError(BusError, RuntimeError):
    """Kafka could not be read or written; nothing or only part was erased (run it again:
    erasure is idempotent). `unreachable`: Kafka could not be read, so nothing was written.
    A `BusError` (bus/errors.py); still a RuntimeError, which `dastra_kafka/demo/` catches."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


@dataclass(frozen=True)
class ErasureRequest:
    """Who to erase: an e-mail address or a rights request (`rr:<ws>:<id>`)."""

    kind: Literal["email", "rights-request"]
    ref: str
    workspace_id: int | None = None
    rights_request_id: int | None = None


def parse_subject(text: str, workspace: int | None) -> ErasureRequest:
    """`jeanne@example.org`, `rr:12:345`, `12:345` (as event keys) or `345` with a workspace.

    Raises `ValueError` naming the accepted forms (never echoing an e-mail back)."""
    value = text.strip()
    if "@" in value:
        if not re.fullmatch(r"[^@\s]+@[^@\s]+", value):
            raise ValueError("--subject: not an e-mail address")
        return ErasureRequest("email", f"email:{value.lower()}")
    match = re.fullmatch(r"(?:rr:)?(?:([0-9]+):)?([0-9]+)", value)
    if match is None:
        raise ValueError(
            "--subject takes an e-mail address or a rights request: rr:<workspace>:<id>, "
            "<workspace>:<id>, or <id> with --workspace"
        )
    ws = int(match.group(1)) if match.group(1) else workspace
    if ws is None:
        raise ValueError("--subject <id> needs --workspace (or DASTRA_WORKSPACE_ID)")
    rr = int(match.group(2))
    return ErasureRequest("rights-request", f"rr:{ws}:{rr}", ws, rr)


@dataclass
class ErasurePlan:
    """What erasing a request means, given the key topic's content."""

    request: ErasureRequest
    target: str  # the subject id of the request
    subjects: set[str]
    key_ids: list[str]
    alias_keys: list[str]
    markers: list[str]
    # Per compacted topic: (key, partition) of each record to tombstone. A tombstone must land
    # on its record's partition, or compaction never removes the record. The project places
    # keys with murmur2 (Kafka's own), but a record may come from a producer that did not
    # (librdkafka's default CRC32, or a version of this project before murmur2 everywhere).
    compacted: dict[str, list[tuple[bytes, int]]] = field(default_factory=dict)
    # Partition of each key on the key topic, for the same reason.
    key_partitions: dict[bytes, int] = field(default_factory=dict)
    unreadable: dict[str, int] | None = None

    def key_topic_records(self, audit_id: str, at: datetime) -> list[tuple[bytes, bytes | None]]:
        records: list[tuple[bytes, bytes | None]] = [
            (f"key:{kid}".encode(), None) for kid in self.key_ids
        ]
        records += [(name.encode(), None) for name in self.alias_keys]
        for subject in self.markers:
            records.append(
                key_record(ErasedMarker(subject=subject, erased_at=at, audit_id=audit_id))
            )
        return records

    def audit(self, *, audit_id: str, at: datetime, by: str, trigger: str) -> ErasureAudit:
        tombstones = {PRIVACY_KEYS: len(self.key_ids) + len(self.alias_keys)}
        tombstones.update({topic: len(keys) for topic, keys in self.compacted.items() if keys})
        return ErasureAudit(
            audit_id=audit_id,
            at=at,
            by=by,
            trigger=trigger,
            request=AuditRequest(
                kind=self.request.kind,
                subject=self.target,
                workspace_id=self.request.workspace_id,
                rights_request_id=self.request.rights_request_id,
            ),
            subjects=sorted(self.subjects),
            key_ids=list(self.key_ids),
            erased_markers=len(self.markers),
            tombstones=tombstones,
            unreadable_records=self.unreadable,
        )


def plan_erasure(ring: KeyRing, master: MasterKey, request: ErasureRequest) -> ErasurePlan:
    """The subject and everyone linked to it by aliases (the same person: a rights request and
    its e-mail, the commands and actors sharing it), their keys, aliases and markers."""
    target = master.subject_id(request.ref)
    subjects = ring.linked([target])
    key_ids: list[str] = []
    object_subjects: set[str] = set()
    for subject in sorted(subjects):
        for record in ring.keys_of(subject):
            key_ids.append(record.kid)
            if record.scope == "object":
                object_subjects.add(subject)
    if request.kind == "rights-request":
        object_subjects.add(target)
    markers = sorted(s for s in object_subjects if not ring.is_erased(s))
    return ErasurePlan(
        request=request,
        target=target,
        subjects=subjects,
        key_ids=key_ids,
        alias_keys=ring.alias_keys(subjects),
        markers=markers,
    )


def _scan(
    kafka: KafkaSettings,
    catalogue: TopicCatalogue,
    kids: set[str],
    on_progress: Progress | None,
    timeout: float,
    only_compacted: bool,
    subjects: set[str] | None = None,
) -> tuple[dict[str, int], dict[str, list[tuple[bytes, int]]]]:
    """Per topic, the records sealed with `kids`; per compacted topic, the keys whose latest
    record is one of them or names one of `subjects` (the subject ids recipe runs carry)."""
    names = [subject.encode() for subject in subjects or ()]
    unreadable: dict[str, int] = {}
    compacted: dict[str, list[tuple[bytes, int]]] = {}
    for spec in catalogue:
        if spec.name in (PRIVACY_KEYS, PRIVACY_AUDIT):
            continue
        if only_compacted and "compact" not in spec.cleanup_policy:
            continue
        count = 0
        latest: dict[bytes, tuple[bool, int]] = {}
        scanned = 0
        try:
            for record in read_to_end(kafka, kafka.topic(spec.name), timeout=timeout):
                scanned += 1
                hit = bool(kids & find_kids(record.value))
                count += hit
                value = record.value
                if record.key is not None:
                    named = value is not None and any(name in value for name in names)
                    latest[record.key] = ((hit or named) and value is not None, record.partition)
                if on_progress is not None and scanned % 500 == 0:
                    on_progress(spec.name, scanned)
        except KafkaException as exc:
            raise ErasureError(f"could not read {spec.name}: {exc}", unreachable=True) from exc
        if on_progress is not None:
            on_progress(spec.name, scanned)
        unreadable[spec.name] = count
        if "compact" in spec.cleanup_policy:
            compacted[spec.name] = sorted(
                (key, partition) for key, (hit, partition) in latest.items() if hit
            )
    return unreadable, compacted


def erase(
    kafka: KafkaSettings,
    privacy: PrivacySettings,
    catalogue: TopicCatalogue,
    request: ErasureRequest,
    *,
    by: str,
    dry_run: bool = False,
    count: bool = True,
    on_progress: Progress | None = None,
    timeout: float = 120.0,
) -> tuple[ErasurePlan, ErasureAudit]:
    """Erase `request` (see the module docstring); with `dry_run`, only say what would be done.
    Idempotent: a second run finds no keys left and writes an audit event saying so."""
    master = master_key_of(privacy, "privacy erase")
    _probe(kafka, min(timeout, _PROBE_TIMEOUT_S))
    try:
        ring, key_partitions = _load_keys(kafka, timeout)
    except KafkaException as exc:
        raise ErasureError(
            f"could not read {kafka.topic(PRIVACY_KEYS)}: {exc}", unreachable=True
        ) from exc
    plan = plan_erasure(ring, master, request)
    plan.key_partitions = key_partitions
    # Compacted topics are always scanned: recipe runs name their subject even when nothing of
    # theirs was encrypted.
    unreadable, compacted = _scan(
        kafka,
        catalogue,
        set(plan.key_ids),
        on_progress,
        timeout,
        only_compacted=not count,
        subjects=plan.subjects,
    )
    plan.compacted = compacted
    plan.unreadable = unreadable if count else None
    at = datetime.now(UTC)
    audit = plan.audit(audit_id=str(uuid.uuid4()), at=at, by=by, trigger="manual")
    if dry_run:
        return plan, audit
    _write(kafka, plan, audit)
    return plan, audit


def _load_keys(kafka: KafkaSettings, timeout: float) -> tuple[KeyRing, dict[bytes, int]]:
    """The key topic read to its end: the ring, and the partition of every key."""
    ring = KeyRing()
    partitions: dict[bytes, int] = {}
    for record in read_to_end(kafka, kafka.topic(PRIVACY_KEYS), timeout=timeout):
        if record.key is not None:
            partitions[record.key] = record.partition
        try:
            ring.apply(record.key, record.value)
        except PrivacyError:
            continue  # keystore.load_ring skips it too (and logs it)
    return ring, partitions


def _probe(kafka: KafkaSettings, timeout: float) -> None:
    """Fail fast, and quietly, when the cluster does not answer (`ErasureError`)."""
    consumer = Consumer(
        kafka.confluent_config(**{"group.id": reader_group_id(kafka, "erase")}),
        logger=_QUIET,
    )
    try:
        consumer.list_topics(kafka.topic(PRIVACY_KEYS), timeout=timeout)
    except KafkaException as exc:
        raise ErasureError(
            f"could not reach Kafka at {kafka.bootstrap_servers} within {timeout:g} s: "
            f"{exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc}",
            unreachable=True,
        ) from exc
    finally:
        consumer.close()


def _write(kafka: KafkaSettings, plan: ErasurePlan, audit: ErasureAudit) -> None:
    producer = Producer(
        kafka.producer_config(**{"enable.idempotence": True, "acks": "all", "linger.ms": 5})
    )
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            denied = KafkaAuthorizationError.from_error(
                error, topic=message.topic(), topic_operation="WRITE"
            )
            failures.append(str(denied) if denied is not None else error.str())

    def send(
        topic: str,
        key: bytes,
        value: bytes | None,
        headers: Any = None,
        partition: int | None = None,
    ) -> None:
        try:
            producer.produce(
                topic,
                key=key,
                value=value,
                headers=headers,
                # -1: the configured partitioner (librdkafka's RD_KAFKA_PARTITION_UA)
                partition=-1 if partition is None else partition,
                on_delivery=delivered,
            )
        except (KafkaException, BufferError) as exc:
            raise ErasureError(f"could not write to {topic}: {exc}") from exc
        producer.poll(0)

    for key, value in plan.key_topic_records(audit.audit_id, audit.at):
        send(kafka.topic(PRIVACY_KEYS), key, value, partition=plan.key_partitions.get(key))
    for topic, keys in plan.compacted.items():
        for key, partition in keys:
            send(kafka.topic(topic), key, None, partition=partition)
    # The audit event last: it is written only once everything it reports was.
    if producer.flush(30) or failures:
        raise ErasureError(
            f"erasure records not acknowledged: {failures[0] if failures else 'timeout'}"
        )
    audit_key, audit_value, headers = audit_record(audit)
    send(kafka.topic(PRIVACY_AUDIT), audit_key, audit_value, headers)
    if producer.flush(30) or failures:
        raise ErasureError(
            f"the audit event was not acknowledged: {failures[0] if failures else 'timeout'}"
        )
