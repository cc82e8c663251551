"""`dastra-kafka hooks`: deliver Dastra events to REST hook subscribers (Standard Webhooks
signatures, retries, 410 unsubscribes, dead letters) until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import typer

from dastra_kafka.cli._common import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, fail, settings_of
from dastra_kafka.settings import Settings
from dastra_kafka.tracing import traced

__all__ = ["register"]


def hooks(ctx: typer.Context) -> None:
    """Run the REST hook dispatcher (one consumer group per subscription: HOOKS_GROUP.<id>)."""
    from bus.errors import KafkaAuthorizationError, TailerError

    settings = settings_of(ctx)
    try:
        with traced(settings.tracing, "hooks"):
            asyncio.run(_run(settings))
    except TailerError as exc:
        fail(f"Kafka is not reachable or topics are missing: {exc}", EXIT_UNAVAILABLE)
    except KafkaAuthorizationError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


async def _run(settings: Settings) -> None:
    from consumers.hooks import HookDispatcher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with HookDispatcher(
        settings.kafka, settings.hooks, host=settings.service.host, privacy=settings.privacy
    ) as dispatcher:
        typer.echo(
            f"delivering to {len(dispatcher.table.all())} subscription(s); Ctrl-C stops",
            err=True,
        )
        await dispatcher.run(stop=stop)


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("hooks")(hooks)
