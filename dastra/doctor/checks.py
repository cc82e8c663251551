"""The doctor's checks: what the configured Dastra answers where the spec is silent.

Consumes an open `DastraClient` and a workspace id. Produces a `Report`: one `Finding` per check
(PASS, WARN or FAIL, what was seen, what to do) and the `Profile` the bridge adapts to. Reads
only (`GET /me`, the trigger list endpoints, `GET /rate-limiting-state`, one page of processing
activities with their links), unless `write_probe`:
then it creates one task (`POST .../Tasks`), looks for it as the task trigger would, and deletes
it (`DELETE .../Tasks/{id}`).

    report = await run_checks(dastra, ws)
    print(report.ok, [f.status for f in report.findings])
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

import httpx

from dastra.client import MAX_PAGE_SIZE, DastraClient
from dastra.doctor.probes import Finding, Profile, Status, detect, list_page
from dastra.errors import DastraError
from dastra.filters import Rule

__all__ = ["TRIGGER_QUERIES", "Report", "run_checks"]

# The list requests of the two triggers (producers/poller): each collection, read forward in
# the order of each stream from the cursor, whole pages of MAX_PAGE_SIZE.
TRIGGER_QUERIES: tuple[tuple[str, str], ...] = (
    ("DataSubjectRequests", "dateCreation"),
    ("DataSubjectRequests", "dateUpdate"),
    ("Tasks", "dateCreation"),
    ("Tasks", "dateUpdate"),
)
_SKEW_WARN_S = 5.0
_SKEW_FAIL_S = 120.0
_LOW_BUDGET = 0.1
_RATE_HEADER = re.compile(r"rate-?limit", re.IGNORECASE)


@dataclass
class Report:
    """Every check's finding, and what the bridge adapts to."""

    findings: list[Finding]
    profile: Profile

    @property
    def ok(self) -> bool:
        return all(f.status != "FAIL" for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "findings": [f.as_json() for f in self.findings],
            "profile": self.profile.as_json(),
        }


def _status_text(response: httpx.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}".strip()


def _rate_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if _RATE_HEADER.search(k)}


def _clock(response: httpx.Response, sent: float, received: float) -> Finding:
    name = "clock skew"
    header = response.headers.get("date")
    if not header:
        return Finding(
            name, "WARN", "Dastra sent no Date header: skew unknown", "keep this machine on NTP"
        )
    try:
        theirs = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return Finding(name, "WARN", f"unreadable Date header {header!r}", "keep NTP running")
    ours = datetime.fromtimestamp((sent + received) / 2, UTC)
    # The header has whole seconds: up to one second of difference is resolution, not skew.
    skew = (ours - theirs).total_seconds() - 0.5
    details = {"date_header": header, "skew_s": round(skew, 3)}
    if abs(skew) <= _SKEW_WARN_S:
        return Finding(name, "PASS", f"clocks agree within {_SKEW_WARN_S:g} s", details=details)
    status: Status = "FAIL" if abs(skew) > _SKEW_FAIL_S else "WARN"
    return Finding(
        name,
        status,
        f"this machine is {skew:+.1f} s off Dastra's clock",
        "sync this machine's clock (NTP): OAuth2 token expiry and event times depend on it; "
        "the poller itself compares only Dastra's own timestamps",
        details,
    )


async def _credentials(dastra: DastraClient) -> tuple[Finding, httpx.Response | None, float]:
    name = "credentials"
    sent = time.time()
    try:
        response = await dastra.raw_get("/me")
    except DastraError as exc:
        return (
            Finding(
                name,
                "FAIL",
                f"cannot reach Dastra at {dastra.base_url}: {exc}",
                "check DASTRA_BASE_URL and the network (proxy, firewall)",
            ),
            None,
            sent,
        )
    if response.status_code in (401, 403):
        return (
            Finding(
                name,
                "FAIL",
                f"Dastra refused the credentials ({_status_text(response)})",
                "check DASTRA_API_KEY (the private part of the key), or DASTRA_CLIENT_ID and "
                "DASTRA_CLIENT_SECRET for OAuth2",
            ),
            response,
            sent,
        )
    if not response.is_success:
        return (
            Finding(
                name,
                "FAIL",
                f"GET /me answered {_status_text(response)}",
                "retry later; if it persists, Dastra's API is down",
            ),
            response,
            sent,
        )
    return Finding(name, "PASS", f"authenticated at {dastra.base_url}"), response, sent


async def _workspace(dastra: DastraClient, ws: int) -> Finding:
    name = "workspace access"
    response = await dastra.raw_get(f"/v1/ws/{ws}/DataSubjectRequests", {"size": 1})
    if response.is_success:
        return Finding(name, "PASS", f"workspace {ws} is readable")
    return Finding(
        name,
        "FAIL",
        f"workspace {ws}: {_status_text(response)}",
        "check DASTRA_WORKSPACE_ID(S), and that the API key is scoped to this workspace or the "
        "whole organisation",
    )


async def _endpoints(dastra: DastraClient, ws: int, profile: Profile) -> list[Finding]:
    since = datetime.now(UTC) - timedelta(hours=1)
    findings = []
    for collection, stream in TRIGGER_QUERIES:
        params: dict[str, Any] = {
            "page": 1,
            "size": MAX_PAGE_SIZE,
            "sortBy": stream,
            "asc": True,
            "filters": dastra.filters_value(Rule(stream, "greaterThanInclusive", since)),
        }
        if collection == "Tasks":
            params.update(profile.task_params)
        path = f"/v1/ws/{ws}/{collection}"
        response = await dastra.raw_get(path, params)
        query = unquote(response.request.url.query.decode())
        name = f"trigger query {collection} by {stream}"
        details = {"request": f"GET {path}?{query}", "status": response.status_code}
        body: Any = None
        if response.is_success:
            try:
                body = response.json()
            except ValueError:
                body = None
        if isinstance(body, Mapping) and isinstance(body.get("items"), list):
            details["total"] = body.get("total")
            findings.append(
                Finding(
                    name, "PASS", f"{body.get('total')} item(s) in the last hour", details=details
                )
            )
        else:
            findings.append(
                Finding(
                    name,
                    "FAIL",
                    f"{_status_text(response)}, not a page of items",
                    "the trigger cannot read this list: see the casing line, or send this "
                    "request to Dastra's support",
                    details,
                )
            )
    return findings


def _budget_of(state: Any) -> tuple[int, int] | None:
    """(remaining, limit) of the tightest rule in a /rate-limiting-state body, if it has one."""
    rules = state.get("rules") if isinstance(state, Mapping) else state
    if not isinstance(rules, list):
        return None
    pairs = [
        (r["remaining"], r["limit"])
        for r in rules
        if isinstance(r, Mapping)
        and isinstance(r.get("remaining"), int)
        and isinstance(r.get("limit"), int)
        and r["limit"] > 0
    ]
    return min(pairs, key=lambda p: p[0] / p[1]) if pairs else None


async def _rate_limit(dastra: DastraClient, last: httpx.Response | None) -> Finding:
    name = "rate limit"
    headers = _rate_headers(last) if last is not None else {}
    response = await dastra.raw_get("/rate-limiting-state")
    state: Any = None
    if response.is_success:
        try:
            state = response.json()
        except ValueError:
            state = None
    budget = _budget_of(state)
    details: dict[str, Any] = {"headers": headers, "rate_limiting_state": state}
    if not headers and budget is None:
        return Finding(
            name,
            "WARN",
            "no rate-limit headers, and /rate-limiting-state says nothing readable",
            "nothing to set: the bridge keeps its own budget (DASTRA_RATE_LIMIT_PER_MINUTE, "
            "500/min; DASTRA_RATE_LIMIT_PER_10_MINUTES) and backs off on 429",
            details,
        )
    seen = "headers " + ", ".join(sorted(headers)) if headers else "no rate-limit headers"
    if budget is None:
        return Finding(name, "PASS", f"{seen}", details=details)
    remaining, limit = budget
    summary = f"{seen}; /rate-limiting-state: {remaining} of {limit} requests left"
    if remaining < limit * _LOW_BUDGET:
        return Finding(
            name,
            "WARN",
            summary,
            "another client is using this key's budget: give the bridge its own key, or lower "
            "DASTRA_RATE_LIMIT_PER_MINUTE",
            details,
        )
    return Finding(name, "PASS", summary, details=details)


_LINK_LISTS = (
    ("recipients", "Recipient"),
    ("dataControllers", "DataController"),
    ("stakeHolders", "Stakeholder"),
)


async def _duplicate_links(dastra: DastraClient, ws: int) -> Finding:
    """Does Dastra keep a second link of one actor in one role? The spec does not say, and
    finding out by writing would leave a link behind: read one page of processing activities
    and look for a duplicate someone's integration has already made."""
    name = "duplicate links"
    page = list_page(await dastra.raw_get(f"/v1/ws/{ws}/DataProcessings", {"size": MAX_PAGE_SIZE}))
    if page is None:
        return Finding(name, "WARN", "GET DataProcessings failed", "see the endpoint lines")
    listed = [p for p in page["items"] if isinstance(p, dict)]
    with_links = [p for p in listed if any(field in p for field, _ in _LINK_LISTS)]
    details: dict[str, Any] = {"processings_read": len(listed), "with_links": len(with_links)}
    for processing in with_links:
        seen: set[tuple[Any, str]] = set()
        for field, default in _LINK_LISTS:
            for link in processing.get(field) or []:
                pair = (link.get("actorId"), str(link.get("type") or default))
                if pair[0] is not None and pair in seen:
                    details["example"] = {"processing": processing.get("id"), "actor": pair[0]}
                    return Finding(
                        name,
                        "WARN",
                        f"Dastra keeps duplicate links: actor {pair[0]} is linked twice as "
                        f"{pair[1]} to processing {processing.get('id')}",
                        "nothing to set: link-actor-to-processing reads the links first and links "
                        "one processing at a time, so it makes none; remove the existing ones in "
                        "Dastra",
                        details,
                    )
                seen.add(pair)
    if not with_links:
        summary = "the list does not include links: not checked"
    else:
        summary = f"no actor linked twice in one role in {len(with_links)} processing activities"
    return Finding(
        name,
        "PASS",
        summary + " (the link agent never relies on Dastra dropping a duplicate)",
        details=details,
    )


async def _write_probe(dastra: DastraClient, ws: int, profile: Profile) -> Finding:
    name = "write probe"
    try:
        areas = await dastra.areas(ws, size=1, retry=False)
        body: dict[str, Any] = {"label": "dastra-kafka doctor probe (deleted at once)"}
        if areas.items:
            body["areaId"] = areas.items[0].id
        task = await dastra.create_task(ws, body, retry=False)
    except DastraError as exc:
        return Finding(
            name,
            "FAIL",
            f"could not create the probe task: {exc}",
            "the create-task command would fail the same way: check the key's rights",
        )
    seen = False
    try:
        created = task.raw.get("dateCreation")
        since = datetime.fromisoformat(str(created).replace("Z", "+00:00")) - timedelta(seconds=1)
        page = await dastra.tasks_page(
            ws,
            size=MAX_PAGE_SIZE,
            sort_by="dateCreation",
            asc=True,
            filters=Rule("dateCreation", "greaterThanInclusive", since),
            retry=False,
            **profile.task_params,
        )
        seen = any(item.id == task.id for item in page.items)
    except (DastraError, ValueError):
        seen = False
    finally:
        try:
            await dastra.delete_task(ws, task.id)
            deleted = True
        except DastraError:
            deleted = False
    # No priority was sent: what Dastra chose is what a create-task command without one gets.
    details = {
        "task_id": task.id,
        "seen_by_trigger_query": seen,
        "deleted": deleted,
        "omitted_priority_became": task.raw.get("priority"),
    }
    if not deleted:
        return Finding(
            name,
            "FAIL",
            f"created task {task.id} but could not delete it",
            f"delete task {task.id} in Dastra by hand",
            details,
        )
    if not seen:
        return Finding(
            name,
            "FAIL",
            f"task {task.id} was created but the task trigger's query did not list it",
            "report this with `dastra-kafka doctor --json --write-probe`",
            details,
        )
    became = details["omitted_priority_became"]
    return Finding(
        name,
        "PASS",
        "created a task, saw it in the trigger's query, deleted it"
        f" (with no priority given, Dastra made it {became})",
        details=details,
    )


async def run_checks(dastra: DastraClient, ws: int, *, write_probe: bool = False) -> Report:
    """Every check, in order; stops after a FAIL that makes the rest meaningless (no access).

    report = await run_checks(dastra, 12)"""
    credentials, first, sent = await _credentials(dastra)
    findings = [credentials]
    if first is not None:
        findings.append(_clock(first, sent, time.time()))
    if credentials.status == "FAIL":
        return Report(findings, Profile())
    access = await _workspace(dastra, ws)
    findings.append(access)
    if access.status == "FAIL":
        return Report(findings, Profile())
    detection = await detect(dastra, ws)
    profile = detection.profile
    dastra.adapt(filter_case=profile.filter_case, filter_shift=profile.filter_shift)
    findings.extend(detection.findings)
    findings.extend(await _endpoints(dastra, ws, profile))
    findings.append(await _duplicate_links(dastra, ws))
    findings.append(await _rate_limit(dastra, first))
    if write_probe:
        findings.append(await _write_probe(dastra, ws, profile))
    return Report(findings, profile)
