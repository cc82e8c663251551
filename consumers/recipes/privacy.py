"""The recipe runner's side of the bus's privacy: the full object behind a trigger event, and
commands sealed as the webhook seals them.

Consumes trigger events of the Dastra event topics (`dastra.rights-requests.v1`,
`dastra.tasks.v1`) in whatever payload mode they carry (the `dastrapayload` extension):
`encrypted` ones are decrypted with the keys of `dastra.privacy-keys.v1` (a key id not seen yet
is waited for up to PRIVACY_KEY_WAIT_S; fields of an erased subject stay `{"$erased": true}`);
`thin` and `redacted` ones (and objects too large for a record) are fetched by id from Dastra
through the worker's client (the claim check of `bus.privacy.resolve_dataref`; retryable errors
are retried by the client up to DASTRA_RETRY_DEADLINE_S). The full object lives in memory only,
for the recipe's filter and mapping. Produces, with PRIVACY_MODE_COMMANDS=encrypted, the sealed
data of the commands recipe steps send, and the key records to write before them; and decrypts
encrypted command results (PRIVACY_MODE_RESULTS=encrypted) for the steps that follow.

    privacy = RecipePrivacy(settings.kafka, settings.privacy, trigger_topics)
    privacy.use(dispatcher.keys)                                             # the worker's store
    data = await privacy.full_data(RIGHTS_REQUESTS, envelope, key, dastra)   # TriggerUnreadable
    sealed = privacy.seal_command(action, data, workspace_id, command_id)    # None: mode full
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from bus.envelope import Envelope
from bus.hooks.events import workspace_of
from bus.privacy import (
    PAYLOAD_EXTENSION,
    Batch,
    PrivacyError,
    dataref_of,
    resolve_dataref,
    seal_command,
    subject_of,
)
from bus.privacy.keystore import KeyStore, key_record, master_key_of
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import PRIVACY_KEYS, RIGHTS_REQUESTS, TASKS
from dastra.client import DastraClient
from dastra.errors import DastraError, DastraRetryable

__all__ = ["EVENT_KINDS", "RecipePrivacy", "SealedCommand", "TriggerUnreadable"]

_log = structlog.get_logger(__name__)

# The Dastra event topics (catalogue names) and the object type their events carry.
EVENT_KINDS: dict[str, str] = {RIGHTS_REQUESTS: "rights_request", TASKS: "task"}


class TriggerUnreadable(Exception):  # noqa: N818 - a reason, raised to the runner
    """The full object behind a trigger event could not be had; `kind` names why (the
    dead-letter kind), the message says what to do. Never holds personal data."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass
class SealedCommand:
    """A command's data with its personal fields encrypted, and the key records to write to
    `topic` before it (then `batch.commit()`)."""

    data: Any
    topic: str
    key_records: list[tuple[bytes, bytes]] = field(default_factory=list)
    batch: Batch | None = None


class RecipePrivacy:
    """Applies the payload modes for the recipe runner, with the worker's key store (the
    agents' one, owned by the dispatcher; None without PRIVACY_MASTER_KEY)."""

    def __init__(
        self, kafka: KafkaSettings, privacy: PrivacySettings, trigger_topics: Iterable[str]
    ) -> None:
        self.settings = privacy
        self.seal_commands = privacy.mode_commands == "encrypted"
        if self.seal_commands:
            master_key_of(privacy, "PRIVACY_MODE_COMMANDS=encrypted (commands of recipes)")
        for topic in trigger_topics:
            if topic in EVENT_KINDS and privacy.mode_of(topic) == "encrypted":
                master_key_of(privacy, f"recipes triggered by {topic} in encrypted mode")
        self.store: KeyStore | None = None
        self.keys_topic = kafka.topic(PRIVACY_KEYS)

    def use(self, store: KeyStore | None) -> None:
        """The worker's key store (started and stopped by its owner)."""
        if store is None and self.settings.master_key is not None:
            raise PrivacyError("the recipe runner needs the worker's key store")
        self.store = store

    # --- triggers in -------------------------------------------------------------------------

    async def full_data(
        self, topic: str, envelope: Envelope, key: bytes | None, dastra: DastraClient
    ) -> Any:
        """The data a recipe evaluates for an event of `topic` (catalogue name): the event's
        own data unless it is a Dastra event in a non-full payload mode."""
        kind = EVENT_KINDS.get(topic)
        mode = envelope.attributes.get(PAYLOAD_EXTENSION) or "full"
        data = envelope.data
        if kind is None or mode == "full":
            return data
        if mode == "encrypted":
            return await self._decrypt(data)
        return await self._fetch(kind, envelope, key, data, dastra)

    async def _decrypt(self, data: Any) -> Any:
        if self.store is None:
            raise TriggerUnreadable(
                "privacy-no-key",
                "the event is encrypted and this worker has no PRIVACY_MASTER_KEY",
            )
        try:
            opened = await self.store.open(data)
        except PrivacyError as exc:
            raise TriggerUnreadable("privacy-undecryptable", str(exc)) from None
        return opened.data

    async def _fetch(
        self,
        kind: str,
        envelope: Envelope,
        key: bytes | None,
        data: Any,
        dastra: DastraClient,
    ) -> Any:
        dataref = data.get("dataref") if isinstance(data, Mapping) else None
        if not isinstance(dataref, str):
            workspace = workspace_of(envelope, key)
            object_id = data.get("id") if isinstance(data, Mapping) else None
            if workspace is None or object_id in (None, ""):
                raise TriggerUnreadable(
                    "privacy-no-dataref",
                    "the event has neither a dataref nor a workspace and id to fetch its object",
                )
            dataref = dataref_of(kind, workspace, object_id)
        try:
            full = await resolve_dataref(dastra, dataref)
        except PrivacyError as exc:
            raise TriggerUnreadable("privacy-no-dataref", f"dataref {dataref}: {exc}") from None
        except DastraRetryable as exc:
            raise TriggerUnreadable(
                "retries-exhausted",
                f"could not fetch {dataref} (DASTRA_RETRY_DEADLINE_S): {exc.message}",
            ) from None
        except DastraError as exc:
            raise TriggerUnreadable(_error_kind(exc), f"could not fetch {dataref}: {exc}") from None
        _log.debug("recipes.trigger_resolved", dataref=dataref)
        return full

    async def open_result(self, result: Any) -> Any:
        """A command result as later steps see it: decrypted when the agents encrypted it
        (PRIVACY_MODE_RESULTS=encrypted) and this worker has the master key; else as it is
        (thin or redacted results keep their ids, which is what steps usually map)."""
        if self.store is None or not self.store.can_decrypt or result is None:
            return result
        try:
            return (await self.store.open(result)).data
        except PrivacyError:  # made with another master key: as it is on the topic
            return result

    def subjects(self, topic: str, data: Any, workspace_id: int | None) -> list[str]:
        """The keyed-hash ids of the data subject of an event of `topic` (its ref and e-mail
        alias), for the run records, so `privacy erase` finds the runs; [] without a master
        key or for topics that are not Dastra event topics."""
        kind = EVENT_KINDS.get(topic)
        if self.store is None or self.store.master is None or kind is None:
            return []
        if not isinstance(data, Mapping):
            return []
        found = subject_of(kind, data, workspace_id)
        return sorted({self.store.master.subject_id(ref) for ref in (found.ref, *found.aliases)})

    # --- commands out ------------------------------------------------------------------------

    def seal_command(
        self, action: str, data: Mapping[str, Any], workspace_id: int | None, command_id: str
    ) -> SealedCommand | None:
        """With PRIVACY_MODE_COMMANDS=encrypted: the command data sealed with the key of its
        data subject (as the webhook does); None otherwise."""
        if not self.seal_commands:
            return None
        if self.store is None:  # checked in __init__ and `use`; kept for the type checker
            raise PrivacyError("PRIVACY_MODE_COMMANDS=encrypted needs PRIVACY_MASTER_KEY")
        batch = self.store.encryptor().batch()
        sealed = seal_command(batch, action, data, workspace_id=workspace_id, command_id=command_id)
        return SealedCommand(
            data=sealed,
            topic=self.keys_topic,
            key_records=[key_record(record) for record in batch.records],
            batch=batch,
        )


def _error_kind(exc: DastraError) -> str:
    """dastra-not-found, dastra-auth, dastra-rejected, dastra-invalid-response, ..."""
    return "dastra-" + exc.kind.replace("_", "-")
