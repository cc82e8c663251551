"""bus/privacy/ without Kafka: what each payload mode leaves of an object, the encryption
format as the README documents it (re-implemented here from the text, with `cryptography`
only), subjects and the alias graph, and schemas that stay valid in every mode."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import ValidationError

from bus.envelope import dumps, encode_binary, new_event
from bus.privacy import (
    POLICIES,
    DataKeyRecord,
    Decryptor,
    Encryptor,
    KeyRing,
    MasterKey,
    PrivacyError,
    Subject,
    command_subject,
    find_kids,
    keyed_hash,
    redact,
    shape,
    subject_of,
    thin,
)
from bus.privacy.erasure import ErasureRequest, parse_subject, plan_erasure
from bus.privacy.keystore import key_record
from bus.settings import PrivacySettings
from bus.topics import RIGHTS_REQUESTS, TASKS, TopicCatalogue
from dastra_kafka.contracts._examples import _RIGHTS_REQUEST, _TASK
from dastra_kafka.contracts.registry import validate_record

HASH_KEY = b"0123456789abcdef-hash"
PERSON = {
    "email": "  Zorglubine.Quaxwell@Example.ORG ",
    "givenName": "Zorglubine",
    "familyName": "Quaxwell",
    "phoneNumber": "+33 6 98 76 54 32",
    "address": "12 rue du Zorglub",
    "message": "Merci de supprimer Zorglubine Quaxwell",
}
RAW = ("zorglub", "quaxwell", "98 76 54 32")


def _request(**extra: Any) -> dict[str, Any]:
    return {**copy.deepcopy(_RIGHTS_REQUEST), **PERSON, **extra}


def _leaks(data: Any) -> list[str]:
    text = json.dumps(data).lower()
    return [raw for raw in RAW if raw in text]


def _ring_with(
    master: MasterKey, *objects: tuple[str, dict[str, Any]]
) -> tuple[KeyRing, list[Any]]:
    ring = KeyRing()
    batch = Encryptor(master, ring, "test").batch()
    sealed = [batch.seal(kind, obj, subject_of(kind, obj, 101)) for kind, obj in objects]
    for record in batch.records:
        ring.apply(*key_record(record))
    return ring, sealed


def test_redacted_hashes_every_personal_field_and_joins_on_normalised_emails() -> None:
    request = _request()
    redacted = redact("rights_request", request, key=HASH_KEY)
    assert _leaks(redacted) == []
    assert redacted["email"] == keyed_hash("zorglubine.quaxwell@example.org", HASH_KEY, email=True)
    assert redacted["givenName"].startswith("hmac-sha256:")
    assert redacted["creator"]["email"].startswith("hmac-sha256:")  # nested users too
    # Ids, states and dates stay: consumers can still count and join.
    for name in ("id", "state", "purposes", "dateCreation", "areaId", "refId"):
        assert redacted[name] == request[name]
    # The same person as an actor hashes to the same pseudonym.
    actor = redact("actor", {"id": 3, "email": "zorglubine.quaxwell@EXAMPLE.org"}, key=HASH_KEY)
    assert actor["email"] == redacted["email"]
    removed = redact("rights_request", request, key=None, remove=True)
    assert "email" not in removed and "givenName" not in removed and removed["id"] == 4521


def test_thin_keeps_ids_state_and_dates_plus_a_dataref() -> None:
    slim = thin("rights_request", _request(), workspace_id=101)
    assert slim["dataref"] == "/v1/ws/101/DataSubjectRequests/4521"
    assert set(slim) <= POLICIES["rights_request"].thin | {"dataref"}
    assert _leaks(slim) == [] and "title" not in slim
    task = thin("task", {**_TASK, "descriptionHtml": "call Zorglubine"}, workspace_id=101)
    assert task["dataref"] == "/v1/ws/101/Tasks/918" and task["objectId"] == "4521"
    assert _leaks(task) == []


def _readme_open(
    master: bytes, key_value: dict[str, Any], envelope: dict[str, Any], name: str
) -> Any:
    """The decoding algorithm exactly as README "Reading encrypted payloads" states it."""
    kid = key_value["kid"]
    dek = AESGCM(master).decrypt(
        base64.b64decode(key_value["iv"]),
        base64.b64decode(key_value["wrapped"]),
        f"dastra-kafka:v1:dek:{kid}".encode(),
    )
    plaintext = AESGCM(dek).decrypt(
        base64.b64decode(envelope["iv"]),
        base64.b64decode(envelope["ct"]),
        f"dastra-kafka:v1:{envelope['kid']}:{name}".encode(),
    )
    return json.loads(plaintext)


def test_encrypted_fields_follow_the_documented_algorithm() -> None:
    raw_master = os.urandom(32)
    master = MasterKey(raw_master)
    ring, [sealed] = _ring_with(master, ("rights_request", _request()))
    assert _leaks(sealed) == [] and sealed["id"] == 4521 and sealed["state"] == "Open"
    envelope = sealed["email"]
    assert set(envelope) == {"$enc", "kid", "iv", "ct"} and envelope["$enc"] == "aes-256-gcm"
    key = ring.key(envelope["kid"])
    assert key is not None
    key_value = json.loads(key.model_dump_json())
    assert _readme_open(raw_master, key_value, envelope, "email") == PERSON["email"]
    user = sealed["creator"]["givenName"]
    assert (
        _readme_open(raw_master, key_value, user, "givenName")
        == _RIGHTS_REQUEST["creator"]["givenName"]
    )
    # Subject ids are HMAC-SHA256(HMAC-SHA256(master, label), ref), as documented.
    subject_key = hmac.new(raw_master, b"dastra-kafka:v1:subject-id", hashlib.sha256).digest()
    expected = hmac.new(subject_key, b"rr:101:4521", hashlib.sha256).hexdigest()[:32]
    assert key.subject == "s_" + expected
    # The additional data binds a value to its member: moved elsewhere, it does not decrypt.
    moved = {**sealed, "givenName": sealed["email"]}
    with pytest.raises(PrivacyError):
        Decryptor(master, ring).open(moved)
    opened = Decryptor(master, ring).open(sealed)
    assert opened.data == _request() and opened.decrypted > 5 and not opened.is_erased


def test_a_deleted_key_makes_only_its_subjects_fields_erased() -> None:
    master = MasterKey(os.urandom(32))
    other = {**_request(id=4522, email="someone.else@example.org"), "givenName": "Other"}
    task = {**_TASK, "descriptionHtml": "<p>call Zorglubine</p>"}
    ring, [mine, theirs, my_task] = _ring_with(
        master, ("rights_request", _request()), ("rights_request", other), ("task", task)
    )
    assert my_task["descriptionHtml"]["kid"] == mine["email"]["kid"]  # the request's subject
    assert theirs["email"]["kid"] != mine["email"]["kid"]
    plan = plan_erasure(ring, master, parse_subject(" Zorglubine.Quaxwell@example.org", None))
    assert plan.key_ids == [mine["email"]["kid"]] and len(plan.markers) == 1
    for key, value in plan.key_topic_records("audit-1", datetime(2026, 4, 2, tzinfo=UTC)):
        ring.apply(key, value)
    decryptor = Decryptor(master, ring)
    gone = decryptor.open(mine)
    assert gone.is_erased and gone.data["email"] == {"$erased": True} and _leaks(gone.data) == []
    assert decryptor.open(my_task).data["descriptionHtml"] == {"$erased": True}
    assert decryptor.open(theirs).data["email"] == "someone.else@example.org"
    # New data about the erased request is written as erased, never under a new key.
    batch = Encryptor(master, ring, "test").batch()
    again = batch.seal("rights_request", _request(), subject_of("rights_request", _request(), 101))
    assert again["email"] == {"$erased": True} and batch.records == []


def test_subjects_aliases_and_erasure_by_either_name() -> None:
    request = _request()
    assert subject_of("rights_request", request, 101) == Subject(
        "rr:101:4521", ("email:zorglubine.quaxwell@example.org",)
    )
    assert subject_of("task", _TASK, 101).ref == "rr:101:4521"  # attached to the request
    assert subject_of("task", {**_TASK, "objectType": None}, 101).ref == "task:101:918"
    assert command_subject("create-rights-request", PERSON, 101, "c1").ref == (
        "email:zorglubine.quaxwell@example.org"
    )
    attached = {"objectType": "DataSubject", "objectId": "7"}
    assert command_subject("create-task", attached, 101, "c").ref == "rr:101:7"
    assert command_subject("link-actor-to-processing", {}, 101, "c9").ref == "command:c9"

    master = MasterKey(os.urandom(32))
    ring = KeyRing()
    batch = Encryptor(master, ring, "test").batch()
    batch.seal("rights_request", request, subject_of("rights_request", request, 101))
    # A later command from the same e-mail (its own subject), and an unrelated person.
    batch.seal(
        "command.create-task", {"label": "x"}, Subject("email:zorglubine.quaxwell@example.org")
    )
    batch.seal("rights_request", {"id": 9, "email": "b@example.org"}, Subject("rr:101:9"))
    batch.commit()
    by_email = plan_erasure(ring, master, parse_subject("zorglubine.quaxwell@example.org", None))
    by_request = plan_erasure(ring, master, parse_subject("rr:101:4521", None))
    assert sorted(by_email.key_ids) == sorted(by_request.key_ids)
    assert len(by_email.key_ids) == 2 and len(by_email.alias_keys) == 1
    assert parse_subject("4521", 101) == ErasureRequest("rights-request", "rr:101:4521", 101, 4521)
    with pytest.raises(ValueError, match="--workspace"):
        parse_subject("4521", None)
    with pytest.raises(ValueError) as bad:
        parse_subject("not a subject", 1)
    assert "not a subject" not in str(bad.value)


def test_find_kids_sees_keys_in_any_encoding() -> None:
    master = MasterKey(os.urandom(32))
    _ring, [sealed] = _ring_with(master, ("rights_request", _request()))
    assert find_kids(dumps(sealed)) == {sealed["email"]["kid"]}
    assert find_kids(json.dumps({"result": sealed}, indent=2).encode()) == {sealed["email"]["kid"]}
    assert find_kids(b"plain") == set()


@pytest.mark.parametrize("mode", ["full", "redacted", "thin", "encrypted"])
def test_events_of_every_mode_conform_to_the_contracts(
    catalogue: TopicCatalogue, mode: str
) -> None:
    master = MasterKey(os.urandom(32))
    batch = Encryptor(master, KeyRing(), "test").batch()
    for topic, kind, obj in (
        (RIGHTS_REQUESTS, "rights_request", _request()),
        (TASKS, "task", {**_TASK, "descriptionHtml": "<p>Zorglubine</p>"}),
    ):
        data = shape(mode, kind, obj, workspace_id=101, hash_key=HASH_KEY, batch=batch)  # type: ignore[arg-type]
        extensions = None if mode == "full" else {"dastrapayload": mode}
        headers, value = encode_binary(
            new_event(
                type=f"eu.dastra.{kind}.created",
                source="dastra://workspaces/101",
                id="x",
                subject=str(obj["id"]),
                data=data,
                extensions=extensions,
            )
        )
        problems = validate_record(catalogue, topic, f"101:{obj['id']}".encode(), value, headers)
        assert problems == [], (mode, topic, problems)
        if mode != "full":
            assert _leaks(data) == []
    for record in batch.records:
        assert validate_record(catalogue, "dastra.privacy-keys.v1", *key_record(record), []) == []
        assert isinstance(record, DataKeyRecord) or record.type == "alias"


def test_privacy_settings_check_keys_without_echoing_them() -> None:
    with pytest.raises(ValidationError) as bad:
        PrivacySettings(master_key="c2hvcnQ=")  # type: ignore[arg-type]
    assert "32 bytes" in str(bad.value.errors()[0]["msg"])
    assert "c2hvcnQ" not in bad.value.errors(include_input=False)[0]["msg"]
    secret = base64.b64encode(os.urandom(32)).decode()
    good = PrivacySettings(master_key=secret, mode_rights_requests="encrypted")  # type: ignore[arg-type]
    assert good.uses_keys and secret not in repr(good) and secret not in str(good.model_dump())
    assert good.mode_of(RIGHTS_REQUESTS) == "encrypted" and good.mode_of(TASKS) == "full"
    with pytest.raises(PrivacyError, match="PRIVACY_HASH_KEY"):
        redact("task", _TASK, key=None)
