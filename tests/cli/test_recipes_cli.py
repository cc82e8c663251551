"""`dastra-kafka recipes list|validate`, and the worker refusing recipes that cannot run, through
the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus.settings import KafkaSettings
from dastra_kafka.settings import load_settings
from tests.cli.test_topics_cli import run_cli

BROKEN = """
name: broken-one
description: Creates a task from nothing.
trigger:
  topic: crm.customer-deleted
steps:
  - command: create-task
    with:
      lable: "{{ data.name }}"
"""


def test_list_shows_every_shipped_recipe_disabled_unless_enabled() -> None:
    listed = run_cli("recipes", "list", "--json", env={})
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    assert document["problems"] == []
    recipes = {r["name"]: r for r in document["recipes"]}
    assert len(recipes) >= 10 and not any(r["enabled"] for r in recipes.values())
    dpo = recipes["new-request-dpo-task"]
    assert dpo["trigger"]["topic"] == "dastra.rights-requests.v1"
    assert dpo["trigger"]["type"] == "eu.dastra.rights_request.created"
    assert [s["action"] for s in dpo["steps"]] == ["create-task"] and dpo["description"]
    assert recipes["deadline-escalation"]["schedule"]["list"] == "rights-requests"

    enabled = run_cli("recipes", "list", "--json", env={"RECIPES_ENABLE": "new-request-dpo-task"})
    flags = {r["name"]: r["enabled"] for r in json.loads(enabled.stdout)["recipes"]}
    assert [name for name, on in flags.items() if on] == ["new-request-dpo-task"]

    table = run_cli("recipes", "list", env={"COLUMNS": "200"})
    assert table.returncode == 0 and "erasure-task-per-system" in table.stdout
    assert "RECIPES_ENABLE" in table.stdout


def test_validate_passes_the_shipped_recipes_and_fails_a_broken_file(tmp_path: Path) -> None:
    ok = run_cli("recipes", "validate", env={})
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    bad = run_cli("recipes", "validate", str(tmp_path), env={"COLUMNS": "200"})
    assert bad.returncode == 2
    assert f"{broken}: recipe broken-one: steps[0].with.lable: unknown field for create-task" in (
        bad.stderr
    )
    assert "steps[0].with.label: create-task needs label" in bad.stderr

    as_json = run_cli("recipes", "validate", str(broken), "--json", env={})
    assert as_json.returncode == 2
    document = json.loads(as_json.stdout)
    assert document["valid"] is False and document["recipes"] == []
    fields = {(p["file"], p["recipe"], p["field"]) for p in document["problems"]}
    assert (str(broken), "broken-one", "steps[0].with.lable") in fields

    missing = run_cli("recipes", "validate", str(tmp_path / "nope.yaml"), env={})
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_list_exits_2_when_a_recipe_of_yours_is_broken(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN)
    listed = run_cli("recipes", "list", "--json", env={"RECIPES_DIRS": str(tmp_path)})
    assert listed.returncode == 2
    [problem] = json.loads(listed.stdout)["problems"][:1]
    assert problem["recipe"] == "broken-one"


def test_the_worker_refuses_an_invalid_enabled_recipe(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN)
    env = {
        "DASTRA_BASE_URL": "http://127.0.0.1:9",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "RECIPES_DIRS": str(tmp_path),
        "RECIPES_ENABLE": "broken-one",
    }
    result = run_cli("worker", env=env, timeout=60)
    assert result.returncode == 2
    assert "recipes that cannot run" in result.stderr
    assert "recipe broken-one: steps[0].with.lable" in result.stderr

    typo = run_cli("worker", env={**env, "RECIPES_ENABLE": "new-request-dpo-tsk"}, timeout=60)
    assert typo.returncode == 2 and "did you mean new-request-dpo-task?" in typo.stderr


def test_the_worker_names_the_topics_of_yours_that_are_missing(kafka: KafkaSettings) -> None:
    env = {
        "DASTRA_BASE_URL": "http://127.0.0.1:9",
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "RECIPES_ENABLE": "crm-customer-deleted-erasure",
    }
    result = run_cli("worker", env=env, timeout=60)
    assert result.returncode == 1
    assert f"{kafka.topic_prefix}crm.customer-deleted" in result.stderr
    assert f"{kafka.topic_prefix}dastra.recipe-runs.v1" in result.stderr
    assert "create them yourself" in result.stderr


def test_recipe_settings_take_comma_lists_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECIPES_ENABLE", "a, b,")
    monkeypatch.setenv("RECIPES_DIRS", '["/x", "/y"]')
    monkeypatch.setenv("RECIPES_ERASURE_SYSTEMS", "CRM,ERP")
    monkeypatch.setenv("RECIPES_VARS", '{"team": "privacy"}')
    monkeypatch.setenv("RECIPES_DPO_USER_ID", "58")
    recipes = load_settings(None).recipes
    assert recipes.enable == ["a", "b"] and recipes.dirs == ["/x", "/y"]
    assert recipes.expression_settings()["erasure_systems"] == ["CRM", "ERP"]
    assert recipes.expression_settings()["vars"] == {"team": "privacy"}
    assert recipes.expression_settings()["dpo_user_id"] == 58
