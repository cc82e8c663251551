"""`dastra-kafka dlq replay`: re-publish dead letters to their original topics."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    fail,
    settings_of,
)

__all__ = ["register"]

dlq_app = typer.Typer(
    name="dlq", help="Dead letters (dastra.dead-letter.v1).", no_args_is_help=True
)


def _when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option} takes an ISO 8601 date or time, not {text!r}", EXIT_BAD_INPUT)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dlq_app.command("replay")
def replay(
    ctx: typer.Context,
    topic: str | None = typer.Option(
        None, "--topic", "-t", help="Only dead letters from this original topic."
    ),
    kind: str | None = typer.Option(
        None, "--kind", "-k", help="Only this error kind (dlq.error.kind), e.g. dastra-rejected."
    ),
    since: str | None = typer.Option(None, help="Only failures at or after this ISO time."),
    until: str | None = typer.Option(None, help="Only failures before this ISO time."),
    component: str | None = typer.Option(
        None,
        "--component",
        "-c",
        help="Only dead letters written by this component (dlq.component): agents, hooks, recipes.",
    ),
    include_events: bool = typer.Option(
        False,
        "--include-events",
        help="Also replay dead letters that are not commands (events the hooks could not "
        "deliver, recipe triggers): they go back onto their event topic, to every consumer.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be replayed."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Re-publish matching dead letters (original key, value and headers) to their original
    topics. Only commands unless --include-events. Commands that already succeeded are skipped;
    a replayed command keeps its id."""
    from bus.errors import KafkaAuthorizationError
    from consumers.dlq_replay import ReplayError, ReplayFilter, replay_dead_letters

    settings = settings_of(ctx)
    flt = ReplayFilter(
        topic=topic,
        kind=kind,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        component=component,
        include_events=include_events,
    )
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("dead letters"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
        disable=not sys.stderr.isatty(),
    )
    task = progress.add_task("scan", total=None)
    try:
        with progress:
            summary = replay_dead_letters(
                settings.kafka,
                flt,
                dry_run=dry_run,
                on_progress=lambda done, total: progress.update(task, completed=done, total=total),
                privacy=settings.privacy,
            )
    except ReplayError as exc:
        code = EXIT_UNAVAILABLE if "unreachable" in str(exc) else EXIT_FAILED
        if isinstance(exc.__cause__, KafkaAuthorizationError):
            code = EXIT_BAD_INPUT
        fail(str(exc), code)
    if as_json:
        typer.echo(json.dumps(summary.as_json()))
        return
    table = Table(title=f"dlq replay {summary.replay_id}" + (" (dry run)" if dry_run else ""))
    for column in (
        "dlq partition/offset",
        "original topic/partition/offset",
        "kind",
        "command",
        "outcome",
    ):
        table.add_column(column)
    for record in summary.records:
        table.add_row(
            f"{record.dlq_partition}/{record.dlq_offset}",
            f"{record.topic}/{record.partition}/{record.offset}",
            record.kind,
            record.command_id,
            record.outcome,
        )
    Console().print(table)
    verb = "would replay" if dry_run else "replayed"
    console.print(
        f"scanned {summary.scanned} dead letters; {verb} {summary.replayed}, "
        f"already succeeded {summary.count('already-succeeded')}, "
        f"duplicates {summary.count('duplicate')}, erased subjects {summary.count('erased')}, "
        f"undecryptable {summary.count('undecryptable')}"
    )
    if summary.events_skipped:
        console.print(
            f"left {summary.events_skipped} dead letter(s) of events alone (not commands); "
            "--include-events replays them onto their event topics"
        )


def register(app: typer.Typer) -> None:
    """Add the `dlq` verb group to the `dastra-kafka` command line."""
    app.add_typer(dlq_app, name="dlq")
