"""`dastra-kafka topics ...` through the real entry point: exit codes and output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    ResourceType,
)

from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from tests.kafka_helpers import delete_topics


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dastra_kafka", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _env(kafka: KafkaSettings) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }


def test_check_apply_check(kafka: KafkaSettings, catalogue: TopicCatalogue) -> None:
    env = _env(kafka)
    physical = [kafka.topic(spec.name) for spec in catalogue]
    before = run_cli("topics", "check", "--json", env=env)
    assert before.returncode == 1
    assert {c["action"] for c in json.loads(before.stdout)} == {"create"}

    dry = run_cli("topics", "apply", "--dry-run", env={**env, "COLUMNS": "400"})
    assert dry.returncode == 0, dry.stderr
    rows = [line for line in dry.stdout.splitlines() if kafka.topic_prefix in line]
    for topic in physical:  # one table row per topic, each a creation
        (row,) = [line for line in rows if f" {topic} " in line]
        assert " create " in row, row
    assert run_cli("topics", "check", env=env).returncode == 1  # the dry run changed nothing

    applied = run_cli("topics", "apply", env=env)
    assert applied.returncode == 0, applied.stderr
    again = run_cli("topics", "apply", "--json", env=env)
    assert (again.returncode, json.loads(again.stdout)) == (0, [])
    assert run_cli("topics", "check", env=env).returncode == 0

    # Partitions added behind its back: apply cannot lower them, says so and exits 1.
    victim = kafka.topic(catalogue.topics[0].name)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    raised = NewPartitions(victim, catalogue.topics[0].partitions + 1)
    admin.create_partitions([raised])[victim].result(timeout=30)
    refused = run_cli("topics", "apply", "--json", env=env)
    assert refused.returncode == 1
    assert "refused" in refused.stderr
    assert [(c["topic"], c["action"]) for c in json.loads(refused.stdout)] == [(victim, "refused")]

    listed = run_cli("topics", "list", "--json", env=env)
    rows = json.loads(listed.stdout)
    assert listed.returncode == 0
    assert all(row["exists"] for row in rows)
    assert all(row["topic"].startswith(kafka.topic_prefix) for row in rows)
    delete_topics(kafka, [row["topic"] for row in rows])


def test_a_malformed_topics_file_exits_2_naming_it(kafka: KafkaSettings, tmp_path: Path) -> None:
    bad = tmp_path / "topics.yaml"
    bad.write_text("topics:\n  - name: x\n    partitions: -1\n")
    result = run_cli("topics", "check", env={**_env(kafka), "SERVICE_TOPICS_FILE": str(bad)})
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "partitions" in result.stderr


def test_unreachable_kafka_exits_3() -> None:
    result = run_cli("topics", "check", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=120)
    assert result.returncode == 3
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr


def test_invalid_configuration_exits_2_without_leaking_secrets() -> None:
    result = run_cli(
        "topics",
        "check",
        env={
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_PASSWORD": "pw-that-must-not-leak",
        },
    )
    assert result.returncode == 2
    assert "KAFKA_SASL_MECHANISM" in result.stderr
    assert "pw-that-must-not-leak" not in result.stdout + result.stderr


def test_a_bad_setting_of_any_part_is_an_invalid_configuration_not_a_traceback() -> None:
    # The recipe settings were once read when a module was imported: a bad RECIPES_* value ended
    # every verb in a traceback. Now every verb, even one that runs no recipe, exits 2.
    for args in (("topics", "list"), ("recipes", "list"), ("--help",)):
        done = run_cli(*args, env={"RECIPES_DEADLINE_WARNING_DAYS": "-1"}, timeout=60)
        if args == ("--help",):
            assert done.returncode == 0 and "Traceback" not in done.stderr
            continue
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("invalid configuration: RECIPES_DEADLINE_WARNING_DAYS:")


def test_apply_sets_min_insync_replicas_on_every_topic(
    kafka: KafkaSettings, catalogue: TopicCatalogue
) -> None:
    env = {**_env(kafka), "KAFKA_REPLICATION_FACTOR": "1", "KAFKA_MIN_INSYNC_REPLICAS": "1"}
    physical = [kafka.topic(spec.name) for spec in catalogue]
    try:
        applied = run_cli("topics", "apply", env=env)
        assert applied.returncode == 0, applied.stderr
        admin = AdminClient(kafka.confluent_config())
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in physical]
        for resource, future in admin.describe_configs(resources).items():
            entry = future.result(timeout=30)["min.insync.replicas"]
            # Set on the topic itself, not the broker's default of 1 showing through.
            assert (entry.value, entry.source) == ("1", ConfigSource.DYNAMIC_TOPIC_CONFIG.value), (
                resource.name
            )
        assert run_cli("topics", "check", env=env).returncode == 0

        # More in-sync replicas than replicas: every acks=all write would fail; refused up front.
        too_many = run_cli("topics", "check", env={**env, "KAFKA_MIN_INSYNC_REPLICAS": "2"})
        assert too_many.returncode == 2
        assert "KAFKA_MIN_INSYNC_REPLICAS=2 is more than the replication factor" in too_many.stderr
    finally:
        delete_topics(kafka, physical)
