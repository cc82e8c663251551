"""`dastra-kafka sandbox`: run the local Dastra sandbox until Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import typer

from dastra_kafka.cli._common import EXIT_BAD_INPUT, fail, settings_of

__all__ = ["register"]

_DEFAULT_SEED = 5


def sandbox(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Interface to listen on (default 127.0.0.1)."),
    port: int | None = typer.Option(
        None, min=0, max=65535, help="Port (default 8800; 0 picks a free one)."
    ),
    db: Path | None = typer.Option(None, help="SQLite file that keeps the state across restarts."),
    no_rate_limit: bool = typer.Option(
        False, "--no-rate-limit", help="Turn off Dastra's 500/min and 10 000/10 min limits."
    ),
    seed: int | None = typer.Option(
        None,
        min=0,
        help=f"Sample rights requests and tasks per workspace on an empty state "
        f"(default {_DEFAULT_SEED}).",
    ),
    workspaces: int | None = typer.Option(None, min=1, max=50, help="Workspaces to seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the address and key as JSON."),
) -> None:
    """Serve a stateful stand-in for Dastra's API; print the base URL and API key to use."""
    from dastra.sandbox import serve

    config = settings_of(ctx).sandbox
    updates: dict[str, Any] = {}
    if host is not None:
        updates["host"] = host
    if port is not None:
        updates["port"] = port
    if db is not None:
        updates["db"] = db
    if no_rate_limit:
        updates["rate_limit"] = False
    if seed is not None:
        updates["seed_items"] = seed
    elif "seed_items" not in config.model_fields_set:
        updates["seed_items"] = _DEFAULT_SEED
    if workspaces is not None:
        updates["workspaces"] = workspaces
    config = config.model_copy(update=updates)
    key = config.private_key.get_secret_value()  # a sandbox key: printing it is the point

    def ready(base_url: str, workspace: int) -> None:
        details = {
            "base_url": base_url,
            "api_key": key,
            "client_id": config.public_key,
            "token_url": f"{base_url}/connect/token",
            "workspace_id": workspace,
            "docs": f"{base_url}/docs",
            "admin": f"{base_url}/_sandbox",
        }
        if as_json:
            typer.echo(json.dumps(details))
        else:
            typer.echo(f"DASTRA_BASE_URL={base_url}")
            typer.echo(f"DASTRA_API_KEY={key}")
            typer.echo(f"DASTRA_WORKSPACE_ID={workspace}")
            typer.echo(f"DASTRA_TOKEN_URL={base_url}/connect/token")
            typer.echo(
                f"Dastra sandbox ready: Swagger UI at {base_url}/docs, test controls at "
                f"{base_url}/_sandbox, rate limit {'on' if config.windows() else 'off'}, "
                f"state {'in ' + str(config.db) if config.db else 'in memory'}; Ctrl-C stops it",
                err=True,
            )
        sys.stdout.flush()

    # uvicorn handles SIGINT/SIGTERM, then re-raises the signal to the handler it found: make
    # that one a no-op so that a requested stop exits 0.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: None)
    try:
        serve(config, ready)
    except OSError as exc:
        fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}", EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("sandbox")(sandbox)
