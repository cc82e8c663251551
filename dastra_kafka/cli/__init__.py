"""The `dastra-kafka` command line: parses arguments, builds `Settings` once, calls one `run()`.

Exit codes scripts can trust: 0 success, 1 a check failed or a change was refused, 2 invalid
input or configuration, 3 Kafka or Dastra unreachable.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import typer
from pydantic import ValidationError

from bus.logs import configure_logging
from dastra_kafka.cli._common import EXIT_BAD_INPUT
from dastra_kafka.settings import load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="dastra-kafka",
    help="Event-driven bridge between Dastra and Apache Kafka.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root(
    ctx: typer.Context,
    env_file: Path = typer.Option(Path(".env"), help="A .env file read with the environment."),
) -> None:
    try:
        settings = load_settings(env_file)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        typer.echo(f"invalid configuration: {problems}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    configure_logging(settings.service)
    ctx.obj = settings


# Every public module of this package is a verb (or verb group) and registers itself, so a new
# verb is a new file, not an edit here.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")):
    importlib.import_module(f"{__name__}.{_module}").register(app)


def main() -> None:
    """Entry point of the `dastra-kafka` console script."""
    app()
