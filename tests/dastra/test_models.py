"""The models: Dastra's camelCase names (checked against the spec), unknown members and enum
values kept, and `.raw` is the very object Dastra returned."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from dastra.models import (
    Actor,
    ActorCreate,
    ActorProcessingLink,
    Area,
    DastraModel,
    DataProcessing,
    Page,
    ProcessingActor,
    Purpose,
    RightsRequest,
    RightsRequestCreate,
    RightsRequestState,
    Tag,
    Task,
    TaskCreate,
    User,
    UserLight,
    WorkflowStep,
    Workspace,
)
from dastra.spec import load_spec

_SCHEMAS: list[tuple[type[DastraModel], str]] = [
    (RightsRequest, "DataSubjectRequestDto"),
    (RightsRequestCreate, "DataSubjectRequestDto"),
    (Task, "TaskDto"),
    (TaskCreate, "TaskCreateUpdateDto"),
    (Actor, "ActorDto"),
    (ActorCreate, "ActorDto"),
    (ActorProcessingLink, "ActorDataProcessingBatchDto"),
    (ProcessingActor, "DataProcessingActorDto"),
    (DataProcessing, "DataProcessingDto"),
    (Area, "AreaDto"),
    (Workspace, "WorkSpaceDto"),
    (User, "UserDto"),
    (UserLight, "UserLightDto"),
    (Tag, "TagDto"),
    (WorkflowStep, "WorkFlowStepDto"),
]


@pytest.mark.parametrize(("model", "schema"), _SCHEMAS, ids=[m.__name__ for m, _ in _SCHEMAS])
def test_every_alias_is_a_property_of_the_dastra_schema(
    model: type[DastraModel], schema: str
) -> None:
    properties = set(load_spec().properties(schema))
    aliases = {field.alias or name for name, field in model.model_fields.items()}
    assert aliases - properties == set()


def test_names_unknown_members_and_enums() -> None:
    data: dict[str, Any] = {
        "id": 7,
        "state": "Open",
        "purposes": ["Access", "SomethingNew"],
        "subjectCategoryId": 12,
        "customFields": {"crm": "x"},
        "workFlowStepId": 3,
    }
    request = RightsRequest.from_api(data)
    assert request.state is RightsRequestState.OPEN and request.state == "Open"
    assert request.purposes == [Purpose.ACCESS, "SomethingNew"]
    assert request.work_flow_step_id == 3 and request.model_extra == {"subjectCategoryId": 12}
    assert request.custom_fields == {"crm": "x"}
    assert request.raw is data
    assert RightsRequest(id=7, area_id=2).to_api() == {"id": 7, "areaId": 2}


def test_nested_and_paged_objects_keep_their_raw_json() -> None:
    item = {"id": 1, "area": {"id": 2, "label": "HR", "brandNew": 1}, "title": "t"}
    page_data = {"items": [item], "total": 1, "size": 20, "page": 1}
    page = Page[RightsRequest].from_api(page_data)
    assert page.raw is page_data and page.items[0].raw is item
    assert page.items[0].area is not None and page.items[0].area.raw is item["area"]


def test_bodies_serialise_to_dastra_json() -> None:
    processing = uuid.uuid4()
    assert ActorProcessingLink(actor_ids=[1, 2], data_processing_id=processing).to_api() == {
        "actorIds": [1, 2],
        "dataProcessingId": str(processing),
        "type": "Recipient",
    }
    body = RightsRequestCreate(
        title="t", locale="fr", area_id=1, purposes=["Access"], ref_id="r", dateDemand="2024"
    )
    assert body.to_api() == {
        "title": "t",
        "locale": "fr",
        "areaId": 1,
        "purposes": ["Access"],
        "refId": "r",
        "dateDemand": "2024",  # a newer Dastra member passes through
    }
    assert TaskCreate.model_validate({"label": "x", "objectType": "DataSubject"}).to_api() == {
        "label": "x",
        "objectType": "DataSubject",
    }
