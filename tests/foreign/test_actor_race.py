"""The actor guarantee from the other side: twenty concurrent find-or-create-actor commands for
one new e-mail, sent by three producers on three client stacks (the webhook on librdkafka, a
recipe on aiokafka, Kafka's Java console producer keyed by the README's rule), to two workers
of one group, create exactly one actor, and every command gets exactly one result. It holds
because all three place the actor's key on the same partition (Kafka's murmur2), so one worker
runs all of them one after the other."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import SecretStr

from bus.envelope import encode_binary, new_event
from bus.hooks.settings import HooksSettings
from bus.records.commands import FindOrCreateActor, actor_record_key
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, command_topic
from consumers.recipes.language import step_command_id
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from producers.webhook.settings import WebhookSettings
from tests.consumers.agents_support import Tail, WorkerProcess, produce, results_of
from tests.foreign.conftest import VENDOR_RECIPE, VENDOR_TOPIC
from tests.foreign.support import JavaTools
from tests.kafka_helpers import read_all, unique, wait_for
from tests.producers.conftest import LOOPBACK, TOKEN, start_webhook, stop_webhook

WEBHOOK, RECIPE, JAVA = 8, 6, 6


def _readme_key(email: str) -> str:
    """The README's rule, written out as another team would: `actor:` + hex SHA-256 of
    `email:<e-mail, stripped and lower-cased>`."""
    return "actor:" + hashlib.sha256(f"email:{email.strip().lower()}".encode()).hexdigest()


def test_three_producers_two_workers_twenty_commands_one_actor(
    fkafka: KafkaSettings,
    fsandbox: SandboxServer,
    java: JavaTools,
    workers: tuple[WorkerProcess, WorkerProcess],
) -> None:
    topic = fkafka.topic(command_topic("find-or-create-actor"))

    def owned(worker: WorkerProcess) -> int:
        return sum(p.startswith(f"{topic}/") for p in worker.partitions())

    first, second = workers
    wait_for(
        lambda: owned(first) + owned(second) == 6 and owned(first) > 0 and owned(second) > 0,
        60,
        "the find-or-create partitions shared by both workers",
    )
    tag = unique("race")
    spellings = [f"dpo@{tag}.example", f"DPO@{tag}.Example", f"  dpo@{tag}.EXAMPLE "]
    email = spellings[0]
    key = _readme_key(email)
    assert key.encode() == actor_record_key(
        FindOrCreateActor.model_validate({"email": email, "companyName": "Any"})
    )

    java_ids = [f"java-{tag}-{i}" for i in range(JAVA)]
    java_lines = [
        f"ce_specversion:1.0,ce_id:{command_id},ce_source:crm,"
        f"ce_type:eu.dastra.command.find-or-create-actor\t{key}\t"
        + json.dumps({"companyName": f"Java {tag}", "email": spellings[i % 3]})
        for i, command_id in enumerate(java_ids)
    ]
    vendor_events = [unique("vendor") for _ in range(RECIPE)]
    recipe_ids = [step_command_id(VENDOR_RECIPE, event_id, "actor") for event_id in vendor_events]

    def send_vendor_events() -> list[str]:
        records = []
        for i, event_id in enumerate(vendor_events):
            data = {"name": f"Recipe {tag} {i}", "privacyEmail": spellings[i % 3]}
            event = new_event(
                type="com.acme.vendor.onboarded", source="urn:acme", id=event_id, data=data
            )
            headers, value = encode_binary(event)
            records.append((event_id.encode(), list(headers), value))
        produce(fkafka, VENDOR_TOPIC, records)
        return []

    def send_java() -> list[str]:
        java.produce(command_topic("find-or-create-actor"), java_lines)
        return []

    api = start_webhook(
        fkafka,
        WebhookSettings(tokens=[SecretStr(TOKEN)]),
        HooksSettings(allow_networks=LOOPBACK),
        DastraSettings(workspace_id=fsandbox.workspace_id),
    )
    results = Tail(fkafka, COMMAND_RESULTS)
    # Slow searches and creates widen the window in which two workers would both miss.
    fault = fsandbox.admin.inject_fault("/v1/ws/*/Actors", latency_s=0.1)
    try:

        def post(i: int) -> Callable[[], list[str]]:
            def call() -> list[str]:
                body = {"email": spellings[i % 3], "companyName": f"Webhook {tag} {i}"}
                answer = api.client.post("/v1/commands/find-or-create-actor", json=body)
                assert answer.status_code == 202, answer.text
                return [answer.headers["command-id"]]

            return call

        senders = [send_java, send_vendor_events, *(post(i) for i in range(WEBHOOK))]
        with ThreadPoolExecutor(len(senders)) as pool:
            webhook_ids = [i for ids in pool.map(lambda send: send(), senders) for i in ids]
        command_ids = [*webhook_ids, *recipe_ids, *java_ids]
        assert len(set(command_ids)) == WEBHOOK + RECIPE + JAVA == 20

        found = results.wait_for_keys(command_ids, timeout=90)
        answers: list[dict[str, Any]] = [results_of(found[i])[0] for i in command_ids]
        assert all(a["status"] == "succeeded" for a in answers), answers
        actor_ids = {a["result"]["id"] for a in answers}
        assert len(actor_ids) == 1, actor_ids
        actors = [
            a
            for a in fsandbox.admin.objects("actors")
            if (a.get("email") or "").strip().lower() == email
        ]
        assert [a["id"] for a in actors] == list(actor_ids)

        # Exactly one result per command, and all twenty on one partition under one key.
        results.read_to_end()
        by_key = results.by_key()
        assert {i: len(by_key[i]) for i in command_ids} == {i: 1 for i in command_ids}
        commands = read_all(fkafka, topic)
        assert sorted(r.headers["ce_id"].decode() for r in commands) == sorted(command_ids)
        assert {r.key for r in commands} == {key.encode()}
        assert len({r.partition for r in commands}) == 1
    finally:
        results.close()
        stop_webhook(api)
        fsandbox.admin.clear_faults(fault)
