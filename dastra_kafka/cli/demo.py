"""`dastra-kafka demo`: the main job behind `make run`."""

from __future__ import annotations

from pathlib import Path
from typing import cast, get_args

import typer

from bus.settings import PayloadMode
from bus.topics import TopicCatalogue
from dastra_kafka.cli._common import EXIT_BAD_INPUT, catalogue_of, fail, settings_of
from dastra_kafka.settings import Settings

__all__ = ["register"]


def demo(
    ctx: typer.Context,
    duration: float = typer.Option(60.0, min=5, help="Seconds of traffic before the summary."),
    item_every: float = typer.Option(1.5, min=0.1, help="Seconds between items created in Dastra."),
    command_every: float = typer.Option(2.0, min=0.1, help="Seconds between webhook commands."),
    run_dir: Path | None = typer.Option(
        None, help="Where the services' logs go (default: a temp dir)."
    ),
    recipe: list[str] = typer.Option(
        [], "--recipe", help="Switch a shipped recipe on (repeatable)."
    ),
    privacy: str = typer.Option(
        "full",
        "--privacy",
        help="Payload mode of events and results: full, redacted, thin or encrypted (then one "
        'requester is erased at the end and checked unreadable). README "Privacy".',
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    chaos: bool = typer.Option(
        False,
        "--chaos",
        help="While the traffic flows, SIGKILL services at random and restart them, and restart "
        "the broker (the demo then runs its own); the same checks must pass.",
    ),
    seed: int = typer.Option(2026, help="--chaos: the seed of its random schedule."),
    chaos_targets: str = typer.Option(
        "poller,worker,webhook,hooks,broker",
        help="--chaos: what it disrupts, comma-separated among poller, worker, webhook, hooks "
        "and broker.",
    ),
    chaos_every: float = typer.Option(
        8.0, min=1, help="--chaos: mean seconds between two disruptions."
    ),
    chaos_rounds: int | None = typer.Option(
        None,
        min=1,
        help="--chaos: hit every target this many times (in shuffled rounds), the traffic "
        "flowing past --duration until done; default: until --duration ends.",
    ),
) -> None:
    """Run the whole pipeline on a local broker and the Dastra sandbox, drive traffic, show it
    live, then check that nothing was lost or duplicated (exit 1 when a check fails)."""
    from dastra_kafka.chaos import BROKER, ChaosPlan
    from dastra_kafka.demo import DemoOptions, run

    if privacy not in get_args(PayloadMode):
        fail(f"--privacy: one of {', '.join(get_args(PayloadMode))}", EXIT_BAD_INPUT)
    settings = settings_of(ctx)
    catalogue = catalogue_of(settings)
    if recipe:
        _check_recipes(settings, catalogue, recipe)
    plan = None
    if chaos:
        try:
            plan = ChaosPlan(
                seed=seed,
                targets=tuple(t.strip() for t in chaos_targets.split(",") if t.strip()),
                every_s=chaos_every,
                rounds=chaos_rounds,
            )
        except ValueError as exc:
            fail(f"--chaos-targets: {exc}", EXIT_BAD_INPUT)
        if BROKER in plan.targets and "bootstrap_servers" in settings.kafka.model_fields_set:
            fail(
                "--chaos restarts the broker, so the demo must run its own: unset "
                "KAFKA_BOOTSTRAP_SERVERS, or leave broker out of --chaos-targets",
                EXIT_BAD_INPUT,
            )
    options = DemoOptions(
        duration_s=duration,
        item_every_s=item_every,
        command_every_s=command_every,
        run_dir=run_dir,
        recipes=tuple(recipe),
        privacy=cast(PayloadMode, privacy),
        as_json=as_json,
        chaos=plan,
    )
    raise typer.Exit(run(settings, catalogue, options))


def _check_recipes(settings: Settings, catalogue: TopicCatalogue, names: list[str]) -> None:
    """The `--recipe` names, loaded and checked as the worker will before anything starts."""
    from consumers.recipes.language import RecipeError, load_recipes

    if not settings.dastra.uses_sandbox:
        fail(
            "--recipe: recipes write to Dastra, and the demo never writes to a real Dastra "
            "(DASTRA_BASE_URL is set): run it on the sandbox",
            EXIT_BAD_INPUT,
        )
    chosen = settings.recipes.model_copy(update={"enable": list(names), "disable": []})
    try:
        load_recipes(chosen, catalogue).require_runnable()
    except RecipeError as exc:
        fail(f"--recipe: recipes that cannot run:\n{exc}", EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("demo")(demo)
