"""Helpers shared by the CLI's command modules: exit codes, settings and catalogue access."""

from __future__ import annotations

from typing import NoReturn

import typer
from pydantic import ValidationError

from bus.topics import TopicCatalogue, TopicsFileError, load_catalogue, resolve_topics_file
from dastra.settings import BudgetRole
from dastra_kafka.settings import Settings

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "catalogue_of",
    "fail",
    "settings_of",
    "with_budget_role",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root callback built, once, for this invocation."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise RuntimeError("settings were not loaded: run through the dastra-kafka entry point")
    return settings


def with_budget_role(settings: Settings, role: BudgetRole) -> Settings:
    """The settings of a process of `role`: it keeps to that role's share of the Dastra API
    key's rate limits (DASTRA_BUDGET_SHARES, DASTRA_WORKERS)."""
    try:
        dastra = settings.dastra.for_role(role)
    except ValidationError as exc:
        fail("; ".join(str(error["msg"]) for error in exc.errors()), EXIT_BAD_INPUT)
    return settings.model_copy(update={"dastra": dastra})


def catalogue_of(settings: Settings) -> TopicCatalogue:
    """The topic catalogue named by the settings, with the replication overrides applied
    (KAFKA_REPLICATION_FACTOR, KAFKA_MIN_INSYNC_REPLICAS)."""
    path = resolve_topics_file(settings.service.topics_file)
    try:
        catalogue = load_catalogue(path)
    except TopicsFileError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    catalogue = catalogue.with_replication_factor(settings.kafka.replication_factor)
    try:
        return catalogue.with_min_insync_replicas(settings.kafka.min_insync_replicas)
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print `message` to stderr and exit with `code`."""
    typer.echo(message, err=True)
    raise typer.Exit(code)
