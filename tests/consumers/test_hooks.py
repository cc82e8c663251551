"""The REST hook dispatcher against the real broker and real HTTPS subscribers on loopback:
signed deliveries that an independent Standard Webhooks implementation verifies, retries,
410 unsubscribes, dead letters, isolation between subscribers, and the egress guard."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from bus.deadletter import read_dead_letter
from bus.groups import committed_offsets
from bus.hooks.settings import HooksSettings
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER, HOOK_SUBSCRIPTIONS, TASKS, TopicCatalogue
from consumers.hooks.subscriber import group_of
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from producers.poller import Poller
from producers.poller.settings import PollerSettings
from tests.consumers.agents_support import group_caught_up
from tests.consumers.hooks_support import DispatcherThread
from tests.consumers.hooks_support import publish as _publish
from tests.consumers.hooks_support import subscribe as _subscribe
from tests.consumers.hooks_support import unsubscribe as _unsubscribe
from tests.kafka_helpers import Record, consume, read_all, wait_for
from tests.producers.conftest import Running
from tests.producers.webhook_support import ServerThread, Subscriber, TLSFiles


@pytest.fixture
def subscriber(tls: TLSFiles) -> Iterator[tuple[Subscriber, ServerThread]]:
    recorder = Subscriber()
    with ServerThread(recorder, certfile=tls.cert, keyfile=tls.key) as server:
        yield recorder, server


def _dead_letters(kafka: KafkaSettings, expected: int) -> list[Record]:
    return consume(kafka, kafka.topic(DEAD_LETTER), expected=expected, timeout=30, to_end=True)


def test_a_poller_event_reaches_the_subscriber_with_a_signature_that_verifies(
    webhook: Running,
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = subscriber
    ws = sandbox.workspace_id
    # By name, so that TLS server name and certificate checks run on the pinned address.
    target = f"https://localhost:{server.port}/hooks/zap-1"
    created = webhook.client.post(
        "/v1/hooks", json={"event": "task.created", "target_url": target, "workspace_id": ws}
    )
    assert created.status_code == 201, created.text
    hook = created.json()
    with DispatcherThread(kafka, hooks_settings):
        task = sandbox.admin.create_task(label="Call the data subject back")

        async def one_cycle() -> None:
            async with DastraClient(dastra_settings) as dastra:
                poller = Poller(
                    kafka, PollerSettings(), topics, dastra, workspaces=[ws], start="beginning"
                )
                await poller.run(max_cycles=1)

        asyncio.run(one_cycle())
        wait_for(lambda: recorder.accepted("/hooks/zap-1"), 20, "the delivery")
    [received] = recorder.at("/hooks/zap-1")
    payload = Webhook(hook["secret"]).verify(received.body, received.headers)
    [event] = read_all(kafka, kafka.topic(TASKS))
    assert received.headers["webhook-id"] == event.headers["ce_id"].decode()
    assert payload["id"] == event.headers["ce_id"].decode()
    assert payload["type"] == "task.created" and payload["workspace_id"] == ws
    assert payload["data"] == json.loads(event.value or b"{}")  # the Dastra object, unchanged
    assert payload["data"]["id"] == task["id"]
    assert received.headers["content-type"] == "application/json"
    # Tampering is detected by the same independent implementation.
    with pytest.raises(WebhookVerificationError):
        Webhook(hook["secret"]).verify(received.body + b" ", received.headers)


def test_a_failing_subscriber_is_retried_until_it_accepts_once(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = subscriber
    recorder.answers("/flaky", 500, 503, 200)
    recorder.answers("/throttled", ("retry-after", 429, 1), 200)
    flaky = _subscribe(kafka, f"{server.url}/flaky")
    throttled = _subscribe(kafka, f"{server.url}/throttled")
    with DispatcherThread(kafka, hooks_settings) as dispatcher:
        wait_for(lambda: dispatcher.knows(flaky.id) and dispatcher.knows(throttled.id), 10, "subs")
        _publish(kafka, 1)
        wait_for(lambda: recorder.accepted("/flaky"), 20, "the accepted retry")
        wait_for(lambda: recorder.accepted("/throttled"), 20, "the throttled retry")
        # Each subscription's group committed the end of the topic: both are done with the
        # event, so an extra delivery after acceptance would already be in the recorder.
        groups = [group_of(kafka, hooks_settings, s.id) for s in (flaky, throttled)]
        wait_for(lambda: all(group_caught_up(kafka, g, [TASKS]) for g in groups), 20, "groups done")
    attempts = recorder.at("/flaky")
    assert len(attempts) == 3 and len(recorder.accepted("/flaky")) == 1
    assert {a.headers["webhook-id"] for a in attempts} == {"dastra:101:task.created:1"}
    assert len({a.body for a in attempts}) == 1
    for attempt in attempts:
        Webhook(flaky.secret.get_secret_value()).verify(attempt.body, attempt.headers)
    first, second = recorder.at("/throttled")
    assert second.at - first.at >= 1.0  # Retry-After: 1 honoured
    assert read_all(kafka, kafka.topic(DEAD_LETTER)) == []


def test_an_asctime_retry_after_is_waited_for_instead_of_dead_lettering(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = subscriber

    def two_seconds_ahead() -> str:  # asctime, `Sun Nov  6 08:49:37 1994`: UTC, no zone
        return time.asctime(time.gmtime(time.time() + 2))

    recorder.answers("/asctime", ("retry-after", 503, two_seconds_ahead), 200)
    hook = _subscribe(kafka, f"{server.url}/asctime")
    with DispatcherThread(kafka, hooks_settings) as dispatcher:
        wait_for(lambda: dispatcher.knows(hook.id), 10, "the subscription")
        _publish(kafka, 1)
        wait_for(lambda: recorder.accepted("/asctime"), 20, "the delivery after the wait")
    first, second = recorder.at("/asctime")
    # Whole seconds: 2 s ahead is at least 1 s ahead once truncated; backoff alone is <= 0.05 s.
    assert second.at - first.at >= 1.0
    assert read_all(kafka, kafka.topic(DEAD_LETTER)) == []


def test_410_gone_unsubscribes_for_every_replica(
    webhook: Running,
    kafka: KafkaSettings,
    hooks_settings: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = subscriber
    recorder.answers("/gone", 410)
    created = webhook.client.post(
        "/v1/hooks", json={"event": "task.created", "target_url": f"{server.url}/gone"}
    )
    hook_id = created.json()["id"]
    with DispatcherThread(kafka, hooks_settings) as dispatcher:
        wait_for(lambda: dispatcher.knows(hook_id), 10, "the subscription")
        _publish(kafka, 1)
        wait_for(lambda: not dispatcher.knows(hook_id), 20, "the unsubscription")
        wait_for(lambda: webhook.client.get("/v1/hooks").json() == [], 10, "the webhook's view")
        # Its position (a consumer group that had committed) is deleted with it.
        group = group_of(kafka, hooks_settings, hook_id)
        wait_for(lambda: committed_offsets(kafka, group) == {}, 30, "its group deleted")
        _publish(kafka, 2, 3)
        time.sleep(1.0)  # would show a delivery to the removed subscriber
    assert len(recorder.at("/gone")) == 1
    stored = read_all(kafka, kafka.topic(HOOK_SUBSCRIPTIONS))
    assert (stored[-1].key, stored[-1].value) == (hook_id.encode(), None)
    assert read_all(kafka, kafka.topic(DEAD_LETTER)) == []


def test_a_subscriber_that_hangs_does_not_delay_another(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = subscriber
    recorder.answers("/hangs", "hang")
    patient = hooks_settings.model_copy(update={"timeout_s": 60.0})
    hanging = _subscribe(kafka, f"{server.url}/hangs")
    fast = _subscribe(kafka, f"{server.url}/fast")
    with DispatcherThread(kafka, patient) as dispatcher:
        wait_for(lambda: dispatcher.knows(hanging.id) and dispatcher.knows(fast.id), 10, "subs")
        _publish(kafka, *range(1, 21))
        # Each of the hanging subscriber's attempts waits 60 s; the other gets everything now.
        wait_for(lambda: len(recorder.accepted("/fast")) == 20, 15, "all 20 fast deliveries")
        # Each subscriber reads on its own: the hanging one gets its first requests out when
        # its reader is there, then all its workers are stuck.
        stuck = patient.concurrency
        wait_for(lambda: len(recorder.at("/hangs")) >= stuck, 15, "the stuck requests")
        assert recorder.accepted("/hangs") == []
        assert len(recorder.at("/hangs")) == stuck
    ids = sorted(json.loads(r.body)["data"]["id"] for r in recorder.accepted("/fast"))
    assert ids == list(range(1, 21))


def test_the_retry_budget_ends_in_a_dead_letter_with_the_original_record(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = subscriber
    recorder.answers("/broken", 500)
    broken = _subscribe(kafka, f"{server.url}/broken")
    with DispatcherThread(kafka, hooks_settings) as dispatcher:
        wait_for(lambda: dispatcher.knows(broken.id), 10, "the subscription")
        _publish(kafka, 7)
        [letter] = _dead_letters(kafka, 1)
    assert len(recorder.at("/broken")) == hooks_settings.max_attempts
    [event] = read_all(kafka, kafka.topic(TASKS))
    info = read_dead_letter(list(letter.headers.items()))
    assert (letter.key, letter.value) == (event.key, event.value)
    assert info.kind == "delivery-failed" and info.component == "hooks"
    assert info.attempts == hooks_settings.max_attempts
    assert (info.topic, info.partition, info.offset) == (event.topic, event.partition, event.offset)
    assert broken.id in info.message and "HTTP 500" in info.message
    assert server.url not in info.message  # target URLs may carry tokens: never in records
    assert letter.headers["dlq.hook.id"] == broken.id.encode()


def test_the_egress_guard_refuses_non_public_targets_and_redirects_to_other_hosts(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
    tls: TLSFiles,
) -> None:
    recorder, server = subscriber
    port = server.port
    # Written straight to the topic, so the subscribe-time check is bypassed: the dispatcher
    # must refuse them itself, before connecting anywhere.
    refused_here = [
        f"https://127.0.0.1:{port}/loopback",  # loopback, with no allowlist
        f"https://localhost:{port}/by-name",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/private",
        f"http://127.0.0.1:{port}/plain-http",
    ]
    guarded = HooksSettings(ca_file=tls.ca, max_attempts=2, backoff_s=0.05, backoff_max_s=0.1)
    subscriptions = [_subscribe(kafka, url) for url in refused_here]
    with DispatcherThread(kafka, guarded) as dispatcher:
        wait_for(lambda: all(dispatcher.knows(s.id) for s in subscriptions), 10, "subs")
        _publish(kafka, 1)
        letters = _dead_letters(kafka, len(subscriptions))
    assert recorder.received == []  # no connection was made to any of them
    reasons = {
        letter.headers["dlq.hook.id"].decode(): read_dead_letter(list(letter.headers.items()))
        for letter in letters
    }
    assert set(reasons) == {s.id for s in subscriptions}
    assert all("target refused" in info.message for info in reasons.values())

    _unsubscribe(kafka, *subscriptions)

    # With loopback admitted: a 307 to the same origin is followed; one to another host never.
    recorder.answers("/moved", ("redirect", f"{server.url}/new-home"))
    recorder.answers("/away", ("redirect", f"https://localhost:{port}/stolen"))
    same = _subscribe(kafka, f"{server.url}/moved")
    away = _subscribe(kafka, f"{server.url}/away")
    with DispatcherThread(kafka, hooks_settings) as dispatcher:
        wait_for(lambda: dispatcher.knows(same.id) and dispatcher.knows(away.id), 10, "subs")
        _publish(kafka, 2)
        wait_for(lambda: recorder.accepted("/new-home"), 20, "the same-origin redirect")
        more = _dead_letters(kafka, len(subscriptions) + 1)
    assert recorder.at("/stolen") == []
    assert len(recorder.at("/away")) == hooks_settings.max_attempts
    assert [r.path for r in recorder.received if r.path in ("/loopback", "/by-name")] == []
    [last] = [m for m in more if m.headers["dlq.hook.id"] == away.id.encode()]
    info = read_dead_letter(list(last.headers.items()))
    assert "HTTP 307" in info.message


def test_a_4xx_refusal_is_dead_lettered_at_once_but_408_409_429_are_retried(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = subscriber
    recorder.answers("/refuses", 400)
    recorder.answers("/busy", 409, 408, 429, 200)
    refuses = _subscribe(kafka, f"{server.url}/refuses")
    busy = _subscribe(kafka, f"{server.url}/busy")
    patient = hooks_settings.model_copy(update={"max_attempts": 5})
    with DispatcherThread(kafka, patient) as dispatcher:
        wait_for(lambda: dispatcher.knows(refuses.id) and dispatcher.knows(busy.id), 10, "subs")
        _publish(kafka, 1)
        [letter] = _dead_letters(kafka, 1)
        wait_for(lambda: recorder.accepted("/busy"), 20, "the delivery after 409, 408, 429")
    assert len(recorder.at("/refuses")) == 1
    info = read_dead_letter(list(letter.headers.items()))
    assert letter.headers["dlq.hook.id"] == refuses.id.encode()
    assert "rejected: HTTP 400" in info.message and info.attempts == 1
    assert len(recorder.at("/busy")) == 4
