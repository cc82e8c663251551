"""The poller's payload modes and erasure: shapes each event for its topic's mode (full,
redacted, thin, encrypted), writes the data keys first, and erases a subject whose Erasure
request was closed (PRIVACY_AUTO_ERASE).

    privacy = EventPrivacy(kafka, privacy_settings)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from bus.errors import KafkaUnavailableError, TailerError, TopicMissingError
from bus.privacy import PAYLOAD_EXTENSION, Batch, PrivacyError, shape
from bus.privacy.erasure import ErasurePlan, ErasureRequest, plan_erasure
from bus.privacy.keystore import KeyStore, master_key_of
from bus.records.privacy_audit import ErasureAudit
from bus.settings import KafkaSettings, PayloadMode, PrivacySettings
from producers.poller.items import RESOURCES, ChangedItem, Resource

__all__ = ["Erasure", "EventPrivacy"]

_log = structlog.get_logger(__name__)


Erasure = tuple[ErasurePlan, ErasureAudit]


class EventPrivacy:
    """The payload mode of each event topic, and the keys and erasures it needs."""

    def __init__(self, kafka: KafkaSettings, privacy: PrivacySettings) -> None:
        self.settings = privacy
        self.modes: dict[str, PayloadMode] = {r.topic: privacy.mode_of(r.topic) for r in RESOURCES}
        self._hash_key = privacy.hash_key_bytes()
        if (
            "redacted" in self.modes.values()
            and privacy.redaction == "hash"
            and self._hash_key is None
        ):
            raise PrivacyError("PRIVACY_MODE_*=redacted needs PRIVACY_HASH_KEY")
        self.store: KeyStore | None = None
        if "encrypted" in self.modes.values() or privacy.auto_erase:
            master_key_of(privacy, "the encrypted payload mode (or PRIVACY_AUTO_ERASE)")
            self.store = KeyStore(kafka, privacy, name="poller")

    def start(self) -> None:
        if self.store is None:
            return
        try:
            self.store.start()
        except TailerError as exc:
            if "does not exist" in str(exc):
                raise TopicMissingError(self.store.topic) from exc
            raise KafkaUnavailableError(f"the key topic could not be read: {exc}") from exc

    def stop(self) -> None:
        if self.store is not None:
            self.store.stop()

    def batch(self) -> Batch | None:
        return self.store.encryptor().batch() if self.store is not None else None

    def extensions(self, resource: Resource) -> dict[str, str] | None:
        mode = self.modes[resource.topic]
        return None if mode == "full" else {PAYLOAD_EXTENSION: mode}

    def shape(self, resource: Resource, workspace_id: int, raw: Any, batch: Batch | None) -> Any:
        return shape(
            self.modes[resource.topic],
            resource.entity,
            raw,
            workspace_id=workspace_id,
            hash_key=self._hash_key,
            remove=self.settings.redaction == "remove",
            batch=batch,
        )

    def erasures(
        self,
        resource: Resource,
        workspace_id: int,
        items: Sequence[ChangedItem],
        batch: Batch | None,
    ) -> list[Erasure]:
        """Closed Erasure rights requests in `items` not erased yet (PRIVACY_AUTO_ERASE): their
        plans, and their subjects marked erased in `batch` so this batch seals nothing new."""
        if not self.settings.auto_erase or resource.name != "rights-requests":
            return []
        assert self.store is not None and self.store.master is not None and batch is not None
        master, ring = self.store.master, self.store.ring
        found: list[Erasure] = []
        planned: set[str] = set()
        for item in items:
            raw = item.raw
            purposes = raw.get("purposes") or []
            if raw.get("state") != "Closed" or "Erasure" not in purposes:
                continue
            request = ErasureRequest(
                "rights-request", f"rr:{workspace_id}:{item.id}", workspace_id, item.id
            )
            target = master.subject_id(request.ref)
            if ring.is_erased(target) or target in planned:
                continue
            plan = plan_erasure(ring, master, request)
            planned.add(target)
            for subject in plan.subjects:
                batch.mark_erased(subject)
            audit = plan.audit(
                audit_id=str(uuid.uuid4()), at=datetime.now(UTC), by="poller", trigger="auto"
            )
            found.append((plan, audit))
        return found
