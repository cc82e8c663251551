"""`dastra-kafka doctor` behind the verb: pick the Dastra to check, run the checks, show them.

Consumes the settings (DASTRA_*; with no DASTRA_BASE_URL an in-process sandbox, SANDBOX_*, as
the demo does). Produces a `dastra.doctor.Report`, printed as one PASS/WARN/FAIL line per check
with what to do (rich), or as JSON.

    report = check(settings.dastra, 12); show(report, Console())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from dastra.client import DastraClient
from dastra.doctor import Report, run_checks
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from dastra.settings import DastraSettings

__all__ = ["check", "dastra_to_check", "show"]

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "bold red"}


@contextlib.contextmanager
def dastra_to_check(
    dastra: DastraSettings, sandbox: SandboxSettings
) -> Iterator[tuple[DastraSettings, int | None, str]]:
    """The configured Dastra, or (no DASTRA_BASE_URL) a sandbox started for the duration:
    its settings, its default workspace and a line saying which it is."""
    if not dastra.uses_sandbox:
        yield dastra, dastra.workspace_id, f"Dastra at {dastra.base_url}"
        return
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = sandbox.model_copy(update={"port": 0})
    if "seed_items" not in sandbox.model_fields_set:
        config = config.model_copy(update={"seed_items": 5})
    with SandboxServer(config) as server:
        yield server.dastra_settings(), server.workspace_id, f"the sandbox at {server.base_url}"


def check(dastra: DastraSettings, workspace: int, *, write_probe: bool = False) -> Report:
    """Run every check against `dastra` (blocking)."""

    async def go() -> Report:
        # retries=False: the doctor reports what Dastra answers, it does not wait it out.
        async with DastraClient(dastra, retries=False) as client:
            return await run_checks(client, workspace, write_probe=write_probe)

    return asyncio.run(go())


def show(report: Report, console: Console, *, title: str = "dastra-kafka doctor") -> None:
    """The report as a table: one line per check, with what to do."""
    table = Table(title=title, show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("check")
    table.add_column("what was seen")
    table.add_column("what to do")
    for finding in report.findings:
        table.add_row(
            f"[{_STYLE[finding.status]}]{finding.status}[/]",
            finding.name,
            finding.summary,
            finding.advice,
        )
    console.print(table)
    for finding in report.findings:
        request = finding.details.get("request")
        if request:
            console.print(f"  [dim]{finding.name}: {request}[/]", soft_wrap=True)
    profile = report.profile
    adapted = []
    if profile.filter_case != "camel":
        adapted.append(f"filter fields in {profile.filter_case}Case")
    if profile.filter_shift:
        adapted.append(f"filter dates shifted by {profile.filter_shift.total_seconds():+g} s")
    if profile.task_params:
        adapted.append(
            "task trigger sends "
            + ", ".join(f"{k}={str(v).lower()}" for k, v in profile.task_params.items())
        )
    console.print("The bridge adapts: " + ("; ".join(adapted) if adapted else "nothing needed"))
