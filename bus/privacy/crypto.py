"""The `encrypted` payload mode: crypto-shredding with one data key per data subject.

Consumes the master key, the records of the compacted key topic (`dastra.privacy-keys.v1`) and
payloads to seal or open. Produces sealed payloads (each personal field value becomes
`{"$enc": "aes-256-gcm", "kid", "iv", "ct"}`), the key records a batch must write before its
records, and opened payloads where an erased subject's fields read `{"$erased": true}`. No I/O:
the Kafka side is `bus/privacy/keystore.py`, erasure `bus/privacy/erasure.py`.

    ring = KeyRing(); ring.apply(key, value)              # every record of the key topic
    batch = Encryptor(master, ring, "poller").batch()
    sealed = batch.seal("rights_request", obj, subject_of("rights_request", obj, 12))
    # produce batch.records to the key topic, then the event; then batch.commit()
    opened = Decryptor(master, ring).open(sealed)          # opened.data, opened.erased
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from bus.privacy.policies import (
    ObjectPolicy,
    PrivacyError,
    Subject,
    canonical,
    command_subject,
    walk,
)

ALGORITHM: Literal["aes-256-gcm"] = "aes-256-gcm"
ERASED: dict[str, Any] = {"$erased": True}
_AAD = "dastra-kafka:v1:{kid}:{name}"
_WRAP_AAD = "dastra-kafka:v1:dek:{kid}"
_SUBJECT_LABEL = b"dastra-kafka:v1:subject-id"
_MASTER_ID_LABEL = b"dastra-kafka:v1:master-key-id"
_KID = re.compile(rb'"kid":\s*"(k_[0-9a-f]{32})"')


def seal_command(
    batch: Batch, action: str, data: Mapping[str, Any], *, workspace_id: int | None, command_id: str
) -> Any:
    """A command's data with its personal fields encrypted with the key of its data subject
    (`command_subject`), for PRIVACY_MODE_COMMANDS=encrypted: the webhook's commands and the
    recipes' alike. Produce `batch.records` to the key topic first, then `batch.commit()`."""
    subject = command_subject(action, data, workspace_id, command_id)
    return batch.seal(f"command.{action}", data, subject)


# --- keys --------------------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise PrivacyError("not base64") from exc


class MasterKey:
    """The key that wraps every data key (PRIVACY_MASTER_KEY), and the keyed hashes that make
    subject ids out of refs. Never printed: its repr names only its id."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise PrivacyError("the master key must have 32 bytes")
        self._aead = AESGCM(raw)
        self._subject_key = hmac.new(raw, _SUBJECT_LABEL, hashlib.sha256).digest()
        self.id = "mk_" + hmac.new(raw, _MASTER_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"MasterKey({self.id})"

    def subject_id(self, ref: str) -> str:
        """`s_` + 32 hex digits of HMAC-SHA256(subject key, ref): reveals nothing of the ref
        without the master key."""
        digest = hmac.new(self._subject_key, ref.encode("utf-8"), hashlib.sha256).hexdigest()
        return "s_" + digest[:32]

    def wrap(self, kid: str, dek: bytes) -> tuple[str, str]:
        iv = secrets.token_bytes(12)
        sealed = self._aead.encrypt(iv, dek, _WRAP_AAD.format(kid=kid).encode())
        return _b64(iv), _b64(sealed)

    def unwrap(self, record: DataKeyRecord) -> bytes:
        if record.mkid != self.id:
            raise PrivacyError(
                f"key {record.kid} was wrapped by master key {record.mkid}, not {self.id}"
            )
        try:
            dek = self._aead.decrypt(
                _unb64(record.iv), _unb64(record.wrapped), _WRAP_AAD.format(kid=record.kid).encode()
            )
        except InvalidTag as exc:
            raise PrivacyError(f"key {record.kid} does not unwrap with this master key") from exc
        if len(dek) != 32:
            raise PrivacyError(f"key {record.kid} is not a 256-bit key")
        return dek


KeyId = Annotated[str, Field(pattern=r"^k_[0-9a-f]{32}$", description="A data key id")]
SubjectId = Annotated[
    str, Field(pattern=r"^s_[0-9a-f]{32}$", description="HMAC of a subject ref (no personal data)")
]


class DataKeyRecord(BaseModel):
    """A subject's data key, wrapped by the master key (key `key:<kid>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["data-key"] = "data-key"
    kid: KeyId
    subject: SubjectId
    scope: Literal["object", "email", "command"] = Field(
        description="object: a Dastra object's subject (stays erased); email, command: may recur"
    )
    mkid: str = Field(description="The id of the master key that wrapped it")
    alg: Literal["aes-256-gcm"] = ALGORITHM
    iv: str = Field(description="Base64 of the 12-byte nonce of the wrapping")
    wrapped: str = Field(description="Base64 of AES-256-GCM(master, dek) ciphertext and tag")
    created_at: datetime
    created_by: str = Field(description="The component that made it (poller, agents, webhook)")

    @property
    def topic_key(self) -> str:
        return f"key:{self.kid}"


class AliasRecord(BaseModel):
    """Two subject ids of the same person, e.g. a rights request and its e-mail (key
    `alias:<alias>:<subject>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["alias"] = "alias"
    alias: SubjectId
    subject: SubjectId
    created_at: datetime

    @property
    def topic_key(self) -> str:
        return f"alias:{self.alias}:{self.subject}"


class ErasedMarker(BaseModel):
    """A subject was erased: new data about it is written as erased (key `erased:<subject>`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["erased"] = "erased"
    subject: SubjectId
    erased_at: datetime
    audit_id: str

    @property
    def topic_key(self) -> str:
        return f"erased:{self.subject}"


KeyRecord = Annotated[DataKeyRecord | AliasRecord | ErasedMarker, Field(discriminator="type")]
_KEY_RECORD: TypeAdapter[DataKeyRecord | AliasRecord | ErasedMarker] = TypeAdapter(KeyRecord)


def parse_key_record(value: bytes) -> DataKeyRecord | AliasRecord | ErasedMarker:
    """A value of the key topic; `PrivacyError` (naming no value) when it is not one."""
    try:
        return _KEY_RECORD.validate_json(value)
    except ValidationError:
        raise PrivacyError("not a privacy key record") from None


class KeyRing:
    """What the key topic holds, in memory: data keys by id and by subject, the alias graph,
    erased subjects, and the ids of keys seen deleted. Thread-safe; `apply` every record of the
    topic in log order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, DataKeyRecord] = {}
        self._by_subject: dict[str, list[str]] = {}
        self._links: dict[str, set[str]] = {}
        self._aliases: set[str] = set()  # topic keys of alias records
        self._erased: dict[str, ErasedMarker] = {}
        self.shredded: set[str] = set()

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """One record of the key topic (a tombstone when `value` is None)."""
        if not key:
            return
        name = key.decode("utf-8", "replace")
        if value is None:
            self._remove(name)
            return
        self.add(parse_key_record(value))

    def add(self, record: DataKeyRecord | AliasRecord | ErasedMarker) -> None:
        with self._lock:
            if isinstance(record, DataKeyRecord):
                if record.kid not in self._keys:
                    self._by_subject.setdefault(record.subject, []).append(record.kid)
                self._keys[record.kid] = record
                self.shredded.discard(record.kid)
            elif isinstance(record, AliasRecord):
                self._aliases.add(record.topic_key)
                self._links.setdefault(record.alias, set()).add(record.subject)
                self._links.setdefault(record.subject, set()).add(record.alias)
            else:
                self._erased[record.subject] = record

    def _remove(self, name: str) -> None:
        kind, _, rest = name.partition(":")
        with self._lock:
            if kind == "key":
                record = self._keys.pop(rest, None)
                self.shredded.add(rest)
                if record is not None:
                    kids = self._by_subject.get(record.subject, [])
                    if rest in kids:
                        kids.remove(rest)
            elif kind == "alias" and name in self._aliases:
                self._aliases.discard(name)
                alias, _, subject = rest.partition(":")
                self._links.get(alias, set()).discard(subject)
                self._links.get(subject, set()).discard(alias)
            elif kind == "erased":
                self._erased.pop(rest, None)

    def key(self, kid: str) -> DataKeyRecord | None:
        with self._lock:
            return self._keys.get(kid)

    def keys_of(self, subject: str) -> list[DataKeyRecord]:
        with self._lock:
            return [self._keys[kid] for kid in self._by_subject.get(subject, [])]

    def has_alias(self, alias: str, subject: str) -> bool:
        with self._lock:
            return f"alias:{alias}:{subject}" in self._aliases

    def is_erased(self, subject: str) -> bool:
        with self._lock:
            return subject in self._erased

    def forget(self, kids: Iterable[str]) -> None:
        """Count these key ids as deleted: the key topic was read to its end without them (their
        tombstones may already be compacted away). A key that shows up later is still added."""
        with self._lock:
            self.shredded.update(kid for kid in kids if kid not in self._keys)

    def knows(self, kid: str) -> bool:
        """Is the key present, or seen deleted?"""
        with self._lock:
            return kid in self._keys or kid in self.shredded

    def linked(self, subjects: Iterable[str]) -> set[str]:
        """Every subject id connected to `subjects` through aliases (the same person)."""
        with self._lock:
            seen: set[str] = set()
            frontier = list(subjects)
            while frontier:
                subject = frontier.pop()
                if subject in seen:
                    continue
                seen.add(subject)
                frontier.extend(self._links.get(subject, ()))
            return seen

    def alias_keys(self, subjects: set[str]) -> list[str]:
        """Topic keys of the alias records touching `subjects`."""
        with self._lock:
            return sorted(
                name
                for name in self._aliases
                if name.split(":")[1] in subjects or name.split(":")[2] in subjects
            )


# --- envelopes ---------------------------------------------------------------------------------


class EncryptedField(BaseModel):
    """An encrypted personal field: AES-256-GCM with the data key `kid` of its data subject."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    enc: Literal["aes-256-gcm"] = Field(alias="$enc")
    kid: KeyId
    iv: str = Field(description="Base64 of the 12-byte nonce")
    ct: str = Field(
        description="Base64 of the ciphertext and 16-byte tag of the field's JSON value; "
        "additional data `dastra-kafka:v1:<kid>:<member name>`"
    )


class ErasedField(BaseModel):
    """A personal field whose data subject was erased (or a reader without the key)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    erased: Literal[True] = Field(alias="$erased")


def _seal_value(aead: AESGCM, kid: str, name: str, plaintext: bytes) -> dict[str, str]:
    iv = secrets.token_bytes(12)
    ct = aead.encrypt(iv, plaintext, _AAD.format(kid=kid, name=name).encode())
    return {"$enc": ALGORITHM, "kid": kid, "iv": _b64(iv), "ct": _b64(ct)}


def _open_value(aead: AESGCM, envelope: Mapping[str, Any], name: str) -> bytes:
    kid = str(envelope.get("kid"))
    try:
        return aead.decrypt(
            _unb64(str(envelope.get("iv"))),
            _unb64(str(envelope.get("ct"))),
            _AAD.format(kid=kid, name=name).encode(),
        )
    except InvalidTag as exc:
        raise PrivacyError(f"field {name} does not decrypt with key {kid}") from exc


def find_kids(raw: bytes | None) -> set[str]:
    """The data key ids an encoded record refers to (a byte search: no parsing)."""
    if not raw or b"k_" not in raw:
        return set()
    return {match.group(1).decode() for match in _KID.finditer(raw)}


class Batch:
    """Keys and aliases made while sealing the records of one Kafka write. Produce `records`
    to the key topic before (or in the same transaction as) the sealed records, then `commit()`;
    on failure drop the batch (the next one makes new keys)."""

    def __init__(self, encryptor: Encryptor) -> None:
        self._encryptor = encryptor
        self.records: list[DataKeyRecord | AliasRecord] = []
        self._new: dict[str, tuple[str, bytes]] = {}
        self._erased: set[str] = set()

    def mark_erased(self, subject_id: str) -> None:
        """Seal nothing for this subject in this batch (it is being erased with it)."""
        self._erased.add(subject_id)

    def _key(self, subject: Subject) -> tuple[str, bytes] | None:
        master, ring = self._encryptor.master, self._encryptor.ring
        sid = master.subject_id(subject.ref)
        if sid in self._erased or (subject.scope == "object" and ring.is_erased(sid)):
            return None
        for alias in subject.aliases:
            aid = master.subject_id(alias)
            pending = any(
                isinstance(r, AliasRecord) and r.alias == aid and r.subject == sid
                for r in self.records
            )
            if not pending and not ring.has_alias(aid, sid):
                self.records.append(
                    AliasRecord(alias=aid, subject=sid, created_at=datetime.now(UTC))
                )
        if sid in self._new:
            return self._new[sid]
        # A key wrapped by another master key (before a change of PRIVACY_MASTER_KEY) is not
        # ours to use: the subject gets a new one.
        usable = [record for record in ring.keys_of(sid) if record.mkid == master.id]
        if usable:
            return usable[-1].kid, master.unwrap(usable[-1])
        kid = "k_" + secrets.token_hex(16)
        dek = secrets.token_bytes(32)
        iv, wrapped = master.wrap(kid, dek)
        self.records.append(
            DataKeyRecord(
                kid=kid,
                subject=sid,
                scope=subject.scope,
                mkid=master.id,
                iv=iv,
                wrapped=wrapped,
                created_at=datetime.now(UTC),
                created_by=self._encryptor.created_by,
            )
        )
        self._new[sid] = (kid, dek)
        return kid, dek

    def seal(self, kind: str, obj: Any, subject: Subject) -> Any:
        """`obj` with every personal field encrypted with `subject`'s key (written as erased
        when the subject was erased)."""
        key = self._key(subject)
        aead = AESGCM(key[1]) if key is not None else None

        def encrypt(_policy: ObjectPolicy, name: str, value: Any) -> Any:
            if key is None or aead is None:
                return dict(ERASED)
            return _seal_value(aead, key[0], name, canonical(value))

        return walk(kind, obj, encrypt)

    def seal_bytes(self, raw: bytes, subject: Subject) -> bytes | None:
        """A whole record value encrypted (a dead letter): the envelope as JSON bytes, with
        member name `$record` in the additional data; None when the subject was erased."""
        key = self._key(subject)
        if key is None:
            return None
        return canonical(_seal_value(AESGCM(key[1]), key[0], "$record", raw))

    def commit(self) -> None:
        """The records are on the key topic: the ring knows them from now on."""
        for record in self.records:
            self._encryptor.ring.add(record)
        self.records = []
        self._new = {}
        self._erased = set()


class Encryptor:
    """Seals payloads for one component (`created_by` goes into the key records it makes)."""

    def __init__(self, master: MasterKey, ring: KeyRing, created_by: str) -> None:
        self.master = master
        self.ring = ring
        self.created_by = created_by

    def batch(self) -> Batch:
        return Batch(self)


@dataclass
class Opened:
    """A decrypted payload: `data` with envelopes replaced by their values (or by
    `{"$erased": true}`), and what was found."""

    data: Any
    decrypted: int = 0
    erased: int = 0
    erased_kids: set[str] = field(default_factory=set)

    @property
    def is_erased(self) -> bool:
        """Some personal field could not be read: its subject was erased."""
        return self.erased > 0


class Decryptor:
    """Reads encrypted payloads with the keys of a `KeyRing` and the master key. A key that is
    absent (deleted by `privacy erase`) makes its fields `{"$erased": true}`."""

    def __init__(self, master: MasterKey, ring: KeyRing) -> None:
        self.master = master
        self.ring = ring

    def unknown(self, raw_or_data: Any) -> set[str]:
        """Key ids referenced but neither present nor seen deleted: the ring may be behind."""
        raw = raw_or_data if isinstance(raw_or_data, bytes) else canonical(raw_or_data)
        return {kid for kid in find_kids(raw) if not self.ring.knows(kid)}

    def open(self, data: Any) -> Opened:
        """Decrypt every envelope in `data` (any JSON: an event, a result, a command)."""
        opened = Opened(data=None)
        deks: dict[str, AESGCM | None] = {}

        def dek(kid: str) -> AESGCM | None:
            if kid not in deks:
                record = self.ring.key(kid)
                deks[kid] = None if record is None else AESGCM(self.master.unwrap(record))
            return deks[kid]

        def visit(node: Any, name: str) -> Any:
            if isinstance(node, list):
                return [visit(item, name) for item in node]
            if not isinstance(node, Mapping):
                return node
            if "$enc" in node:
                kid = str(node.get("kid"))
                key = dek(kid)
                if key is None:
                    opened.erased += 1
                    opened.erased_kids.add(kid)
                    return dict(ERASED)
                opened.decrypted += 1
                return json.loads(_open_value(key, node, name))
            if node.get("$erased") is True:
                opened.erased += 1
                return node
            return {member: visit(value, member) for member, value in node.items()}

        opened.data = visit(data, "")
        return opened

    def open_bytes(self, value: bytes) -> bytes | None:
        """A value sealed whole (`Batch.seal_bytes`); None when its key was erased."""
        try:
            envelope = json.loads(value)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PrivacyError("not an encrypted record") from exc
        if not isinstance(envelope, dict) or envelope.get("$enc") != ALGORITHM:
            raise PrivacyError("not an encrypted record")
        record = self.ring.key(str(envelope.get("kid")))
        if record is None:
            return None
        return _open_value(AESGCM(self.master.unwrap(record)), envelope, "$record")
