"""The command agents against a strict sandbox (PascalCase-only filter fields, filter dates read
in Paris time, .NET defaults for omitted fields, duplicate links kept): the worker detects the
first two at start-up, its filtered commands still work, a task with no area goes to the
workspace's first one, and concurrent links of one actor to one processing make one link."""

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
        port=0,
        rate_limit=False,
        filter_case="pascal",
        tz="Europe/Paris",
        dotnet_defaults=True,
        duplicate_links=True,
    )
    with SandboxServer(config) as sandbox:
        initech = sandbox.admin.create_actor(companyName="Initech", email="dpo@initech.eu")
        processing = sandbox.admin.objects("processings")[0]["id"]
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
                (
                    "create-rights-request+zapier-fields",
                    {
                        "title": "Erasure",
                        "purposes": ["Erasure"],
                        "refId": "zap-7",
                        "expiryTime": "2027-02-01T10:00:00Z",
                        "operatorId": sandbox.admin.state(sandbox.workspace_id)["users"][0]["id"],
                        "tags": ["Zapier"],
                        "customFields": {"crm-id": "C-7", "vip": True},
                    },
                ),
                (
                    "create-actor+zapier-fields",
                    {
                        "companyName": "Logo Corp",
                        "logoUrl": "https://l.example/l.png",
                        "tags": ["SaaS"],
                    },
                ),
            ):
                command_id = unique("cmd")
                topic_action = action.split("+")[0]
                headers, value = command_record(data, command_id=command_id, action=topic_action)
                records.send(command_topic(topic_action), [(command_id.encode(), headers, value)])
                sent[action] = command_id
            # Eight links of one actor to one processing, each with its own Kafka key: the
            # sandbox keeps duplicates, so only the worker's per-processing order makes one link.
            # Reading the processing takes 0.2 s, so that concurrent links would all read it
            # before any wrote.
            sandbox.admin.inject_fault(
                "/v1/ws/*/DataProcessings/*", method="GET", latency_s=0.2, times=8
            )
            links = []
            for _ in range(8):
                command_id = unique("link")
                headers, value = command_record(
                    {"actorId": initech["id"], "processingId": processing},
                    command_id=command_id,
                    action="link-actor-to-processing",
                )
                links.append((command_id.encode(), headers, value))
            records.send(command_topic("link-actor-to-processing"), links)
            found = results.wait_for_keys([*sent.values(), *(k.decode() for k, _, _ in links)], 60)
            outcome = {a: results_of(found[c])[0] for a, c in sent.items()}
            assert all(r["status"] == "succeeded" for r in outcome.values()), outcome
            [actor] = [a for a in sandbox.admin.objects("actors") if a["email"] == "dpo@initech.eu"]
            assert outcome["search-actors"]["result"][0]["id"] == actor["id"]
            assert outcome["find-or-create-actor"]["result"]["id"] == actor["id"]  # found
            # Its refId check (a filter) found nothing before creating: one request, once.
            requests = {r["refId"]: r for r in sandbox.admin.objects("rightsRequests")}
            assert set(requests) == {sent["create-rights-request"], "zap-7"}
            zap = requests["zap-7"]
            assert zap["customFields"] == {"crm-id": "C-7", "vip": True}
            assert zap["tags"] == [{"label": "Zapier", "type": "DataSubject"}]
            assert zap["expiryTime"] == "2027-02-01T10:00:00Z"
            assert zap["operatorId"] == sandbox.admin.state(sandbox.workspace_id)["users"][0]["id"]
            [logo] = [a for a in sandbox.admin.objects("actors") if a["companyName"] == "Logo Corp"]
            assert logo["logoUrl"] == "https://l.example/l.png"
            assert logo["tags"] == [{"label": "SaaS", "type": "Actor"}]
            link_results = [results_of(found[k.decode()])[0] for k, _, _ in links]
            assert all(r["status"] == "succeeded" for r in link_results), link_results
            assert sorted(r["result"]["count"] for r in link_results) == [0] * 7 + [1]
            [linked] = [p for p in sandbox.admin.objects("processings") if p["id"] == processing]
            assert [x["actorId"] for x in linked["recipients"]].count(initech["id"]) == 1
            tasks = sandbox.admin.objects("tasks")
            [task] = [t for t in tasks if t["label"] == "Call the DPO back"]
            assert outcome["create-task"]["result"]["id"] == task["id"]
            assert task["areaId"] == sandbox.admin.info()["areas"][0]
            assert task["priority"] == "High"  # the enum's first value: Dastra's, not ours
        finally:
            results.close()
            records.close()
            worker.stop()
