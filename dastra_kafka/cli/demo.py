"""`dastra-kafka demo`: the main job behind `make run`."""

from __future__ import annotations

import typer

from dastra_kafka.cli._common import catalogue_of, settings_of

__all__ = ["register"]


def demo(ctx: typer.Context) -> None:
    """Start (or reuse) Kafka, apply topics.yaml and show the pipeline."""
    from dastra_kafka.demo import run

    settings = settings_of(ctx)
    raise typer.Exit(run(settings, catalogue_of(settings)))


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("demo")(demo)
