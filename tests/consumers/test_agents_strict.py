"""The command agents against a strict sandbox (PascalCase-only filter fields, filter dates read
in Paris time, .NET defaults for omitted fields): the worker detects the first two at start-up,
its filtered commands still work, and a task with no area goes to the workspace's first one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, TopicCatalogue, command_topic
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from tests.consumers.agents_support import (
    RecordProducer,
    Tail,
    WorkerProcess,
    command_record,
    results_of,
)
from tests.kafka_helpers import create_catalogue_topics, delete_topics, unique, wait_for


@pytest.fixture
def strict_kafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("strict") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


def test_filtered_commands_work_once_the_worker_has_adapted(
    strict_kafka: KafkaSettings, tmp_path: Path
) -> None:
    config = SandboxSettings(
        port=0, rate_limit=False, filter_case="pascal", tz="Europe/Paris", dotnet_defaults=True
    )
    with SandboxServer(config) as sandbox:
        sandbox.admin.create_actor(companyName="Initech", email="dpo@initech.eu")
        worker = WorkerProcess(strict_kafka, sandbox, tmp_path).start()
        records = RecordProducer(strict_kafka)
        results = Tail(strict_kafka, COMMAND_RESULTS)
        try:

            def profile_line() -> str:
                text = worker.log_file.read_text(errors="replace")
                return next((x for x in text.splitlines() if "worker.dastra_profile" in x), "")

            wait_for(lambda: bool(profile_line()), 60, "the worker's detection")
            assert "pascal" in profile_line() and "3600" in profile_line()
            sent = {}
            for action, data in (
                ("search-actors", {"email": "dpo@initech.eu"}),
                ("find-or-create-actor", {"email": "dpo@initech.eu", "companyName": "Initech"}),
                (
                    "create-rights-request",
                    {"title": "Access", "purposes": ["Access"], "email": "a@b.eu"},
                ),
                # No areaId, no priority: a bare body would bind areaId to 0 and be refused.
                ("create-task", {"label": "Call the DPO back"}),
            ):
                command_id = unique("cmd")
                headers, value = command_record(data, command_id=command_id, action=action)
                records.send(command_topic(action), [(command_id.encode(), headers, value)])
                sent[action] = command_id
            found = results.wait_for_keys(sent.values(), 60)
            outcome = {a: results_of(found[c])[0] for a, c in sent.items()}
            assert all(r["status"] == "succeeded" for r in outcome.values()), outcome
            [actor] = [a for a in sandbox.admin.objects("actors") if a["email"] == "dpo@initech.eu"]
            assert outcome["search-actors"]["result"][0]["id"] == actor["id"]
            assert outcome["find-or-create-actor"]["result"]["id"] == actor["id"]  # found
            # Its refId check (a filter) found nothing before creating: one request, once.
            assert [r["refId"] for r in sandbox.admin.objects("rightsRequests")] == [
                sent["create-rights-request"]
            ]
            tasks = sandbox.admin.objects("tasks")
            [task] = [t for t in tasks if t["label"] == "Call the DPO back"]
            assert outcome["create-task"]["result"]["id"] == task["id"]
            assert task["areaId"] == sandbox.admin.info()["areas"][0]
            assert task["priority"] == "High"  # the enum's first value: Dastra's, not ours
        finally:
            results.close()
            records.close()
            worker.stop()
