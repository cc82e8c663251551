"""`dastra-kafka worker` and `dastra-kafka dlq replay` refusing bad set-ups, through the real
entry point (the running worker itself is tested in tests/consumers/test_agents*.py)."""

from __future__ import annotations

import json

from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from tests.cli.test_topics_cli import run_cli


def _env(kafka: KafkaSettings, **more: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        **more,
    }


def test_worker_refuses_to_start_without_its_topics(kafka: KafkaSettings) -> None:
    env = _env(kafka, DASTRA_BASE_URL="http://127.0.0.1:9", DASTRA_API_KEY="k")
    result = run_cli("worker", "--action", "create-task", env=env, timeout=60)
    assert result.returncode == 1
    assert f"{kafka.topic_prefix}dastra.commands.create-task.v1" in result.stderr
    assert "dastra-kafka topics apply" in result.stderr


def test_worker_needs_a_dastra_api_and_valid_options(kafka: KafkaSettings) -> None:
    result = run_cli("worker", env=_env(kafka), timeout=60)
    assert result.returncode == 2 and "DASTRA_BASE_URL" in result.stderr
    env = _env(kafka, DASTRA_BASE_URL="http://127.0.0.1:9")
    result = run_cli("worker", "--action", "delete-everything", env=env, timeout=60)
    assert result.returncode == 2 and "unknown action" in result.stderr


def test_dlq_replay_validates_dates_and_replays_nothing_on_an_empty_topic(
    kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    bad = run_cli("dlq", "replay", "--since", "yesterday", env=_env(kafka))
    assert bad.returncode == 2 and "--since" in bad.stderr
    empty = run_cli("dlq", "replay", "--json", env=_env(kafka))
    assert empty.returncode == 0, empty.stderr
    summary = json.loads(empty.stdout)
    assert summary["scanned"] == 0 and summary["replayed"] == 0 and summary["records"] == []


def test_a_role_without_a_part_of_the_dastra_key_refuses_to_start(kafka: KafkaSettings) -> None:
    env = _env(
        kafka,
        DASTRA_BASE_URL="http://127.0.0.1:9",
        DASTRA_API_KEY="secret-key-value",
        DASTRA_WORKSPACE_ID="1",
        DASTRA_BUDGET_SHARES="workers=1",
    )
    poller = run_cli("poller", "--once", env=env, timeout=60)
    assert poller.returncode == 2, poller.stderr
    assert "poller role's part" in poller.stderr and "DASTRA_BUDGET_SHARES" in poller.stderr
    assert "secret-key-value" not in poller.stderr + poller.stdout
    env.update(DASTRA_BUDGET_SHARES="poller=1,workers=1", DASTRA_WORKERS="1000")
    worker = run_cli("worker", env=env, timeout=60)
    assert worker.returncode == 2 and "DASTRA_WORKERS" in worker.stderr, worker.stderr
    assert "secret-key-value" not in worker.stderr + worker.stdout
