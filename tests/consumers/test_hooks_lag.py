"""REST hook subscribers that lag instead of dropping: a burst far larger than any buffer to a
rate-limited subscriber and a fast one (every event to both, the fast one never held back,
nothing dead-lettered, the lag in /metrics), and a dispatcher SIGKILLed mid-burst whose
successor resumes the subscription from its position in Kafka."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.hooks.settings import HooksSettings
from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER, TopicCatalogue
from consumers.hooks.subscriber import group_of
from consumers.lag.monitor import LagMonitor
from tests.consumers.hooks_support import DispatcherThread, publish, put, subscribe
from tests.consumers.lag.support import fast_lag_settings
from tests.kafka_helpers import read_all, wait_for
from tests.producers.webhook_support import ServerThread, Subscriber, TLSFiles

BURST = 1200
# Each event carries 1 KB, so the read-ahead (buffer_max events, fetch_partition_bytes per
# partition) holds a small part of the burst: the burst test sets both low (50 events, 16 KB:
# about 50 + 6 x 16 events), so a burst of 1 200 is far larger than anything it can hold.
PAD = 1000


@pytest.fixture
def subscriber(tls: TLSFiles) -> Iterator[tuple[Subscriber, ServerThread]]:
    recorder = Subscriber()
    with ServerThread(recorder, certfile=tls.cert, keyfile=tls.key) as server:
        yield recorder, server


@pytest.fixture
def plain_subscriber() -> Iterator[tuple[Subscriber, ServerThread]]:
    """Plain http on loopback: the burst measures the dispatcher, not TLS (tested elsewhere)."""
    recorder = Subscriber()
    with ServerThread(recorder) as server:
        yield recorder, server


def _ids(recorder: Subscriber, path: str) -> list[int]:
    return [int(json.loads(r.body)["data"]["id"]) for r in recorder.accepted(path)]


def test_a_burst_lags_the_rate_limited_subscriber_and_never_holds_the_fast_one(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    hooks_settings: HooksSettings,
    plain_subscriber: tuple[Subscriber, ServerThread],
) -> None:
    recorder, server = plain_subscriber
    # The slow subscriber has the dispatcher's rate, set below the default 25/s so that the
    # comparison holds on a loaded machine too; the fast one has its own rate, far higher.
    settings = hooks_settings.model_copy(
        update={
            "rate_per_s": 10.0,
            "concurrency": 4,
            "buffer_max": 50,
            "fetch_partition_bytes": 16384,
            "allow_http": True,
        }
    )
    read_ahead = settings.buffer_max + 6 * settings.fetch_partition_bytes // PAD
    assert 5 * read_ahead < BURST and 10 * settings.buffer_max < BURST
    slow = subscribe(kafka, f"{server.url}/slow")
    fast = subscribe(kafka, f"{server.url}/fast", rate_per_s=10_000)
    with DispatcherThread(kafka, settings) as dispatcher:
        wait_for(lambda: dispatcher.knows(slow.id) and dispatcher.knows(fast.id), 10, "subs")
        publish(kafka, *range(BURST), pad=PAD)
        wait_for(lambda: len(recorder.accepted("/fast")) >= BURST, 180, "every fast delivery")
        slow_then = len(recorder.accepted("/slow"))
        assert dispatcher.dispatcher is not None
        registry = dispatcher.dispatcher.registry
        lag_then = registry.get_sample_value("dastra_hooks_lag_events", {"hook": slow.id})
        # The fast one got everything while the slow one was far behind (it needs 120 s for
        # the burst), and the slow one's lag shows it.
        assert slow_then < BURST / 2, slow_then
        assert lag_then is not None and lag_then > 0
        # Its position is a consumer group of the project's: the lag monitor shows it as is.
        with LagMonitor(kafka, fast_lag_settings()) as monitor:
            groups = {g.group: g for g in monitor.refresh().groups}
        seen = groups[group_of(kafka, settings, slow.id)]
        assert sum(p.lag or 0 for p in seen.partitions) > 0
        # What it holds in memory is its read-ahead, not the backlog.
        held = registry.get_sample_value("dastra_hooks_buffered", {"hook": slow.id})
        assert held is not None and held <= settings.buffer_max + 1
        # Lift its rate (a subscription change applies at once) so that it catches up soon.
        lifted = slow.model_copy(update={"rate_per_s": 10_000.0})
        put(kafka, lifted)
        wait_for(lambda: len(recorder.accepted("/slow")) >= BURST, 180, "every slow delivery")

        def caught_up() -> bool:
            lag = registry.get_sample_value("dastra_hooks_lag_events", {"hook": slow.id})
            return lag == 0

        wait_for(caught_up, 30, "the slow subscriber's lag back to 0")
    for path in ("/fast", "/slow"):
        assert sorted(set(_ids(recorder, path))) == list(range(BURST)), path
    assert read_all(kafka, kafka.topic(DEAD_LETTER)) == []


class _HooksProcess:
    """`dastra-kafka hooks` as a subprocess (SIGKILLed by the test)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self._env = {**env, "HOOKS_METRICS_PORT": str(self.port)}
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> _HooksProcess:
        script = Path(sys.executable).with_name("dastra-kafka")
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(script), "--env-file", "/nonexistent", "hooks"],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(self._serving, 60, "the hooks dispatcher's /metrics", every=0.2)
        return self

    def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"hooks exited:\n{self._log.read_text(errors='replace')}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).is_success
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def test_a_dispatcher_killed_mid_burst_is_resumed_by_another_without_a_gap(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    tls: TLSFiles,
    subscriber: tuple[Subscriber, ServerThread],
    tmp_path: Path,
) -> None:
    recorder, server = subscriber
    burst = 1500
    subscribe(kafka, f"{server.url}/resumed")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "HOOKS_"))}
    env = {
        **base,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "HOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
        "HOOKS_CA_FILE": str(tls.ca),
        "HOOKS_RATE_PER_S": "150",
        "HOOKS_BUFFER_MAX": "50",
        "HOOKS_SESSION_TIMEOUT_S": "6",
        "SERVICE_LOG_LEVEL": "warning",
    }
    first = _HooksProcess(env, tmp_path / f"hooks-{uuid.uuid4().hex[:6]}.log").start()
    # `dastra-kafka hooks` serves the standard process metrics beside its own.
    served = httpx.get(f"http://127.0.0.1:{first.port}/metrics", timeout=5).text
    assert "\nprocess_cpu_seconds_total " in served and "\npython_info{" in served
    try:
        publish(kafka, *range(burst), pad=PAD)
        wait_for(lambda: len(recorder.accepted("/resumed")) >= burst // 4, 60, "a quarter")
    finally:
        first.kill()
    killed_at = len(recorder.accepted("/resumed"))
    assert killed_at < burst  # killed mid-burst
    second = _HooksProcess(env, tmp_path / f"hooks-{uuid.uuid4().hex[:6]}.log").start()
    try:
        wait_for(
            lambda: set(_ids(recorder, "/resumed")) >= set(range(burst)),
            burst / 150 + 90,
            "every event after the restart",
        )
    finally:
        second.stop()
    ids = _ids(recorder, "/resumed")
    assert sorted(set(ids)) == list(range(burst))
    # The successor resumed from the stored position: it repeated at most what was read ahead
    # or delivered since the last commit, not everything the first one had delivered.
    repeats = len(ids) - burst
    assert repeats < burst // 4 <= killed_at, (repeats, killed_at)
    assert {r.headers["webhook-id"] for r in recorder.accepted("/resumed")} == {
        f"dastra:101:task.created:{n}" for n in range(burst)
    }  # repeats (at-least-once) carry the same webhook-id, so receivers drop them
    assert read_all(kafka, kafka.topic(DEAD_LETTER)) == []
