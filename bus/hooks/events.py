"""What a REST hook subscriber receives for one Dastra event: the event topics and hook event
names, and the payload (the same for deliveries and for `GET /v1/hooks/samples/{event}`).

    payload = hook_payload(decode(message.value(), headers), message.key(), keys)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bus.envelope import Envelope
from bus.privacy import PAYLOAD_EXTENSION
from bus.privacy.keystore import KeyStore
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import RIGHTS_REQUESTS, TASKS

__all__ = ["EVENT_TOPICS", "event_keys", "hook_event_of", "hook_payload", "workspace_of"]


# The event topics and the hook events they carry.
EVENT_TOPICS: dict[str, str] = {
    "rights_request": RIGHTS_REQUESTS,
    "task": TASKS,
}


def hook_event_of(ce_type: str | None) -> str | None:
    """`eu.dastra.task.created` -> `task.created`; None for anything else."""
    if not ce_type or not ce_type.startswith("eu.dastra."):
        return None
    return ce_type.removeprefix("eu.dastra.")


def workspace_of(envelope: Envelope, key: bytes | None) -> int | None:
    """The Dastra workspace of an event: `ce_source` dastra://workspaces/<ws>, else the key."""
    for text in (envelope.source or "", (key or b"").decode("utf-8", "replace")):
        tail = text.rsplit("/", 1)[-1] if "://" in text else text.split(":", 1)[0]
        if tail.isdigit():
            return int(tail)
    return None


def hook_payload(
    envelope: Envelope, key: bytes | None, keys: KeyStore | None = None
) -> dict[str, Any]:
    """What a subscriber receives (and what `GET /v1/hooks/samples/{event}` lists): the data
    in its topic's payload mode, decrypted with `keys` when it is encrypted and they can."""
    when = envelope.time or datetime.now(UTC)
    mode = envelope.attributes.get(PAYLOAD_EXTENSION)
    data = envelope.data
    if mode == "encrypted" and keys is not None and keys.can_decrypt:
        data = keys.decryptor().open(data).data
    payload = {
        "id": envelope.id,
        "type": hook_event_of(envelope.type),
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "workspace_id": workspace_of(envelope, key),
        "data": data,
    }
    if mode and mode != "full":
        payload["payload_mode"] = mode
    return payload


def event_keys(kafka: KafkaSettings, privacy: PrivacySettings | None, name: str) -> KeyStore | None:
    """A key store to decrypt encrypted events with, when PRIVACY_MASTER_KEY is set."""
    if privacy is None or privacy.master_key is None:
        return None
    return KeyStore(kafka, privacy, name=name)
