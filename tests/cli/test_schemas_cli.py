"""`dastra-kafka schemas export|check` and the schema names of `topics check`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from bus.settings import KafkaSettings
from dastra_kafka.cli import app
from tests.cli.test_topics_cli import run_cli
from tests.conftest import PROJECT_ROOT

HOOKS = "schemas/hook-subscription.schema.json"


def _schemas(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["schemas", *args])
    return result.exit_code, result.output


def _make_older(root: Path) -> None:
    """Pretend the committed hook subscription schema accepted one more event type."""
    path = root / HOOKS
    schema = json.loads(path.read_text())
    schema["properties"]["event"]["enum"].append("task.deleted")
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")


def test_export_then_check_then_drift_and_breaking_changes(tmp_path: Path) -> None:
    code, output = _schemas("export", "--root", str(tmp_path))
    assert code == 0, output
    for path in ("schemas/asyncapi.yaml", "docs/topics.md", HOOKS):
        assert (tmp_path / path).read_bytes() == (PROJECT_ROOT / path).read_bytes()
    assert _schemas("check", "--root", str(tmp_path), "--against", "")[0] == 0

    (tmp_path / "schemas" / "retired.schema.json").write_text("{}\n")
    _make_older(tmp_path)
    code, output = _schemas("check", "--root", str(tmp_path), "--against", "")
    assert code == 1
    assert "drift: 2 file(s) differ" in output
    assert f"{HOOKS}: differs from what the code generates" in output
    assert '-        "task.deleted"' in output  # the diff summary
    assert "schemas/retired.schema.json: no contract generates it any more" in output
    assert "$.event: enum-value-removed: 'task.deleted' is no longer accepted" in output
    assert "schemas/retired.schema.json\n    $: schema-removed" in output

    code, output = _schemas("export", "--root", str(tmp_path))
    assert code == 1
    assert "breaking changes (nothing written)" in output
    assert "task.deleted" in (tmp_path / HOOKS).read_text()

    code, output = _schemas("export", "--root", str(tmp_path), "--allow-breaking", "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["written"] == [HOOKS]
    assert report["removed"] == ["schemas/retired.schema.json"]
    assert _schemas("check", "--root", str(tmp_path), "--against", "")[0] == 0


def test_check_against_a_git_revision(tmp_path: Path) -> None:
    shutil.copytree(PROJECT_ROOT / "schemas", tmp_path / "schemas")
    _make_older(tmp_path)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "older contracts"], check=True)
    assert _schemas("export", "--root", str(tmp_path), "--allow-breaking")[0] == 0

    code, output = _schemas("check", "--root", str(tmp_path), "--json")  # --against HEAD
    assert code == 1
    report = json.loads(output)
    assert report["drift"] == []
    assert report["breaking"] == {
        f"{HOOKS}@HEAD": ["$.event: enum-value-removed: 'task.deleted' is no longer accepted"]
    }
    code, output = _schemas("check", "--root", str(tmp_path), "--against", "no-such-ref", "--json")
    assert code == 0
    assert "not checked" in json.loads(output)["notes"][0]


def test_topics_check_fails_on_a_schema_no_contract_defines(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    topics = tmp_path / "topics.yaml"
    text = (PROJECT_ROOT / "topics.yaml").read_text()
    topics.write_text(text.replace("value_schema: task\n", "value_schema: task-v9\n"))
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SERVICE_TOPICS_FILE": str(topics),
    }
    result = run_cli("topics", "check", "--json", env=env)
    assert result.returncode == 1
    rows = json.loads(result.stdout)
    assert [r for r in rows if r["action"] == "unknown-schema"] == [
        {
            "topic": "dastra.tasks.v1",
            "action": "unknown-schema",
            "detail": "dastra.tasks.v1: value_schema 'task-v9' is not a known schema",
        }
    ]
