"""`dastra-kafka doctor`: check the configured Dastra where its spec is silent (read-only)."""

from __future__ import annotations

import json

import typer

from dastra_kafka.cli._common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, fail, settings_of

__all__ = ["register"]


def doctor(
    ctx: typer.Context,
    workspace: int | None = typer.Option(
        None, "--workspace", "-w", help="Workspace to check (default DASTRA_WORKSPACE_ID(S)[0])."
    ),
    write_probe: bool = typer.Option(
        False, "--write-probe", help="Also create one task, look for it, and delete it."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
) -> None:
    """Check credentials, workspace access, the triggers' list queries, filter casing, the
    filter time zone, task list defaults, rate limits and clock skew; say what the bridge adapts.

    Without DASTRA_BASE_URL it checks a sandbox it starts (SANDBOX_*). Writes nothing unless
    --write-probe. Exit codes: 0 no FAIL (WARN lines are adapted to or harmless); 1 a FAIL;
    2 no workspace."""
    from rich.console import Console

    from dastra_kafka.doctor import check, dastra_to_check, show

    settings = settings_of(ctx)
    with dastra_to_check(settings.dastra, settings.sandbox) as (dastra, default_ws, where):
        watched = dastra.watched_workspaces()
        ws = workspace or (watched[0] if watched else default_ws)
        if ws is None:
            fail("no workspace: set DASTRA_WORKSPACE_ID or pass --workspace", EXIT_BAD_INPUT)
        report = check(dastra, ws, write_probe=write_probe)
    if as_json:
        typer.echo(json.dumps({"checked": where, "workspace": ws, **report.as_json()}))
    else:
        console = Console()
        console.print(f"Checking {where}, workspace {ws}")
        show(report, console)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("doctor")(doctor)
