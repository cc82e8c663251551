"""The agents' side of the bus's privacy: encrypted commands in, minimised results and sealed
dead letters out.

Consumes the data of command records (decrypting the fields the webhook encrypted with
PRIVACY_MODE_COMMANDS=encrypted, with the keys of `dastra.privacy-keys.v1`) and the Dastra
objects the handlers return. Produces the result payload in PRIVACY_MODE_RESULTS (full,
redacted, thin, encrypted: see `bus/privacy/`), the dead-letter value in
PRIVACY_MODE_DEAD_LETTERS (encrypted: the original value sealed whole with the key of the
command's data subject, `dlq.value.encrypted` header), and the key records those need, which the
dispatcher writes to `dastra.privacy-keys.v1` before the records they protect.

    privacy = AgentPrivacy(settings.kafka, settings.privacy)
    await privacy.start()
    sealed = privacy.seal(action, ws, command_id, command_data, result, failed_value)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.deadletter import DLQ_VALUE_ENCRYPTED
from bus.privacy import (
    ALGORITHM,
    PAYLOAD_EXTENSION,
    RESULT_KINDS,
    Batch,
    Opened,
    PrivacyError,
    Subject,
    command_subject,
    shape,
    subject_of,
)
from bus.privacy.keystore import KeyStore, key_record, master_key_of
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import COMMAND_RESULTS, PRIVACY_KEYS

__all__ = ["AgentPrivacy", "Sealed"]


@dataclass
class Sealed:
    """What `AgentPrivacy.seal` gives the dispatcher to write."""

    result: Any
    extensions: dict[str, str] | None
    dead_letter_value: bytes | None
    dead_letter_headers: list[tuple[str, bytes]] = field(default_factory=list)
    key_records: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    batch: Batch | None = None


class AgentPrivacy:
    """Owns the agents' key store (when keys are needed) and applies the modes."""

    def __init__(self, kafka: KafkaSettings, privacy: PrivacySettings) -> None:
        self.settings = privacy
        self.mode = privacy.mode_of(COMMAND_RESULTS)
        self._hash_key = privacy.hash_key_bytes()
        if self.mode == "redacted" and privacy.redaction == "hash" and self._hash_key is None:
            raise PrivacyError("PRIVACY_MODE_RESULTS=redacted needs PRIVACY_HASH_KEY")
        encrypts = self.mode == "encrypted" or privacy.mode_dead_letters == "encrypted"
        if encrypts:
            master_key_of(privacy, "PRIVACY_MODE_RESULTS/PRIVACY_MODE_DEAD_LETTERS=encrypted")
        # With a master key the agents also read commands the webhook encrypted.
        self.store: KeyStore | None = (
            KeyStore(kafka, privacy, name="agents")
            if encrypts or privacy.master_key is not None
            else None
        )
        self.keys_topic = kafka.topic(PRIVACY_KEYS)

    async def start(self) -> None:
        if self.store is not None:
            await asyncio.to_thread(self.store.start)

    async def stop(self) -> None:
        if self.store is not None:
            await asyncio.to_thread(self.store.stop)

    # --- commands in -------------------------------------------------------------------------

    async def prepare(self, value: bytes | None) -> None:
        """Before a record is decoded: wait for key ids it uses that this worker has not read
        yet (the webhook writes a key just before the command)."""
        if self.store is not None and value:
            await self.store.await_keys(value)

    def open_command(self, data: Any) -> Opened | None:
        """The command data decrypted (None: nothing encrypted, or no master key here)."""
        if self.store is None or not self.store.can_decrypt or not _has_envelope(data):
            return None
        return self.store.decryptor().open(data)

    # --- results and dead letters out --------------------------------------------------------

    def seal(
        self,
        *,
        action: str,
        workspace_id: int | None,
        command_id: str,
        command_data: Mapping[str, Any] | None,
        result: Any,
        dead_letter_value: bytes | None,
    ) -> Sealed:
        """The result payload and dead-letter value to write, and the key records first."""
        batch = self._batch()
        out = Sealed(result=result, extensions=None, dead_letter_value=dead_letter_value)
        who = command_subject(action, command_data or {}, workspace_id, command_id)
        kind = RESULT_KINDS[action]
        if result is not None and self.mode != "full" and kind != "link":
            ws = workspace_id or 0
            single = isinstance(result, Mapping)

            def subject(obj: Mapping[str, Any]) -> Subject:
                found = subject_of(kind, obj, ws)
                if single:  # the command that made it is about the same person
                    return Subject(found.ref, (*found.aliases, who.ref))
                return found

            out.result = shape(
                self.mode,
                kind,
                result,
                workspace_id=ws,
                hash_key=self._hash_key,
                remove=self.settings.redaction == "remove",
                batch=batch,
                subject=subject,
            )
            out.extensions = {PAYLOAD_EXTENSION: self.mode}
        if (
            dead_letter_value
            and self.settings.mode_dead_letters == "encrypted"
            and batch is not None
        ):
            if command_data is None:
                who = command_subject(action, _plain_json(dead_letter_value), None, command_id)
            sealed = batch.seal_bytes(dead_letter_value, who)
            if sealed is not None:
                out.dead_letter_value = sealed
                out.dead_letter_headers.append((DLQ_VALUE_ENCRYPTED, ALGORITHM.encode()))
        if batch is not None:
            out.key_records = [(self.keys_topic, *key_record(r)) for r in batch.records]
            out.batch = batch
        return out

    def _batch(self) -> Batch | None:
        if self.store is None:
            return None
        if self.mode != "encrypted" and self.settings.mode_dead_letters != "encrypted":
            return None
        return self.store.encryptor().batch()


def _has_envelope(data: Any) -> bool:
    if isinstance(data, Mapping):
        return "$enc" in data or any(_has_envelope(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_envelope(v) for v in data)
    return False


def _plain_json(value: bytes) -> Mapping[str, Any]:
    """Best effort: a dead letter's value as a JSON object (a plain command, or the data of a
    structured CloudEvent), to find the e-mail that names its subject."""
    try:
        document = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(document, dict) and isinstance(document.get("data"), dict):
        inner: dict[str, Any] = document["data"]
        return inner
    return document if isinstance(document, dict) else {}
