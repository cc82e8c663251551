"""`dastra-kafka privacy erase|keygen`: erase a data subject from the bus, make keys."""

from __future__ import annotations

import base64
import json
import secrets
import sys

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    catalogue_of,
    fail,
    settings_of,
)

__all__ = ["register"]

_app = typer.Typer(
    help="Privacy of the bus: erase a data subject (crypto-shredding), make keys.",
    no_args_is_help=True,
)


@_app.command("erase")
def erase_command(
    ctx: typer.Context,
    subject: str = typer.Option(
        ...,
        "--subject",
        "-s",
        help="An e-mail address, or a rights request: rr:<workspace>:<id>, <workspace>:<id>, or "
        "<id> with --workspace.",
    ),
    workspace: int | None = typer.Option(
        None,
        "--workspace",
        "-w",
        help="Workspace of a bare rights request id (default DASTRA_WORKSPACE_ID).",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be erased; erase nothing."
    ),
    by: str = typer.Option(
        "cli", "--by", help="Who erases, for the audit event (a team, a ticket)."
    ),
    count: bool = typer.Option(
        True, "--count/--no-count", help="Count the records made unreadable (reads every topic)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Delete the subject's data keys (their encrypted fields become unreadable on every topic
    and in every copy), tombstone their records on compacted topics, mark their Dastra objects
    erased, and write an audit event to dastra.privacy-audit.v1.

    Exit codes: 0 done (or nothing to erase); 2 bad --subject or no PRIVACY_MASTER_KEY;
    3 Kafka unreachable or a topic missing; 1 some records were not acknowledged (run again)."""
    from bus.privacy import PrivacyError
    from bus.privacy.erasure import ErasureError, erase, parse_subject

    settings = settings_of(ctx)
    try:
        request = parse_subject(subject, workspace or settings.dastra.workspace_id)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    if settings.privacy.master_key is None:
        fail(
            "privacy erase needs PRIVACY_MASTER_KEY (the key the data keys are wrapped with)",
            EXIT_BAD_INPUT,
        )
    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
        disable=as_json or not sys.stderr.isatty(),
    )
    task = progress.add_task("reading the key topic", total=None)
    try:
        with progress:
            plan, audit = erase(
                settings.kafka,
                settings.privacy,
                catalogue_of(settings),
                request,
                by=by,
                dry_run=dry_run,
                count=count,
                on_progress=lambda topic, done: progress.update(
                    task, description=f"scanning {topic}: {done} records"
                ),
            )
    except PrivacyError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except ErasureError as exc:
        code = EXIT_UNAVAILABLE if exc.unreachable else EXIT_FAILED
        fail(str(exc), code)
    report = {
        "dryRun": dry_run,
        "auditId": None if dry_run else audit.audit_id,
        "request": audit.request.model_dump(mode="json"),
        "subjects": len(plan.subjects),
        "keyIds": plan.key_ids,
        "aliasRecords": len(plan.alias_keys),
        "erasedMarkers": len(plan.markers),
        "tombstones": audit.tombstones,
        "unreadableRecords": audit.unreadable_records,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    title = "privacy erase (dry run: nothing written)" if dry_run else "privacy erase"
    table = Table(title=title)
    table.add_column("")
    table.add_column("")
    table.add_row("subject id", audit.request.subject)
    table.add_row("linked subject ids", str(len(plan.subjects)))
    table.add_row("data keys deleted", str(len(plan.key_ids)))
    table.add_row("alias records deleted", str(len(plan.alias_keys)))
    table.add_row("objects marked erased", str(len(plan.markers)))
    for topic, tombstones in audit.tombstones.items():
        table.add_row(f"tombstones on {topic}", str(tombstones))
    for topic, records in (audit.unreadable_records or {}).items():
        if records:
            table.add_row(f"records now unreadable on {topic}", str(records))
    if not dry_run:
        table.add_row("audit event", f"{audit.audit_id} on dastra.privacy-audit.v1")
    Console().print(table)
    if not plan.key_ids:
        console.print("no data key of this subject was found: nothing encrypted to shred")


@_app.command("keygen")
def keygen_command(
    hash_key: bool = typer.Option(
        False, "--hash-key", help="Make a PRIVACY_HASH_KEY (redacted mode) instead."
    ),
) -> None:
    """Print a new random PRIVACY_MASTER_KEY (base64 of 32 bytes). Keep it in a secret store:
    whoever has it and the key topic can read every encrypted field."""
    raw = secrets.token_bytes(32)
    typer.echo(secrets.token_urlsafe(32) if hash_key else base64.b64encode(raw).decode())


def register(app: typer.Typer) -> None:
    """Add the `privacy` verb group to the `dastra-kafka` command line."""
    app.add_typer(_app, name="privacy")
