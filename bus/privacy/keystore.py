"""The key topic, kept in memory: every component that encrypts, decrypts or erases holds one.

Consumes the compacted `dastra.privacy-keys.v1` from its beginning and then follows it (a
`TopicTailer`: no consumer group), so erasures made elsewhere reach every process within
moments. Produces nothing itself: writers produce `Batch.records` with their own producer (the
poller inside its transaction, the agents and the webhook before the records they seal) and
`key_record(...)` gives the key and value of each.

    store = KeyStore(settings.kafka, settings.privacy, name="hooks")
    store.start()
    opened = await store.open(event.data)          # waits for a key id it has not seen yet
    store.stop()
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, Message

from bus.privacy import (
    AliasRecord,
    DataKeyRecord,
    Decryptor,
    Encryptor,
    ErasedMarker,
    KeyRing,
    MasterKey,
    Opened,
    PrivacyError,
)
from bus.reading import end_offsets, read_to_end
from bus.settings import KafkaSettings, PrivacySettings
from bus.tailer import TopicTailer
from bus.topics import PRIVACY_KEYS

__all__ = ["KeyStore", "key_record", "load_ring", "master_key_of"]

_log = structlog.get_logger(__name__)
# How long an unknown key id is first left to the tailer before asking where the topic ends.
_TAILER_GRACE_S = 0.25


def master_key_of(privacy: PrivacySettings, needed_for: str) -> MasterKey:
    """The configured master key; `PrivacyError` saying what needs it when there is none."""
    raw = privacy.master_key_bytes()
    if raw is None:
        raise PrivacyError(f"{needed_for} needs PRIVACY_MASTER_KEY (dastra-kafka privacy keygen)")
    return MasterKey(raw)


def key_record(record: DataKeyRecord | AliasRecord | ErasedMarker) -> tuple[bytes, bytes]:
    """Key and value of a record on the key topic."""
    return record.topic_key.encode(), record.model_dump_json().encode()


def load_ring(kafka: KafkaSettings, timeout: float = 60.0) -> KeyRing:
    """The key topic read once to its end (blocking): for one-shot tools."""
    ring = KeyRing()
    for record in read_to_end(kafka, kafka.topic(PRIVACY_KEYS), timeout=timeout):
        _apply(ring, record.key, record.value, record.offset)
    return ring


def _apply(ring: KeyRing, key: bytes | None, value: bytes | None, offset: int) -> None:
    try:
        ring.apply(key, value)
    except PrivacyError:
        _log.warning("keystore.bad_record", offset=offset)


class KeyStore:
    """A `KeyRing` fed by a tailer of the key topic, with the master key when configured."""

    def __init__(self, kafka: KafkaSettings, privacy: PrivacySettings, *, name: str) -> None:
        self._kafka = kafka
        self._privacy = privacy
        self.name = name
        self.ring = KeyRing()
        raw = privacy.master_key_bytes()
        self.master = MasterKey(raw) if raw is not None else None
        self.topic = kafka.topic(PRIVACY_KEYS)
        self._tailer = TopicTailer(
            kafka, self.topic, self._on_record, start="beginning", name=f"keys-{name}"
        )
        self._partition_ids: list[int] = []

    def _on_record(self, message: Message) -> None:
        _apply(self.ring, message.key(), message.value(), message.offset() or 0)

    def start(self, timeout: float = 30.0) -> None:
        """Read the key topic to its end, then follow it (blocking)."""
        self._tailer.start(timeout)
        _log.info("keystore.loaded", component=self.name, keys=len(self.ring))

    def stop(self) -> None:
        """Stop following the key topic (also right after a failed or unfinished start)."""
        self._tailer.stop()

    @property
    def wait_s(self) -> float:
        """PRIVACY_KEY_WAIT_S: how long to wait for an unknown key id."""
        return self._privacy.key_wait_s

    @property
    def can_decrypt(self) -> bool:
        return self.master is not None

    def encryptor(self) -> Encryptor:
        if self.master is None:
            raise PrivacyError(f"{self.name}: encrypting needs PRIVACY_MASTER_KEY")
        return Encryptor(self.master, self.ring, self.name)

    def decryptor(self) -> Decryptor:
        if self.master is None:
            raise PrivacyError(f"{self.name}: decrypting needs PRIVACY_MASTER_KEY")
        return Decryptor(self.master, self.ring)

    # --- catching up ---------------------------------------------------------------------------

    def _partitions(self, timeout: float) -> list[int]:
        probe = Consumer(self._kafka.confluent_config(**{"group.id": "dastra-keystore-probe"}))
        try:
            info = probe.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            return sorted(info.partitions) if info is not None and info.error is None else [0]
        finally:
            probe.close()

    def sync(self, timeout: float) -> bool:
        """Wait (blocking) until every key record written before this call is applied."""
        deadline = time.monotonic() + timeout
        try:
            if not self._partition_ids:
                self._partition_ids = self._partitions(timeout)
            targets = end_offsets(self._kafka, self.topic, self._partition_ids, timeout)
        except KafkaException as exc:
            _log.warning("keystore.sync_failed", component=self.name, error=str(exc)[:200])
            return False
        while True:
            if all(self._tailer.position(p) >= end for p, end in targets.items()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    async def async_sync(self, within: float) -> bool:
        return await asyncio.to_thread(self.sync, within)

    async def await_keys(self, raw_or_data: Any) -> None:
        """Wait for the key ids `raw_or_data` (a record's bytes, or its JSON) uses that this
        process has not read yet, so a key written just before its record is not mistaken for
        an erased one: first briefly for the tailer, which usually has them already, then
        until the key topic's end as of now (at most PRIVACY_KEY_WAIT_S)."""
        if isinstance(raw_or_data, bytes) and b'"$enc"' not in raw_or_data:
            return
        unknown = self.decryptor().unknown(raw_or_data)
        grace = time.monotonic() + _TAILER_GRACE_S
        while unknown and time.monotonic() < grace:
            await asyncio.sleep(0.02)
            unknown = {kid for kid in unknown if not self.ring.knows(kid)}
        if unknown and await self.async_sync(self._privacy.key_wait_s):
            # Read to the end and still unknown: erased (its tombstone may be compacted away).
            # Remembered, so the next record sealed with it does not ask Kafka again.
            self.ring.forget(kid for kid in unknown if not self.ring.knows(kid))

    async def open(self, data: Any) -> Opened:
        """Decrypt `data`, its unknown key ids first waited for (`await_keys`)."""
        await self.await_keys(data)
        return self.decryptor().open(data)

    async def open_bytes(self, raw: bytes) -> bytes | None:
        """A value sealed whole (a dead letter); None when its subject was erased."""
        await self.await_keys(raw)
        return self.decryptor().open_bytes(raw)
