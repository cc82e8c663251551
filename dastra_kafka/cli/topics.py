"""`dastra-kafka topics apply|check|list`: make a cluster match topics.yaml, or report how not."""

from __future__ import annotations

import json
from collections.abc import Sequence

import typer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from bus.admin import (
    TopicChange,
    apply,
    describe,
    plan,
    retention_text,
    retention_warnings,
)
from bus.errors import KafkaAuthorizationError, KafkaUnavailableError
from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    catalogue_of,
    fail,
    settings_of,
)
from dastra_kafka.settings import Settings

__all__ = ["register"]

_app = typer.Typer(help="Manage the topics of topics.yaml on the cluster.", no_args_is_help=True)


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka.confluent_config())


def _plan(settings: Settings) -> list[TopicChange]:
    catalogue = catalogue_of(settings)
    try:
        return plan(_admin(settings), catalogue, prefix=settings.kafka.topic_prefix)
    except KafkaUnavailableError as exc:
        fail(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}", EXIT_UNAVAILABLE)
    except KafkaAuthorizationError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def _show(
    changes: list[TopicChange],
    as_json: bool,
    title: str,
    unknown_schemas: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> None:
    if as_json:
        rows = [{"topic": c.topic, "action": c.action, "detail": c.detail} for c in changes]
        rows += [
            {"topic": p.split(":")[0], "action": "unknown-schema", "detail": p}
            for p in unknown_schemas
        ]
        # Warnings do not change the exit code: the cluster may well match topics.yaml.
        rows += [{"topic": w.split(":")[0], "action": "warning", "detail": w} for w in warnings]
        typer.echo(json.dumps(rows, indent=2))
        return
    console = Console()
    if not changes and not unknown_schemas:
        console.print(f"{title}: the cluster matches topics.yaml")
        return
    table = Table(title=title)
    table.add_column("topic")
    table.add_column("action")
    table.add_column("detail")
    for change in changes:
        style = "red" if change.action == "refused" else "yellow"
        table.add_row(change.topic, f"[{style}]{change.action}[/]", change.detail)
    console.print(table)


def _warn_retention(settings: Settings, as_json: bool) -> list[str]:
    """Topics that can carry personal data but keep it forever: printed (stderr), returned."""
    warnings = retention_warnings(catalogue_of(settings))
    if not as_json:
        for warning in warnings:
            typer.echo(f"warning: {warning}", err=True)
    return warnings


@_app.command("apply")
def apply_command(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the changes, make none."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create missing topics, raise partition counts, alter configs. Never deletes anything."""
    settings = settings_of(ctx)
    warnings = _warn_retention(settings, as_json)
    changes = _plan(settings)
    _show(changes, as_json, "planned changes (dry run)" if dry_run else "changes", (), warnings)
    if not dry_run:
        allowed = [change for change in changes if change.allowed]
        try:
            apply(_admin(settings), allowed)
        except KafkaAuthorizationError as exc:
            fail(str(exc), EXIT_BAD_INPUT)
        except Exception as exc:  # KafkaException from a future
            fail(f"applying topics.yaml failed: {exc}", EXIT_FAILED)
    if any(not change.allowed for change in changes):
        fail("some changes were refused; see above", EXIT_FAILED)


@_app.command("check")
def check_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Exit non-zero when the cluster differs from topics.yaml in any way, or when topics.yaml
    names a key or value schema that no contract defines (dastra_kafka/contracts/registry.py).
    Warns (exit code unchanged) about topics that can carry personal data with unbounded
    retention."""
    from dastra_kafka.contracts.registry import unknown_schema_names  # jsonschema: not for --help

    settings = settings_of(ctx)
    warnings = _warn_retention(settings, as_json)
    unknown = unknown_schema_names(catalogue_of(settings))
    if not as_json:
        for problem in unknown:
            typer.echo(f"error: {problem}", err=True)
    changes = _plan(settings)
    _show(changes, as_json, "mismatches", unknown_schemas=unknown, warnings=warnings)
    if changes or unknown:
        raise typer.Exit(EXIT_FAILED)


@_app.command("list")
def list_command(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show every topic of topics.yaml as the cluster has it."""
    settings = settings_of(ctx)
    catalogue = catalogue_of(settings)
    prefix = settings.kafka.topic_prefix
    try:
        states = describe(_admin(settings), [prefix + spec.name for spec in catalogue])
    except KafkaUnavailableError as exc:
        fail(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}", EXIT_UNAVAILABLE)
    rows = []
    for spec in catalogue:
        state = states.get(prefix + spec.name)
        rows.append(
            {
                "topic": prefix + spec.name,
                "exists": state is not None,
                "partitions": state.partitions if state else None,
                "replication_factor": state.replication_factor if state else None,
                "cleanup_policy": state.configs.get("cleanup.policy") if state else None,
                "retention_ms": state.configs.get("retention.ms") if state else None,
                "personal_data": spec.personal_data,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table(title=f"topics on {settings.kafka.bootstrap_servers}")
        for column in ("topic", "partitions", "replicas", "cleanup", "retention", "personal data"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                str(row["topic"]),
                str(row["partitions"]) if row["exists"] else "[red]missing[/]",
                str(row["replication_factor"] or ""),
                str(row["cleanup_policy"] or ""),
                retention_text(row["retention_ms"]),
                "yes" if row["personal_data"] else "no",
            )
        Console().print(table)
    if not all(row["exists"] for row in rows):
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.add_typer(_app, name="topics")
