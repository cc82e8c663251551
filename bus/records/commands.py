"""The command and result messages of the six Dastra actions: the bus contract.

Consumes nothing; defines what producers put on `dastra.commands.<action>.v1` (one model per
action, Dastra's DTO field names in camelCase plus an optional `workspaceId`) and what the agents
put on `dastra.command-results.v1`. The webhook validates HTTP bodies with these same models; the
JSON Schemas under schemas/ are generated from them.

    command = parse_command("create-task", {"label": "Answer the request", "priority": "High"})
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self
from uuid import UUID

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "ACTOR_ACTIONS",
    "COMMAND_MODELS",
    "COMMAND_TYPE_PREFIX",
    "RESULT_FAILED",
    "RESULT_SUCCEEDED",
    "Command",
    "CommandError",
    "CommandResult",
    "CreateActor",
    "CreateRightsRequest",
    "CreateTask",
    "FindOrCreateActor",
    "LinkActorToProcessing",
    "SearchActors",
    "TagRef",
    "actor_identity",
    "actor_record_key",
    "command_record_key",
    "command_type",
    "parse_command",
    "processing_record_key",
]

# Dastra's enumerations as its API documents them (dastra-api.md §3). Commands are what we send
# to Dastra, so they are strict here; events coming from Dastra tolerate unknown values.
Priority = Literal["High", "Medium", "Low"]
TaskState = Literal["Open", "Active", "Closed", "Archived"]
TaskObjectType = Literal[
    "DataProcessing",
    "DataSubject",
    "DataBreach",
    "AuditResponse",
    "Actor",
    "Asset",
    "DataRetentionRule",
    "RiskEvaluation",
    "ControlPoint",
    "SecurityMeasure",
]
ActorType = Literal["Physical", "Morale"]
VendorType = Literal["B2B", "B2C"]
AccessLevel = Literal["None", "Restricted", "Full"]
Purpose = Literal[
    "Unknown",
    "Information",
    "Access",
    "Rectification",
    "Erasure",
    "Restriction",
    "Opposition",
    "Portability",
    "AdvanceDirectives",
    "AutomatedDecision",
]
Channel = Literal["Internal", "Form", "Widget", "POP3", "IMAP", "Import", "Zapier", "IncomingEmail"]
PersonCategory = Literal[
    "Prospect",
    "Client",
    "FormerClient",
    "ParticularPerson",
    "Employee",
    "Candidate",
    "ExternalProvider",
    "ExternalServiceProvider",
    "Other",
    "TemporaryWorker",
    "Agent",
    "ElectedRepresentative",
    "PublicServiceUser",
    "Visitors",
    "OldEmployee",
    "EndUsers",
    "Citizen",
    "Patient",
    "HealthProfessional",
    "Students",
    "AgedPeople",
    "Member",
    "Beneficiary",
    "Child",
    "InternetUsers",
]
ProcessingActorRole = Literal["Recipient", "DataController", "Stakeholder", "Referent"]
RecipientType = Literal[
    "InternalService",
    "Vendor",
    "ThirdParty",
    "JointController",
    "DataSubject",
    "PublicOrganism",
    "InstitutionalPartner",
    "AuthorizedThirdParty",
]
JobTitle = Literal[
    "Other",
    "JointController",
    "DataProtectionOfficerRepresentative",
    "DataController",
    "DataProtectionOfficer",
    "ProcessImplementationManager",
    "Processor",
    "DataControllerRepresentative",
    "Referent",
    "ChiefInformationSecurityOfficer",
]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _email(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not _EMAIL.match(value):
        raise ValueError("not an e-mail address")
    return value


# Command members: camelCase on the wire, unknown members refused, text stripped.
_STRICT = ConfigDict(
    extra="forbid",
    frozen=True,
    alias_generator=to_camel,
    populate_by_name=True,
    str_strip_whitespace=True,
)


class TagRef(BaseModel):
    """A tag to put on the created object, by label (Dastra's TagDto without its type, which the
    action gives: DataSubject, Task or Actor). A plain string is a label too."""

    model_config = _STRICT

    label: str = Field(min_length=1, max_length=360)
    color: str | None = Field(default=None, max_length=10, description="e.g. #ff8800")
    id: int | None = Field(default=None, ge=1, description="An existing tag's id.")


TagLabel = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=360)]
Tags = Annotated[
    list[TagLabel | TagRef],
    Field(max_length=50, description="Tags by label (a string) or as {label, color, id}."),
]


def _keys_by_pattern(schema: dict[str, Any]) -> None:
    # Pydantic writes a constrained key as patternProperties, which leaves other keys unchecked
    # and which code generators (quicktype) read as a closed object: propertyNames says it. The
    # values as "not an object", which generators type as a value of any type: an encrypted
    # customFields is an object too, and TypeScript cannot merge it with a typed index
    # signature. The model's finer limits (lengths, a list of strings) are in the description.
    [(pattern, _values)] = schema.pop("patternProperties").items()
    schema["propertyNames"] = {"pattern": pattern}
    schema["additionalProperties"] = {
        "not": {"type": "object"},
        "description": "Text (at most 4 000 characters), a number, true or false, the options "
        "chosen (a list of at most 100 strings of at most 500 characters), or null.",
    }


# A rights request's custom fields, as Dastra's API carries them (`customFields`, an object of
# the workspace's custom-field slugs): a slug names the field, the value is text, a number, a
# yes/no, the options chosen, or null to leave it empty.
CustomFieldSlug = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
CustomFieldValue = (
    Annotated[str, StringConstraints(max_length=4000)]
    | int
    | float
    | bool
    | Annotated[list[Annotated[str, StringConstraints(max_length=500)]], Field(max_length=100)]
    | None
)
CustomFields = Annotated[
    dict[CustomFieldSlug, CustomFieldValue],
    Field(
        max_length=100,
        description="The workspace's custom fields of rights requests, by slug.",
        json_schema_extra=_keys_by_pattern,
    ),
]


class Command(BaseModel):
    """Fields every command has. Unknown fields are refused: a typo must not be lost silently."""

    model_config = _STRICT

    workspace_id: int | None = Field(
        default=None, ge=1, description="The Dastra workspace; default from configuration."
    )

    def __repr_args__(self) -> Any:
        # Commands carry personal data (names, e-mails): a repr (and so a log line or a
        # traceback) names the fields that are set, never their values.
        yield "workspace_id", self.workspace_id
        yield "fields", sorted(self.model_fields_set - {"workspace_id"})

    # Dastra's TagType of the object the command creates (its tags carry it).
    tag_type: ClassVar[str | None] = None

    def dastra_body(self) -> dict[str, Any]:
        """The body of the Dastra API call: Dastra's field names, unset fields left out; tags
        as Dastra's TagDto."""
        body = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"workspace_id"}
        )
        if "tags" in body:
            body["tags"] = [
                {**({"label": tag} if isinstance(tag, str) else tag), "type": self.tag_type}
                for tag in body["tags"]
            ]
        return body


class CreateTask(Command):
    """Create a task (an action of the action plan), optionally attached to a record."""

    label: str = Field(min_length=1, max_length=120)
    description_html: str | None = Field(
        default=None, validation_alias=AliasChoices("descriptionHtml", "description")
    )
    deadline: datetime | None = None
    priority: Priority | None = None
    state: TaskState | None = None
    area_id: int | None = Field(default=None, ge=1)
    assigned_to_user_id: int | None = Field(default=None, ge=1)
    owner_id: int | None = Field(default=None, ge=1)
    work_flow_step_id: int | None = Field(default=None, ge=1)
    parent_id: int | None = Field(default=None, ge=1)
    object_type: TaskObjectType | None = None
    object_id: str | None = Field(default=None, min_length=1, max_length=100)
    color: str | None = Field(default=None, max_length=20)
    tags: Tags | None = None
    additional_datas: dict[str, Any] | None = None

    tag_type: ClassVar[str | None] = "Task"

    @field_validator("object_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _object_pair(self) -> Self:
        if (self.object_type is None) != (self.object_id is None):
            raise ValueError("objectType and objectId go together: give both or neither")
        return self


class _ActorFields(Command):
    actor_type: ActorType | None = None
    company_name: str | None = Field(default=None, min_length=1, max_length=250)
    given_name: str | None = Field(default=None, min_length=1, max_length=180)
    family_name: str | None = Field(default=None, min_length=1, max_length=180)
    email: str | None = Field(default=None, max_length=255)
    phone_number: str | None = Field(default=None, max_length=20)
    country_code: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    address: str | None = None
    zip_code: str | None = Field(default=None, max_length=10)
    city: str | None = Field(default=None, max_length=300)
    website_url: str | None = Field(default=None, max_length=500)
    logo_url: str | None = Field(default=None, max_length=2000)
    description: str | None = None
    contact_name: str | None = Field(default=None, max_length=250)
    contact_position: str | None = Field(default=None, max_length=150)
    immatriculation_number: str | None = Field(default=None, max_length=100)
    vendor_type: VendorType | None = None
    access_level: AccessLevel | None = None
    dpa_signature_date: datetime | None = None
    tags: Tags | None = None

    tag_type: ClassVar[str | None] = "Actor"

    _check_email = field_validator("email")(_email)

    @property
    def kind(self) -> ActorType:
        """The actor type, given or inferred: a company name makes a legal person."""
        if self.actor_type is not None:
            return self.actor_type
        return "Morale" if self.company_name else "Physical"

    def dastra_body(self) -> dict[str, Any]:
        return {**super().dastra_body(), "actorType": self.kind}

    @model_validator(mode="after")
    def _person_or_company(self) -> Self:
        kind = self.kind
        if kind == "Morale" and not self.company_name:
            raise ValueError("a legal person (actorType Morale) needs companyName")
        if kind == "Physical" and not (self.given_name or self.family_name):
            raise ValueError("a natural person (actorType Physical) needs givenName or familyName")
        return self


class CreateActor(_ActorFields):
    """Create an actor: a legal person (`companyName`) or a natural person (names)."""


class FindOrCreateActor(_ActorFields):
    """Find an actor by e-mail (else company name); create it when nothing matches."""

    @model_validator(mode="after")
    def _searchable(self) -> Self:
        if not (self.email or self.company_name):
            raise ValueError("find-or-create needs email or companyName to search by")
        return self


def actor_identity(command: Any) -> str | None:
    """The natural key of an actor command, normalised: `email:<address>` (stripped,
    lower-cased), else `company:<name>` (runs of spaces made one, lower-cased), else
    `names:<given>/<family>` (the same); None when the command names no actor.

    The one definition of "the same actor": the agents run commands with the same identity one
    after the other (`consumers.actions.actor_lane_key`) and the webhook keys their records by
    it (`actor_record_key`), so that they share a partition whichever worker owns it.
    """
    email = getattr(command, "email", None)
    if email:
        return f"email:{email.strip().lower()}"
    company = getattr(command, "company_name", None)
    if company:
        return f"company:{_folded(company)}"
    given = getattr(command, "given_name", None)
    family = getattr(command, "family_name", None)
    if given or family:
        return f"names:{_folded(given or '')}/{_folded(family or '')}"
    return None


def actor_record_key(command: Any) -> bytes | None:
    """The Kafka key of a create-actor or find-or-create-actor command: `actor:` and the hex
    SHA-256 of its `actor_identity` (a pseudonym: no e-mail or name in clear in the key);
    None when the command names no actor. Other producers key actor commands the same way."""
    identity = actor_identity(command)
    if identity is None:
        return None
    return f"actor:{hashlib.sha256(identity.encode()).hexdigest()}".encode()


def processing_record_key(command: Any) -> bytes:
    """The Kafka key of a link-actor-to-processing command: `processing:` and the processing
    activity's id (a uuid, lower case). Links to one processing then run on one worker, one
    at a time, so each reads the links the one before made (Dastra may not drop a duplicate)."""
    return f"processing:{command.data_processing_id}".encode()


ACTOR_ACTIONS = frozenset({"create-actor", "find-or-create-actor"})
LINK_ACTION = "link-actor-to-processing"


def command_record_key(action: str, command: Command | Mapping[str, Any], command_id: str) -> bytes:
    """The Kafka key our producers (webhook, recipes) give a command: the actor's
    `actor_record_key` for create-actor and find-or-create-actor, so that commands for one actor
    share a partition and so one worker; the processing's `processing_record_key` for
    link-actor-to-processing; otherwise (or when the command is invalid or names no actor) the
    command id."""
    if action not in ACTOR_ACTIONS and action != LINK_ACTION:
        return command_id.encode()
    if not isinstance(command, Command):
        try:
            command = parse_command(action, command)
        except ValidationError:
            return command_id.encode()
    if action == LINK_ACTION:
        return processing_record_key(command)
    return actor_record_key(command) or command_id.encode()


def _folded(text: str) -> str:
    return " ".join(text.split()).lower()


class CreateRightsRequest(Command):
    """Create a data subject rights request."""

    title: str = Field(min_length=1, max_length=500)
    locale: str = Field(default="en", min_length=2, max_length=10)
    area_id: int | None = Field(
        default=None, ge=1, description="The organisational unit; default from configuration."
    )
    purposes: list[Purpose] = Field(min_length=1)
    email: str | None = Field(default=None, max_length=255)
    given_name: str | None = Field(default=None, max_length=180)
    family_name: str | None = Field(default=None, max_length=180)
    phone_number: str | None = Field(default=None, max_length=60)
    address: str | None = Field(default=None, max_length=350)
    zip_code: str | None = Field(default=None, max_length=8)
    city: str | None = Field(default=None, max_length=255)
    country_code: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    description: str | None = None
    message: str | None = None
    channel: Channel | None = None
    person_category: PersonCategory | None = None
    complex: bool | None = None
    ref_id: str | None = Field(
        default=None,
        max_length=355,
        description="Your correlation id; the command id when absent (natural key).",
    )
    user_id: str | None = Field(default=None, max_length=355)
    work_flow_step_id: int | None = Field(
        default=None, ge=1, description="The workflow step; Dastra's first step when absent."
    )
    operator_id: int | None = Field(
        default=None, ge=1, description="The user who handles the request."
    )
    expiry_time: datetime | None = Field(
        default=None, description="The legal deadline; Dastra computes it when absent."
    )
    tags: Tags | None = None
    custom_fields: CustomFields | None = None
    additional_datas: dict[str, Any] | None = None

    tag_type: ClassVar[str | None] = "DataSubject"

    _check_email = field_validator("email")(_email)


class LinkActorToProcessing(Command):
    """Link one or more actors to an existing processing activity, in a role."""

    actor_ids: list[int] = Field(min_length=1, validation_alias=AliasChoices("actorIds", "actorId"))
    data_processing_id: UUID = Field(
        validation_alias=AliasChoices("dataProcessingId", "processingId")
    )
    type: ProcessingActorRole = "Recipient"
    recipient_type: RecipientType | None = None
    job_title: JobTitle | None = None
    label: str | None = Field(default=None, max_length=250)
    description: str | None = None

    @field_validator("actor_ids", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("actor_ids")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if any(actor_id < 1 for actor_id in value):
            raise ValueError("actor ids are positive integers")
        return list(dict.fromkeys(value))


class SearchActors(Command):
    """Search actors by free text, e-mail or company name; best match first."""

    q: str | None = Field(default=None, min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=255)
    company_name: str | None = Field(default=None, min_length=1, max_length=250)
    limit: int = Field(default=10, ge=1, le=100)

    _check_email = field_validator("email")(_email)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.q or self.email or self.company_name):
            raise ValueError("search by at least one of q, email or companyName")
        return self


COMMAND_MODELS: dict[str, type[Command]] = {
    "create-task": CreateTask,
    "create-actor": CreateActor,
    "create-rights-request": CreateRightsRequest,
    "link-actor-to-processing": LinkActorToProcessing,
    "search-actors": SearchActors,
    "find-or-create-actor": FindOrCreateActor,
}


def parse_command(action: str, data: Any) -> Command:
    """Validate `data` as a command of `action`; raise `KeyError` (unknown action) or
    `ValidationError` (field errors)."""
    return COMMAND_MODELS[action].model_validate(data)


# A command's CloudEvents type is `eu.dastra.command.<action>`; a command topic accepts its own.
COMMAND_TYPE_PREFIX = "eu.dastra.command."


def command_type(action: str) -> str:
    """The CloudEvents type (`ce_type`) of a command of `action`, e.g.
    `eu.dastra.command.create-task`: the only type `dastra.commands.<action>.v1` accepts."""
    return COMMAND_TYPE_PREFIX + action


RESULT_SUCCEEDED = "eu.dastra.command.succeeded"
RESULT_FAILED = "eu.dastra.command.failed"


class CommandError(BaseModel):
    """Why a command failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(description="e.g. invalid-command, dastra-rejected, retries-exhausted")
    message: str
    status: int | None = Field(default=None, description="Dastra's HTTP status, when it answered")
    field_errors: dict[str, list[str]] = Field(default_factory=dict)


class CommandResult(BaseModel):
    """The one result of a command on dastra.command-results.v1 (key = command id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str
    action: str
    status: Literal["succeeded", "failed"]
    workspace_id: int | None = None
    result: dict[str, Any] | list[dict[str, Any]] | None = Field(
        default=None, description="The Dastra object(s); a search gives a list, best match first"
    )
    error: CommandError | None = None
    attempts: int = Field(ge=0)
    received_at: datetime
    completed_at: datetime
    source_topic: str
    source_partition: int
    source_offset: int
