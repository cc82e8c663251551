"""One trace per command, across the real broker: the webhook (in this process, its spans in an
in-memory exporter) and the real `dastra-kafka worker` (a subprocess exporting over OTLP/HTTP to
a receiver here, because OTEL_EXPORTER_OTLP_ENDPOINT names it). The trace context crosses Kafka
only in the records' `ce_traceparent` headers. Also: a poller event's trace reaches the hook
delivery it causes, and the recipe run it triggers and that run's command; no span holds the
command's personal data or a URL's query."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from bus.envelope import encode_binary, header_dict, new_event
from bus.hooks.settings import HooksSettings
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, RIGHTS_REQUESTS, TASKS, TopicCatalogue, command_topic
from bus.tracing import TRACEPARENT_HEADER
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from producers.webhook.settings import WebhookSettings
from tests.consumers.agents_support import RecordProducer, WorkerProcess
from tests.consumers.test_hooks import DispatcherThread
from tests.kafka_helpers import create_catalogue_topics, delete_topics, read_all, unique, wait_for
from tests.producers.conftest import LOOPBACK, TOKEN, start_webhook, stop_webhook
from tests.producers.webhook_support import ServerThread, Subscriber, TLSFiles
from tests.tracing_support import OtlpReceiver, SpanView, in_memory_spans, views_of


@pytest.fixture(scope="module")
def traced_kafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("trace") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_worker(
    traced_kafka: KafkaSettings,
    sandbox_server: SandboxServer,
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    with WorkerProcess(
        traced_kafka,
        sandbox_server,
        tmp_path_factory.mktemp("traced-worker"),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        # The batch processor's export interval (default 5 s): the spans come sooner.
        OTEL_BSP_SCHEDULE_DELAY="100",
        RECIPES_ENABLE="new-request-dpo-task",
        RECIPES_DPO_USER_ID="302",
    ) as process:
        yield process


def _one(spans: list[SpanView], name: str, kind: str) -> SpanView:
    found = [s for s in spans if s.name == name and s.kind == kind]
    assert len(found) == 1, (name, kind, [(s.name, s.kind) for s in spans])
    return found[0]


def _values(spans: list[SpanView]) -> str:
    """Everything the spans say, as one text to search for what must not be there."""
    return repr([(s.name, sorted(s.attributes.items())) for s in spans])


def test_one_command_is_one_trace_from_the_request_to_the_wait_answer(
    traced_kafka: KafkaSettings,
    traced_worker: WorkerProcess,
    receiver: OtlpReceiver,
    sandbox: SandboxServer,
) -> None:
    sandbox.admin.configure(rate_limit=False)
    company = f"Tracing {unique()}"
    email = f"dpo@{unique('trace')}.example"
    with in_memory_spans() as exporter:
        api = start_webhook(
            traced_kafka,
            WebhookSettings(tokens=[SecretStr(TOKEN)]),
            HooksSettings(allow_networks=LOOPBACK),
            DastraSettings(workspace_id=sandbox.workspace_id),
        )
        try:
            answer = api.client.post(
                "/v1/commands/search-actors?wait=20", json={"email": email, "companyName": company}
            )
        finally:
            stop_webhook(api)
        assert answer.status_code == 200, answer.text
        here = views_of(exporter.get_finished_spans())
    command_id = answer.headers["command-id"]

    commands = traced_kafka.topic(command_topic("search-actors"))
    results = traced_kafka.topic(COMMAND_RESULTS)
    request = _one(here, "POST /v1/commands/search-actors", "SERVER")
    assert request.parent_id is None
    assert request.attributes["http.response.status_code"] == 200
    sent = _one(here, f"send {commands}", "PRODUCER")
    assert sent.attributes["messaging.message.id"] == command_id
    waited = _one(here, f"process {results}", "CONSUMER")
    trace_id = request.trace_id

    # The worker's spans arrive when its batch processor exports them.
    def worker_spans() -> list[SpanView]:
        return [s for s in receiver.spans() if s.trace_id == trace_id]

    def complete() -> bool:
        names = {s.name for s in worker_spans()}
        return {f"process {commands}", f"send {results}"} <= names and any(
            n.startswith("GET ") for n in names
        )

    wait_for(complete, 30, "the worker's spans of the command")
    there = worker_spans()
    processed = _one(there, f"process {commands}", "CONSUMER")
    result_sent = _one(there, f"send {results}", "PRODUCER")
    dastra_calls = [s for s in there if s.kind == "CLIENT"]
    assert {s.service for s in there} == {"dastra-kafka-worker"}

    # One trace; each span a child of the one before it, across Kafka both ways.
    assert {s.trace_id for s in [request, sent, waited, *there]} == {trace_id}
    assert sent.parent_id == request.span_id
    assert processed.parent_id == sent.span_id
    assert processed.attributes["messaging.message.id"] == command_id
    assert processed.attributes["dastra_kafka.action"] == "search-actors"
    assert len(dastra_calls) == 2  # by e-mail, then by company name
    assert all(call.parent_id == processed.span_id for call in dastra_calls)
    assert all(call.name == "GET /v1/ws/{ws}/Actors" for call in dastra_calls)
    assert result_sent.parent_id == processed.span_id
    assert waited.parent_id == result_sent.span_id

    # The Dastra calls: their URLs without the query that carried the e-mail; no personal data
    # anywhere in the trace.
    for call in dastra_calls:
        url = str(call.attributes["url.full"])
        assert "?" not in url and url.endswith(f"/v1/ws/{sandbox.workspace_id}/Actors")
        assert call.attributes["http.response.status_code"] == 200
    everything = _values([request, sent, waited, *there])
    assert email not in everything and email.split("@")[1] not in everything
    assert company not in everything and company.split()[1] not in everything

    # What carried it: the command and the result records' headers.
    [record] = [
        r
        for r in read_all(traced_kafka, commands)
        if header_dict(r.headers).get("ce_id") == command_id.encode()
    ]
    assert header_dict(record.headers)[TRACEPARENT_HEADER].decode().split("-")[1:3] == [
        trace_id,
        sent.span_id,
    ]
    [result] = [r for r in read_all(traced_kafka, results) if r.key == command_id.encode()]
    assert header_dict(result.headers)[TRACEPARENT_HEADER].decode().split("-")[1:3] == [
        trace_id,
        result_sent.span_id,
    ]


def test_a_poller_event_s_trace_reaches_its_hook_delivery(
    traced_kafka: KafkaSettings,
    sandbox: SandboxServer,
    catalogue: TopicCatalogue,
    tls: TLSFiles,
    hooks_settings: HooksSettings,
) -> None:
    sandbox.admin.configure(rate_limit=False)
    recorder = Subscriber()
    ws = sandbox.workspace_id
    with in_memory_spans() as exporter:
        api = start_webhook(
            traced_kafka,
            WebhookSettings(tokens=[SecretStr(TOKEN)]),
            HooksSettings(allow_networks=LOOPBACK),
            DastraSettings(workspace_id=ws),
        )
        try:
            with ServerThread(recorder, certfile=tls.cert, keyfile=tls.key) as server:
                hook = api.client.post(
                    "/v1/hooks",
                    json={
                        "event": "task.created",
                        "target_url": f"https://localhost:{server.port}/traced?token=secret",
                    },
                ).json()
                with DispatcherThread(traced_kafka, hooks_settings) as dispatcher:
                    wait_for(lambda: dispatcher.knows(hook["id"]), 10, "the subscription")

                    async def cycle(create: bool = False) -> None:
                        async with DastraClient(sandbox.dastra_settings()) as client:
                            if create:
                                await client.create_task(ws, {"label": "Call the subject back"})
                            poller = Poller(
                                traced_kafka,
                                PollerSettings(),
                                catalogue,
                                client,
                                workspaces=[ws],
                                start="now",
                            )
                            await poller.run(max_cycles=1)

                    asyncio.run(cycle())  # the cursor starts now
                    asyncio.run(cycle(create=True))  # publishes the new task
                    wait_for(lambda: bool(recorder.accepted("/traced")), 20, "the hook delivery")

                    def delivered() -> list[SpanView]:
                        return [
                            s
                            for s in views_of(exporter.get_finished_spans())
                            if s.attributes.get("dastra_kafka.hook.outcome") == "delivered"
                        ]

                    wait_for(lambda: bool(delivered()), 10, "the delivery's span")
        finally:
            stop_webhook(api)
        spans = views_of(exporter.get_finished_spans())
    tasks = traced_kafka.topic(TASKS)
    published = _one(spans, f"send {tasks}", "PRODUCER")
    assert published.parent_id is None  # an event starts its own trace
    assert published.attributes["cloudevents.event_type"] == "eu.dastra.task.created"
    delivery = _one(spans, f"process {tasks}", "CONSUMER")
    assert delivery.trace_id == published.trace_id
    assert delivery.parent_id == published.span_id
    assert delivery.attributes["dastra_kafka.hook.id"] == hook["id"]
    assert delivery.attributes["dastra_kafka.hook.outcome"] == "delivered"
    everything = _values([published, delivery])
    assert "secret" not in everything and "Call the subject back" not in everything


def test_a_poller_event_s_trace_reaches_the_recipe_run_and_its_command(
    traced_kafka: KafkaSettings,
    traced_worker: WorkerProcess,
    receiver: OtlpReceiver,
    sandbox: SandboxServer,
) -> None:
    sandbox.admin.configure(rate_limit=False)
    ws = sandbox.workspace_id
    request = sandbox.admin.create_rights_request(title=f"Request {unique('rr')}")
    # The event as the poller publishes it, in a trace of its own (the poller's send span).
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    headers, value = encode_binary(
        new_event(
            type="eu.dastra.rights_request.created",
            source=f"dastra://workspaces/{ws}",
            id=f"dastra:{ws}:rights_request.created:{request['id']}",
            subject=str(request["id"]),
            data=request,
        )
    )
    headers.append((TRACEPARENT_HEADER, f"00-{trace_id}-{parent_id}-01".encode()))
    producer = RecordProducer(traced_kafka)
    try:
        producer.send(RIGHTS_REQUESTS, [(f"{ws}:{request['id']}".encode(), headers, value)])
    finally:
        producer.close()

    requests = traced_kafka.topic(RIGHTS_REQUESTS)
    commands = traced_kafka.topic(command_topic("create-task"))
    results = traced_kafka.topic(COMMAND_RESULTS)

    def spans() -> list[SpanView]:
        return [s for s in receiver.spans() if s.trace_id == trace_id]

    def complete() -> bool:
        names = {s.name for s in spans()}
        return {f"process {requests}", f"send {commands}", f"process {commands}"} <= names and (
            f"send {results}" in names
        )

    wait_for(complete, 60, "the recipe's spans")
    found = spans()
    triggered = _one(found, f"process {requests}", "CONSUMER")
    step = _one(found, f"send {commands}", "PRODUCER")
    executed = _one(found, f"process {commands}", "CONSUMER")
    assert triggered.parent_id == parent_id
    assert step.parent_id == triggered.span_id
    assert step.attributes["dastra_kafka.recipe"] == "new-request-dpo-task"
    assert executed.parent_id == step.span_id
    [created] = [s for s in found if s.name == "POST /v1/ws/{ws}/Tasks"]
    assert created.parent_id == executed.span_id
    assert request["title"] not in _values(found)
