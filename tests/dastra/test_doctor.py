"""The doctor against the sandbox over HTTP: PASS on the default sandbox, and the WARN or FAIL
line (and the adapted profile) for each strict mode and each failure it detects."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from dastra import RateLimiter
from dastra.client import DastraClient
from dastra.doctor import Finding, Report, run_checks
from dastra.doctor.checks import _clock
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from dastra.settings import DastraSettings


@pytest.fixture
def strict(request: pytest.FixtureRequest) -> Iterator[SandboxServer]:
    """A sandbox of its own, in the strict mode(s) the test's parameter names."""
    overrides: dict[str, Any] = getattr(request, "param", {})
    config = SandboxSettings(**{"port": 0, "rate_limit": False, "seed_items": 3, **overrides})
    with SandboxServer(config) as server:
        yield server


def _doctor(settings: DastraSettings, ws: int, *, write_probe: bool = False) -> Report:
    async def go() -> Report:
        async with DastraClient(
            settings, retries=False, limiter=RateLimiter.from_settings(settings)
        ) as dastra:
            return await run_checks(dastra, ws, write_probe=write_probe)

    return asyncio.run(go())


def _by_name(report: Report) -> dict[str, Finding]:
    return {f.name: f for f in report.findings}


def _with_child_and_archived_tasks(server: SandboxServer) -> None:
    admin = server.admin
    parent = admin.create_task(label="parent")
    admin.create_task(label="child", parentId=parent["id"])
    admin.create_task(label="archived", archived=True)


def test_every_check_passes_on_the_default_sandbox(sandbox: SandboxServer) -> None:
    _with_child_and_archived_tasks(sandbox)
    report = _doctor(sandbox.dastra_settings(), sandbox.workspace_id, write_probe=True)

    found = _by_name(report)
    assert [f.name for f in report.findings if f.status != "PASS"] == []
    assert report.ok
    assert {
        "credentials",
        "clock skew",
        "workspace access",
        "filter field casing",
        "filter time zone",
        "tasks: includeChildren / archived",
        "trigger query DataSubjectRequests by dateCreation",
        "trigger query Tasks by dateUpdate",
        "duplicate links",
        "rate limit",
        "write probe",
    } <= set(found)
    assert found["duplicate links"].summary.startswith("no actor linked twice in one role in")
    assert report.profile.filter_case == "camel"
    assert report.profile.filter_shift == timedelta(0)
    assert report.profile.task_params == {"includeChildren": True}
    # The exact query of the trigger, as sent.
    request = found["trigger query Tasks by dateCreation"].details["request"]
    assert request.startswith(f"GET /v1/ws/{sandbox.workspace_id}/Tasks?page=1&size=500")
    assert '"field":"dateCreation","operator":"greaterThanInclusive"' in request
    assert "includeChildren=true" in request
    # The write probe cleaned up after itself.
    probe_id = found["write probe"].details["task_id"]
    assert probe_id not in {t["id"] for t in sandbox.admin.objects("tasks")}
    assert found["write probe"].details["omitted_priority_became"] == "Medium"


@pytest.mark.parametrize("strict", [{"dotnet_defaults": True}], indirect=True)
def test_the_write_probe_reports_the_priority_dastra_gives_a_task_without_one(
    strict: SandboxServer,
) -> None:
    report = _doctor(strict.dastra_settings(), strict.workspace_id, write_probe=True)
    probe = _by_name(report)["write probe"]
    # The probe names an area (a bare body is refused in this mode) and no priority.
    assert probe.status == "PASS" and probe.details["omitted_priority_became"] == "High"
    assert "Dastra made it High" in probe.summary


@pytest.mark.parametrize("strict", [{"filter_case": "pascal"}], indirect=True)
def test_pascal_case_filters_are_detected_and_adopted(strict: SandboxServer) -> None:
    report = _doctor(strict.dastra_settings(), strict.workspace_id)

    found = _by_name(report)
    casing = found["filter field casing"]
    assert casing.status == "WARN"
    assert casing.details["camelCase"] == "refused"
    assert casing.details["PascalCase"] == "selects it"
    assert report.profile.filter_case == "pascal"
    assert found["filter time zone"].status == "PASS"
    trigger = found["trigger query DataSubjectRequests by dateCreation"]
    assert trigger.status == "PASS"
    assert '"field":"DateCreation"' in trigger.details["request"]
    assert report.ok


@pytest.mark.parametrize(
    ("strict", "offset_h"),
    [({"tz": "Europe/Paris"}, 1), ({"tz": "America/New_York"}, -5), ({"tz": "Asia/Kolkata"}, 5.5)],
    indirect=["strict"],
)
def test_a_server_reading_filter_dates_as_local_time_is_measured(
    strict: SandboxServer, offset_h: float
) -> None:
    report = _doctor(strict.dastra_settings(), strict.workspace_id)

    zone = _by_name(report)["filter time zone"]
    assert zone.status == "WARN"
    assert zone.details["exact"] is True
    assert report.profile.filter_shift == timedelta(hours=offset_h)
    assert report.ok


@pytest.mark.parametrize("strict", [{"filter_case": "pascal", "tz": "Europe/Paris"}], indirect=True)
def test_casing_and_time_zone_together(strict: SandboxServer) -> None:
    report = _doctor(strict.dastra_settings(), strict.workspace_id)

    assert report.profile.filter_case == "pascal"
    assert report.profile.filter_shift == timedelta(hours=1)
    assert report.ok


@pytest.mark.parametrize("strict", [{"task_children_hidden": True}], indirect=True)
def test_sub_tasks_hidden_by_default_are_detected(strict: SandboxServer) -> None:
    _with_child_and_archived_tasks(strict)
    report = _doctor(strict.dastra_settings(), strict.workspace_id)

    tasks = _by_name(report)["tasks: includeChildren / archived"]
    assert tasks.status == "WARN"
    assert "sub-tasks are hidden by default (1 of" in tasks.summary
    assert report.profile.task_params == {"includeChildren": True}


@pytest.mark.parametrize("strict", [{"task_archived_hidden": True}], indirect=True)
def test_archived_tasks_hidden_by_default_are_detected(strict: SandboxServer) -> None:
    _with_child_and_archived_tasks(strict)
    report = _doctor(strict.dastra_settings(), strict.workspace_id)

    tasks = _by_name(report)["tasks: includeChildren / archived"]
    assert tasks.status == "WARN"
    assert "archived tasks are hidden by default; archived=true lists them all" in tasks.summary
    assert report.profile.task_params == {"includeChildren": True, "archived": True}


@pytest.mark.parametrize("strict", [{"duplicate_links": True}], indirect=True)
def test_a_duplicate_link_someone_made_warns(strict: SandboxServer) -> None:
    processing = strict.admin.objects("processings")[0]["id"]
    actor = strict.admin.create_actor(companyName="Twice Ltd")["id"]
    body = {"actorIds": [actor], "dataProcessingId": processing, "type": "DataController"}
    for _ in range(2):  # another integration, linking without reading first
        answer = httpx.post(
            f"{strict.base_url}/v1/ws/{strict.workspace_id}/DataProcessings/recipients/batch",
            json=body,
            headers={"X-API-Key": strict.api_key},
        )
        assert answer.json() == 1
    report = _doctor(strict.dastra_settings(), strict.workspace_id)

    links = _by_name(report)["duplicate links"]
    assert links.status == "WARN"
    assert f"actor {actor} is linked twice as DataController to processing {processing}" in (
        links.summary
    )
    assert "reads the links first" in links.advice
    assert report.ok  # a warning: the bridge does not depend on it


@pytest.mark.parametrize("strict", [{"seed_items": 0}], indirect=True)
def test_an_empty_workspace_warns_and_the_write_probe_still_works(
    strict: SandboxServer,
) -> None:
    # The seeded actors hidden too: nothing at all to probe with.
    empty = {"items": [], "total": 0, "size": 5, "page": 1}
    strict.admin.inject_fault("/v1/ws/*/Actors", method="GET", status=200, body=empty)
    report = _doctor(strict.dastra_settings(), strict.workspace_id, write_probe=True)

    found = _by_name(report)
    assert found["filter probe item"].status == "WARN"
    assert "filter field casing" not in found
    assert found["write probe"].status == "PASS"
    assert strict.admin.objects("tasks") == []


def test_refused_credentials_and_an_unknown_workspace_fail(sandbox: SandboxServer) -> None:
    bad_key = sandbox.dastra_settings(api_key=SecretStr("not-the-key"))
    report = _doctor(bad_key, sandbox.workspace_id)
    assert not report.ok
    assert [(f.name, f.status) for f in report.findings] == [
        ("credentials", "FAIL"),
        ("clock skew", "PASS"),
    ]
    assert "DASTRA_API_KEY" in report.findings[0].advice

    report = _doctor(sandbox.dastra_settings(), 999)
    assert not report.ok
    assert _by_name(report)["workspace access"].status == "FAIL"


def test_a_failing_trigger_query_fails(sandbox: SandboxServer) -> None:
    sandbox.admin.inject_fault(
        path=f"/v1/ws/{sandbox.workspace_id}/Tasks", status=500, times=100, method="GET"
    )
    report = _doctor(sandbox.dastra_settings(), sandbox.workspace_id)
    failed = {f.name for f in report.findings if f.status == "FAIL"}
    assert "trigger query Tasks by dateCreation" in failed
    assert not report.ok


def test_a_spent_rate_limit_budget_warns(sandbox: SandboxServer) -> None:
    sandbox.admin.configure(rate_limit=True, rate_limit_windows=[(200, 60.0)])
    settings = sandbox.dastra_settings()

    async def burn() -> None:
        async with DastraClient(settings, limiter=RateLimiter.from_settings(settings)) as dastra:
            for _ in range(175):  # the doctor then takes 16 of the 25 left
                await dastra.raw_get("/me")

    asyncio.run(burn())
    rate = _by_name(_doctor(settings, sandbox.workspace_id))["rate limit"]
    assert rate.status == "WARN"
    assert "requests left" in rate.summary


def test_clock_skew_from_the_date_header() -> None:
    now = datetime.now(UTC).timestamp()

    def response(date: str | None) -> httpx.Response:
        return httpx.Response(200, headers={"Date": date} if date else {})

    def at(offset_s: float) -> str:
        moment = datetime.fromtimestamp(now + offset_s, UTC)
        return moment.strftime("%a, %d %b %Y %H:%M:%S GMT")

    assert _clock(response(at(0)), now, now).status == "PASS"
    assert _clock(response(at(-30)), now, now).status == "WARN"
    assert _clock(response(at(600)), now, now).status == "FAIL"
    assert _clock(response(None), now, now).status == "WARN"


def test_cli_prints_json_and_exits_1_on_a_fail(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dastra_kafka.cli import app

    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["--env-file", "/nonexistent", "doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["workspace"] == sandbox.workspace_id

    monkeypatch.setenv("DASTRA_API_KEY", "wrong")
    result = CliRunner().invoke(app, ["--env-file", "/nonexistent", "doctor", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["findings"][0]["status"] == "FAIL"
