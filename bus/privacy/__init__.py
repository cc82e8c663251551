"""Privacy of the bus: which fields are personal data, and the payload modes that minimise them.

Consumes Dastra objects (rights requests, tasks, actors, nested users), command data and the
records of `dastra.privacy-keys.v1`. Produces the payload of each mode, the key records the
`encrypted` mode needs, and the decoder that reads encrypted payloads back. One module each:

- `policies`: `POLICIES`, the personal fields of every object type in one place (README
  "Privacy"), and the data subject a payload is about.
- `modes`: `redact(...)` (keyed hashes or removal), `thin(...)` (ids, state, dates and a
  `dataref` claim check, see `resolve_dataref`), `shape(...)` for any mode, and the models of
  private payloads.
- `crypto`: the `encrypted` mode (crypto-shredding): `Encryptor` / `Decryptor`, the key ring and
  key records, wrapped by the master key.
- `keystore`: the key topic read and written on Kafka; `erasure`: `privacy erase`.

The algorithm is spelled out in README "Privacy: reading encrypted payloads" for other languages.
This package re-exports the names of `policies`, `modes` and `crypto`:

    ring = KeyRing(); ring.apply(key, value)              # every record of the key topic
    batch = Encryptor(master, ring, "poller").batch()
    sealed = batch.seal("rights_request", obj, subject_of("rights_request", obj, 12))
    # produce batch.records to the key topic, then the event; then batch.commit()
    opened = Decryptor(master, ring).open(sealed)          # opened.data, opened.erased
"""

from __future__ import annotations

from bus.privacy.crypto import (
    ALGORITHM,
    ERASED,
    AliasRecord,
    Batch,
    DataKeyRecord,
    Decryptor,
    EncryptedField,
    Encryptor,
    ErasedField,
    ErasedMarker,
    KeyRecord,
    KeyRing,
    MasterKey,
    Opened,
    find_kids,
    parse_key_record,
    seal_command,
)
from bus.privacy.modes import (
    PAYLOAD_EXTENSION,
    PAYLOAD_HEADER,
    dataref_of,
    event_model,
    keyed_hash,
    parse_dataref,
    private_model,
    redact,
    resolve_dataref,
    shape,
    thin,
)
from bus.privacy.policies import (
    POLICIES,
    RESULT_KINDS,
    ObjectPolicy,
    PrivacyError,
    Subject,
    command_subject,
    subject_of,
)

__all__ = [
    "ALGORITHM",
    "ERASED",
    "PAYLOAD_EXTENSION",
    "PAYLOAD_HEADER",
    "POLICIES",
    "RESULT_KINDS",
    "AliasRecord",
    "Batch",
    "DataKeyRecord",
    "Decryptor",
    "EncryptedField",
    "Encryptor",
    "ErasedField",
    "ErasedMarker",
    "KeyRecord",
    "KeyRing",
    "MasterKey",
    "ObjectPolicy",
    "Opened",
    "PrivacyError",
    "Subject",
    "command_subject",
    "dataref_of",
    "event_model",
    "find_kids",
    "keyed_hash",
    "parse_dataref",
    "parse_key_record",
    "private_model",
    "redact",
    "resolve_dataref",
    "seal_command",
    "shape",
    "subject_of",
    "thin",
]
