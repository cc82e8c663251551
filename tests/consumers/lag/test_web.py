"""`lag serve` over real HTTP on loopback, fed by a real broker: kafka-lag-exporter metric names
on /metrics, /api/lag, the page as a real headless Chromium renders it, and the alert webhook
delivered (with a retry) to a local receiver."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from bus.localkafka import free_port
from bus.settings import KafkaSettings
from consumers.lag import LagMonitor
from consumers.lag.page import PAGE
from consumers.lag.settings import LagSettings
from consumers.lag.web import _Alerter, create_app
from tests.consumers.lag.support import commit, fast_lag_settings, produce, topic
from tests.kafka_helpers import wait_for

CHROMIUM = "/usr/bin/chromium"

METRICS = [
    "kafka_consumergroup_group_offset",
    "kafka_consumergroup_group_lag",
    "kafka_consumergroup_group_lag_seconds",
    "kafka_consumergroup_group_max_lag",
    "kafka_consumergroup_group_max_lag_seconds",
    "kafka_consumergroup_group_sum_lag",
    "kafka_consumergroup_group_topic_sum_lag",
    "kafka_partition_latest_offset",
    "kafka_partition_earliest_offset",
    "kafka_consumergroup_poll_time_ms",
    "dastra_consumergroup_status",
    "dastra_consumergroup_partition_status",
    "dastra_lag_up",
]


@contextmanager
def _serve(kafka: KafkaSettings, lag: LagSettings) -> Iterator[str]:
    """`create_app` under a real uvicorn on a free loopback port, in a thread."""
    port = free_port()
    app = create_app(LagMonitor(kafka, lag), lag)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    )
    thread = threading.Thread(target=server.run, name="lag-serve", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server.started, 20, "the lag server to start")
        wait_for(
            lambda: httpx.get(f"{base}/api/lag", timeout=2).status_code == 200,
            20,
            "a first refresh",
        )
        yield base
    finally:
        server.should_exit = True
        thread.join(20)
        assert not thread.is_alive(), "the lag server did not stop"


def _wait_for_status(base: str, group: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def seen() -> bool:
        for g in httpx.get(f"{base}/api/lag", timeout=2).json()["groups"]:
            if g["group"] == group and g["status"] == status:
                found.update(g)
                return True
        return False

    wait_for(seen, 20, f"{group} to be {status}", every=0.1)
    return found


def test_metrics_and_api_carry_kafka_lag_exporter_names(kafka: KafkaSettings) -> None:
    group = kafka.topic("dastra.metrics")
    lag = fast_lag_settings(refresh_interval_s=0.2, cluster_name="test-cluster")
    with topic(kafka, 2) as name:
        produce(kafka, name, 0, 12)
        commit(kafka, group, {(name, 0): 2, (name, 1): 0})
        with _serve(kafka, lag) as base:
            api = _wait_for_status(base, group, "OK")
            text = httpx.get(f"{base}/metrics", timeout=5).text
            health = httpx.get(f"{base}/healthz", timeout=5)
            trend = httpx.get(f"{base}/api/lag/trend", timeout=5).json()

    for metric in METRICS:
        assert re.search(rf"^{metric}[{{ ]", text, re.MULTILINE), f"{metric} missing"
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(metric: str, **labels: str) -> float:
        return samples[(metric, tuple(sorted({"cluster_name": "test-cluster", **labels}.items())))]

    member = {"member_host": "", "consumer_id": "", "client_id": ""}
    p0 = {"group": group, "topic": name, "partition": "0", **member}
    assert value("kafka_consumergroup_group_lag", **p0) == 10
    assert value("kafka_consumergroup_group_offset", **p0) == 2
    assert value("kafka_consumergroup_group_lag_seconds", **p0) > 0
    assert value("kafka_consumergroup_group_max_lag", group=group, is_simple_consumer="true") == 10
    assert value("kafka_consumergroup_group_sum_lag", group=group) == 10
    assert value("kafka_consumergroup_group_topic_sum_lag", group=group, topic=name) == 10
    assert value("kafka_partition_latest_offset", topic=name, partition="0") == 12
    assert value("kafka_partition_earliest_offset", topic=name, partition="0") == 0
    assert value("dastra_consumergroup_status", group=group) == 0
    assert value("dastra_lag_up") == 1
    assert ("process_cpu_seconds_total", ()) in samples
    assert any(name == "python_info" for name, _labels in samples)
    assert api["lag"] == 10 and api["partitions"][0]["time_lag_s"] > 0
    assert health.status_code == 200
    assert len(trend["groups"][group]["lag"]) >= 1


def _chromium(url: str, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium'}",
            "--virtual-time-budget=5000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium: run `make chromium`"
)
def test_the_page_renders_groups_and_statuses_in_a_real_browser(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    healthy, rewound = kafka.topic("dastra.page-healthy"), kafka.topic("dastra.page-rewound")
    lag = fast_lag_settings(refresh_interval_s=0.5)
    with topic(kafka, 1) as name:
        produce(kafka, name, 0, 20)
        commit(kafka, healthy, {(name, 0): 20})
        commit(kafka, rewound, {(name, 0): 15})
        with _serve(kafka, lag) as base:
            _wait_for_status(base, rewound, "OK")
            commit(kafka, rewound, {(name, 0): 3})
            _wait_for_status(base, rewound, "REWIND")
            rendered = _chromium(f"{base}/", tmp_path, "--dump-dom")
            shot = _chromium(
                f"{base}/",
                tmp_path,
                f"--screenshot={tmp_path / 'lag.png'}",
                "--window-size=1280,900",
            )

    assert rendered.returncode == 0, rendered.stderr[-2000:]
    dom = rendered.stdout
    cards = re.findall(
        r'<article class="group (\w+)" data-group="([^"]+)">.*?<span class="pill status">(\w+)<',
        dom,
        re.DOTALL,
    )
    assert (("REWIND", rewound, "REWIND") in cards) and (("OK", healthy, "OK") in cards), cards
    assert cards[0][1] == rewound  # the worst group comes first
    assert "went back from 15 to 3" in dom
    assert "<polyline" in dom  # the trend charts were drawn by the page's own script
    assert shot.returncode == 0 and (tmp_path / "lag.png").stat().st_size > 10_000
    assert not re.search(r"(src|href)=|https?://|@import", PAGE)  # nothing from elsewhere


class _Receiver(BaseHTTPRequestHandler):
    """Answers 503 to the first POST, 204 to the others; keeps every body and webhook-id."""

    received: list[tuple[dict[str, Any], str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.received.append((json.loads(body), self.headers.get("webhook-id", "")))
        self.send_response(503 if len(self.received) == 1 else 204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_a_status_change_is_posted_to_the_alert_webhook_with_retries(
    kafka: KafkaSettings,
) -> None:
    group = kafka.topic("dastra.alerted")
    _Receiver.received = []
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hooks/lag"
    lag = fast_lag_settings(
        refresh_interval_s=0.2,
        alert_url=url,
        alert_backoff_s=0.05,
        alert_max_attempts=3,
    )
    try:
        with topic(kafka, 1) as name:
            produce(kafka, name, 0, 20)
            commit(kafka, group, {(name, 0): 18})
            with _serve(kafka, lag) as base:
                _wait_for_status(base, group, "OK")
                commit(kafka, group, {(name, 0): 2})
                _wait_for_status(base, group, "REWIND")
                wait_for(lambda: len(_Receiver.received) >= 2, 20, "the alert and its retry")
    finally:
        receiver.shutdown()
        receiver.server_close()

    (first, first_id), (second, second_id) = _Receiver.received[:2]
    assert first == second and first_id == second_id == first["id"]  # the same alert, retried
    assert first["type"] == "dastra.lag.status_changed"
    assert (first["group"], first["previous"], first["status"]) == (group, "OK", "REWIND")
    assert first["status_code"] == 2 and first["lag"] == 18
    assert url not in json.dumps(first)
    assert all(payload["group"] == group for payload, _ in _Receiver.received)


@pytest.mark.parametrize("form", ["imf-fixdate", "asctime"])
async def test_the_alerter_waits_for_a_retry_after_given_as_a_date(form: str) -> None:
    seen: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) > 1:
            return httpx.Response(204)
        # Whole seconds: 2 s ahead is at least 1 s ahead once truncated.
        ahead = time.time() + 2
        if form == "asctime":
            value = time.asctime(time.gmtime(ahead))
        else:
            value = format_datetime(datetime.fromtimestamp(ahead, UTC), usegmt=True)
        return httpx.Response(429, headers={"retry-after": value})

    lag = fast_lag_settings(alert_url="https://alerts.test/lag", alert_backoff_s=0.01)
    alerter = _Alerter(lag, transport=httpx.MockTransport(answer))
    try:
        async with asyncio.timeout(10):
            await alerter._deliver({"id": "alert-1", "group": "g"})
    finally:
        await alerter.aclose()
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1.0  # backoff alone would have waited at most 0.015 s


def test_the_grafana_dashboard_uses_only_metrics_the_server_exports() -> None:
    dashboard = json.loads(
        (Path(__file__).resolve().parents[3] / "ops/grafana/dastra-kafka-lag.json").read_text()
    )
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    used = {name for expr in exprs for name in re.findall(r"\b(?:kafka|dastra)_[a-z_]+", expr)}
    assert used, "no metric referenced"
    assert used <= set(METRICS), used - set(METRICS)
    assert {"kafka_consumergroup_group_max_lag_seconds", "dastra_consumergroup_status"} <= used
