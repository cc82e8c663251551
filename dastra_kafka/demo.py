"""The main job behind `make run`: the whole pipeline, live, then checked.

Consumes the settings. Starts (or reuses, when KAFKA_BOOTSTRAP_SERVERS is set) a Kafka broker
and the Dastra sandbox (or the Dastra API when DASTRA_BASE_URL is set), applies topics.yaml, and
runs the poller, the worker (Faust agents), the webhook service, the hook dispatcher and the lag
server as supervised processes. Then it drives traffic: rights requests and tasks created in the
sandbox as a Dastra user would, commands sent through the webhook (a search with `?wait`
included), a REST hook subscriber on loopback, and one malformed command produced straight to
Kafka. A live terminal view shows events, commands, results, dead letters, hook deliveries and
lag. At the end (`--duration`, or Ctrl-C) a summary checks that every created item was published
exactly once, every command has exactly one result, and the hook subscriber received every
event; the exit code says whether all checks passed.

    code = run(settings, catalogue, DemoOptions(duration_s=60))
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import random
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from bus.admin import apply, plan
from bus.localkafka import LocalKafka, free_port
from bus.settings import DastraSettings, KafkaSettings, SandboxSettings, Settings
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
    command_topic,
)
from consumers.lag import GroupSelection, LagMonitor, LagSnapshot
from dastra.sandbox import SandboxAdmin, SandboxServer
from dastra_kafka.supervisor import Service, Supervisor

__all__ = ["DemoOptions", "DemoReport", "run"]

_CLI = [sys.executable, "-m", "dastra_kafka"]


@dataclass(frozen=True)
class DemoOptions:
    """How long and how busy the demo is."""

    duration_s: float = 60.0
    item_every_s: float = 1.5
    command_every_s: float = 2.0
    drain_timeout_s: float = 60.0
    as_json: bool = False
    run_dir: Path | None = None


@dataclass
class DemoReport:
    """What happened, and whether it is right."""

    created: dict[str, set[int]] = field(default_factory=lambda: {"rights": set(), "tasks": set()})
    events: Counter[str] = field(default_factory=Counter)  # ce_id -> times seen
    event_items: dict[str, set[int]] = field(
        default_factory=lambda: {"rights": set(), "tasks": set()}
    )
    commands: set[str] = field(default_factory=set)
    results: Counter[str] = field(default_factory=Counter)  # command id -> results seen
    results_failed: int = 0
    dead_letters: int = 0
    malformed_sent: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)  # webhook-id -> deliveries
    bad_signatures: int = 0
    searches: list[int] = field(default_factory=list)  # result sizes of ?wait searches
    errors: list[str] = field(default_factory=list)
    lag: LagSnapshot | None = None

    def checks(self) -> list[tuple[str, bool, str]]:
        created = len(self.created["rights"]) + len(self.created["tasks"])
        published = len(self.event_items["rights"]) + len(self.event_items["tasks"])
        missing = (self.created["rights"] - self.event_items["rights"]) | (
            self.created["tasks"] - self.event_items["tasks"]
        )
        duplicated = [i for i, n in self.events.items() if n > 1]
        no_result = self.commands - set(self.results)
        twice = [c for c in self.commands if self.results[c] > 1]
        undelivered = [ce for ce in self.events if _is_created(ce) and ce not in self.deliveries]
        return [
            (
                "every created item published",
                not missing,
                f"{published} of {created} items" + (f"; missing {sorted(missing)[:5]}" if missing else ""),
            ),
            ("no event published twice", not duplicated, f"{len(duplicated)} duplicated ids"),
            (
                "every command has a result",
                not no_result,
                f"{len(self.commands) - len(no_result)} of {len(self.commands)} commands",
            ),
            ("no command has two results", not twice, f"{len(twice)} with more than one"),
            (
                "malformed records dead-lettered",
                self.dead_letters >= self.malformed_sent,
                f"{self.dead_letters} dead letters for {self.malformed_sent} malformed records",
            ),
            (
                "hook subscriber received every created event",
                not undelivered and self.bad_signatures == 0,
                f"{sum(1 for ce in self.events if _is_created(ce)) - len(undelivered)} delivered, "
                f"{self.bad_signatures} bad signatures",
            ),
            ("no errors in the traffic", not self.errors, "; ".join(self.errors[:3]) or "none"),
        ]

    @property
    def passed(self) -> bool:
        return all(ok for _name, ok, _detail in self.checks())


def _is_created(ce_id: str) -> bool:
    return ".created:" in ce_id


# --- the stack -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _kafka(settings: Settings, console: Console) -> Iterator[KafkaSettings]:
    if "bootstrap_servers" in settings.kafka.model_fields_set:
        console.print(f"Kafka: using [bold]{settings.kafka.bootstrap_servers}[/]")
        yield settings.kafka
        return
    with console.status("starting a local Apache Kafka broker (KRaft, one node)"):
        broker = LocalKafka(progress=lambda message: console.print(message))
        broker.start()
    try:
        console.print(f"Kafka: local broker at [bold]{broker.bootstrap_servers}[/]")
        yield settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})
    finally:
        with console.status("stopping the broker"):
            broker.stop()


@contextlib.contextmanager
def _dastra(settings: Settings, console: Console) -> Iterator[tuple[DastraSettings, SandboxAdmin | None]]:
    if not settings.dastra.uses_sandbox:
        console.print(f"Dastra: using [bold]{settings.dastra.base_url}[/] (no traffic is created there)")
        yield settings.dastra, None
        return
    config = settings.sandbox.model_copy(update={"port": 0})
    with SandboxServer(config) as sandbox:
        console.print(f"Dastra: sandbox at [bold]{sandbox.base_url}[/] (workspace {sandbox.workspace_id})")
        yield sandbox.dastra_settings(), sandbox.admin


def _env(kafka: KafkaSettings, dastra: DastraSettings) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SERVICE_LOG_JSON": "true",
    }
    if dastra.base_url:
        env["DASTRA_BASE_URL"] = dastra.base_url
        env["DASTRA_TOKEN_URL"] = dastra.token_url
    if dastra.api_key is not None:
        env["DASTRA_API_KEY"] = dastra.api_key.get_secret_value()
    if dastra.workspace_id is not None:
        env["DASTRA_WORKSPACE_ID"] = str(dastra.workspace_id)
    return env


@dataclass(frozen=True)
class _Ports:
    worker: int
    webhook: int
    lag: int
    poller_metrics: int
    hooks_metrics: int


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def _services(base: dict[str, str], ports: _Ports, token: str) -> list[Service]:
    return [
        Service(
            "poller",
            [*_CLI, "poller", "--from", "now"],
            {**base, "POLLER_METRICS_PORT": str(ports.poller_metrics)},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.poller_metrics}/metrics"),
        ),
        Service(
            "worker",
            [*_CLI, "worker"],
            {**base, "WORKER_WEB_PORT": str(ports.worker)},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.worker}/ready"),
            ready_timeout_s=120,
        ),
        Service(
            "webhook",
            [*_CLI, "webhook"],
            {**base, "WEBHOOK_PORT": str(ports.webhook), "WEBHOOK_TOKENS": token},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.webhook}/readyz"),
        ),
        Service(
            "hooks",
            [*_CLI, "hooks"],
            {
                **base,
                "HOOKS_ALLOW_NETWORKS": "127.0.0.0/8",
                "HOOKS_ALLOW_HTTP": "true",
                "HOOKS_METRICS_PORT": str(ports.hooks_metrics),
            },
            ready=lambda: _ok(f"http://127.0.0.1:{ports.hooks_metrics}/metrics"),
        ),
        Service(
            "lag",
            [*_CLI, "lag", "serve"],
            {**base, "LAG_PORT": str(ports.lag)},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.lag}/healthz"),
        ),
    ]


# --- observers -----------------------------------------------------------------------------------


class _Tail(threading.Thread):
    """Reads the event, result and dead-letter topics (read_committed) from where they were
    when the demo started, into the report."""

    def __init__(self, kafka: KafkaSettings, report: DemoReport, lock: threading.Lock) -> None:
        super().__init__(name="demo-tail", daemon=True)
        self._kafka = kafka
        self._report = report
        self._lock = lock
        self._stop = threading.Event()
        self._names = {
            kafka.topic(RIGHTS_REQUESTS): "rights",
            kafka.topic(TASKS): "tasks",
            kafka.topic(COMMAND_RESULTS): "results",
            kafka.topic(DEAD_LETTER): "dlq",
        }
        self._consumer = Consumer(
            kafka.confluent_config(
                **{
                    "group.id": f"demo-tail-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
        )
        start = []
        for topic in self._names:
            partitions = self._consumer.list_topics(topic, timeout=15).topics[topic].partitions
            for partition in partitions:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), 15
                )
                start.append(TopicPartition(topic, partition, high))
        self._consumer.assign(start)

    def stop(self) -> None:
        self._stop.set()
        self.join(10)

    def run(self) -> None:
        try:
            while not self._stop.is_set():
                message = self._consumer.poll(0.2)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        with self._lock:
                            self._report.errors.append(f"tail: {error.str()}")
                    continue
                self._record(self._names[message.topic()], message.headers() or [], message.value())
        finally:
            self._consumer.close()

    def _record(self, kind: str, headers: list[tuple[str, bytes | None]], value: bytes | None) -> None:
        found = {name: raw for name, raw in headers if raw is not None}
        with self._lock:
            if kind in ("rights", "tasks"):
                ce_id = found.get("ce_id", b"").decode()
                self._report.events[ce_id] += 1
                if _is_created(ce_id):
                    self._report.event_items[kind].add(int(json.loads(value or b"{}")["id"]))
            elif kind == "results":
                data = json.loads(value or b"{}")
                self._report.results[str(data.get("command_id"))] += 1
                if data.get("status") == "failed":
                    self._report.results_failed += 1
            else:
                self._report.dead_letters += 1


class _Subscriber:
    """A REST hook subscriber on loopback: verifies each Standard Webhooks signature."""

    def __init__(self, report: DemoReport, lock: threading.Lock) -> None:
        self.secrets: list[bytes] = []
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                webhook_id = self.headers.get("webhook-id", "")
                timestamp = self.headers.get("webhook-timestamp", "")
                signatures = self.headers.get("webhook-signature", "").split()
                signed = f"{webhook_id}.{timestamp}.".encode() + body
                valid = any(
                    hmac.compare_digest(
                        f"v1,{base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()}",
                        candidate,
                    )
                    for key in subscriber.secrets
                    for candidate in signatures
                )
                with lock:
                    if valid:
                        report.deliveries[webhook_id] += 1
                    else:
                        report.bad_signatures += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def add_secret(self, secret: str) -> None:
        self.secrets.append(base64.b64decode(secret.removeprefix("whsec_")))

    def __enter__(self) -> _Subscriber:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --- traffic -------------------------------------------------------------------------------------


class _Traffic(threading.Thread):
    """Creates Dastra items and sends commands on a schedule until stopped."""

    def __init__(
        self,
        options: DemoOptions,
        admin: SandboxAdmin | None,
        webhook_url: str,
        token: str,
        report: DemoReport,
        lock: threading.Lock,
    ) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self._options = options
        self._admin = admin
        self._http = httpx.Client(
            base_url=webhook_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self._report = report
        self._lock = lock
        self._stop = threading.Event()
        self._rng = random.Random(2026)
        self._processing: str | None = None
        self._round = 0

    def stop(self) -> None:
        self._stop.set()
        self.join(60)
        self._http.close()

    def run(self) -> None:
        if self._admin is not None:
            processings = self._admin.objects("processings")
            self._processing = str(processings[0]["id"]) if processings else None
        next_item = next_command = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if self._admin is not None and now >= next_item:
                    self._create_item()
                    next_item = now + self._options.item_every_s
                if now >= next_command:
                    self._send_command()
                    next_command = now + self._options.command_every_s
            except Exception as exc:  # one failed step is reported, the demo goes on
                with self._lock:
                    self._report.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            self._stop.wait(0.05)

    def _create_item(self) -> None:
        assert self._admin is not None
        n = self._round = self._round + 1
        if self._rng.random() < 0.6:
            item = self._admin.create_rights_request(
                title=f"Demo request {n}",
                email=f"subject{n}@example.org",
                givenName="Demo",
                familyName=f"Subject {n}",
                purposes=[self._rng.choice(["Access", "Erasure", "Rectification"])],
            )
            with self._lock:
                self._report.created["rights"].add(int(item["id"]))
        else:
            item = self._admin.create_task(label=f"Demo task {n}", priority="Medium")
            with self._lock:
                self._report.created["tasks"].add(int(item["id"]))

    def _send(self, action: str, body: dict[str, Any], wait: float | None = None) -> Any:
        params = {"wait": wait} if wait else None
        response = self._http.post(f"/v1/commands/{action}", json=body, params=params)
        if response.status_code not in (200, 202):
            raise RuntimeError(f"{action}: webhook answered {response.status_code}")
        answer = response.json()
        command_id = str(answer.get("command_id") or answer.get("result", {}).get("command_id"))
        with self._lock:
            self._report.commands.add(command_id)
        return answer

    def _send_command(self) -> None:
        n = self._round
        kind = self._rng.choice(
            ["create-task", "create-actor", "find-or-create-actor", "search-actors", "link", "create-rights-request"]
        )
        if kind == "create-task":
            self._send("create-task", {"label": f"Follow up {n}", "priority": "High"})
        elif kind == "create-actor":
            self._send("create-actor", {"companyName": f"Vendor {n} SAS", "countryCode": "FR"})
        elif kind == "find-or-create-actor":
            self._send(
                "find-or-create-actor",
                {"companyName": "Acme Cloud", "email": "privacy@acme.example", "countryCode": "DE"},
            )
        elif kind == "search-actors":
            answer = self._send("search-actors", {"q": "Vendor"}, wait=10)
            found = answer.get("result") if isinstance(answer, dict) else None
            with self._lock:
                self._report.searches.append(len(found) if isinstance(found, list) else -1)
        elif kind == "link" and self._processing is not None:
            actor = self._send("find-or-create-actor", {"companyName": "Acme Cloud", "email": "privacy@acme.example"}, wait=10)
            actor_id = (actor.get("result") or {}).get("id") if isinstance(actor, dict) else None
            if actor_id:
                self._send(
                    "link-actor-to-processing",
                    {"actorIds": [actor_id], "dataProcessingId": self._processing, "type": "Recipient", "recipientType": "Vendor"},
                )
        else:
            self._send(
                "create-rights-request",
                {"title": f"Request from the CRM {n}", "purposes": ["Access"], "email": f"crm{n}@example.org"},
            )


# --- the view ------------------------------------------------------------------------------------


def _view(
    report: DemoReport,
    lock: threading.Lock,
    urls: dict[str, str],
    started: float,
    duration: float,
) -> Group:
    with lock:
        flow = Table(title="what flows", expand=True)
        flow.add_column("")
        flow.add_column("count", justify="right")
        created = len(report.created["rights"]) + len(report.created["tasks"])
        published = len(report.event_items["rights"]) + len(report.event_items["tasks"])
        rows = [
            ("items created in Dastra (sandbox)", created),
            ("created events on Kafka", published),
            ("updated events on Kafka", sum(1 for ce in report.events if not _is_created(ce))),
            ("commands sent through the webhook", len(report.commands)),
            ("results", sum(report.results.values())),
            ("  of which failed", report.results_failed),
            ("dead letters", report.dead_letters),
            ("hook deliveries (signature verified)", sum(report.deliveries.values())),
        ]
        for name, value in rows:
            flow.add_row(name, str(value))
        lag = Table(title="consumer lag", expand=True)
        for column in ("group", "status", "lag", "time lag"):
            lag.add_column(column)
        if report.lag is not None:
            for group in report.lag.groups:
                lag.add_row(
                    group.group,
                    str(group.status),
                    str(group.lag),
                    f"{group.max_time_lag_s:.1f} s",
                )
    links = "  ".join(f"{name}: {url}" for name, url in urls.items())
    remaining = max(0.0, duration - (time.monotonic() - started))
    return Group(
        Panel(links, title=f"dastra-kafka demo: {remaining:.0f} s left (Ctrl-C ends it early)"),
        flow,
        lag,
    )


def _summary(report: DemoReport, console: Console) -> None:
    table = Table(title="summary")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for name, ok, detail in report.checks():
        table.add_row(name, "[green]PASS[/]" if ok else "[red]FAIL[/]", detail)
    console.print(table)


# --- run -----------------------------------------------------------------------------------------


def run(settings: Settings, catalogue: TopicCatalogue, options: DemoOptions) -> int:
    """Run the demo; return the process exit code (0 when every check passed)."""
    console = Console(stderr=options.as_json)
    report = DemoReport()
    lock = threading.Lock()
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda _s, _f: stop.set())  # type: ignore[arg-type]
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="dastra-kafka-demo-"))
    try:
        with _kafka(settings, console) as kafka, _dastra(settings, console) as (dastra, admin):
            admin_client = AdminClient(kafka.confluent_config())
            apply(admin_client, plan(admin_client, catalogue, kafka.topic_prefix))
            console.print(f"topics: {len(catalogue)} applied from {catalogue.path.name}")
            token = secrets.token_urlsafe(24)
            ports = _Ports(free_port(), free_port(), free_port(), free_port(), free_port())
            base = _env(kafka, dastra)
            with Supervisor(run_dir) as supervisor, _Subscriber(report, lock) as subscriber:
                for service in _services(base, ports, token):
                    with console.status(f"starting {service.name}"):
                        supervisor.start(service)
                    console.print(f"  {service.name} running (log: {supervisor.log_of(service.name)})")
                webhook_url = f"http://127.0.0.1:{ports.webhook}"
                with httpx.Client(base_url=webhook_url, headers={"Authorization": f"Bearer {token}"}) as http:
                    for event in ("rights_request.created", "task.created"):
                        answer = http.post("/v1/hooks", json={"event": event, "target_url": subscriber.url})
                        answer.raise_for_status()
                        subscriber.add_secret(answer.json()["secret"])
                tail = _Tail(kafka, report, lock)
                tail.start()
                _send_malformed(kafka, report)
                traffic = _Traffic(options, admin, webhook_url, token, report, lock)
                traffic.start()
                urls = {
                    "webhook": f"{webhook_url}/docs",
                    "lag page": f"http://127.0.0.1:{ports.lag}/",
                    "logs": str(run_dir),
                }
                started = time.monotonic()
                with LagMonitor(kafka, settings.lag, GroupSelection.of(kafka, settings.lag)) as monitor:
                    live = Live(console=console, auto_refresh=False, transient=options.as_json)
                    with live:
                        while not stop.is_set() and time.monotonic() - started < options.duration_s:
                            dead = supervisor.dead()
                            if dead:
                                report.errors.append(f"service(s) exited: {', '.join(dead)}")
                                break
                            with contextlib.suppress(Exception):
                                snapshot = monitor.refresh()
                                with lock:
                                    report.lag = snapshot
                            live.update(_view(report, lock, urls, started, options.duration_s), refresh=True)
                            stop.wait(1.0)
                        traffic.stop()
                        _drain(report, lock, options.drain_timeout_s, live, urls, started)
                tail.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if options.as_json:
        print(json.dumps(_as_json(report), indent=2))
    else:
        _summary(report, console)
    return 0 if report.passed else 1


def _drain(
    report: DemoReport, lock: threading.Lock, timeout: float, live: Live, urls: dict[str, str], started: float
) -> None:
    """Wait (with a deadline) until everything sent has come out at the other end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            settled = report.passed
        live.update(_view(report, lock, {**urls, "draining": "waiting for the last results"}, started, 0), refresh=True)
        if settled:
            return
        time.sleep(0.5)


def _send_malformed(kafka: KafkaSettings, report: DemoReport) -> None:
    """One record that is not JSON, straight onto a command topic: it must be dead-lettered."""
    producer = Producer(kafka.confluent_config(**{"enable.idempotence": True}))
    producer.produce(kafka.topic(command_topic("create-task")), key=b"demo-malformed", value=b"{not json")
    if producer.flush(15) == 0:
        report.malformed_sent += 1


def _as_json(report: DemoReport) -> dict[str, Any]:
    return {
        "passed": report.passed,
        "checks": [{"check": n, "passed": ok, "detail": d} for n, ok, d in report.checks()],
        "created": {k: len(v) for k, v in report.created.items()},
        "events": sum(report.events.values()),
        "commands": len(report.commands),
        "results": sum(report.results.values()),
        "dead_letters": report.dead_letters,
        "hook_deliveries": sum(report.deliveries.values()),
    }

