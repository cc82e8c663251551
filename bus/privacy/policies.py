"""Which fields of each Dastra object are personal data, and whose they are.

Consumes nothing at run time: it is the one table of personal fields (README "Privacy") and the
functions that read it. Produces `POLICIES` (per object type: personal fields, nested objects,
the members a thin payload keeps), `subject_of` / `command_subject` (the data subject a payload
is about, whose key encrypts it) and `walk`, the traversal the payload modes share.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


class PrivacyError(ValueError):
    """A key or envelope is malformed, or was made with another master key."""


# --- which fields are personal -----------------------------------------------------------------


@dataclass(frozen=True)
class ObjectPolicy:
    """The personal data of one object type (Dastra's camelCase member names).

    `personal`: members whose value is personal data (free text included). `nested`: members
    holding another object (or a list of them) with its own policy. `thin`: the members a thin
    payload keeps. `natural_person_only`: personal unless the object is a legal person
    (`actorType` Morale). `collection`: the Dastra API collection, for `dataref`.
    """

    kind: str
    personal: frozenset[str]
    nested: Mapping[str, str] = field(default_factory=dict)
    thin: frozenset[str] = frozenset()
    collection: str | None = None
    natural_person_only: frozenset[str] = frozenset()

    def is_personal(self, name: str, obj: Mapping[str, Any]) -> bool:
        if name in self.natural_person_only:
            return obj.get("actorType") != "Morale"
        return name in self.personal


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_USER = ObjectPolicy("user", _names("displayName givenName familyName email avatarUrl"))
_ACTOR_FIELDS = _names(
    "givenName familyName email phoneNumber contactName address zipCode city description"
)

POLICIES: dict[str, ObjectPolicy] = {
    policy.kind: policy
    for policy in (
        _USER,
        ObjectPolicy(
            "rights_request",
            # `title`: Dastra titles name the requester ("Access request from ..."); the
            # `additionalDatas` are the answers of the request form.
            _names(
                "title email givenName familyName phoneNumber address zipCode city description "
                "message resolutionMessage closedReasonDescription userId referrerUrl "
                "additionalDatas customFields attachments"
            ),
            nested={"creator": "user", "operator": "user", "closedByUser": "user"},
            thin=_names(
                "id refId demandId areaId workFlowStepId state purposes closedReason archived "
                "dateCreation dateUpdate dateClosed expiryTime"
            ),
            collection="DataSubjectRequests",
        ),
        ObjectPolicy(
            "task",
            _names("label descriptionHtml descriptionPlainText additionalDatas"),
            nested={
                "owner": "user",
                "assignedToUser": "user",
                "creator": "user",
                "children": "task",
            },
            thin=_names(
                "id state priority objectType objectId parentId areaId workspaceId workFlowStepId "
                "ownerId assignedToUserId archived deadline dateCreation dateUpdate dateClosed "
                "dateActivated"
            ),
            collection="Tasks",
        ),
        ObjectPolicy(
            "actor",
            _ACTOR_FIELDS,
            nested={"creator": "user"},
            thin=_names("id actorType vendorType accessLevel dateCreation dateUpdate"),
            collection="Actors",
            natural_person_only=_names("displayName logoUrl"),
        ),
        # Command data (what the webhook encrypts, and what identifies a dead letter's subject).
        ObjectPolicy(
            "command.create-rights-request",
            _names(
                "title email givenName familyName phoneNumber address zipCode city description "
                "message userId additionalDatas customFields"
            ),
        ),
        ObjectPolicy("command.create-actor", _ACTOR_FIELDS, natural_person_only=_names("logoUrl")),
        ObjectPolicy(
            "command.find-or-create-actor", _ACTOR_FIELDS, natural_person_only=_names("logoUrl")
        ),
        ObjectPolicy(
            "command.create-task", _names("label descriptionHtml description additionalDatas")
        ),
        ObjectPolicy("command.search-actors", _names("q email")),
        ObjectPolicy("command.link-actor-to-processing", _names("label description")),
        # The link result holds ids only.
        ObjectPolicy("link", frozenset()),
    )
}

# The object type of each action's result (`CommandResult.result`).
RESULT_KINDS: dict[str, str] = {
    "create-task": "task",
    "create-actor": "actor",
    "find-or-create-actor": "actor",
    "create-rights-request": "rights_request",
    "search-actors": "actor",
    "link-actor-to-processing": "link",
}

# Members whose values are normalised as e-mail addresses before hashing or aliasing.
EMAIL_FIELDS = frozenset({"email"})


DROP = object()  # a replacement that leaves the member out


def walk(
    kind: str,
    obj: Any,
    personal: Callable[[ObjectPolicy, str, Any], Any],
) -> Any:
    """A copy of `obj` (an object of `kind`, or a list of them) with every personal member
    replaced by `personal(policy, name, value)` (`DROP`: left out)."""
    policy = POLICIES[kind]
    if isinstance(obj, list):
        return [walk(kind, item, personal) for item in obj]
    if not isinstance(obj, Mapping):
        return obj
    out: dict[str, Any] = {}
    for name, value in obj.items():
        if value is not None and policy.is_personal(name, obj):
            replaced = personal(policy, name, value)
            if replaced is not DROP:
                out[name] = replaced
        elif name in policy.nested and value is not None:
            out[name] = walk(policy.nested[name], value, personal)
        else:
            out[name] = value
    return out


# --- subjects ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """Whose data a record holds: `ref` names the data subject (`rr:<ws>:<id>`,
    `actor:<ws>:<id>`, `task:<ws>:<id>`, `email:<address>`, `command:<id>`); `aliases` are other
    refs of the same person (their e-mail), so `privacy erase` finds them by either."""

    ref: str
    aliases: tuple[str, ...] = ()

    @property
    def scope(self) -> Literal["object", "email", "command"]:
        """`object` subjects (a Dastra object) stay erased: new data about them is written as
        erased. E-mail and command subjects may come back (a new request after an erasure)."""
        head = self.ref.split(":", 1)[0]
        if head == "email":
            return "email"
        if head == "command":
            return "command"
        return "object"


def _email_ref(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return f"email:{value.strip().lower()}"
    return None


def subject_of(kind: str, obj: Mapping[str, Any], workspace_id: int | None) -> Subject:
    """The data subject of a Dastra object: a rights request's requester (aliased by e-mail);
    a task attached to a rights request (objectType DataSubject) belongs to that request's
    subject, one attached to an actor to that actor; an actor is its own subject."""
    ws = workspace_id if workspace_id is not None else obj.get("workspaceId", 0)
    email = _email_ref(obj.get("email"))
    aliases = (email,) if email else ()
    if kind == "rights_request":
        return Subject(f"rr:{ws}:{obj.get('id')}", aliases)
    if kind == "actor":
        return Subject(f"actor:{ws}:{obj.get('id')}", aliases)
    if kind == "task":
        object_type, object_id = obj.get("objectType"), obj.get("objectId")
        if object_type == "DataSubject" and object_id not in (None, ""):
            return Subject(f"rr:{ws}:{object_id}")
        if object_type == "Actor" and object_id not in (None, ""):
            return Subject(f"actor:{ws}:{object_id}")
        return Subject(f"task:{ws}:{obj.get('id')}")
    raise PrivacyError(f"no data subject for {kind} objects")


def command_subject(
    action: str, data: Mapping[str, Any], workspace_id: int | None, command_id: str
) -> Subject:
    """The data subject of a command: the e-mail it carries (requester, actor, search), the
    rights request a task is attached to, else the command itself."""
    if action == "create-task":
        if data.get("objectType") == "DataSubject" and data.get("objectId") and workspace_id:
            return Subject(f"rr:{workspace_id}:{data['objectId']}")
    elif action != "link-actor-to-processing":
        email = _email_ref(data.get("email"))
        if email:
            return Subject(email)
    return Subject(f"command:{command_id}")


def normalised(name: str, value: Any) -> bytes:
    if isinstance(value, str):
        text = value.strip().lower() if name in EMAIL_FIELDS else value.strip()
        return text.encode("utf-8")
    return canonical(value)


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
