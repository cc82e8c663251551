"""`dastra-kafka poller`: publish Dastra's new and updated rights requests and tasks to Kafka."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    catalogue_of,
    fail,
    settings_of,
    with_budget_role,
)
from dastra_kafka.settings import Settings
from dastra_kafka.tracing import traced

__all__ = ["register"]


def poller(
    ctx: typer.Context,
    workspace: list[int] = typer.Option(
        [], "--workspace", "-w", help="Workspace id (repeatable; default DASTRA_WORKSPACE_ID(S))."
    ),
    start: str | None = typer.Option(
        None,
        "--from",
        help="Where a workspace without a stored cursor starts: now (default), beginning, or an "
        "ISO date. Ignored once a cursor exists.",
    ),
    once: bool = typer.Option(False, "--once", help="One cycle per workspace, then exit."),
    max_cycles: int | None = typer.Option(None, min=1, help="Stop after this many cycles."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary at the end."),
) -> None:
    """Poll Dastra and publish change events, exactly once, until Ctrl-C or SIGTERM.

    Exit codes: 0 ok; 1 fenced by another poller; 2 bad configuration, missing topics, or a
    Dastra error waiting cannot fix (credentials, unknown workspace); 3 Kafka or Dastra
    unreachable (with --once or --max-cycles, when the last cycle failed)."""
    from producers.poller import parse_start

    settings = with_budget_role(settings_of(ctx), "poller")
    workspaces = workspace or settings.dastra.watched_workspaces()
    if not workspaces:
        fail("no workspace: set DASTRA_WORKSPACE_ID or pass --workspace", EXIT_BAD_INPUT)
    if settings.dastra.base_url is None:
        fail(
            "no Dastra API: set DASTRA_BASE_URL (and DASTRA_API_KEY), e.g. to a running "
            "`dastra-kafka sandbox`",
            EXIT_BAD_INPUT,
        )
    try:
        start_from = parse_start(start) if start else None
    except ValueError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    cycles = 1 if once else max_cycles
    with traced(settings.tracing, "poller"):
        code = asyncio.run(_run(settings, workspaces, start_from, cycles, as_json))
    raise typer.Exit(code)


async def _run(
    settings: Settings,
    workspaces: list[int],
    start: object,
    max_cycles: int | None,
    as_json: bool,
) -> int:
    from bus.errors import KafkaAuthorizationError, KafkaUnavailableError, TopicMissingError
    from bus.metrics import role_registry
    from bus.privacy import PrivacyError
    from dastra.client import DastraClient
    from dastra.metrics import DastraMetrics
    from producers.poller import Poller, PollerFencedError

    catalogue = catalogue_of(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    counts = dict.fromkeys(workspaces, 0)
    console = Console(stderr=True)

    def view() -> Table:
        table = Table(title="dastra-kafka poller (Ctrl-C stops)")
        table.add_column("workspace")
        table.add_column("events published", justify="right")
        for ws, count in counts.items():
            table.add_row(str(ws), str(count))
        return table

    live = Live(view(), console=console, auto_refresh=False) if sys.stderr.isatty() else None

    def on_cycle(ws: int, published: int) -> None:
        counts[ws] += published
        if live is not None:
            live.update(view(), refresh=True)

    # One registry for the poller's /metrics: its own metrics and its Dastra client's.
    registry = role_registry()
    async with DastraClient(settings.dastra, metrics=DastraMetrics(registry)) as dastra:
        try:
            poller = Poller(
                settings.kafka,
                settings.poller,
                catalogue,
                dastra,
                workspaces=workspaces,
                start=start,  # type: ignore[arg-type]
                host=settings.service.host,
                registry=registry,
                privacy=settings.privacy,
            )
        except PrivacyError as exc:
            typer.echo(str(exc), err=True)
            return EXIT_BAD_INPUT
        if live is not None:
            live.start()
        try:
            summary = await poller.run(stop=stop, max_cycles=max_cycles, on_cycle=on_cycle)
        except PollerFencedError as exc:
            typer.echo(f"fenced: another poller took over ({exc})", err=True)
            return EXIT_FAILED
        except TopicMissingError as exc:
            typer.echo(str(exc.args[0].str() if exc.args else exc), err=True)
            return EXIT_BAD_INPUT
        except KafkaAuthorizationError as exc:
            typer.echo(str(exc), err=True)
            return EXIT_BAD_INPUT
        except KafkaUnavailableError as exc:
            typer.echo(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}", err=True)
            return EXIT_UNAVAILABLE
        finally:
            if live is not None:
                live.stop()
    if as_json:
        typer.echo(json.dumps(summary.as_json()))
    if summary.fenced:
        typer.echo(f"fenced: another poller took over workspace(s) {summary.fenced}", err=True)
        return EXIT_FAILED
    if summary.failed:
        for ws, reason in summary.failed.items():
            typer.echo(f"workspace {ws} stopped: {reason}", err=True)
        return EXIT_BAD_INPUT
    if max_cycles is not None and summary.last_error:
        typer.echo(f"the last cycle failed: {summary.last_error}", err=True)
        return EXIT_UNAVAILABLE
    return EXIT_OK


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("poller")(poller)
