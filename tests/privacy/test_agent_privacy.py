"""consumers/agent_privacy.py without a broker: what the agents write in each results mode, and
dead letters sealed whole with their command's subject key."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from bus.privacy import Decryptor, KeyRing, MasterKey, PrivacyError, keyed_hash
from bus.settings import KafkaSettings, PrivacySettings
from consumers.agent_privacy import AgentPrivacy
from tests.privacy.support import HASH_KEY, MASTER_KEY, Person, leaks, privacy

PERSON = Person.new()
ACTOR = {
    "id": 77,
    "actorType": "Physical",
    "displayName": f"{PERSON.given} {PERSON.family}",
    "givenName": PERSON.given,
    "familyName": PERSON.family,
    "email": PERSON.email,
    "phoneNumber": PERSON.phone,
}
COMMAND = {"givenName": PERSON.given, "familyName": PERSON.family, "email": PERSON.email}
KAFKA = KafkaSettings(bootstrap_servers="127.0.0.1:1", topic_prefix="t.")


def _seal(agents: AgentPrivacy, result: Any, failed: bytes | None = None) -> Any:
    return agents.seal(
        action="find-or-create-actor",
        workspace_id=12,
        command_id="c-1",
        command_data=COMMAND,
        result=copy.deepcopy(result),
        dead_letter_value=failed,
    )


def test_results_are_redacted_or_thin_as_configured() -> None:
    redacted = _seal(AgentPrivacy(KAFKA, privacy(mode_results="redacted")), ACTOR)
    assert redacted.extensions == {"dastrapayload": "redacted"} and not redacted.key_records
    assert redacted.result["email"] == keyed_hash(PERSON.email, HASH_KEY.encode(), email=True)
    assert redacted.result["displayName"].startswith("hmac-sha256:")  # a natural person
    thin = _seal(AgentPrivacy(KAFKA, privacy(mode_results="thin")), [ACTOR, ACTOR])
    assert [a["dataref"] for a in thin.result] == ["/v1/ws/12/Actors/77"] * 2
    assert (
        leaks([PERSON], [("r", json.dumps(redacted.result)), ("t", json.dumps(thin.result))]) == []
    )
    company = _seal(
        AgentPrivacy(KAFKA, privacy(mode_results="redacted")),
        {"id": 5, "actorType": "Morale", "displayName": "Acme SAS", "companyName": "Acme SAS"},
    )
    assert company.result["displayName"] == "Acme SAS"  # a legal person's name is kept


def test_encrypted_results_and_sealed_dead_letters_open_with_the_keys_written_first() -> None:
    agents = AgentPrivacy(KAFKA, privacy(mode_results="encrypted", mode_dead_letters="encrypted"))
    original = json.dumps(COMMAND).encode()
    sealed = _seal(agents, ACTOR, failed=original)
    assert sealed.extensions == {"dastrapayload": "encrypted"}
    assert sealed.dead_letter_headers == [("dlq.value.encrypted", b"aes-256-gcm")]
    assert (
        leaks([PERSON], [("result", json.dumps(sealed.result)), ("dlq", sealed.dead_letter_value)])
        == []
    )
    # Two subjects: the actor, and the e-mail the command carried (the dead letter's), linked
    # by one alias (the actor's own e-mail is that same e-mail).
    kinds = [json.loads(value)["type"] for _topic, _key, value in sealed.key_records]
    assert sorted(kinds) == ["alias", "data-key", "data-key"]
    assert {topic for topic, _k, _v in sealed.key_records} == {"t.dastra.privacy-keys.v1"}
    reader = Decryptor(MasterKey(base64.b64decode(MASTER_KEY)), KeyRing())
    for _topic, key, value in sealed.key_records:
        reader.ring.apply(key, value)
    assert reader.open(sealed.result).data == ACTOR
    assert reader.open_bytes(sealed.dead_letter_value) == original
    assert sealed.batch is not None
    sealed.batch.commit()
    again = _seal(agents, ACTOR, failed=original)
    assert again.key_records == []  # the keys exist now: reused


def test_a_missing_key_is_a_configuration_error() -> None:
    with pytest.raises(PrivacyError, match="PRIVACY_MASTER_KEY"):
        AgentPrivacy(KAFKA, PrivacySettings(mode_dead_letters="encrypted"))
    with pytest.raises(PrivacyError, match="PRIVACY_HASH_KEY"):
        AgentPrivacy(KAFKA, PrivacySettings(mode_results="redacted"))
