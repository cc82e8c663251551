"""topics.yaml: the shipped catalogue is complete, and every kind of mistake is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.admin import retention_warnings
from bus.topics import (
    ACTIONS,
    COMMAND_RECORD_MAX_BYTES,
    COMMAND_RESULTS,
    DEAD_LETTER,
    RECORD_MAX_BYTES,
    TopicCatalogue,
    TopicsFileError,
    command_topic,
    default_topics_file,
    load_catalogue,
)
from consumers.settings import WorkerSettings
from producers.webhook.settings import WebhookSettings

DESIGN_TOPICS = {
    "dastra.rights-requests.v1",
    "dastra.tasks.v1",
    *(f"dastra.commands.{action}.v1" for action in ACTIONS),
    "dastra.command-results.v1",
    "dastra.dead-letter.v1",
    "dastra.poller-state.v1",
    "dastra.hook-subscriptions.v1",
}


def test_the_catalogue_declares_every_topic_of_the_design(catalogue: TopicCatalogue) -> None:
    assert set(catalogue.names) >= DESIGN_TOPICS
    assert catalogue["dastra.poller-state.v1"].cleanup_policy == "compact"
    assert catalogue["dastra.hook-subscriptions.v1"].cleanup_policy == "compact"
    assert command_topic("create-task") == "dastra.commands.create-task.v1"


def test_topics_with_personal_data_have_bounded_retention(catalogue: TopicCatalogue) -> None:
    assert retention_warnings(catalogue) == []
    for spec in catalogue:
        if spec.personal_data:
            assert 0 < spec.retention_ms <= 30 * 86_400_000, spec.name


def test_unbounded_retention_on_personal_data_is_warned(catalogue: TopicCatalogue) -> None:
    leaky = catalogue.model_copy(
        update={
            "topics": tuple(
                s.model_copy(update={"retention_ms": -1}) if s.name == "dastra.tasks.v1" else s
                for s in catalogue
            )
        }
    )
    assert retention_warnings(leaky) == [
        "dastra.tasks.v1: carries personal data but its retention is unbounded (retention_ms: -1)"
    ]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(text)
    return path


GOOD_ENTRY = """
  - name: a.topic
    partitions: 3
    replication_factor: 1
    cleanup_policy: delete
    retention_ms: 1000
    personal_data: false
    key_schema: k
    value_schema: v
    compatibility: BACKWARD
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("topics: [unclosed", r"topics\.yaml \(line \d+, column \d+\): not valid YAML"),
        ("topics:\n" + GOOD_ENTRY + "    colour: blue\n", r"topic a\.topic: colour: unknown field"),
        (
            "topics:\n" + GOOD_ENTRY.replace("partitions: 3", "partitions: -2"),
            r"topic a\.topic: partitions: Input should be greater than or equal to 1 \(got -2\)",
        ),
        ("topics:\n" + GOOD_ENTRY + GOOD_ENTRY, r"topic a\.topic: name: duplicate topic name"),
        (
            "topics:\n" + GOOD_ENTRY.replace("    key_schema: k\n", ""),
            r"topic a\.topic: key_schema: required field is missing",
        ),
        ("tropics: []\n", r"unknown top-level key\(s\): tropics"),
        (
            "topics:\n" + GOOD_ENTRY.replace("cleanup_policy: delete", "cleanup_policy: shred"),
            r"topic a\.topic: cleanup_policy: Input should be",
        ),
        ("defaults:\n  partitions: 3\ntopics:\n" + GOOD_ENTRY, r"defaults: unknown field"),
        (
            "defaults:\n  compatibility: FULL\ntopics:\n"
            + GOOD_ENTRY.replace("    compatibility: BACKWARD\n", ""),
            r"defaults: unknown field\(s\) compatibility",
        ),
        (
            "topics:\n" + GOOD_ENTRY.replace("compatibility: BACKWARD", "compatibility: NONE"),
            r"topic a\.topic: compatibility: Input should be 'BACKWARD', 'FORWARD' or 'FULL'",
        ),
        ("- just\n- a list\n", r"expected a mapping"),
    ],
    ids=[
        "bad-yaml",
        "unknown-key",
        "negative-partitions",
        "duplicate-name",
        "missing-field",
        "unknown-top-level",
        "bad-enum",
        "bad-default",
        "compatibility-not-defaultable",
        "bad-compatibility",
        "not-a-mapping",
    ],
)
def test_malformed_files_name_file_topic_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TopicsFileError, match=message) as caught:
        load_catalogue(path)
    assert str(caught.value).startswith(str(path))


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TopicsFileError, match="cannot read the topic catalogue"):
        load_catalogue(tmp_path / "nope.yaml")


def test_defaults_fill_entries(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "defaults:\n  replication_factor: 3\n  personal_data: true\n"
        "topics:\n  - {name: x, partitions: 1, cleanup_policy: compact, retention_ms: -1,"
        " key_schema: k, value_schema: v, compatibility: FULL}\n",
    )
    spec = load_catalogue(path)["x"]
    assert (spec.replication_factor, spec.personal_data) == (3, True)
    raised = load_catalogue(default_topics_file()).with_replication_factor(3)
    assert {s.replication_factor for s in raised} == {3}


def test_the_record_sizes_of_the_catalogue_fit_what_the_webhook_and_worker_send() -> None:
    catalogue = load_catalogue(Path(__file__).parents[2] / "topics.yaml")
    for action in ACTIONS:
        configs = catalogue[command_topic(action)].broker_configs()
        assert configs["max.message.bytes"] == str(COMMAND_RECORD_MAX_BYTES), action
    for name in (COMMAND_RESULTS, DEAD_LETTER):
        assert catalogue[name].broker_configs()["max.message.bytes"] == str(RECORD_MAX_BYTES)
    webhook_record = WebhookSettings().max_record_bytes
    assert webhook_record <= WorkerSettings().max_record_bytes
    assert webhook_record < COMMAND_RECORD_MAX_BYTES < RECORD_MAX_BYTES
