"""`dastra-kafka schemas export|check`: the contract files (schemas/, asyncapi.yaml, docs/topics.md)
generated from the code, and the guard against drift and breaking changes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from bus.topics import Compatibility, load_catalogue
from dastra_kafka.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    catalogue_of,
    fail,
    settings_of,
)

if TYPE_CHECKING:  # the contract tooling (jsonschema) is imported when a verb runs, not by --help
    from dastra_kafka.contracts.compat import Incompatibility
    from dastra_kafka.contracts.schemagen import Drift

__all__ = ["register"]

_app = typer.Typer(
    help="JSON Schemas, AsyncAPI document and topic reference, generated from the code.",
    no_args_is_help=True,
)

_ROOT_HELP = "Repository root holding schemas/ and docs/ (default: the directory of topics.yaml)."


def _generate(
    ctx: typer.Context, root: Path | None
) -> tuple[Path, dict[str, bytes], dict[str, Compatibility]]:
    # The file as written, without KAFKA_REPLICATION_FACTOR: the output must not depend on the
    # environment of whoever runs the export.
    from dastra_kafka.contracts.schemagen import generate, schema_compatibility

    catalogue = load_catalogue(catalogue_of(settings_of(ctx)).path)
    try:
        files = generate(catalogue)
    except KeyError as exc:
        fail(f"{catalogue.path}: {exc.args[0]}", EXIT_BAD_INPUT)
    return (root or catalogue.path.resolve().parent), files, schema_compatibility(catalogue)


def _report_breaking(console: Console, title: str, found: dict[str, list[Incompatibility]]) -> None:
    console.print(f"[red]{title}[/]")
    for path, problems in found.items():
        console.print(f"  {path}")
        for problem in problems:
            console.print(f"    {problem}", markup=False, highlight=False)


@_app.command("export")
def export_command(
    ctx: typer.Context,
    root: Path | None = typer.Option(None, help=_ROOT_HELP),
    allow_breaking: bool = typer.Option(
        False, "--allow-breaking", help="Write even when a schema breaks its consumers."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Write every generated file; refuse a breaking change unless --allow-breaking."""
    from dastra_kafka.contracts.schemagen import breaking_changes, committed_files, drift

    base, files, modes = _generate(ctx, root)
    breaking = breaking_changes(committed_files(base), files, modes)
    if breaking and not allow_breaking:
        if as_json:
            typer.echo(json.dumps({"written": [], "breaking": _as_lists(breaking)}, indent=2))
        else:
            _report_breaking(Console(stderr=True), "breaking changes (nothing written):", breaking)
            typer.echo(
                "A breaking change needs a new topic version (.v2); or pass --allow-breaking.",
                err=True,
            )
        raise typer.Exit(EXIT_FAILED)
    written: list[str] = []
    for path, content in files.items():
        target = base / path
        if target.is_file() and target.read_bytes() == content:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written.append(path)
    removed = [item.path for item in drift(base, files) if item.status == "unexpected"]
    for path in removed:
        (base / path).unlink()
    if as_json:
        typer.echo(json.dumps({"written": written, "removed": removed, "files": len(files)}))
        return
    console = Console()
    for path in written:
        console.print(f"wrote {path}")
    for path in removed:
        console.print(f"removed {path}")
    console.print(f"{len(files)} files up to date under {base}")


@_app.command("check")
def check_command(
    ctx: typer.Context,
    root: Path | None = typer.Option(None, help=_ROOT_HELP),
    against: str = typer.Option(
        "HEAD",
        help="Also check compatibility with the schemas at this git revision (e.g. "
        "origin/main); empty to skip.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Exit 1 when the files differ from what the code generates (drift) or when the code's
    schemas break consumers of the committed ones (on disk, and at --against)."""
    from dastra_kafka.contracts.schemagen import breaking_changes, committed_files, drift

    base, files, modes = _generate(ctx, root)
    drifted = drift(base, files)
    breaking = breaking_changes(committed_files(base), files, modes)
    notes: list[str] = []
    if against:
        try:
            at_ref = committed_files(base, against)
        except ValueError as exc:
            notes.append(f"compatibility with {against} not checked: {exc}")
        else:
            for path, problems in breaking_changes(at_ref, files, modes).items():
                breaking.setdefault(f"{path}@{against}", problems)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": not drifted and not breaking,
                    "drift": [
                        {"path": d.path, "status": d.status, "diff": d.diff} for d in drifted
                    ],
                    "breaking": _as_lists(breaking),
                    "notes": notes,
                },
                indent=2,
            )
        )
    else:
        _print_check(drifted, breaking, notes, len(files))
    if drifted or breaking:
        raise typer.Exit(EXIT_FAILED)


def _print_check(
    drifted: list[Drift], breaking: dict[str, list[Incompatibility]], notes: list[str], total: int
) -> None:
    console = Console(stderr=bool(drifted or breaking))
    for note in notes:
        console.print(f"note: {note}", markup=False)
    if drifted:
        console.print(f"[red]drift: {len(drifted)} file(s) differ from what the code generates[/]")
        for item in drifted:
            console.print(item.summary(), markup=False, highlight=False)
        console.print("Run `dastra-kafka schemas export` and commit the result.")
    if breaking:
        _report_breaking(
            console, "breaking changes for consumers of the committed schemas:", breaking
        )
    if not drifted and not breaking:
        from dastra_kafka.contracts.schemagen import SCHEMAS_DIR

        console.print(f"{total} contract files match the code under {SCHEMAS_DIR}/ and docs/")


def _as_lists(found: dict[str, list[Incompatibility]]) -> dict[str, list[str]]:
    return {path: [str(problem) for problem in problems] for path, problems in found.items()}


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.add_typer(_app, name="schemas")
