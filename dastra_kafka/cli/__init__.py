"""The `dastra-kafka` command line: parses arguments, builds `Settings` once, calls one `run()`.

Every verb is named below and lives in the module of the same name in this package; each verb
module imports its role only when the verb runs, so `dastra-kafka --help` stays fast and a
broken role cannot break the other verbs. From `pyproject.toml`'s script to any role's main loop
takes two hops: this table names the verb's module, the verb's function calls the role's `run()`.

Exit codes scripts can trust: 0 success, 1 a check failed or a change was refused, 2 invalid
input or configuration, 3 Kafka or Dastra unreachable.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bus.logs import configure_logging
from dastra_kafka.cli import (
    acls,
    broker,
    demo,
    dlq,
    doctor,
    hooks,
    lag,
    poller,
    privacy,
    recipes,
    sandbox,
    schemas,
    studio,
    topics,
    webhook,
    worker,
)
from dastra_kafka.cli._common import EXIT_BAD_INPUT
from dastra_kafka.settings import SettingsError, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="dastra-kafka",
    help="Event-driven bridge between Dastra and Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# verb (or verb group)  -> what it runs
_VERBS = (
    broker,  # broker: a local single-node Kafka (bus/localkafka.py)
    sandbox,  # sandbox: the local Dastra API (dastra/sandbox/)
    doctor,  # doctor: checks the configured Dastra where its spec is silent (dastra/doctor/)
    topics,  # topics apply|check|list: topics.yaml against the cluster (bus/admin.py)
    poller,  # poller: Dastra changes -> event topics (producers/poller/)
    worker,  # worker: the Faust agents of the six commands and the recipes (consumers/app.py)
    webhook,  # webhook: the HTTP API for Zapier and others (producers/webhook/)
    hooks,  # hooks: REST hook deliveries (consumers/hooks.py)
    lag,  # lag, lag serve: consumer lag (consumers/lag/)
    dlq,  # dlq replay: dead letters back to their topics (consumers/dlq_replay.py)
    schemas,  # schemas export|check: the contract files (dastra_kafka/contracts/)
    recipes,  # recipes list|validate (consumers/recipes/language.py)
    studio,  # studio: the studio's API, recipes stored on Kafka (dastra_kafka/studio/)
    privacy,  # privacy keygen|erase (bus/privacy, bus/privacy/erasure.py)
    demo,  # demo: the whole pipeline, supervised (dastra_kafka/demo/)
    acls,  # acls: the Kafka ACLs each role needs (dastra_kafka/acls.py)
)


@app.callback()
def _root(
    ctx: typer.Context,
    env_file: Path = typer.Option(Path(".env"), help="A .env file read with the environment."),
) -> None:
    try:
        settings = load_settings(env_file)
    except SettingsError as exc:
        typer.echo(f"invalid configuration: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    configure_logging(settings.service)
    ctx.obj = settings


for _verb in _VERBS:
    _verb.register(app)


def main() -> None:
    """Entry point of the `dastra-kafka` console script."""
    app()
