"""The payload modes of the bus: full, redacted, thin and encrypted.

Consumes a Dastra object (or a command's data) and the deployment's mode. Produces the payload
that goes on the topic: `redact` (personal fields replaced by `hmac-sha256:<hex>` keyed hashes or
removed), `thin` (ids, state, dates and a `dataref`, the API path to resolve with your own
credentials), `shape` (any mode, the encrypted one through a `crypto.Batch`), and the pydantic
models of private payloads (`private_model`, `event_model`) the contracts publish.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field, create_model

from bus.privacy.crypto import Batch, EncryptedField, ErasedField
from bus.privacy.policies import (
    DROP,
    EMAIL_FIELDS,
    POLICIES,
    ObjectPolicy,
    PrivacyError,
    Subject,
    normalised,
    subject_of,
    walk,
)
from bus.settings import PayloadMode

# The payload mode travels as a CloudEvents extension attribute (binary mode: this header).
# Absent means `full`.
PAYLOAD_EXTENSION = "dastrapayload"
PAYLOAD_HEADER = f"ce_{PAYLOAD_EXTENSION}"
_HASH_PREFIX = "hmac-sha256:"


def keyed_hash(value: Any, key: bytes, *, email: bool = False) -> str:
    """The `redacted` mode's pseudonym of a value: `hmac-sha256:<hex>` of the value (strings
    stripped; e-mails also lower-cased; anything else as canonical JSON). Compute it on your own
    data, with the same PRIVACY_HASH_KEY, to join with redacted events.

        keyed_hash(" Jeanne@Example.org", key, email=True) == keyed_hash("jeanne@example.org", ...)
    """
    digest = hmac.new(key, normalised("email" if email else "", value), hashlib.sha256)
    return _HASH_PREFIX + digest.hexdigest()


def redact(kind: str, obj: Any, *, key: bytes | None, remove: bool = False) -> Any:
    """`obj` with its personal fields replaced by keyed hashes (`remove`: left out).

    redact("rights_request", obj, key=b"...")["email"]  # 'hmac-sha256:9f0c...'
    """
    if not remove and key is None:
        raise PrivacyError("redacted mode with hashes needs PRIVACY_HASH_KEY")

    def hashed(_policy: ObjectPolicy, name: str, value: Any) -> Any:
        if remove:
            return DROP
        assert key is not None
        return keyed_hash(value, key, email=name in EMAIL_FIELDS)

    return walk(kind, obj, hashed)


def dataref_of(kind: str, workspace_id: int, object_id: Any) -> str:
    """The Dastra API path of an object: `/v1/ws/{ws}/DataSubjectRequests/{id}`."""
    collection = POLICIES[kind].collection
    if collection is None:
        raise PrivacyError(f"{kind} objects have no Dastra collection")
    return f"/v1/ws/{workspace_id}/{collection}/{object_id}"


def parse_dataref(dataref: str) -> tuple[int, str, str]:
    """`/v1/ws/12/Tasks/918` -> (12, "Tasks", "918"); `PrivacyError` for anything else."""
    match = re.fullmatch(r"/v1/ws/([0-9]+)/([A-Za-z]+)/([^/]+)", dataref)
    if match is None:
        raise PrivacyError("not a Dastra object path: /v1/ws/{ws}/{collection}/{id}")
    return int(match.group(1)), match.group(2), match.group(3)


def thin(kind: str, obj: Any, *, workspace_id: int) -> Any:
    """Only ids, type, workspace, state and dates of `obj`, plus its `dataref`.

    thin("task", task, workspace_id=12)  # {"id": 918, "state": "Open", ..., "dataref": "/v1/..."}
    """
    if isinstance(obj, list):
        return [thin(kind, item, workspace_id=workspace_id) for item in obj]
    policy = POLICIES[kind]
    if not isinstance(obj, Mapping) or policy.collection is None:
        return obj
    out = {name: value for name, value in obj.items() if name in policy.thin}
    if "id" in obj:
        out["dataref"] = dataref_of(kind, workspace_id, obj["id"])
    return out


async def resolve_dataref(dastra: Any, dataref: str) -> dict[str, Any]:
    """Fetch the object a thin payload points to, with your own `DastraClient`.

    full = await resolve_dataref(client, event["dataref"])
    """
    ws, collection, object_id = parse_dataref(dataref)
    getters = {
        "DataSubjectRequests": dastra.get_rights_request,
        "Tasks": dastra.get_task,
        "Actors": dastra.get_actor,
    }
    if collection not in getters:
        raise PrivacyError(f"unknown collection {collection}")
    found = await getters[collection](ws, object_id)
    raw: dict[str, Any] = found.raw
    return raw


# --- one entry point per mode ------------------------------------------------------------------


def shape(
    mode: PayloadMode,
    kind: str,
    obj: Any,
    *,
    workspace_id: int,
    hash_key: bytes | None = None,
    remove: bool = False,
    batch: Batch | None = None,
    subject: Callable[[Mapping[str, Any]], Subject] | None = None,
) -> Any:
    """The payload of `obj` (an object of `kind`, or a list) in `mode`. `encrypted` needs a
    `batch`; each object's subject is `subject(obj)` (default: `subject_of`)."""
    if mode == "full":
        return obj
    if mode == "redacted":
        return redact(kind, obj, key=hash_key, remove=remove)
    if mode == "thin":
        return thin(kind, obj, workspace_id=workspace_id)
    if batch is None:
        raise PrivacyError("encrypted mode needs PRIVACY_MASTER_KEY")
    if isinstance(obj, list):
        return [
            shape(mode, kind, item, workspace_id=workspace_id, batch=batch, subject=subject)
            for item in obj
        ]
    if not isinstance(obj, Mapping):
        return obj
    who = subject(obj) if subject is not None else subject_of(kind, obj, workspace_id)
    return batch.seal(kind, obj, who)


# --- schemas -----------------------------------------------------------------------------------


def _widen(annotation: Any) -> Any:
    return annotation | EncryptedField | ErasedField


def private_model(kind: str, base: type[BaseModel], nested: Mapping[str, Any]) -> type[BaseModel]:
    """`base` whose personal fields (per `POLICIES[kind]`) also accept an encrypted or erased
    field, and whose nested members use the models in `nested` (by member name): the schema of
    a payload in any mode. Same model name, so generated schemas keep their definitions."""
    policy = POLICIES[kind]
    overrides: dict[str, Any] = {}
    for name, info in base.model_fields.items():
        member = info.alias or name
        personal = member in policy.personal or member in policy.natural_person_only
        if personal:
            overrides[name] = (_widen(info.annotation), info)
        elif member in nested:
            overrides[name] = (nested[member] | None, info)
    model: type[BaseModel] = create_model(
        base.__name__, __base__=base, __doc__=base.__doc__, **overrides
    )
    return model


def event_model(kind: str, base: type[BaseModel], user: type[BaseModel]) -> type[BaseModel]:
    """The schema of an event's data in every payload mode: personal fields may be encrypted
    or erased; thin payloads add `dataref`; `truncated` marks an object too large for Kafka."""
    policy = POLICIES[kind]
    private_user = private_model("user", user, {})
    nested = {member: private_user for member, inner in policy.nested.items() if inner == "user"}
    widened = private_model(kind, base, nested)
    extra: dict[str, Any] = {
        "dataref": (
            str | None,
            Field(
                default=None,
                description="Thin payloads and oversized objects: the Dastra API path of the "
                "object (`/v1/ws/{ws}/<collection>/{id}`), to fetch with your own credentials",
            ),
        ),
        "truncated": (
            bool | None,
            Field(default=None, description="True: the object was too large for a record"),
        ),
    }
    model: type[BaseModel] = create_model(
        base.__name__, __base__=widened, __doc__=base.__doc__, **extra
    )
    return model
