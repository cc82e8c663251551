"""Retention: `topics check` warns about a topic that can carry personal data but would keep it
forever, without failing a cluster that matches topics.yaml; the shipped catalogue bounds every
such topic."""

from __future__ import annotations

import json
from pathlib import Path

from bus.admin import retention_warnings
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue, default_topics_file, load_catalogue
from tests.kafka_helpers import create_catalogue_topics, delete_topics
from tests.privacy.support import run_cli


def test_every_topic_that_can_carry_personal_data_has_bounded_retention(
    catalogue: TopicCatalogue,
) -> None:
    assert retention_warnings(catalogue) == []
    personal = {spec.name for spec in catalogue if spec.personal_data}
    assert {"dastra.rights-requests.v1", "dastra.tasks.v1", "dastra.dead-letter.v1"} <= personal
    keys = catalogue["dastra.privacy-keys.v1"]
    assert keys.cleanup_policy == "compact" and not keys.personal_data
    assert int(keys.config["max.compaction.lag.ms"]) <= 3_600_000  # erased keys leave soon


def test_topics_check_warns_on_unbounded_retention_of_personal_data(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    text = default_topics_file().read_text()
    leaky = text.replace(
        "    description: Task events from the poller",
        "    retention_ms: -1\n    description: Task events from the poller",
    )
    assert leaky != text
    path = tmp_path / "topics.yaml"
    path.write_text(leaky)
    names = create_catalogue_topics(kafka, load_catalogue(path))
    try:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "SERVICE_TOPICS_FILE": str(path),
        }
        checked = run_cli("topics", "check", env=env)
        # The cluster matches the file: a warning, not a failure.
        assert checked.returncode == 0, checked.stderr
        assert "warning: dastra.tasks.v1: carries personal data but its retention is unbounded" in (
            checked.stderr
        )
        as_json = run_cli("topics", "check", "--json", env=env)
        assert as_json.returncode == 0
        assert json.loads(as_json.stdout) == [
            {
                "topic": "dastra.tasks.v1",
                "action": "warning",
                "detail": "dastra.tasks.v1: carries personal data but its retention is "
                "unbounded (retention_ms: -1)",
            }
        ]
        shipped = run_cli("topics", "check", "--json", env={**env, "SERVICE_TOPICS_FILE": ""})
        assert shipped.returncode == 1  # the shipped file differs from this cluster...
        assert all(row["action"] != "warning" for row in json.loads(shipped.stdout))  # ...bounded
    finally:
        delete_topics(kafka, names)
