"""`dastra-kafka studio`: the studio (build, check, test and store recipes in the browser at
/studio/, and its API under /studio/api/), on SERVICE_HOST:STUDIO_PORT. Why a verb of its own
rather than routes of the webhook: checking a recipe needs the recipe language
(`consumers/recipes/`), which the webhook (a producer role) may not import; the shell may import
both."""

from __future__ import annotations

import typer

from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_UNAVAILABLE,
    catalogue_of,
    fail,
    settings_of,
)

__all__ = ["register"]


def studio(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Listen address (default SERVICE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default STUDIO_PORT)."),
) -> None:
    """Serve the studio (page at /studio/, API under /studio/api/) until Ctrl-C/SIGTERM."""
    import uvicorn

    from dastra_kafka.cli.webhook import _server_class
    from dastra_kafka.studio.app import create_app
    from dastra_kafka.studio.store import StudioStore, StudioStoreError

    settings = settings_of(ctx)
    if not settings.studio.tokens and not settings.studio.read_tokens:
        fail("no studio token: set STUDIO_TOKENS (editors) or STUDIO_READ_TOKENS", EXIT_BAD_INPUT)
    catalogue = catalogue_of(settings)
    store = StudioStore(settings.kafka, settings.studio)
    config = uvicorn.Config(
        create_app(store, settings.studio, settings.recipes, catalogue),
        host=host or settings.service.host,
        port=settings.studio.port if port is None else port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    try:
        _server_class()(config).run()
    except StudioStoreError as exc:
        fail(f"Kafka is not reachable or topics are missing: {exc}", EXIT_UNAVAILABLE)


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("studio")(studio)
