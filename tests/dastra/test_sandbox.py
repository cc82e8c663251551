"""The sandbox itself over HTTP: auth, paging, sorting, filters, validation, dates, links,
rate limiting, faults, call counts, reset, SQLite persistence and the admin token."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dastra.sandbox import SandboxAdminError, SandboxServer
from dastra.sandbox.app import create_app
from dastra.sandbox.server import _uvicorn_config
from dastra.sandbox.settings import SandboxSettings
from tests.kafka_helpers import wait_for

_ISO_MS_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def api(sandbox: SandboxServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key}, timeout=10
    ) as client:
        yield client


def _dsrs(sandbox: SandboxServer) -> str:
    return f"/v1/ws/{sandbox.workspace_id}/DataSubjectRequests"


def test_authentication(sandbox: SandboxServer, api: httpx.Client) -> None:
    anonymous = httpx.get(f"{sandbox.base_url}/me")
    wrong = httpx.get(f"{sandbox.base_url}/me", headers={"X-API-Key": "nope"})
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert httpx.get(f"{sandbox.base_url}/status").status_code == 200
    assert api.get("/me").json()["role"] == "API"
    token = httpx.post(
        f"{sandbox.base_url}/connect/token",
        data={"grant_type": "client_credentials", "scope": "api1"},
        auth=(sandbox.client_id, sandbox.client_secret),
    ).json()
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert httpx.get(f"{sandbox.base_url}/me", headers=bearer).status_code == 200
    refused = httpx.post(
        f"{sandbox.base_url}/connect/token",
        data={"grant_type": "client_credentials"},
        auth=(sandbox.client_id, "wrong"),
    )
    assert refused.status_code == 400 and refused.json() == {"error": "invalid_client"}
    assert api.get("/v1/ws/999/Tasks").status_code == 403


def test_paging_and_size_limit(sandbox: SandboxServer, api: httpx.Client) -> None:
    sandbox.admin.bulk_create("rightsRequests", 45)
    url = _dsrs(sandbox)
    page = api.get(url, params={"page": 3, "size": 20, "sortBy": "id", "asc": True}).json()
    assert (page["total"], page["size"], page["page"], len(page["items"])) == (45, 20, 3, 5)
    default = api.get(url).json()
    assert default["size"] == 20 and len(default["items"]) == 20
    assert [i["id"] for i in default["items"]] == sorted(
        (i["id"] for i in default["items"]), reverse=True
    )  # newest first when asc is not given, as an omitted bool is false in ASP.NET
    skipped = api.get(url, params={"skip": 40, "size": 10, "sortBy": "id", "asc": "true"}).json()
    assert [i["id"] for i in skipped["items"]] == [i["id"] for i in page["items"]]
    too_big = api.get(url, params={"size": 501})
    assert too_big.status_code == 400
    assert too_big.json()["errors"] == {"size": ["The field size must be between 1 and 500."]}
    assert too_big.json()["title"] == "One or more validation errors occurred."
    assert api.get(url, params={"size": 500}).status_code == 200
    assert api.get(url, params={"page": "x"}).json()["errors"] == {
        "page": ["The value 'x' is not valid."]
    }


def test_ids_and_dates_are_maintained(sandbox: SandboxServer, api: httpx.Client) -> None:
    first = sandbox.admin.create_rights_request(title="One")
    second = sandbox.admin.create_rights_request(title="Two")
    assert second["id"] == first["id"] + 1
    assert _ISO_MS_UTC.match(first["dateCreation"]) and first["dateUpdate"] is None
    time.sleep(0.002)  # distinct milliseconds, so "later" is visible in the timestamps
    updated = sandbox.admin.update_rights_request(first["id"], state="Closed")
    assert _ISO_MS_UTC.match(updated["dateUpdate"])
    assert updated["dateUpdate"] > first["dateCreation"]
    assert updated["dateClosed"] == updated["dateUpdate"] and updated["state"] == "Closed"
    assert updated["workFlowStep"]["mappedState"] == "Closed"
    assert api.get(f"{_dsrs(sandbox)}/{first['id']}").json() == updated
    processing = api.get(f"/v1/ws/{sandbox.workspace_id}/DataProcessings").json()["items"][0]
    assert re.fullmatch(r"[0-9a-f-]{36}", processing["id"])
    # Deleted in the app: gone from the list and from reads.
    assert sandbox.admin.delete_rights_request(second["id"])["id"] == second["id"]
    assert api.get(f"{_dsrs(sandbox)}/{second['id']}").status_code == 404
    listed = [o["id"] for o in api.get(_dsrs(sandbox), params={"size": 500}).json()["items"]]
    assert first["id"] in listed and second["id"] not in listed
    task = sandbox.admin.create_task(label="gone soon")
    sandbox.admin.delete_task(task["id"])
    assert api.get(f"/v1/ws/{sandbox.workspace_id}/Tasks/{task['id']}").status_code == 404


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"field": "email", "operator": "equal", "value": "B@EXAMPLE.COM"}, ["b"]),
        ({"field": "email", "operator": "notEqual", "value": "b@example.com"}, ["a", "c"]),
        ({"field": "title", "operator": "contains", "value": "APPLE"}, ["a", "c"]),
        ({"field": "title", "operator": "doesNotContains", "value": "apple"}, ["b"]),
        ({"field": "complex", "operator": "equal", "value": True}, ["c"]),
        ({"field": "refId", "operator": "in", "value": ["r1", "r3"]}, ["a", "c"]),
        ({"field": "refId", "operator": "notIn", "value": ["r1"]}, ["b", "c"]),
        ({"field": "refId", "operator": "isNull"}, []),
        ({"field": "phoneNumber", "operator": "isNull"}, ["a", "b"]),
        ({"field": "phoneNumber", "operator": "isNotNull"}, ["c"]),
        ({"field": "purposes", "operator": "contains", "value": "Erasure"}, ["b"]),
        ({"field": "area.label", "operator": "equal", "value": "Human resources"}, ["c"]),
        ({"field": "id", "operator": "greaterThan", "value": "@b"}, ["c"]),
        ({"field": "id", "operator": "greaterThanInclusive", "value": "@b"}, ["b", "c"]),
        ({"field": "id", "operator": "lessThan", "value": "@b"}, ["a"]),
        ({"field": "id", "operator": "lessThanInclusive", "value": "@b"}, ["a", "b"]),
        ({"field": "dateCreation", "operator": "greaterThan", "value": "@b.date"}, ["c"]),
        (
            {
                "separator": "Or",
                "rules": [
                    {"field": "refId", "operator": "equal", "value": "r1"},
                    {
                        "separator": "And",
                        "rules": [
                            {"field": "title", "operator": "contains", "value": "apple"},
                            {"field": "complex", "operator": "equal", "value": "true"},
                        ],
                    },
                ],
            },
            ["a", "c"],
        ),
    ],
)
def test_filters(
    sandbox: SandboxServer, api: httpx.Client, rule: dict[str, Any], expected: list[str]
) -> None:
    areas = {a["label"]: a["id"] for a in sandbox.admin.objects("areas")}
    made = {
        "a": sandbox.admin.create_rights_request(
            title="Apple pie", email="a@example.com", refId="r1"
        ),
        "b": sandbox.admin.create_rights_request(
            title="Banana", email="b@example.com", refId="r2", purposes=["Erasure"]
        ),
    }
    time.sleep(0.002)
    made["c"] = sandbox.admin.create_rights_request(
        title="Pineapple",
        email="c@example.com",
        refId="r3",
        complex=True,
        phoneNumber="+33 1 23",
        areaId=areas["Human resources"],
    )
    text = str(rule).replace("'", '"').replace("True", "true")
    text = text.replace('"@b.date"', f'"{made["b"]["dateCreation"]}"')
    text = text.replace('"@b"', str(made["b"]["id"]))
    found = api.get(_dsrs(sandbox), params={"filters": text, "sortBy": "id", "asc": True})
    assert found.status_code == 200, found.text
    names = {v["id"]: k for k, v in made.items()}
    assert [names[i["id"]] for i in found.json()["items"]] == expected


def test_bad_filters_and_sorts_are_400(sandbox: SandboxServer, api: httpx.Client) -> None:
    url = _dsrs(sandbox)
    for params, key in (
        ({"filters": "{not json"}, "filters"),
        ({"filters": '{"field":"nope","operator":"equal","value":1}'}, "filters"),
        ({"filters": '{"field":"title","operator":"like","value":1}'}, "filters"),
        ({"sortBy": "nope"}, "sortBy"),
        ({"states": "Weird"}, "states"),
    ):
        response = api.get(url, params=params)
        assert response.status_code == 400 and list(response.json()["errors"]) == [key], params


def test_request_bodies_are_validated_like_aspnet(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    url = _dsrs(sandbox)
    missing = api.post(url, json={"locale": "fr"}).json()
    assert missing["status"] == 400 and missing["errors"] == {
        "AreaId": ["The AreaId field is required."],
        "Purposes": ["The Purposes field is required."],
        "Title": ["The Title field is required."],
    }
    wrong_type = api.post(url, json={"title": 3, "purposes": ["Access"]}).json()
    assert list(wrong_type["errors"]) == ["$.title"]  # conversion errors stop there
    empty = api.post(url, content=b"", headers={"content-type": "application/json"})
    assert empty.status_code == 400 and empty.json()["errors"] == {
        "": ["A non-empty request body is required."]
    }
    assert api.post(url, content=b"{", headers={"content-type": "application/json"}).json()[
        "errors"
    ] == {"$": ["The request body is not valid JSON. Path: $ | LineNumber: 0."]}
    assert api.post(url, content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    area = sandbox.admin.objects("areas")[0]["id"]
    unknown_area = api.post(
        url, json={"title": "t", "locale": "fr", "areaId": 99999, "purposes": ["Access"]}
    )
    assert unknown_area.json()["errors"] == {
        "AreaId": ["The area 99999 does not exist in this workspace."]
    }
    accepted = api.post(
        url,
        json={"title": "t", "locale": "fr", "areaId": area, "purposes": ["Access"], "zz": 1},
    )
    assert accepted.status_code == 200 and "zz" not in accepted.json()  # ignored, like ASP.NET
    assert sandbox.admin.objects("rightsRequests")[0]["id"] == accepted.json()["id"]


def test_linking_never_duplicates_a_link(sandbox: SandboxServer, api: httpx.Client) -> None:
    ws = sandbox.workspace_id
    processing = sandbox.admin.objects("processings")[1]
    actor = sandbox.admin.create_actor(companyName="Acme Vendor")
    url = f"/v1/ws/{ws}/DataProcessings/recipients/batch"
    body = {"actorIds": [actor["id"], actor["id"]], "dataProcessingId": processing["id"]}
    assert api.post(url, json=body | {"type": "Recipient"}).json() == 1
    assert api.post(url, json=body | {"type": "Recipient"}).json() == 0
    assert api.post(url, json=body | {"type": "Stakeholder"}).json() == 1
    shown = api.get(f"/v1/ws/{ws}/DataProcessings/{processing['id']}").json()
    assert [link["actorId"] for link in shown["recipients"]] == [actor["id"]]
    assert [link["type"] for link in shown["stakeHolders"]] == ["Stakeholder"]
    linked_actor = api.get(f"/v1/ws/{ws}/Actors/{actor['id']}").json()
    assert linked_actor["nbReferences"] == 2
    assert {r["id"] for r in linked_actor["recipients"]} == {processing["id"]}
    unknown = api.post(url, json={"actorIds": [424242], "dataProcessingId": processing["id"]})
    assert unknown.status_code == 400 and list(unknown.json()["errors"]) == ["ActorIds"]


def test_rate_limit_answers_429_with_retry_after(sandbox: SandboxServer, api: httpx.Client) -> None:
    sandbox.admin.configure(rate_limit_windows=[(3, 60.0)])
    assert [api.get("/me").status_code for _ in range(4)] == [200, 200, 200, 429]
    refused = api.get("/me")
    assert refused.headers["Retry-After"].isdigit() and int(refused.headers["Retry-After"]) >= 55
    assert refused.text == "API calls quota exceeded! maximum admitted 3 per 1m."
    assert sandbox.admin.info()["config"]["rate_limit_windows"] == [[3, 60.0]]  # admin: free
    assert api.get("/rate-limiting-state").status_code == 429
    sandbox.admin.configure(rate_limit=False)
    assert api.get("/me").status_code == 200


def test_the_rate_limiters_log_has_every_authenticated_call(
    sandbox: SandboxServer, api: httpx.Client
) -> None:
    sandbox.admin.configure(rate_limit_windows=[(2, 60.0)])
    before = time.monotonic()
    statuses = [api.get("/me").status_code for _ in range(3)]
    sandbox.admin.info()  # admin calls are not API calls: not in the log
    log = sandbox.admin.requests_log(since=before)
    assert statuses == [200, 200, 429]
    assert [(e["endpoint"], e["admitted"]) for e in log] == [
        ("GET /me", True),
        ("GET /me", True),
        ("GET /me", False),
    ]
    assert before <= log[0]["at"] <= log[1]["at"] <= log[2]["at"] <= time.monotonic()
    assert sandbox.admin.requests_log(since=time.monotonic()) == []
    sandbox.admin.reset_calls()
    assert sandbox.admin.requests_log() == []


def test_faults(sandbox: SandboxServer, api: httpx.Client) -> None:
    ws = sandbox.workspace_id
    sandbox.admin.inject_fault("/v1/ws/{ws}/Actors", method="POST", status=503, times=1)
    sandbox.admin.inject_fault("*/Actors", method="GET", status=429, retry_after=2, times=2)
    assert api.get("/me").status_code == 200  # other paths untouched
    limited = api.get(f"/v1/ws/{ws}/Actors")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert api.get(f"/v1/ws/{ws}/Actors").status_code == 429
    assert api.get(f"/v1/ws/{ws}/Actors").status_code == 200  # times=2 used up
    assert api.post(f"/v1/ws/{ws}/Actors", json={"companyName": "X"}).status_code == 503
    assert api.post(f"/v1/ws/{ws}/Actors", json={"companyName": "X"}).status_code == 200
    assert sandbox.admin.faults() == []

    sandbox.admin.inject_fault("/me", latency_s=0.3, times=1)
    started = time.monotonic()
    assert api.get("/me").status_code == 200
    assert time.monotonic() - started >= 0.3

    sandbox.admin.inject_fault("/me", hang=True, times=1)
    with pytest.raises(httpx.ReadTimeout):
        api.get("/me", timeout=0.5)
    sandbox.admin.inject_fault("/me", drop=True, times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/me")
    assert api.get("/me").status_code == 200

    sandbox.admin.inject_fault("/status", status=500, duration_s=0.3)
    assert api.get("/status").status_code == 500
    wait_for(lambda: api.get("/status").status_code == 200, 5, "the fault to expire")
    assert sandbox.admin.status_counts()["GET /me"] == {"200": 3, "no response": 2}
    with pytest.raises(SandboxAdminError) as caught:
        sandbox.admin.inject_fault("/me")  # no effect asked for
    assert caught.value.status == 400
    assert "a fault needs status, latency_s, hang or drop" in str(caught.value.body)


def test_call_counts_and_reset(sandbox: SandboxServer, api: httpx.Client) -> None:
    ws = sandbox.workspace_id
    api.get("/me")
    api.get(f"/v1/ws/{ws}/Tasks/1")
    api.get(f"/v1/ws/{ws}/Tasks/2")
    assert sandbox.admin.call_counts() == {"GET /me": 1, "GET /v1/ws/{ws}/Tasks/{id}": 2}
    assert sandbox.admin.status_counts()["GET /v1/ws/{ws}/Tasks/{id}"] == {"404": 2}
    made = sandbox.admin.create_task(label="gone after reset")
    sandbox.admin.reset()
    assert sandbox.admin.call_counts() == {}
    assert sandbox.admin.objects("tasks") == []
    assert sandbox.admin.create_task(label="again")["id"] == made["id"]  # ids restart too


def test_bulk_creation_of_20000_items(sandbox: SandboxServer, api: httpx.Client) -> None:
    result = sandbox.admin.bulk_create("rightsRequests", 20_000, refId="bulk-{n}")
    assert result["created"] == 20_000 and result["lastId"] - result["firstId"] == 19_999
    last = api.get(_dsrs(sandbox), params={"size": 1}).json()
    assert last["total"] == 20_000 and last["items"][0]["refId"] == "bulk-20000"


def test_openapi_document_and_swagger(sandbox: SandboxServer) -> None:
    document = httpx.get(f"{sandbox.base_url}/openapi.json").json()
    create = document["paths"]["/v1/ws/{workspaceId}/DataSubjectRequests"]["post"]
    schema = create["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/DataSubjectRequestDto"}
    assert "DataSubjectRequestDto" in document["components"]["schemas"]
    assert httpx.get(f"{sandbox.base_url}/docs").status_code == 200


def test_sqlite_keeps_state_across_restarts(tmp_path: Path) -> None:
    config = SandboxSettings(db=tmp_path / "sandbox.db", rate_limit=False, workspaces=2)
    with SandboxServer(config) as first:
        second_ws = first.admin.info()["workspaces"][1]
        request = first.admin.create_rights_request(ws=second_ws, title="Persisted")
        actor = first.admin.create_actor(companyName="Kept Ltd")
        processing = first.admin.objects("processings")[0]["id"]
        with httpx.Client(base_url=first.base_url, headers={"X-API-Key": first.api_key}) as api:
            linked = api.post(
                f"/v1/ws/{first.workspace_id}/DataProcessings/recipients/batch",
                json={"actorIds": [actor["id"]], "dataProcessingId": processing},
            )
            assert linked.json() == 1
    with SandboxServer(config) as again:
        assert again.admin.objects("rightsRequests", ws=second_ws) == [request]
        assert again.admin.objects("rightsRequests") == []  # the first workspace's
        kept = again.admin.objects("actors")[-1]
        assert kept["id"] == actor["id"] and kept["nbReferences"] == 1
        later = again.admin.create_rights_request(ws=second_ws, title="Next")
        assert later["id"] == request["id"] + 1
        again.admin.reset()
    with SandboxServer(config) as reset:
        assert reset.admin.objects("rightsRequests", ws=second_ws) == []


def test_an_admin_token_guards_the_test_controls() -> None:
    config = SandboxSettings(admin_token=SecretStr("let-me-in"), rate_limit=False)
    with SandboxServer(config) as sandbox:
        assert httpx.get(f"{sandbox.base_url}/_sandbox/info").status_code == 401
        assert sandbox.admin.info()["defaultWorkspace"] == sandbox.workspace_id
        assert (
            httpx.get(f"{sandbox.base_url}/me", headers={"X-API-Key": sandbox.api_key}).status_code
            == 200
        )


def test_dotnet_defaults_refuse_a_task_without_an_area_and_make_high_the_priority() -> None:
    # The strict mode for what the spec leaves open: ASP.NET binds an omitted non-nullable int to 0.
    config = SandboxSettings(port=0, rate_limit=False, dotnet_defaults=True)
    with (
        SandboxServer(config) as sandbox,
        httpx.Client(
            base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key}, timeout=10
        ) as api,
    ):
        url = f"/v1/ws/{sandbox.workspace_id}/Tasks"
        bare = api.post(url, json={"label": "No area"})
        assert bare.status_code == 400
        assert bare.json()["errors"] == {"AreaId": ["'Area Id' must not be empty."]}
        assert api.post(url, json={"label": "Area 0", "areaId": 0}).status_code == 400
        area = sandbox.admin.objects("areas")[0]["id"]
        made = api.post(url, json={"label": "With area", "areaId": area})
        assert made.status_code == 200 and made.json()["priority"] == "High"
        kept = api.post(url, json={"label": "Low", "areaId": area, "priority": "Low"})
        assert kept.json()["priority"] == "Low"
        # The default mode keeps its lenient answer: the first area, Medium.
    with SandboxServer(SandboxSettings(port=0, rate_limit=False)) as lenient:
        task = httpx.post(
            f"{lenient.base_url}/v1/ws/{lenient.workspace_id}/Tasks",
            json={"label": "No area"},
            headers={"X-API-Key": lenient.api_key},
        ).json()
        assert task["areaId"] == lenient.admin.objects("areas")[0]["id"]
        assert task["priority"] == "Medium"


def test_duplicate_links_mode_adds_a_second_link_where_the_default_keeps_one() -> None:
    # The strict mode for what the spec leaves open: whether recipients/batch drops a link that
    # already exists. Dastra may not; the link agent must not rely on it (it reads first).
    for duplicates, expected in ((False, [0, 1]), (True, [1, 2])):
        config = SandboxSettings(port=0, rate_limit=False, duplicate_links=duplicates)
        with (
            SandboxServer(config) as sandbox,
            httpx.Client(
                base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key}, timeout=10
            ) as api,
        ):
            ws = sandbox.workspace_id
            processing = sandbox.admin.objects("processings")[0]["id"]
            actor = sandbox.admin.create_actor(companyName="Linked twice")["id"]
            body = {"actorIds": [actor], "dataProcessingId": processing, "type": "Recipient"}
            url = f"/v1/ws/{ws}/DataProcessings/recipients/batch"
            assert api.post(url, json=body).json() == 1
            assert api.post(url, json=body).json() == expected[0]
            links = api.get(f"/v1/ws/{ws}/DataProcessings/{processing}").json()["recipients"]
            assert [link["actorId"] for link in links].count(actor) == expected[1]


def test_rights_requests_keep_their_custom_fields_and_tags() -> None:
    # customFields is in Dastra's documentation, not in its OpenAPI document (dastra.spec
    # DOCUMENTED_MEMBERS): the sandbox stores it, validates it as an object, and returns it.
    with (
        SandboxServer(SandboxSettings(port=0, rate_limit=False)) as sandbox,
        httpx.Client(
            base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key}, timeout=10
        ) as api,
    ):
        url = f"/v1/ws/{sandbox.workspace_id}/DataSubjectRequests"
        area = sandbox.admin.objects("areas")[0]["id"]
        base = {"title": "Access", "locale": "en", "areaId": area, "purposes": ["Access"]}
        made = api.post(
            url,
            json={
                **base,
                "customFields": {"customer-no": "C-1", "vip": True},
                "tags": [{"label": "CRM", "type": "DataSubject"}],
                "expiryTime": "2027-01-31T23:00:00Z",
            },
        )
        assert made.status_code == 200, made.text
        stored = api.get(f"{url}/{made.json()['id']}").json()
        assert stored["customFields"] == {"customer-no": "C-1", "vip": True}
        assert stored["tags"] == [{"label": "CRM", "type": "DataSubject"}]
        assert stored["expiryTime"] == "2027-01-31T23:00:00Z"
        assert (
            api.get(f"{url}/{api.post(url, json=base).json()['id']}").json()["customFields"] is None
        )
        refused = api.post(url, json={**base, "customFields": ["not", "an", "object"]})
        assert refused.status_code == 400 and "$.customFields" in refused.json()["errors"]


def test_the_sandbox_keeps_idle_connections_longer_than_an_httpx_client_does() -> None:
    """A client closes its idle connections first, so the server never closes one just as a
    request is sent on it (seen once as "Server disconnected without sending a response")."""
    config = _uvicorn_config(create_app(SandboxSettings()))
    client_expiry = httpx.Limits().keepalive_expiry
    assert client_expiry is not None and config.timeout_keep_alive > 2 * client_expiry
