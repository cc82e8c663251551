"""The agents' workspace: WORKER_WORKSPACE_ID / DASTRA_WORKSPACE_ID by default, a command's
`workspaceId` overriding it. A sandbox of its own with two workspaces (the session sandbox has
one), a real worker process on its own topics, the session broker."""

from __future__ import annotations

from pathlib import Path

from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, TopicCatalogue, command_topic
from dastra.sandbox import SandboxServer, SandboxSettings
from tests.consumers.agents_support import (
    RecordProducer,
    Tail,
    WorkerProcess,
    command_record,
    results_of,
)
from tests.kafka_helpers import unique


def _ce_id(headers: list[tuple[str, bytes | str | None]]) -> str:
    value = dict(headers)["ce_id"]
    return value.decode() if isinstance(value, bytes) else str(value)


def test_the_default_workspace_comes_from_settings_and_a_command_overrides_it(
    kafka: KafkaSettings, topics: TopicCatalogue, tmp_path: Path
) -> None:
    with SandboxServer(SandboxSettings(workspaces=2)) as two:
        two.admin.configure(rate_limit=False)
        default = two.workspace_id  # the worker's DASTRA_WORKSPACE_ID
        [other] = [ws for ws in two.admin.info()["workspaces"] if ws != default]
        tag = unique("ws")
        tasks = {"default": f"Default {tag}", "other": f"Other {tag}"}
        sent = {
            "default": command_record({"label": tasks["default"]}, action="create-task"),
            "other": command_record(
                {"label": tasks["other"], "workspaceId": other}, action="create-task"
            ),
        }
        ids = {name: _ce_id(headers) for name, (headers, _) in sent.items()}
        request_topic = kafka.topic(command_topic("create-rights-request"))
        plain_request = {"title": f"Access {tag}", "purposes": ["Access"], "workspaceId": other}
        ids["request"] = f"{request_topic}/0/0"  # plain JSON on a fresh topic: its position

        results = Tail(kafka, COMMAND_RESULTS)
        producer = RecordProducer(kafka)
        worker = WorkerProcess(
            kafka, two, tmp_path, WORKER_ACTIONS='["create-task", "create-rights-request"]'
        )
        try:
            worker.start()
            producer.send(
                command_topic("create-task"),
                [(tag.encode(), headers, value) for headers, value in sent.values()],
            )
            headers, value = command_record(plain_request, mode="plain")
            producer.send(
                command_topic("create-rights-request"), [(None, headers, value)], partition=0
            )
            found = results.wait_for_keys(ids.values(), timeout=30)
            got = {name: results_of(found[command_id])[0] for name, command_id in ids.items()}
            assert {name: r["status"] for name, r in got.items()} == dict.fromkeys(
                ids, "succeeded"
            ), got
            assert got["default"]["workspace_id"] == default
            assert got["other"]["workspace_id"] == other
            assert got["request"]["workspace_id"] == other

            # Really in that workspace in Dastra, and only there.
            def labels(ws: int) -> list[str]:
                return [t["label"] for t in two.admin.objects("tasks", ws=ws)]

            assert labels(default).count(tasks["default"]) == 1
            assert tasks["other"] not in labels(default)
            assert labels(other).count(tasks["other"]) == 1
            assert tasks["default"] not in labels(other)
            [request] = [
                r
                for r in two.admin.objects("rightsRequests", ws=other)
                if r["title"] == plain_request["title"]
            ]
            assert request["id"] == got["request"]["result"]["id"]
            other_areas = {a["id"] for a in two.admin.objects("areas", ws=other)}
            assert request["areaId"] in other_areas  # the default area of *that* workspace
            assert not [
                r
                for r in two.admin.objects("rightsRequests", ws=default)
                if r["title"] == plain_request["title"]
            ]
        finally:
            assert worker.stop() == 0, worker.log_tail()
            producer.close()
            results.close()
