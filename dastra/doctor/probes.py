"""Read-only probes of what Dastra's spec leaves open, and the `Profile` the bridge adapts to.

Consumes an open `DastraClient` and a workspace id; sends list requests only (GET, one attempt
each, through the client's rate limiter). Produces `Finding`s (what each probe saw) and a
`Profile`: the filter field casing that works, the offset at which the server reads filter
dates, and the explicit `includeChildren`/`archived` the task trigger must send.

    profile = (await detect(dastra, ws)).profile
    dastra.adapt(filter_case=profile.filter_case, filter_shift=profile.filter_shift)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx

from dastra.client import DastraClient
from dastra.filters import FilterCase, pascal

__all__ = [
    "Detection",
    "Finding",
    "Probe",
    "Profile",
    "Status",
    "detect",
    "find_probe",
    "list_page",
    "probe_filter_case",
    "probe_task_defaults",
    "probe_time_zone",
]

Status = Literal["PASS", "WARN", "FAIL"]

_QUARTER = timedelta(minutes=15)
_MAX_OFFSET_QUARTERS = 56  # UTC-14:00 .. UTC+14:00
_TICK = timedelta(milliseconds=1)


@dataclass(frozen=True)
class Profile:
    """What the bridge adapts to. The defaults are what it assumes without probing."""

    filter_case: FilterCase = "camel"
    filter_shift: timedelta = timedelta(0)
    task_params: dict[str, bool] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "filter_case": self.filter_case,
            "filter_shift_s": self.filter_shift.total_seconds(),
            "task_params": dict(self.task_params),
        }


@dataclass(frozen=True)
class Finding:
    """One probe's outcome: a status, what was seen, and what to do about it."""

    name: str
    status: Status
    summary: str
    advice: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "advice": self.advice,
            "details": self.details,
        }


@dataclass(frozen=True)
class Probe:
    """A known item to probe filters with: its collection, id and creation time as returned."""

    collection: str
    id: int
    created: datetime
    created_text: str


@dataclass
class Detection:
    """The findings of `detect` and the profile they add up to."""

    findings: list[Finding]
    profile: Profile
    probe: Probe | None


def list_page(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON page of a list answer (`{items: [...], ...}`), or None."""
    if not response.is_success:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return data
    return None


def _stamp(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rule(field_name: str, operator: str, value: Any = None, *, case: FilterCase) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "field": pascal(field_name) if case == "pascal" else field_name,
        "operator": operator,
    }
    if value is not None:
        rule["value"] = value
    return rule


def _and(*rules: dict[str, Any]) -> str:
    return json.dumps({"separator": "And", "rules": list(rules)}, separators=(",", ":"))


async def find_probe(dastra: DastraClient, ws: int) -> Probe | None:
    """The newest rights request (else task, else actor) with a creation time: the item filters
    are tried on."""
    for collection in ("DataSubjectRequests", "Tasks", "Actors"):
        response = await dastra.raw_get(
            f"/v1/ws/{ws}/{collection}", {"sortBy": "dateCreation", "asc": False, "size": 5}
        )
        for item in (list_page(response) or {}).get("items", []):
            created = _stamp(item.get("dateCreation")) if isinstance(item, dict) else None
            if created is not None and isinstance(item.get("id"), int):
                return Probe(collection, item["id"], created, item["dateCreation"])
    return None


async def _matches(dastra: DastraClient, ws: int, probe: Probe, filters: str) -> bool | None:
    """Does the filter select the probe item (and only it)? None when the server refuses it."""
    response = await dastra.raw_get(
        f"/v1/ws/{ws}/{probe.collection}", {"filters": filters, "size": 2}
    )
    page = list_page(response)
    if page is None:
        return None
    ids = [item.get("id") for item in page["items"] if isinstance(item, dict)]
    return ids == [probe.id]


async def probe_filter_case(
    dastra: DastraClient, ws: int, probe: Probe
) -> tuple[Finding, FilterCase | None]:
    """Try the probe item's id and creation time as camelCase, then PascalCase, filter fields."""
    works: dict[FilterCase, bool | None] = {}
    for case in ("camel", "pascal"):
        filters = _and(
            _rule("id", "equal", probe.id, case=case),
            _rule("dateCreation", "isNotNull", case=case),
        )
        works[case] = await _matches(dastra, ws, probe, filters)
    seen = {
        case: ("selects it" if ok else "refused" if ok is None else "ignored")
        for case, ok in works.items()
    }
    details = {
        "probe": f"{probe.collection}/{probe.id}",
        "camelCase": seen["camel"],
        "PascalCase": seen["pascal"],
    }
    if works["camel"]:
        return Finding(
            "filter field casing",
            "PASS",
            f"camelCase filter fields work (PascalCase: {seen['pascal']})",
            details=details,
        ), "camel"
    if works["pascal"]:
        return Finding(
            "filter field casing",
            "WARN",
            f"camelCase filter fields are {seen['camel']}; PascalCase works",
            "nothing to set: the poller switches its filters to PascalCase at start-up",
            details,
        ), "pascal"
    return Finding(
        "filter field casing",
        "FAIL",
        f"a filter on {probe.collection}/{probe.id} selects nothing in either casing "
        f"(camelCase {seen['camel']}, PascalCase {seen['pascal']})",
        "the triggers cannot filter by date here: report this to Dastra's support with the "
        "query shown by `dastra-kafka doctor --json`",
        details,
    ), None


async def probe_time_zone(
    dastra: DastraClient, ws: int, probe: Probe, case: FilterCase
) -> tuple[Finding, timedelta | None]:
    """The offset at which the server reads filter dates: the largest c for which
    `dateCreation >= created + c` still selects the probe item (server reads the bound as local
    time c ahead of UTC). Found on quarter hours by bisection (about 8 requests)."""

    async def selects(shift: timedelta) -> bool | None:
        filters = _and(
            _rule("id", "equal", probe.id, case=case),
            _rule("dateCreation", "greaterThanInclusive", _iso(probe.created + shift), case=case),
        )
        return await _matches(dastra, ws, probe, filters)

    name = "filter time zone"
    at_zero, after = await selects(timedelta(0)), await selects(_TICK)
    details: dict[str, Any] = {
        "probe": f"{probe.collection}/{probe.id}",
        "dateCreation": probe.created_text,
    }
    if at_zero and after is False:
        return Finding(name, "PASS", "filter dates are read as UTC instants", details=details), (
            timedelta(0)
        )
    if at_zero is None or after is None:
        return Finding(
            name, "FAIL", "the server refused a date filter", "see the filter casing line", details
        ), None
    # Bisection over quarter hours: selects(k * 15 min) is true for k * 15 min <= offset.
    low, high = (0, _MAX_OFFSET_QUARTERS) if at_zero else (-_MAX_OFFSET_QUARTERS, -1)
    if not at_zero and not await selects(low * _QUARTER):
        return Finding(
            name,
            "FAIL",
            "a date filter never selects the probe item, whatever the offset",
            "the triggers cannot filter by date here: report it to Dastra",
            details,
        ), None
    while low < high:
        middle = (low + high + 1) // 2
        if await selects(middle * _QUARTER):
            low = middle
        else:
            high = middle - 1
    offset = low * _QUARTER
    exact = bool(await selects(offset)) and await selects(offset + _TICK) is False
    hours = offset.total_seconds() / 3600
    details |= {"offset_s": offset.total_seconds(), "exact": exact}
    summary = f"filter dates are read as local time, UTC{hours:+g}h (bounds sent with Z)"
    if not exact:
        summary += "; not a whole quarter hour: approximate"
    return Finding(
        name,
        "WARN",
        summary,
        "nothing to set: the poller shifts its date bounds by that offset at start-up; "
        "restart it after a daylight-saving change",
        details,
    ), offset


async def _total(dastra: DastraClient, ws: int, params: dict[str, Any]) -> int | None:
    page = list_page(await dastra.raw_get(f"/v1/ws/{ws}/Tasks", {**params, "size": 1}))
    total = page.get("total") if page else None
    return total if isinstance(total, int) else None


async def _lists_unarchived(dastra: DastraClient, ws: int) -> bool:
    """Does `archived=true` list tasks that are not archived (an "include" flag, not a filter)?"""
    page = list_page(await dastra.raw_get(f"/v1/ws/{ws}/Tasks", {"archived": True, "size": 100}))
    items = page["items"] if page else []
    return any(isinstance(item, dict) and not item.get("archived") for item in items)


async def probe_task_defaults(dastra: DastraClient, ws: int) -> tuple[Finding, dict[str, bool]]:
    """Compare task counts with and without `includeChildren` and `archived`."""
    plain = await _total(dastra, ws, {})
    children = await _total(dastra, ws, {"includeChildren": True})
    archived = await _total(dastra, ws, {"archived": True})
    unarchived = await _total(dastra, ws, {"archived": False})
    details = {
        "default": plain,
        "includeChildren=true": children,
        "archived=true": archived,
        "archived=false": unarchived,
    }
    name = "tasks: includeChildren / archived"
    if plain is None:
        return Finding(name, "FAIL", "GET Tasks failed", "see the endpoint lines", details), {}
    params: dict[str, bool] = {}
    notes: list[str] = []
    warn = False
    if children is None:
        notes.append("includeChildren is refused")
        warn = True
    else:
        params["includeChildren"] = True
        if children > plain:
            notes.append(f"sub-tasks are hidden by default ({children - plain} of {children})")
            warn = True
        else:
            notes.append("sub-tasks are listed by default")
    if archived is not None and unarchived is not None:
        if archived == unarchived == plain:
            notes.append("no archived task seen (archived= changes nothing)")
        elif plain == archived + unarchived:
            notes.append("archived tasks are listed by default (archived=true: only them)")
        elif unarchived == plain and await _lists_unarchived(dastra, ws):
            notes.append(
                f"archived tasks are hidden by default; archived=true lists them all "
                f"({archived - plain} archived)"
            )
            params["archived"] = True
            warn = True
        elif unarchived == plain:
            notes.append(
                f"archived tasks are hidden by default and archived=true lists only them "
                f"({archived}): the task trigger cannot see their changes"
            )
            return Finding(
                name,
                "WARN",
                "; ".join(notes),
                "archived tasks stay invisible to the task trigger; poll them apart if needed",
                details,
            ), params
        else:
            notes.append("archived counts do not add up; the trigger sends no archived")
            warn = True
    summary = "; ".join(notes)
    if warn:
        sent = ", ".join(f"{k}={'true' if v else 'false'}" for k, v in params.items())
        return Finding(
            name,
            "WARN",
            summary,
            f"nothing to set: the task trigger sends {sent} explicitly",
            details,
        ), params
    return Finding(name, "PASS", summary, details=details), params


async def detect(dastra: DastraClient, ws: int) -> Detection:
    """Run the probes the bridge adapts to (read-only). Raises `DastraError` on a transport
    failure; an answer it cannot use becomes a FAIL finding and leaves that default."""
    findings: list[Finding] = []
    case: FilterCase = "camel"
    shift = timedelta(0)
    probe = await find_probe(dastra, ws)
    if probe is None:
        note = Finding(
            "filter probe item",
            "WARN",
            "no rights request, task or actor to try filters on (empty workspace): casing and "
            "time zone unchecked",
            "run the doctor again once a rights request, task or actor exists",
        )
        findings.append(note)
    else:
        case_finding, found_case = await probe_filter_case(dastra, ws, probe)
        findings.append(case_finding)
        if found_case is not None:
            case = found_case
            tz_finding, offset = await probe_time_zone(dastra, ws, probe, case)
            findings.append(tz_finding)
            shift = offset or timedelta(0)
    tasks_finding, task_params = await probe_task_defaults(dastra, ws)
    findings.append(tasks_finding)
    return Detection(findings, Profile(case, shift, task_params), probe)
