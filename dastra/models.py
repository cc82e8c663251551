"""Pydantic models of the Dastra objects we read and the bodies we send.

Consumes Dastra's JSON (camelCase members, more of them than the spec lists) and produces typed
objects with snake_case attributes. Every model:

- accepts both the Python name and Dastra's camelCase alias (`area_id=` or `"areaId"`);
- keeps unknown members (`extra="allow"`): the live API is newer than its spec;
- takes any string for an enum field: known values become the `StrEnum` member (which compares
  equal to its string), unknown ones stay plain strings;
- gives `.raw`: for an object the client received, the *exact* JSON object Dastra returned
  (same dict, dates not re-formatted); otherwise `to_api()`. Treat `.raw` as read-only.

    task = await dastra.get_task(ws, 42)
    task.state == TaskState.OPEN, task.raw["dateCreation"]      # as Dastra wrote it
    TaskCreate(label="Call back", area_id=3).to_api()            # {"label": ..., "areaId": 3}
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Self, TypeVar
from uuid import UUID

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "AccessLevel",
    "Actor",
    "ActorCreate",
    "ActorProcessingLink",
    "ActorType",
    "Area",
    "AreaType",
    "ClosedReason",
    "DastraModel",
    "DataProcessing",
    "DataProcessingActorType",
    "DataProcessingState",
    "JobTitle",
    "Page",
    "PersonCategory",
    "Priority",
    "ProcessingActor",
    "ProcessingType",
    "Purpose",
    "RecipientType",
    "RightsRequest",
    "RightsRequestChannel",
    "RightsRequestCreate",
    "RightsRequestState",
    "Tag",
    "Task",
    "TaskCreate",
    "TaskObjectType",
    "TaskState",
    "User",
    "UserLight",
    "UserRole",
    "VendorType",
    "WorkflowStep",
    "Workspace",
    "WorkspaceState",
]

_RAW = "dastra_raw"


# --- enums: the values the spec knows (fields also accept any other string) -------------------


class RightsRequestState(StrEnum):
    """DataSubjectRequestState."""

    OPEN = "Open"
    IDENTITY_VALIDATION = "IdentityValidation"
    PROCESSING = "Processing"
    ACTIVE = "Active"
    CLOSED = "Closed"


class Purpose(StrEnum):
    """DataSubjectPurposeType: the right exercised."""

    UNKNOWN = "Unknown"
    INFORMATION = "Information"
    ACCESS = "Access"
    RECTIFICATION = "Rectification"
    ERASURE = "Erasure"
    RESTRICTION = "Restriction"
    OPPOSITION = "Opposition"
    PORTABILITY = "Portability"
    ADVANCE_DIRECTIVES = "AdvanceDirectives"
    AUTOMATED_DECISION = "AutomatedDecision"


class RightsRequestChannel(StrEnum):
    """DataSubjectRequestSource: how the request arrived."""

    INTERNAL = "Internal"
    FORM = "Form"
    WIDGET = "Widget"
    POP3 = "POP3"
    IMAP = "IMAP"
    IMPORT = "Import"
    ZAPIER = "Zapier"
    INCOMING_EMAIL = "IncomingEmail"


class ClosedReason(StrEnum):
    NONE = "None"
    ACCEPTED = "Accepted"
    DUPLICATE = "Duplicate"
    WRONG_IDENTITY = "WrongIdentity"
    NOT_ADMISSIBLE = "NotAdmissible"
    OTHER = "Other"
    CANCELLED = "Cancelled"
    FILED_AWAY = "FiledAway"


class PersonCategory(StrEnum):
    """PersonCategoryType: who the requester is."""

    PROSPECT = "Prospect"
    CLIENT = "Client"
    FORMER_CLIENT = "FormerClient"
    PARTICULAR_PERSON = "ParticularPerson"
    EMPLOYEE = "Employee"
    CANDIDATE = "Candidate"
    EXTERNAL_PROVIDER = "ExternalProvider"
    EXTERNAL_SERVICE_PROVIDER = "ExternalServiceProvider"
    OTHER = "Other"
    TEMPORARY_WORKER = "TemporaryWorker"
    AGENT = "Agent"
    ELECTED_REPRESENTATIVE = "ElectedRepresentative"
    PUBLIC_SERVICE_USER = "PublicServiceUser"
    VISITORS = "Visitors"
    OLD_EMPLOYEE = "OldEmployee"
    END_USERS = "EndUsers"
    CITIZEN = "Citizen"
    PATIENT = "Patient"
    HEALTH_PROFESSIONAL = "HealthProfessional"
    STUDENTS = "Students"
    AGED_PEOPLE = "AgedPeople"
    MEMBER = "Member"
    BENEFICIARY = "Beneficiary"
    CHILD = "Child"
    INTERNET_USERS = "InternetUsers"


class TaskState(StrEnum):
    OPEN = "Open"
    ACTIVE = "Active"
    CLOSED = "Closed"
    ARCHIVED = "Archived"


class Priority(StrEnum):
    HIGH = "High"
    MEDIUM = "Medium"
    LOW = "Low"


class TaskObjectType(StrEnum):
    """What a task is attached to (`objectType` + `objectId`)."""

    DATA_PROCESSING = "DataProcessing"
    DATA_SUBJECT = "DataSubject"
    DATA_BREACH = "DataBreach"
    AUDIT_RESPONSE = "AuditResponse"
    ACTOR = "Actor"
    ASSET = "Asset"
    DATA_RETENTION_RULE = "DataRetentionRule"
    RISK_EVALUATION = "RiskEvaluation"
    CONTROL_POINT = "ControlPoint"
    SECURITY_MEASURE = "SecurityMeasure"


class ActorType(StrEnum):
    PHYSICAL = "Physical"
    MORALE = "Morale"  # a legal person


class VendorType(StrEnum):
    B2B = "B2B"
    B2C = "B2C"


class AccessLevel(StrEnum):
    NONE = "None"
    RESTRICTED = "Restricted"
    FULL = "Full"


class DataProcessingActorType(StrEnum):
    """The role an actor plays in a processing activity."""

    RECIPIENT = "Recipient"
    DATA_CONTROLLER = "DataController"
    STAKEHOLDER = "Stakeholder"
    REFERENT = "Referent"


class RecipientType(StrEnum):
    INTERNAL_SERVICE = "InternalService"
    VENDOR = "Vendor"
    THIRD_PARTY = "ThirdParty"
    JOINT_CONTROLLER = "JointController"
    DATA_SUBJECT = "DataSubject"
    PUBLIC_ORGANISM = "PublicOrganism"
    INSTITUTIONAL_PARTNER = "InstitutionalPartner"
    AUTHORIZED_THIRD_PARTY = "AuthorizedThirdParty"


class JobTitle(StrEnum):
    OTHER = "Other"
    JOINT_CONTROLLER = "JointController"
    DATA_PROTECTION_OFFICER_REPRESENTATIVE = "DataProtectionOfficerRepresentative"
    DATA_CONTROLLER = "DataController"
    DATA_PROTECTION_OFFICER = "DataProtectionOfficer"
    PROCESS_IMPLEMENTATION_MANAGER = "ProcessImplementationManager"
    PROCESSOR = "Processor"
    DATA_CONTROLLER_REPRESENTATIVE = "DataControllerRepresentative"
    REFERENT = "Referent"
    CHIEF_INFORMATION_SECURITY_OFFICER = "ChiefInformationSecurityOfficer"


class AreaType(StrEnum):
    ENTITY = "Entity"
    AREA = "Area"


class WorkspaceState(StrEnum):
    ACTIVE = "Active"
    ARCHIVED = "Archived"
    DELETED = "Deleted"


class DataProcessingState(StrEnum):
    ACTIVE = "Active"
    DRAFT = "Draft"
    ARCHIVED = "Archived"
    DELETED = "Deleted"


class ProcessingType(StrEnum):
    DEFAULT = "Default"
    VENDOR = "Vendor"


class UserRole(StrEnum):
    """BaseRole."""

    USER = "User"
    ADMIN = "Admin"
    SUPER_ADMIN = "SuperAdmin"
    API = "API"
    AUTHOR = "Author"
    SUPPORT = "Support"
    MARKETING = "Marketing"
    SALES = "Sales"


_E = TypeVar("_E", bound=StrEnum)


def _known(enum: type[_E]) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, StrEnum):
            try:
                return enum(value)
            except ValueError:
                return value
        return value

    return BeforeValidator(convert)


# An enum field: the member when the value is known, else the string unchanged.
RightsRequestStateValue = Annotated[RightsRequestState | str, _known(RightsRequestState)]
PurposeValue = Annotated[Purpose | str, _known(Purpose)]
RightsRequestChannelValue = Annotated[RightsRequestChannel | str, _known(RightsRequestChannel)]
ClosedReasonValue = Annotated[ClosedReason | str, _known(ClosedReason)]
PersonCategoryValue = Annotated[PersonCategory | str, _known(PersonCategory)]
TaskStateValue = Annotated[TaskState | str, _known(TaskState)]
PriorityValue = Annotated[Priority | str, _known(Priority)]
TaskObjectTypeValue = Annotated[TaskObjectType | str, _known(TaskObjectType)]
ActorTypeValue = Annotated[ActorType | str, _known(ActorType)]
VendorTypeValue = Annotated[VendorType | str, _known(VendorType)]
AccessLevelValue = Annotated[AccessLevel | str, _known(AccessLevel)]
DataProcessingActorTypeValue = Annotated[
    DataProcessingActorType | str, _known(DataProcessingActorType)
]
RecipientTypeValue = Annotated[RecipientType | str, _known(RecipientType)]
JobTitleValue = Annotated[JobTitle | str, _known(JobTitle)]
AreaTypeValue = Annotated[AreaType | str, _known(AreaType)]
WorkspaceStateValue = Annotated[WorkspaceState | str, _known(WorkspaceState)]
DataProcessingStateValue = Annotated[DataProcessingState | str, _known(DataProcessingState)]
ProcessingTypeValue = Annotated[ProcessingType | str, _known(ProcessingType)]
UserRoleValue = Annotated[UserRole | str, _known(UserRole)]


# --- base ------------------------------------------------------------------------------------


class DastraModel(BaseModel):
    """Base of every Dastra model: camelCase aliases, unknown members kept, `.raw`."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
    )

    _raw: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_raw(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Any:
        model = handler(data)
        if isinstance(data, dict) and info.context and info.context.get(_RAW):
            model._raw = data
        return model

    @classmethod
    def from_api(cls, data: Any) -> Self:
        """Parse a JSON object Dastra returned, keeping it (and nested objects) as `.raw`."""
        return cls.model_validate(data, context={_RAW: True})

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON object as Dastra returned it; for a locally built model, `to_api()`."""
        return self._raw if self._raw is not None else self.to_api()

    def to_api(self) -> dict[str, Any]:
        """The JSON body Dastra expects: camelCase, only the members that were set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# --- read models -----------------------------------------------------------------------------


class UserLight(DastraModel):
    """UserLightDto: a user as embedded in other objects (creator, owner...)."""

    id: int | None = None
    display_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    avatar_url: str | None = None
    tenant_id: int | None = None


class User(UserLight):
    """UserDto (`GET /me`, `GET /v1/TenantUsers`)."""

    role: UserRoleValue | None = None
    active: bool | None = None
    is_owner: bool | None = None
    language: str | None = None
    time_zone: str | None = None
    date_creation: datetime | None = None
    date_update: datetime | None = None


class Tag(DastraModel):
    id: int | None = None
    label: str | None = None
    type: str | None = None
    color: str | None = None


class WorkflowStep(DastraModel):
    id: int | None = None
    label: str | None = None
    color: str | None = None
    order: int | None = None
    type: str | None = None
    final_step: bool | None = None
    initial_step: bool | None = None
    mapped_state: str | None = None


class Workspace(DastraModel):
    """WorkSpaceDto."""

    id: int
    tenant_id: int | None = None
    label: str | None = None
    logo_url: str | None = None
    state: WorkspaceStateValue | None = None
    data_subject_archived_retention_days: int | None = None
    nb_entities: int | None = None


class Area(DastraModel):
    """AreaDto: an entity or organisational unit (`areaId` of rights requests and tasks)."""

    id: int
    label: str | None = None
    type: AreaTypeValue | None = None
    parent_id: int | None = None
    ref: str | None = None
    description: str | None = None
    country_code: str | None = None


class RightsRequest(DastraModel):
    """DataSubjectRequestDto: a data subject rights request ("DSR")."""

    id: int
    title: str | None = None
    locale: str | None = None
    state: RightsRequestStateValue | None = None
    channel: RightsRequestChannelValue | None = None
    purposes: list[PurposeValue] = Field(default_factory=list)
    person_category: PersonCategoryValue | None = None
    area_id: int | None = None
    area: Area | None = None
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    phone_number: str | None = None
    address: str | None = None
    zip_code: str | None = None
    city: str | None = None
    country_code: str | None = None
    ref_id: str | None = None
    user_id: str | None = None
    demand_id: str | None = None
    description: str | None = None
    message: str | None = None
    resolution_message: str | None = None
    complex: bool | None = None
    archived: bool | None = None
    closed_reason: ClosedReasonValue | None = None
    work_flow_step_id: int | None = None
    work_flow_step: WorkflowStep | None = None
    operator_id: int | None = None
    creator: UserLight | None = None
    widget_id: int | None = None
    tags: list[Tag] | None = None
    remaining_days: int | None = None
    date_creation: datetime | None = None
    date_update: datetime | None = None
    date_closed: datetime | None = None
    expiry_time: datetime | None = None
    custom_fields: dict[str, Any] | None = None  # in Dastra's docs, not in its OpenAPI document
    additional_datas: Any = None


class Task(DastraModel):
    """TaskDto: an action of the action plan."""

    id: int
    label: str | None = None
    description_html: str | None = None
    state: TaskStateValue | None = None
    priority: PriorityValue | None = None
    deadline: datetime | None = None
    area_id: int | None = None
    workspace_id: int | None = None
    owner_id: int | None = None
    assigned_to_user_id: int | None = None
    owner: UserLight | None = None
    assigned_to_user: UserLight | None = None
    creator: UserLight | None = None
    object_type: TaskObjectTypeValue | None = None
    object_id: str | None = None
    work_flow_step_id: int | None = None
    parent_id: int | None = None
    archived: bool | None = None
    tags: list[Tag] | None = None
    color: str | None = None
    date_creation: datetime | None = None
    date_update: datetime | None = None
    date_closed: datetime | None = None
    date_activated: datetime | None = None
    additional_datas: dict[str, Any] | None = None


class Actor(DastraModel):
    """ActorDto: a vendor, controller, third party, person... of the records of processing."""

    id: int
    display_name: str | None = None
    actor_type: ActorTypeValue | None = None
    vendor_type: VendorTypeValue | None = None
    access_level: AccessLevelValue | None = None
    company_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    contact_name: str | None = None
    contact_position: str | None = None
    country_code: str | None = None
    address: str | None = None
    zip_code: str | None = None
    city: str | None = None
    website_url: str | None = None
    logo_url: str | None = None
    immatriculation_number: str | None = None
    description: str | None = None
    readonly: bool | None = None
    nb_references: int | None = None
    tags: list[Tag] | None = None
    date_creation: datetime | None = None
    date_update: datetime | None = None


class ProcessingActor(DastraModel):
    """DataProcessingActorDto: one actor linked to a processing activity (`id` is the link)."""

    id: UUID | None = None
    actor_id: int | None = None
    actor: Actor | None = None
    type: DataProcessingActorTypeValue | None = None
    recipient_type: RecipientTypeValue | None = None
    job_title: JobTitleValue | None = None
    label: str | None = None
    description: str | None = None
    display_name: str | None = None


class DataProcessing(DastraModel):
    """DataProcessingDto: a processing activity of the records (`id` is a uuid)."""

    id: UUID
    label: str | None = None
    ref: str | None = None
    state: DataProcessingStateValue | None = None
    processing_type: ProcessingTypeValue | None = None
    description: str | None = None
    archived: bool | None = None
    area_id: int | None = None
    work_space_id: int | None = None
    stake_holders: list[ProcessingActor] | None = None
    recipients: list[ProcessingActor] | None = None
    data_controllers: list[ProcessingActor] | None = None
    tags: list[Tag] | None = None
    date_creation: datetime | None = None
    date_update: datetime | None = None

    def links(self) -> list[ProcessingActor]:
        """Every actor link: stakeholders, recipients and data controllers."""
        return [
            *(self.stake_holders or []),
            *(self.recipients or []),
            *(self.data_controllers or []),
        ]


_T = TypeVar("_T", bound=DastraModel)


class Page(DastraModel, Generic[_T]):
    """One page of a list: `{items, total, size, page}` (`page` is 1-based)."""

    items: list[_T] = Field(default_factory=list)
    total: int = 0
    size: int = 0
    page: int = 1


# --- bodies we send --------------------------------------------------------------------------


class RightsRequestCreate(DastraModel):
    """The body of `POST /v1/ws/{ws}/DataSubjectRequests` (DataSubjectRequestDto)."""

    title: str
    locale: str
    area_id: int
    purposes: list[PurposeValue]
    state: RightsRequestStateValue | None = None
    channel: RightsRequestChannelValue | None = None
    person_category: PersonCategoryValue | None = None
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    phone_number: str | None = None
    address: str | None = None
    zip_code: str | None = None
    city: str | None = None
    country_code: str | None = None
    ref_id: str | None = None
    user_id: str | None = None
    demand_id: str | None = None
    description: str | None = None
    message: str | None = None
    complex: bool | None = None
    work_flow_step_id: int | None = None
    operator_id: int | None = None
    expiry_time: datetime | None = None
    send_notification: bool | None = None
    tags: list[Tag] | None = None
    custom_fields: dict[str, Any] | None = None  # in Dastra's docs, not in its OpenAPI document
    additional_datas: Any = None


class TaskCreate(DastraModel):
    """The body of `POST /v1/ws/{ws}/Tasks` (TaskCreateUpdateDto)."""

    label: str
    description_html: str | None = None
    priority: PriorityValue | None = None
    state: TaskStateValue | None = None
    deadline: datetime | None = None
    area_id: int | None = None
    workspace_id: int | None = None
    owner_id: int | None = None
    assigned_to_user_id: int | None = None
    work_flow_step_id: int | None = None
    object_type: TaskObjectTypeValue | None = None
    object_id: str | None = None
    project_id: UUID | None = None
    iteration_id: UUID | None = None
    parent_id: int | None = None
    color: str | None = None
    archived: bool | None = None
    tags: list[Tag] | None = None
    additional_datas: dict[str, Any] | None = None


class ActorCreate(DastraModel):
    """The body of `POST /v1/ws/{ws}/Actors` (ActorDto): `company_name` for a legal person
    (`actor_type=Morale`), `given_name`/`family_name` for a natural one (`Physical`)."""

    actor_type: ActorTypeValue | None = None
    vendor_type: VendorTypeValue | None = None
    access_level: AccessLevelValue | None = None
    company_name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    phone_number: str | None = None
    contact_name: str | None = None
    contact_position: str | None = None
    country_code: str | None = None
    address: str | None = None
    zip_code: str | None = None
    city: str | None = None
    website_url: str | None = None
    logo_url: str | None = None
    immatriculation_number: str | None = None
    description: str | None = None
    readonly: bool | None = None
    dpa_signature_date: datetime | None = None
    tags: list[Tag] | None = None


class ActorProcessingLink(DastraModel):
    """The body of `POST /v1/ws/{ws}/DataProcessings/recipients/batch`
    (ActorDataProcessingBatchDto): link actors to one processing activity in one role."""

    actor_ids: list[int]
    data_processing_id: UUID
    type: DataProcessingActorTypeValue = DataProcessingActorType.RECIPIENT
    recipient_type: RecipientTypeValue | None = None
    job_title: JobTitleValue | None = None
    label: str | None = None
    description: str | None = None

    def to_api(self) -> dict[str, Any]:
        # `type` always travels: Dastra would otherwise default to its first enum value.
        body = super().to_api()
        body["type"] = str(self.type)
        return body
