"""Recipes: ready-made workflows that turn an event into Dastra commands and messages.

Consumes recipe files (YAML, one recipe per file: the shipped ones in `recipes/`, yours in
RECIPES_DIRS), the topic catalogue and `RecipesSettings`. Produces validated `Recipe`s, every
problem found (`Problem`: file, recipe, field, message), and the pure functions the runner
(`consumers/recipes/execution.py`) uses to render a step: the command or message a step sends for
one event, with deterministic ids.

A recipe file:

    name: new-request-dpo-task              # [a-z0-9-], unique
    description: A new rights request gets a task for the DPO, due at its legal deadline.
    enabled: false                          # RECIPES_ENABLE=name switches it on
    trigger:                                # or `schedule:` (a periodic look at Dastra)
      topic: dastra.rights-requests.v1      # a catalogue topic, or one of yours
      type: eu.dastra.rights_request.created
      filter: "data.state != 'Closed'"      # JMESPath, optional
    once_per: "{{ data.id }}"               # optional: the idempotency key (default: event id)
    settings: {dpo_user_id: 7}              # optional: this recipe's own settings.* values
    steps:
      - id: task
        command: create-task                # one of the six actions
        with:                               # the command's fields, Dastra's names
          label: "Answer rights request #{{ data.id }}"
          deadline: "{{ data.expiryTime }}"
          objectType: DataSubject
          objectId: "{{ data.id }}"
      - id: notify
        when: "steps.task.status == 'succeeded'"
        publish: {topic: dastra.notifications.v1, type: eu.dastra.recipe.x, data: {title: ...}}
    example: {data: {...}, results: {task: {...}}}    # checked by `recipes validate`

Expressions (see `consumers/recipes/expressions.py`) read one context: `event` (id, type,
source, subject, time, key, topic, partition, offset, workspace_id), `data` (the event's data),
`steps.<id>` (`status`, and `result`: the command's result, a list for a `foreach` step), `item`
and `index` (inside a `foreach`), `settings` (`RecipesSettings.expression_settings()`, with the
recipe's own `settings:` values in place of RECIPES_*'s), `recipe` (name) and `run` (key).

Why this shape: everything a recipe can do is checked before anything runs (unknown action or
field, a literal a command would refuse, bad expressions, references to later steps, unknown
topics, a recipe that would trigger itself), so the worker never starts half-configured. Each
step is an ordinary command on the command topics, so it gets the agents' results, retries,
dead letters and dedupe; its id is derived from (recipe, run key, step, item index), so
repeating a run repeats the same ids and the agents' dedupe turns a repeat into a no-op.

    found = load_recipes(settings.recipes, catalogue)
    runnable = found.require_runnable()     # RecipeError when an enabled recipe is invalid
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bus.topics import (
    TopicCatalogue,
    load_catalogue,
    resolve_topics_file,
)
from consumers.recipes.checks import compile_recipe
from consumers.recipes.model import (
    CONTEXT_NAMES,
    EVENT_FIELDS,
    NAME_PATTERN,
    PUBLISH_TOPICS,
    SCHEDULE_LISTS,
    TRIGGER_TOPICS,
    Problem,
    Problems,
    Recipe,
    RecipeError,
    RecipeSpec,
    Schedule,
    Step,
    Trigger,
    error_location,
    pydantic_message,
    shipped_recipes_dir,
)
from consumers.recipes.render import (
    build_context,
    dry_run,
    event_context,
    iterations,
    preview_run,
    render_command,
    render_message,
    step_command_id,
    workspace_of_source,
)
from consumers.recipes.settings import RecipesSettings
from consumers.settings import WorkerConfig

__all__ = [
    "CONTEXT_NAMES",
    "EVENT_FIELDS",
    "PUBLISH_TOPICS",
    "SCHEDULE_LISTS",
    "TRIGGER_TOPICS",
    "Problem",
    "Recipe",
    "RecipeError",
    "RecipeSet",
    "Schedule",
    "Step",
    "Trigger",
    "build_context",
    "dry_run",
    "event_context",
    "iterations",
    "load_document",
    "load_recipes",
    "preview_run",
    "render_command",
    "render_message",
    "runnable_recipes",
    "shipped_recipes_dir",
    "step_command_id",
    "workspace_of_source",
]


# --- problems --------------------------------------------------------------------------------


# --- the raw file structure ------------------------------------------------------------------


# --- compiled recipes ------------------------------------------------------------------------


# --- loading ---------------------------------------------------------------------------------


@dataclass
class RecipeSet:
    """Every recipe found: the valid ones (a recipe of yours replaces a shipped one of the same
    name) and every problem, with what the worker needs to decide whether it may start."""

    recipes: list[Recipe] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Problems the worker cannot ignore: in enabled recipes, in files whose recipe (or whether
    # it is enabled) cannot be told, and names in RECIPES_ENABLE/DISABLE that no recipe has.
    blocking: list[Problem] = field(default_factory=list)

    @property
    def enabled(self) -> list[Recipe]:
        return [recipe for recipe in self.recipes if recipe.enabled]

    def __getitem__(self, name: str) -> Recipe:
        for recipe in self.recipes:
            if recipe.name == name:
                return recipe
        raise KeyError(name)

    def require_runnable(self) -> list[Recipe]:
        """The enabled recipes; `RecipeError` when any of them (or anything blocking) is wrong."""
        if self.blocking:
            raise RecipeError(self.blocking)
        return self.enabled


def _files(paths: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += [
                file
                for file in sorted(path.iterdir())
                if file.suffix in (".yaml", ".yml") and file.is_file()
            ]
        else:
            found.append(path)
    return found


def load_recipes(
    settings: RecipesSettings,
    catalogue: TopicCatalogue,
    paths: Sequence[Path] | None = None,
) -> RecipeSet:
    """Load and check recipes: from `paths` (files or directories) when given, else the shipped
    ones (unless RECIPES_SHIPPED=false) then RECIPES_DIRS. Never raises for a bad recipe: every
    problem is in the result."""
    result = RecipeSet()
    sources: list[tuple[Path, bool]] = []
    if paths is not None:
        sources = [(file, False) for file in _files(paths)]
    else:
        if settings.shipped:
            sources += [(file, True) for file in _files([shipped_recipes_dir()])]
        sources += [(file, False) for file in _files(Path(entry) for entry in settings.dirs)]
    by_name: dict[str, tuple[Recipe | None, bool, Path]] = {}
    for file, shipped in sources:
        recipe, problems, name, enabled = _load_file(file, settings, catalogue)
        result.problems += problems
        if name is None or enabled is None:
            result.blocking += problems
            continue
        previous = by_name.get(name)
        if previous is not None:
            earlier_shipped, earlier_file = previous[1], previous[2]
            if not earlier_shipped or shipped:
                problem = Problem(
                    str(file), name, "name", f"duplicate recipe name (also in {earlier_file})"
                )
                result.problems.append(problem)
                result.blocking.append(problem)
                continue
        by_name[name] = (recipe, shipped, file)
        if problems and enabled:
            result.blocking += problems
    result.recipes = [entry[0] for entry in by_name.values() if entry[0] is not None]
    if paths is None:
        for variable, names in (
            ("RECIPES_ENABLE", settings.enable),
            ("RECIPES_DISABLE", settings.disable),
        ):
            for name in names:
                if name not in by_name:
                    close = difflib.get_close_matches(name, list(by_name), n=1)
                    hint = f"; did you mean {close[0]}?" if close else ""
                    problem = Problem(variable, name, "", f"no recipe is named {name!r}{hint}")
                    result.problems.append(problem)
                    result.blocking.append(problem)
    return result


def runnable_recipes(
    settings: WorkerConfig, catalogue: TopicCatalogue | None = None
) -> list[Recipe]:
    """The recipes the settings enable, all valid; `RecipeError` otherwise (the worker refuses
    to start half-configured)."""
    if catalogue is None:
        catalogue = load_catalogue(resolve_topics_file(settings.service.topics_file))
    return load_recipes(settings.recipes, catalogue).require_runnable()


def _load_file(
    path: Path, settings: RecipesSettings, catalogue: TopicCatalogue
) -> tuple[Recipe | None, list[Problem], str | None, bool | None]:
    """(recipe or None, problems, its name if known, whether it is enabled if known)."""
    problems = Problems(str(path), None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.add("", f"cannot read the file: {exc.strerror or exc}")
        return None, problems.found, None, None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        lines = text.splitlines()
        line = lines[mark.line] if mark is not None and mark.line < len(lines) else ""
        hint = ""
        if "{{" in line or "unhashable" in str(exc):
            hint = ' (quote templates: label: "Call {{ data.name }}")'
        problems.add(where, f"not valid YAML: {reason}{hint}")
        return None, problems.found, None, None
    return _load_document(document, problems, path, settings, catalogue)


def load_document(
    document: Any, source: str, settings: RecipesSettings, catalogue: TopicCatalogue
) -> tuple[Recipe | None, list[Problem]]:
    """Check one recipe document (a recipe file's content, already parsed) exactly as
    `recipes validate` checks a file: the recipe when valid, else None and every problem (each
    with the path of the field at fault). `source` names where it comes from, e.g.
    `studio:web-form@3`.

        recipe, problems = load_document(yaml.safe_load(text), "studio:x@1", settings, catalogue)
    """
    recipe, problems, _name, _enabled = _load_document(
        document, Problems(source, None), Path(source), settings, catalogue
    )
    return recipe, problems


def _load_document(
    document: Any,
    problems: Problems,
    path: Path,
    settings: RecipesSettings,
    catalogue: TopicCatalogue,
) -> tuple[Recipe | None, list[Problem], str | None, bool | None]:
    if not isinstance(document, Mapping):
        problems.add("", "a recipe file holds one mapping (name, description, trigger, steps)")
        return None, problems.found, None, None
    name = document.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.add("name", "required: lower-case letters, digits and '-' (at most 80)")
        return None, problems.found, None, None
    problems.recipe = name
    in_file = document.get("enabled", False)
    if not isinstance(in_file, bool):
        problems.add("enabled", f"true or false, not {in_file!r}")
        return None, problems.found, name, None
    enabled = name in settings.enable or (in_file and name not in settings.disable)
    try:
        spec = RecipeSpec.model_validate(document)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            problems.add(error_location(error["loc"]), pydantic_message(error))
        return None, problems.found, name, enabled
    recipe = compile_recipe(spec, path, enabled, settings, catalogue, problems)
    if problems.found:
        return None, problems.found, name, enabled
    return recipe, [], name, enabled


# --- compiling and checking ------------------------------------------------------------------


# --- rendering -------------------------------------------------------------------------------
