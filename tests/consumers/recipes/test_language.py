"""Recipe files: the shipped ones validate (and so do their examples), every kind of mistake is
reported with its file, recipe and field, and what enables a recipe."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.topics import TopicCatalogue
from consumers.recipes.language import (
    Problem,
    RecipeError,
    build_context,
    event_context,
    iterations,
    load_recipes,
    render_command,
    render_message,
    shipped_recipes_dir,
    step_command_id,
)
from consumers.recipes.settings import RecipesSettings

SHIPPED = sorted(shipped_recipes_dir().glob("*.yaml"))

BASE: dict[str, Any] = {
    "name": "my-recipe",
    "description": "A test recipe.",
    "trigger": {
        "topic": "dastra.rights-requests.v1",
        "type": "eu.dastra.rights_request.created",
        "filter": "data.state != 'Closed'",
    },
    "steps": [
        {
            "id": "task",
            "command": "create-task",
            "with": {"label": "Answer #{{ data.id }}", "objectType": "DataSubject",
                     "objectId": "{{ data.id }}"},
        },
        {
            "id": "notify",
            "publish": {"topic": "dastra.notifications.v1", "type": "eu.acme.x",
                        "data": {"title": "Task {{ steps.task.result.id }}"}},
        },
    ],
}  # fmt: skip


def _write(tmp_path: Path, document: Any, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
    return path


def _problems(
    tmp_path: Path, catalogue: TopicCatalogue, change: Any, settings: RecipesSettings | None = None
) -> list[Problem]:
    document = copy.deepcopy(BASE)
    if callable(change):
        change(document)
    else:
        document = change
    path = _write(tmp_path, document)
    return load_recipes(settings or RecipesSettings(), catalogue, [path]).problems


# --- the shipped recipes -----------------------------------------------------------------------


def test_at_least_ten_recipes_ship_all_valid_and_disabled(catalogue: TopicCatalogue) -> None:
    found = load_recipes(RecipesSettings(), catalogue)
    assert found.problems == []
    assert len(found.recipes) >= 10 and len(SHIPPED) == len(found.recipes)
    assert found.enabled == [] and found.require_runnable() == []
    for recipe in found.recipes:
        assert recipe.source.name == f"{recipe.name}.yaml"
        assert recipe.description and recipe.example is not None, recipe.name
        assert not recipe.enabled_in_file
    kinds = {step.action or "publish" for recipe in found.recipes for step in recipe.steps}
    assert kinds >= {"create-task", "create-rights-request", "find-or-create-actor",
                     "link-actor-to-processing", "search-actors", "publish"}  # fmt: skip
    assert any(recipe.schedule for recipe in found.recipes)
    assert any(step.foreach for recipe in found.recipes for step in recipe.steps)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_each_shipped_recipe_renders_valid_commands_from_its_example(
    path: Path, catalogue: TopicCatalogue
) -> None:
    settings = RecipesSettings(dpo_user_id=58)
    found = load_recipes(settings, catalogue, [path])
    assert found.problems == []
    [recipe] = found.recipes
    example = recipe.example
    assert example is not None
    event = event_context(id="e-1", data=example.data, source="dastra://workspaces/101")
    context = build_context(recipe, event, settings, "e-1")
    for step in recipe.steps:
        context["steps"] = {
            s.id: {"status": "succeeded", "result": example.results.get(s.id)}
            for s in recipe.steps[: recipe.steps.index(step)]
        }
        for _index, item in iterations(step, context):
            if step.kind == "command":
                command = render_command(step, item)
                assert command["workspaceId"] == 101
            else:
                _key, data = render_message(recipe, step, item)
                assert data


def test_recipes_enable_and_disable_override_the_files(catalogue: TopicCatalogue) -> None:
    settings = RecipesSettings(enable=["new-request-dpo-task", "deadline-escalation"])
    found = load_recipes(settings, catalogue)
    assert sorted(r.name for r in found.require_runnable()) == [
        "deadline-escalation",
        "new-request-dpo-task",
    ]
    settings = RecipesSettings(enable=["new-request-dpo-task"], disable=["new-request-dpo-task"])
    assert [r.name for r in load_recipes(settings, catalogue).enabled] == ["new-request-dpo-task"]


def test_an_unknown_name_in_recipes_enable_blocks_the_start(catalogue: TopicCatalogue) -> None:
    found = load_recipes(RecipesSettings(enable=["new-request-dpo-tsk"]), catalogue)
    with pytest.raises(RecipeError) as caught:
        found.require_runnable()
    [problem] = caught.value.problems
    assert problem.file == "RECIPES_ENABLE" and problem.recipe == "new-request-dpo-tsk"
    assert "did you mean new-request-dpo-task?" in problem.message


# --- every kind of mistake ---------------------------------------------------------------------


def _set(path: str, value: Any) -> Any:
    """A change that sets `value` at a dotted path of the base recipe (`steps.0.with.label`)."""

    def change(document: Any) -> None:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is _DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return change


_DELETE = object()


def _swap_steps(document: Any) -> None:
    document["steps"].reverse()


def _both(document: Any) -> None:
    document["schedule"] = {"list": "rights-requests"}


MISTAKES: list[tuple[str, Any, str, str]] = [
    ("unknown action", _set("steps.0.command", "create-tsk"), "steps[0].command",
     "unknown action 'create-tsk' (did you mean create-task?)"),
    ("unknown field", _set("steps.0.with.lable", "x"), "steps[0].with.lable",
     "unknown field for create-task (did you mean label?)"),
    ("required field", _set("steps.0.with.label", _DELETE), "steps[0].with.label",
     "create-task needs label"),
    ("literal refused", _set("steps.0.with.priority", "Urgent"), "steps[0].with.priority",
     "Input should be 'High', 'Medium' or 'Low'"),
    ("bad expression", _set("steps.0.with.label", "#{{ data.[ }}"), "steps[0].with.label",
     "not a valid JMESPath expression"),
    ("unknown function", _set("steps.0.with.label", "{{ shout(data.id) }}"),
     "steps[0].with.label", "unknown function shout()"),
    ("bad filter", _set("trigger.filter", "data.state ==="), "trigger.filter",
     "not a valid JMESPath expression"),
    ("filter with braces", _set("trigger.filter", "{{ data.x }}"), "trigger.filter",
     "write the expression without {{ }} here"),
    ("unknown name", _set("trigger.filter", "state == 'Open'"), "trigger.filter",
     "unknown name 'state'; expressions start with event, data, steps"),
    ("later step", _swap_steps, "steps[0].publish.data.title",
     "unknown step 'task' (a later step: a step can only read earlier ones)"),
    ("missing step", _set("steps.1.publish.data.title", "{{ steps.nope.result }}"),
     "steps[1].publish.data.title", "unknown step 'nope'; earlier steps: task"),
    ("step field", _set("steps.1.publish.data.title", "{{ steps.task.output.id }}"),
     "steps[1].publish.data.title", "a step has result and status, not 'output'"),
    ("item outside foreach", _set("steps.0.with.label", "{{ item }}"), "steps[0].with.label",
     "'item' exists only in a foreach step"),
    ("event field", _set("trigger.filter", "event.payload"), "trigger.filter",
     "the event has no 'payload'"),
    ("unknown setting", _set("steps.0.with.label", "{{ settings.dpo }}"),
     "steps[0].with.label", "unknown setting 'dpo'"),
    ("unknown topic", _set("trigger.topic", "dastra.rights-request.v1"), "trigger.topic",
     "unknown topic 'dastra.rights-request.v1'"),
    ("trigger topic not allowed", _set("trigger.topic", "dastra.poller-state.v1"),
     "trigger.topic", "recipes cannot listen to dastra.poller-state.v1"),
    ("publish topic not allowed", _set("steps.1.publish.topic", "dastra.tasks.v1"),
     "steps[1].publish.topic", "recipes cannot publish to dastra.tasks.v1"),
    ("bad topic name", _set("trigger.topic", "crm customers"), "trigger.topic",
     "'crm customers' is not a valid topic name"),
    ("wrong type", _set("trigger.type", "eu.dastra.rights_request.create"), "trigger.type",
     "never appears on dastra.rights-requests.v1"),
    ("self trigger", _set("trigger", {"topic": "dastra.notifications.v1"}),
     "steps[1].publish.topic", "the recipe would trigger itself"),
    ("notification field", _set("steps.1.publish.data.titel", "x"),
     "steps[1].publish.data.titel", "unknown field of a notification"),
    ("notification title", _set("steps.1.publish.data", {"severity": "info"}),
     "steps[1].publish.data", "a notification needs a title"),
    ("unknown key", _set("stpes", []), "stpes", "unknown field"),
    ("no steps", _set("steps", []), "steps", "at least 1 item"),
    ("trigger and schedule", _both, "trigger", "either a trigger (a topic) or a schedule"),
    ("step id", _set("steps.0.id", "my-task"), "steps[0].id", "a JMESPath name"),
    ("duplicate step id", _set("steps.1.id", "task"), "steps[1].id", "duplicate step id"),
    ("command and publish", _set("steps.0.publish", {"topic": "x.y", "type": "t", "data": {}}),
     "steps[0]", "either `command:`"),
    ("schedule every", lambda d: (d.pop("trigger"), d.update(schedule={"list": "tasks",
     "every": "soon"})), "schedule.every", "a duration such as 90s"),
    ("bad name", _set("name", "My Recipe"), "name", "lower-case letters"),
    ("own setting unknown", _set("settings", {"crm": "x"}), "settings.crm",
     "unknown setting; a recipe may set dpo_user_id"),
    ("own setting refused", _set("settings", {"dpo_user_id": 0}), "settings.dpo_user_id",
     "greater than or equal to 1"),
    ("own list item refused", _set("settings", {"erasure_systems": ["CRM", {"a": 1}]}),
     "settings.erasure_systems[1]", "a valid string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [m[1:] for m in MISTAKES],
    ids=[m[0] for m in MISTAKES],
)
def test_each_mistake_is_reported_with_its_file_recipe_and_field(
    tmp_path: Path, catalogue: TopicCatalogue, change: Any, field: str, message: str
) -> None:
    problems = _problems(tmp_path, catalogue, change)
    assert problems, "no problem reported"
    matching = [p for p in problems if p.field == field and message in p.message]
    assert matching, "\n".join(str(p) for p in problems)
    problem = matching[0]
    assert problem.file == str(tmp_path / "recipe.yaml")
    if field != "name":
        assert problem.recipe == "my-recipe"
        assert str(problem).startswith(f"{tmp_path / 'recipe.yaml'}: recipe my-recipe: {field}: ")


def test_the_valid_base_has_no_problem(tmp_path: Path, catalogue: TopicCatalogue) -> None:
    assert _problems(tmp_path, catalogue, lambda d: None) == []


def test_invalid_yaml_points_at_the_line_and_hints_at_quoting(
    tmp_path: Path, catalogue: TopicCatalogue
) -> None:
    text = (
        "name: x\ndescription: y\nsteps:\n  - command: create-task\n    with:\n"
        "      label: {{ data.id }}\n"
    )
    [problem] = load_recipes(RecipesSettings(), catalogue, [_write(tmp_path, text)]).problems
    assert problem.field.startswith("line 6")
    assert "not valid YAML" in problem.message and "quote templates" in problem.message


def test_the_example_is_run_through_the_recipe(tmp_path: Path, catalogue: TopicCatalogue) -> None:
    def unmatched(document: Any) -> None:
        document["example"] = {"data": {"id": 1, "state": "Closed"}}

    [problem] = _problems(tmp_path, catalogue, unmatched)
    assert problem.field == "example" and "does not match the example" in problem.message

    def too_long(document: Any) -> None:
        document["steps"][0]["with"]["label"] = "{{ data.title }}"
        document["example"] = {
            "data": {"id": 1, "title": "x" * 200},
            "results": {"task": {"id": 5}},
        }

    [problem] = _problems(tmp_path, catalogue, too_long)
    assert problem.field == "steps[0] (task) on the example.label"
    assert "at most 120 characters" in problem.message


def test_duplicates_conflict_but_yours_replace_a_shipped_recipe(
    tmp_path: Path, catalogue: TopicCatalogue
) -> None:
    first = _write(tmp_path, BASE, "a.yaml")
    second = _write(tmp_path, BASE, "b.yaml")
    found = load_recipes(RecipesSettings(), catalogue, [first, second])
    [problem] = found.blocking
    assert problem.file == str(second) and "duplicate recipe name" in problem.message

    mine = copy.deepcopy(BASE)
    mine["name"] = "new-request-dpo-task"
    (tmp_path / "mine").mkdir()
    _write(tmp_path / "mine", mine, "dpo.yaml")
    found = load_recipes(RecipesSettings(dirs=[str(tmp_path / "mine")]), catalogue)
    assert found.problems == []
    assert found["new-request-dpo-task"].source == tmp_path / "mine" / "dpo.yaml"
    assert len(found.recipes) == len(SHIPPED)


def test_only_problems_of_enabled_or_unreadable_recipes_block_the_worker(
    tmp_path: Path, catalogue: TopicCatalogue
) -> None:
    broken = copy.deepcopy(BASE)
    broken["steps"][0]["command"] = "create-tsk"
    _write(tmp_path, broken, "broken.yaml")
    settings = RecipesSettings(dirs=[str(tmp_path)], shipped=False)
    found = load_recipes(settings, catalogue)
    assert found.problems and not found.blocking and found.require_runnable() == []

    enabled = RecipesSettings(dirs=[str(tmp_path)], shipped=False, enable=["my-recipe"])
    with pytest.raises(RecipeError, match=r"broken\.yaml: recipe my-recipe: steps\[0\]\.command"):
        load_recipes(enabled, catalogue).require_runnable()

    _write(tmp_path, "{not: [valid", "unreadable.yaml")
    found = load_recipes(settings, catalogue)
    assert [p.file for p in found.blocking] == [str(tmp_path / "unreadable.yaml")]


def test_a_topic_can_come_from_the_settings(tmp_path: Path, catalogue: TopicCatalogue) -> None:
    def from_settings(document: Any) -> None:
        document["steps"][1]["publish"]["topic"] = "{{ settings.crm_topic }}"
        document["steps"][1]["publish"]["data"] = {"anything": "{{ data.id }}"}

    path = _write(tmp_path, copy.deepcopy(BASE))
    from_settings(yaml.safe_load(path.read_text()))
    document = copy.deepcopy(BASE)
    from_settings(document)
    found = load_recipes(
        RecipesSettings(crm_topic="acme.crm-in"), catalogue, [_write(tmp_path, document)]
    )
    assert found.problems == []
    assert found.recipes[0].steps[1].topic == "acme.crm-in"
    assert found.recipes[0].topics() == ["dastra.rights-requests.v1", "acme.crm-in"]

    document["steps"][1]["publish"]["topic"] = "{{ data.topic }}"
    [problem] = load_recipes(RecipesSettings(), catalogue, [_write(tmp_path, document)]).problems
    assert problem.field == "steps[1].publish.topic" and "may only use settings" in problem.message


def test_a_recipes_own_settings_replace_the_environments_for_it_alone(
    tmp_path: Path, catalogue: TopicCatalogue
) -> None:
    """`settings:` in a recipe: its topics and expressions read its values, the values it does
    not set come from RECIPES_*, and another recipe still reads RECIPES_*."""
    own = copy.deepcopy(BASE)
    own["settings"] = {"crm_topic": "acme.crm-v2", "erasure_systems": "Payroll, Archive"}
    own["steps"][0]["foreach"] = "settings.erasure_systems"
    own["steps"][0]["with"]["label"] = "Erase in {{ item }} ({{ settings.deadline_warning_days }})"
    own["steps"][1]["publish"]["topic"] = "{{ settings.crm_topic }}"
    own["steps"][1]["publish"]["data"] = {"requestId": "{{ data.id }}"}
    other = {**copy.deepcopy(own), "name": "other-recipe"}
    del other["settings"]
    environment = RecipesSettings(crm_topic="acme.crm", deadline_warning_days=9)
    found = load_recipes(
        environment,
        catalogue,
        [_write(tmp_path, own, "own.yaml"), _write(tmp_path, other, "other.yaml")],
    )
    assert found.problems == []
    mine, theirs = sorted(found.recipes, key=lambda recipe: recipe.name)
    assert mine.settings == {"crm_topic": "acme.crm-v2", "erasure_systems": ["Payroll", "Archive"]}
    assert mine.steps[1].topic == "acme.crm-v2" and theirs.steps[1].topic == "acme.crm"
    event = event_context(id="e-1", data={"id": 7}, source="dastra://workspaces/101")
    context = build_context(mine, event, environment, run_key="e-1")
    labels = [render_command(mine.steps[0], inner)["label"] for _i, inner in iterations(
        mine.steps[0], context)]  # fmt: skip
    assert labels == ["Erase in Payroll (9)", "Erase in Archive (9)"]
    context = build_context(theirs, event, environment, run_key="e-1")
    assert len(list(iterations(theirs.steps[0], context))) == 4  # RECIPES_* default systems


# --- rendering ---------------------------------------------------------------------------------


def test_command_ids_are_deterministic_and_bounded() -> None:
    assert step_command_id("r", "dastra:101:task.created:7", "task") == (
        "recipe:r:dastra:101:task.created:7:task"
    )
    assert step_command_id("r", "e", "tasks", 2) == "recipe:r:e:tasks:2"
    long = step_command_id("r", "x" * 500, "task", 1)
    assert len(long) <= 200 and long == step_command_id("r", "x" * 500, "task", 1)
    assert long != step_command_id("r", "x" * 499 + "y", "task", 1)


def test_rendering_drops_nulls_fills_the_workspace_and_checks_notifications(
    tmp_path: Path, catalogue: TopicCatalogue
) -> None:
    found = load_recipes(RecipesSettings(), catalogue, [_write(tmp_path, BASE)])
    [recipe] = found.recipes
    event = event_context(id="e", data={"id": 7}, source="dastra://workspaces/12", key="12:7")
    context = build_context(recipe, event, RecipesSettings(), "e")
    task, notify = recipe.steps
    # As the command's published schema spells it (objectId is a string there).
    assert render_command(task, context) == {
        "label": "Answer #7",
        "objectType": "DataSubject",
        "objectId": "7",
        "workspaceId": 12,
    }
    context["steps"] = {"task": {"status": "succeeded", "result": {"id": 99}}}
    key, data = render_message(recipe, notify, context)
    assert key is None
    assert data == {"title": "Task 99", "severity": "info", "recipe": "my-recipe",
                    "workspace_id": 12}  # fmt: skip
    context["steps"] = {"task": {"status": "succeeded", "result": {"id": "x" * 600}}}
    with pytest.raises(ValueError, match="not a valid notification: title"):
        render_message(recipe, notify, context)


def test_the_readme_example_recipe_validates(tmp_path: Path, catalogue: TopicCatalogue) -> None:
    readme = (shipped_recipes_dir().parent / "README.md").read_text()
    start = readme.index("name: dsr-from-web-form")
    text = readme[start : readme.index("```", start)]
    found = load_recipes(RecipesSettings(), catalogue, [_write(tmp_path, text)])
    assert found.problems == [] and [r.name for r in found.recipes] == ["dsr-from-web-form"]
