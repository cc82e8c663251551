"""`dastra-kafka recipes list|validate`: the recipes the worker can run, and their checks."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from consumers.recipes.language import Problem, RecipeSet, load_recipes
from dastra_kafka.cli._common import EXIT_BAD_INPUT, EXIT_OK, catalogue_of, fail, settings_of

__all__ = ["register"]

_app = typer.Typer(
    help="Ready-made workflows: an event in, Dastra commands and messages out.",
    no_args_is_help=True,
)


def _load(ctx: typer.Context, paths: list[Path] | None) -> RecipeSet:
    settings = settings_of(ctx)
    if paths:
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            fail(f"no such file or directory: {', '.join(missing)}", EXIT_BAD_INPUT)
    return load_recipes(settings.recipes, catalogue_of(settings), paths or None)


def _problems_table(problems: list[Problem]) -> Table:
    table = Table(title="problems", title_style="bold red")
    for column in ("file", "recipe", "field", "problem"):
        table.add_column(column, overflow="fold")
    for problem in problems:
        table.add_row(problem.file, problem.recipe or "", problem.field, problem.message)
    return table


@_app.command("list")
def list_recipes(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Every recipe (shipped, and yours from RECIPES_DIRS): enabled or not, its trigger, its
    steps and what it does. Exit code 2 when one is invalid."""
    found = _load(ctx, None)
    if as_json:
        document = {
            "recipes": [recipe.as_json() for recipe in found.recipes],
            "problems": [problem.as_json() for problem in found.problems],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        console = Console()
        table = Table(title=f"{len(found.recipes)} recipes ({len(found.enabled)} enabled)")
        for column in ("name", "enabled", "trigger", "steps", "description"):
            table.add_column(column, overflow="fold", no_wrap=column == "name")
        for recipe in sorted(found.recipes, key=lambda r: r.name):
            table.add_row(
                recipe.name,
                "[green]yes[/]" if recipe.enabled else "no",
                recipe.describe_trigger(),
                "\n".join(step.describe() for step in recipe.steps),
                recipe.description,
            )
        console.print(table)
        if found.problems:
            console.print(_problems_table(found.problems))
        else:
            console.print("enable one with RECIPES_ENABLE=<name>[,<name>...] (see the README)")
    raise typer.Exit(EXIT_BAD_INPUT if found.problems else EXIT_OK)


@_app.command("validate")
def validate(
    ctx: typer.Context,
    paths: list[Path] | None = typer.Argument(
        None, help="Recipe files or directories (default: the shipped ones and RECIPES_DIRS)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Check recipes as the worker does before it starts (actions, fields, expressions, step
    references, topics) and run each one's example through it. Exit code 0 when all are valid,
    2 otherwise."""
    found = _load(ctx, paths)
    valid = not found.problems
    if as_json:
        document = {
            "valid": valid,
            "recipes": [recipe.name for recipe in found.recipes],
            "problems": [problem.as_json() for problem in found.problems],
        }
        typer.echo(json.dumps(document, indent=2))
    else:
        console = Console()
        if valid:
            console.print(f"{len(found.recipes)} recipe(s) valid")
        else:
            console.print(_problems_table(found.problems))
            for problem in found.problems:
                typer.echo(str(problem), err=True)
    raise typer.Exit(EXIT_OK if valid else EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    """Add this verb group to the `dastra-kafka` command line."""
    app.add_typer(_app, name="recipes")
