"""`dastra-kafka worker`: run the Faust agents that execute commands against Dastra, and the
enabled recipes (RECIPES_ENABLE)."""

from __future__ import annotations

from typing import Any

import typer

from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    PRIVACY_KEYS,
    RECIPE_REQUESTS,
    RECIPE_RUNS,
    STUDIO_RECIPES,
    command_topic,
)
from consumers.recipes.language import Recipe, RecipeError, runnable_recipes
from consumers.settings import WorkerSettings
from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    catalogue_of,
    fail,
    settings_of,
    with_budget_role,
)
from dastra_kafka.settings import Settings
from dastra_kafka.tracing import traced

__all__ = ["register"]


def worker(
    ctx: typer.Context,
    action: list[str] = typer.Option(
        [], "--action", "-a", help="Run only this action's agent (repeatable; default: all six)."
    ),
    web_host: str | None = typer.Option(None, help="Web server interface (WORKER_WEB_HOST)."),
    web_port: int | None = typer.Option(None, help="Web server port (WORKER_WEB_PORT)."),
    concurrency: int | None = typer.Option(None, min=1, help="WORKER_CONCURRENCY."),
) -> None:
    """Execute commands from dastra.commands.<action>.v1 until SIGTERM or Ctrl-C.

    Every command gets one result on dastra.command-results.v1; bad records and permanent
    failures also go to dastra.dead-letter.v1. /metrics and /ready are served on the web port.
    Enabled recipes (RECIPES_ENABLE=name,...) run here too; an invalid one stops the start.
    """
    settings = with_budget_role(settings_of(ctx), "workers")
    overrides = {
        name: value
        for name, value in (
            ("actions", action or None),
            ("web_host", web_host),
            ("web_port", web_port),
            ("concurrency", concurrency),
        )
        if value is not None
    }
    if overrides:
        try:
            worker_settings = WorkerSettings(**{**settings.worker.model_dump(), **overrides})
        except ValueError as exc:
            fail(f"invalid option: {exc}", EXIT_BAD_INPUT)
        settings = settings.model_copy(update={"worker": worker_settings})
    if settings.dastra.base_url is None:
        fail(
            "no Dastra API: set DASTRA_BASE_URL (and DASTRA_API_KEY), e.g. to a running "
            "`dastra-kafka sandbox`",
            EXIT_BAD_INPUT,
        )
    try:
        recipes = runnable_recipes(settings, catalogue_of(settings))
    except RecipeError as exc:
        fail(f"recipes that cannot run:\n{exc}", EXIT_BAD_INPUT)
    _check_topics(settings, recipes)
    from bus.privacy import PrivacyError
    from consumers.app import run

    try:
        with traced(settings.tracing, "worker"):
            status = run(settings, recipes)
    except PrivacyError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    raise typer.Exit(status)


def _check_topics(settings: Settings, recipes: list[Recipe]) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    kafka = settings.kafka
    wanted = [command_topic(a) for a in settings.worker.selected_actions()]
    wanted += [COMMAND_RESULTS, DEAD_LETTER]
    if settings.privacy.uses_keys or settings.privacy.master_key is not None:
        wanted.append(PRIVACY_KEYS)
    if settings.recipes.studio:
        wanted += [RECIPE_RUNS, STUDIO_RECIPES, RECIPE_REQUESTS]
    if recipes:
        wanted += [RECIPE_RUNS, *(topic for recipe in recipes for topic in recipe.topics())]
        wanted += [command_topic(step.action) for r in recipes for step in r.steps if step.action]
    wanted = list(dict.fromkeys(wanted))
    admin = AdminClient(kafka.confluent_config())
    try:
        existing = set(admin.list_topics(timeout=15).topics)
    except KafkaException as exc:
        fail(f"Kafka is unreachable at {kafka.bootstrap_servers}: {exc}", EXIT_UNAVAILABLE)
    missing = [kafka.topic(name) for name in wanted if kafka.topic(name) not in existing]
    _check_access(settings, admin, missing)
    if missing:
        fail(
            f"missing topic(s): {', '.join(missing)}; run `dastra-kafka topics apply` first "
            "(topics of yours that recipes name are not in topics.yaml: create them yourself)",
            EXIT_FAILED,
        )


def _check_access(settings: Settings, admin: Any, unlisted: list[str]) -> None:
    """Fail naming the ACL when the principal may not use a topic or the worker's group: Faust
    would wait forever for an assignment that never comes."""
    from bus.admin import check_topic_access
    from bus.errors import KafkaAuthorizationError, KafkaUnavailableError
    from bus.groups import committed_offsets

    kafka = settings.kafka
    # A topic we may not describe is not listed: missing, or denied?
    needs = {t: "WRITE" if t == kafka.topic(DEAD_LETTER) else "READ" for t in unlisted}
    try:
        check_topic_access(admin, needs)
    except KafkaAuthorizationError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    if unlisted:
        return  # missing topics: the caller says so
    group = kafka.topic(settings.worker.app_id)
    try:
        # Over aiokafka: librdkafka's group admin calls can crash the process while a new
        # cluster creates its offsets topic (bus/groups.py says why).
        committed_offsets(kafka, group)
    except KafkaAuthorizationError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    except KafkaUnavailableError:
        return  # the coordinator is slow to come: the Faust worker waits for it itself


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("worker")(worker)
