"""The main job behind `make run`: the whole pipeline, live, then checked.

Consumes the settings. Starts the Dastra sandbox (or uses the Dastra API when DASTRA_BASE_URL is
set) and runs `dastra-kafka doctor` against it (a FAIL stops the demo), then starts (or reuses,
when KAFKA_BOOTSTRAP_SERVERS is set) a Kafka broker, applies topics.yaml, and
runs the poller, the worker (Faust agents), the webhook service, the hook dispatcher and the lag
server as supervised processes. Then it drives traffic: rights requests and tasks created in the
sandbox as a Dastra user would, commands sent through the webhook (a search with `?wait`
included), a REST hook subscriber on loopback, and one malformed command produced straight to
Kafka. A live terminal view shows events, commands, results, dead letters, hook deliveries and
lag. Recipes switched on with `--recipe NAME` (checked before anything starts) run in the worker;
their commands' results are counted apart. At the end (`--duration`, or Ctrl-C) a summary
checks that every created item was published exactly once, every command has exactly one
result, and the hook subscriber received every event; the exit code says whether all checks
passed.

With a privacy mode (`--privacy redacted|thin|encrypted`, README "Privacy") the services run in
that mode (keys made for the run unless PRIVACY_* configures them); the summary also checks that
no requester's e-mail or name is in clear on the event and result topics, and in `encrypted`
mode erases one requester (`privacy erase`, by e-mail) and checks that their records now read as
erased while every other requester's still decrypt.

With `--chaos` (`dastra_kafka/chaos.py`) the demo owns its broker (data directory under the run
directory) and, while the traffic flows, SIGKILLs the poller, the worker, the webhook and the
hook dispatcher at random and restarts them, and restarts the broker on its data directory. The
traffic then behaves as a careful client: each command carries an Idempotency-Key and is sent
again with the same key while the webhook is down or answers 503 (or 409, key in progress), and
a `?wait` that timed out is asked again until answered. The same checks must pass; the summary
also reports the kills and broker restarts.

    code = run(settings, catalogue, DemoOptions(duration_s=60))
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import random
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from bus.admin import apply, describe, plan, retention_text
from bus.envelope import header_pairs
from bus.localkafka import LocalKafka, LocalKafkaError, free_port
from bus.privacy import Decryptor, MasterKey
from bus.privacy.erasure import erase, parse_subject
from bus.privacy.keystore import load_ring
from bus.settings import KafkaSettings, PayloadMode, PrivacySettings
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
    command_topic,
)
from consumers.lag import GroupSelection, LagMonitor, LagSnapshot, LagUnavailableError
from dastra.sandbox import SandboxAdmin, SandboxServer
from dastra.settings import DastraSettings
from dastra_kafka.chaos import Chaos, ChaosLog, ChaosPlan
from dastra_kafka.doctor import check, show
from dastra_kafka.settings import Settings
from dastra_kafka.supervisor import Service, ServiceFailedError, Supervisor

__all__ = ["DemoOptions", "DemoReport", "run", "scan_for_personal_data"]

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
    recipes: tuple[str, ...] = ()
    privacy: PayloadMode = "full"
    chaos: ChaosPlan | None = None
    # Under chaos: how long one command is retried (webhook down, 503, ?wait timed out), and
    # the drain's deadline after the last target came back.
    chaos_retry_s: float = 150.0
    chaos_drain_s: float = 240.0


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
    recipe_results: int = 0  # results of the commands of recipes (`--recipe`)
    results_failed: int = 0
    dead_letters: int = 0
    malformed_sent: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)  # webhook-id -> deliveries
    bad_signatures: int = 0
    searches: list[int] = field(default_factory=list)  # result sizes of ?wait searches
    errors: list[str] = field(default_factory=list)
    lag: LagSnapshot | None = None
    # Privacy (`--privacy`): the mode, the requesters' e-mails by rights request id, the records
    # scanned for personal data in clear and those found with some, the encrypted rights
    # request events (id -> data) and the outcome of the erasure.
    privacy: PayloadMode = "full"
    requesters: dict[int, str] = field(default_factory=dict)
    scanned: int = 0
    in_clear: Counter[str] = field(default_factory=Counter)  # topic kind -> records
    sealed: dict[int, list[Any]] = field(default_factory=dict)
    erasure: tuple[bool, str] | None = None
    # Chaos (`--chaos`): what it did, and the traffic's retries through it.
    chaos: ChaosLog | None = None
    command_retries: int = 0  # sends repeated with the same Idempotency-Key
    wait_retries: int = 0  # `?wait` requests that timed out and were asked again
    tail_renewals: int = 0  # the demo's own reader replaced after it stalled (`_Tail`)

    def checks(self) -> list[tuple[str, bool, str]]:
        return self._flow_checks() + self._privacy_checks() + self._chaos_checks()

    def _chaos_checks(self) -> list[tuple[str, bool, str]]:
        if self.chaos is None:
            return []
        disruptions = sum(self.chaos.kills.values()) + self.chaos.broker_restarts
        return [
            (
                "chaos: every target killed or restarted came back",
                disruptions > 0 and not self.chaos.errors,
                self.chaos.text()
                + f"; the traffic resent {self.command_retries} command(s) with their "
                f"Idempotency-Key and asked {self.wait_retries} ?wait again"
                + (f"; {'; '.join(self.chaos.errors[:2])}" if self.chaos.errors else ""),
            )
        ]

    @property
    def settled(self) -> bool:
        """Has everything sent come out at the other end?"""
        return all(ok for _name, ok, _detail in self._flow_checks())

    def _privacy_checks(self) -> list[tuple[str, bool, str]]:
        if self.privacy == "full":
            return []
        where = ", ".join(f"{n} on {kind}" for kind, n in sorted(self.in_clear.items()))
        checks = [
            (
                "no personal data in clear on the bus",
                not self.in_clear and self.scanned > 0,
                f"{self.scanned} records scanned in {self.privacy} mode; "
                + (f"a requester's e-mail or name in clear: {where}" if where else "none in clear"),
            )
        ]
        if self.erasure is not None:
            checks.append(("an erased requester is unreadable, the others are not", *self.erasure))
        return checks

    def _flow_checks(self) -> list[tuple[str, bool, str]]:
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
                f"{created - len(missing)} of the {created} items created in the app"
                + (f"; missing {sorted(missing)[:5]}" if missing else "")
                + f" ({published} created events with the commands' items)",
            ),
            ("no event published twice", not duplicated, f"{len(duplicated)} duplicated ids"),
            (
                "every command has a result",
                not no_result,
                f"{len(self.commands) - len(no_result)} of {len(self.commands)} commands",
            ),
            ("no command has two results", not twice, f"{len(twice)} with more than one"),
            (
                "every search with ?wait answered"
                + (" (retried to an answer)" if self.chaos is not None else " in time"),
                bool(self.searches) and -1 not in self.searches,
                f"{sum(1 for n in self.searches if n >= 0)} of {len(self.searches)} searches "
                f"answered (results: {self.searches[:8]})",
            ),
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
def _kafka(
    settings: Settings, console: Console, data_dir: Path | None
) -> Iterator[tuple[KafkaSettings, LocalKafka | None]]:
    """The broker: the configured one, or a local one (on `data_dir` when given, which keeps
    its topics and port across a restart)."""
    if "bootstrap_servers" in settings.kafka.model_fields_set:
        console.print(f"Kafka: using [bold]{settings.kafka.bootstrap_servers}[/]")
        yield settings.kafka, None
        return
    with console.status("starting a local Apache Kafka broker (KRaft, one node)"):
        broker = LocalKafka(data_dir=data_dir, progress=lambda message: console.print(message))
        broker.start()
    try:
        console.print(f"Kafka: local broker at [bold]{broker.bootstrap_servers}[/]")
        yield (
            settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers}),
            broker,
        )
    finally:
        with console.status("stopping the broker"):
            broker.stop()


@contextlib.contextmanager
def _dastra(
    settings: Settings, console: Console
) -> Iterator[tuple[DastraSettings, SandboxAdmin | None]]:
    if not settings.dastra.uses_sandbox:
        console.print(
            f"Dastra: using [bold]{settings.dastra.base_url}[/] (the demo only searches there)"
        )
        yield settings.dastra, None
        return
    config = settings.sandbox.model_copy(update={"port": 0})
    # The sandbox runs in this process: its access log would scroll through the live view.
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with SandboxServer(config) as sandbox:
        console.print(
            f"Dastra: sandbox at [bold]{sandbox.base_url}[/] (workspace {sandbox.workspace_id})"
        )
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


def _privacy(
    settings: PrivacySettings, mode: PayloadMode
) -> tuple[dict[str, str], PrivacySettings]:
    """The services' PRIVACY_* environment for `--privacy mode`, and the settings the demo reads
    with: the configured keys, or keys made for this run (never printed)."""
    if mode == "full":
        return {}, settings
    master = (
        settings.master_key.get_secret_value()
        if settings.master_key is not None
        else base64.b64encode(secrets.token_bytes(32)).decode()
    )
    hash_key = (
        settings.hash_key.get_secret_value()
        if settings.hash_key is not None
        else secrets.token_urlsafe(32)
    )
    sealed = "encrypted" if mode == "encrypted" else "full"
    env = {
        "PRIVACY_MODE_RIGHTS_REQUESTS": mode,
        "PRIVACY_MODE_TASKS": mode,
        "PRIVACY_MODE_RESULTS": mode,
        "PRIVACY_MODE_COMMANDS": sealed,
        "PRIVACY_MODE_DEAD_LETTERS": sealed,
        "PRIVACY_MASTER_KEY": master,
        "PRIVACY_HASH_KEY": hash_key,
    }
    return env, PrivacySettings.model_validate(
        {**settings.model_dump(), **{k.removeprefix("PRIVACY_").lower(): v for k, v in env.items()}}
    )


@dataclass(frozen=True)
class _Ports:
    worker: int
    webhook: int
    lag: int
    poller_metrics: int
    hooks_metrics: int


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


# The demo's hook subscriber listens on plain HTTP on loopback, which the SSRF guard refuses
# unless told otherwise (both where subscriptions are made and where deliveries are sent).
_LOOPBACK_HOOKS = {"HOOKS_ALLOW_NETWORKS": "127.0.0.0/8", "HOOKS_ALLOW_HTTP": "true"}


def _services(
    base: dict[str, str], ports: _Ports, token: str, recipes: dict[str, str]
) -> list[Service]:
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
            {**base, "WORKER_WEB_PORT": str(ports.worker), **recipes},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.worker}/ready"),
            ready_timeout_s=120,
        ),
        Service(
            "webhook",
            [*_CLI, "webhook"],
            {
                **base,
                **_LOOPBACK_HOOKS,
                "WEBHOOK_PORT": str(ports.webhook),
                "WEBHOOK_TOKENS": token,
            },
            ready=lambda: _ok(f"http://127.0.0.1:{ports.webhook}/readyz"),
        ),
        Service(
            "hooks",
            [*_CLI, "hooks"],
            {**base, **_LOOPBACK_HOOKS, "HOOKS_METRICS_PORT": str(ports.hooks_metrics)},
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


# The demo's requesters: `subject<n>@example.org` "Demo" "Subject <n>", and `crm<n>@example.org`.
_PERSONAL = re.compile(rb"(?:subject|crm)[0-9]+@example\.org|Subject [0-9]+")


_TRANSIENT = frozenset(
    {KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
)
_OUT_OF_RANGE = frozenset({KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE})


# A tail that has read nothing for this long while a partition's log end is past its position is
# stalled: it closes its consumer and assigns a new one where it was.
_TAIL_STALL_S = 10.0


class _Tail(threading.Thread):
    """Reads the event, result and dead-letter topics (read_committed) from where they were
    when the demo started, into the report; in a privacy mode, scans them for personal data.

    Under `--chaos`, records on the topics could miss the tail after the broker's second or
    third restart: a fetch answered "offset out of range" while the broker was starting made
    librdkafka jump to the log end. So the tail never resets by itself (`auto.offset.reset`
    error): it keeps its own positions, and on that error, or when it has read nothing for a
    while with a log end past its position, it replaces its consumer where it was."""

    def __init__(self, kafka: KafkaSettings, report: DemoReport, lock: threading.Lock) -> None:
        super().__init__(name="demo-tail", daemon=True)
        self._kafka = kafka
        self._report = report
        self._lock = lock
        self._halt = threading.Event()
        self._names = {
            kafka.topic(RIGHTS_REQUESTS): "rights",
            kafka.topic(TASKS): "tasks",
            kafka.topic(COMMAND_RESULTS): "results",
            kafka.topic(DEAD_LETTER): "dlq",
        }
        self._consumer = self._new_consumer()
        # The next offset to read, per partition: from the log ends when the demo starts.
        self._positions: dict[tuple[str, int], int] = {}
        for topic in self._names:
            partitions = self._consumer.list_topics(topic, timeout=15).topics[topic].partitions
            for partition in partitions:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), 15
                )
                self._positions[(topic, partition)] = high
        self._assign()

    def _new_consumer(self) -> Consumer:
        return Consumer(
            self._kafka.confluent_config(
                **{
                    "group.id": f"demo-tail-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "error",
                }
            )
        )

    def _assign(self) -> None:
        self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._positions.items()])

    def _stalled(self) -> bool:
        """Is a partition's log end past the tail's position? (Read_committed, so an open
        transaction looks the same for a while: then the tail is replaced for nothing.)"""
        for (topic, partition), position in self._positions.items():
            if self._halt.is_set():
                return False
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), 1.0, cached=False
                )
            except KafkaException:
                return False  # the broker is away: nothing to compare yet
            if high > position:
                return True
        return False

    def stop(self) -> None:
        self._halt.set()
        self.join(15)

    def _renew(self) -> None:
        """A new consumer, assigned at the tail's own positions."""
        self._consumer.close()
        self._consumer = self._new_consumer()
        self._assign()
        with self._lock:
            self._report.tail_renewals += 1

    def run(self) -> None:
        progress = time.monotonic()
        try:
            while not self._halt.is_set():
                message = self._consumer.poll(0.2)
                if message is None:
                    if time.monotonic() - progress > _TAIL_STALL_S:
                        progress = time.monotonic()
                        if self._stalled():
                            self._renew()
                    continue
                error = message.error()
                if error is not None:
                    if error.code() in _OUT_OF_RANGE:
                        # The broker is still loading its logs: ask again where we were.
                        self._halt.wait(0.5)
                        self._renew()
                    # Lost connections are reported, and recovered from, by librdkafka itself
                    # (the broker restarted under `--chaos`).
                    elif error.code() not in _TRANSIENT:
                        with self._lock:
                            self._report.errors.append(f"tail: {error.str()}")
                    continue
                topic = message.topic() or ""
                self._positions[(topic, message.partition() or 0)] = (message.offset() or 0) + 1
                progress = time.monotonic()
                self._record(
                    self._names[topic], dict(header_pairs(message.headers())), message.value()
                )
        finally:
            self._consumer.close()

    def _record(self, kind: str, found: dict[str, bytes], value: bytes | None) -> None:
        with self._lock:
            scan_for_personal_data(self._report, kind, found, value or b"")
            if kind in ("rights", "tasks"):
                ce_id = found.get("ce_id", b"").decode()
                self._report.events[ce_id] += 1
                if _is_created(ce_id):
                    self._report.event_items[kind].add(int(json.loads(value or b"{}")["id"]))
            elif kind == "results":
                data = json.loads(value or b"{}")
                command_id = str(data.get("command_id"))
                if command_id.startswith("recipe:"):
                    self._report.recipe_results += 1
                    return
                self._report.results[command_id] += 1
                if data.get("status") == "failed":
                    self._report.results_failed += 1
            else:
                self._report.dead_letters += 1


def scan_for_personal_data(
    report: DemoReport, kind: str, found: dict[str, bytes], value: bytes
) -> None:
    """Count a record holding a requester's e-mail or name in clear (events and results in a
    privacy mode; dead letters too when they are sealed), and keep encrypted rights request
    events for the erasure check. The caller holds the report's lock."""
    mode = report.privacy
    if mode == "full" or (kind == "dlq" and mode != "encrypted"):
        return
    report.scanned += 1
    if _PERSONAL.search(value):
        report.in_clear[kind] += 1
    if mode == "encrypted" and kind == "rights" and _is_created(found.get("ce_id", b"").decode()):
        data = json.loads(value)
        report.sealed.setdefault(int(data["id"]), []).append(data)


class _Subscriber:
    """A REST hook subscriber on loopback: verifies each Standard Webhooks signature."""

    def __init__(self, report: DemoReport, lock: threading.Lock) -> None:
        self.secrets: list[bytes] = []
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                webhook_id = self.headers.get("webhook-id", "")
                timestamp = self.headers.get("webhook-timestamp", "")
                signatures = self.headers.get("webhook-signature", "").split()
                signed = f"{webhook_id}.{timestamp}.".encode() + body
                expected = {
                    "v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode()
                    for k in subscriber.secrets
                }
                valid = any(
                    hmac.compare_digest(e, candidate) for e in expected for candidate in signatures
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
        self._halt = threading.Event()
        self._rng = random.Random(2026)
        self._processing: str | None = None
        self._round = 0

    def stop(self) -> None:
        self._halt.set()
        # Under chaos a command in flight is retried to its answer (`chaos_retry_s`) first.
        self.join(60 + (self._options.chaos_retry_s if self._options.chaos else 0))
        self._http.close()

    def run(self) -> None:
        if self._admin is not None:
            processings = self._admin.objects("processings")
            self._processing = str(processings[0]["id"]) if processings else None
        next_item = next_command = time.monotonic()
        while not self._halt.is_set():
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
            self._halt.wait(0.05)

    def _create_item(self) -> None:
        assert self._admin is not None
        n = self._round = self._round + 1
        if self._rng.random() < 0.6:
            email = f"subject{n}@example.org"
            item = self._admin.create_rights_request(
                title=f"Demo request {n}",
                email=email,
                givenName="Demo",
                familyName=f"Subject {n}",
                purposes=[self._rng.choice(["Access", "Erasure", "Rectification"])],
            )
            with self._lock:
                self._report.created["rights"].add(int(item["id"]))
                self._report.requesters[int(item["id"])] = email
        else:
            item = self._admin.create_task(label=f"Demo task {n}", priority="Medium")
            with self._lock:
                self._report.created["tasks"].add(int(item["id"]))
        if n % 3 == 0:
            # A DPO starts working on an earlier request: an `updated` event follows.
            with self._lock:
                earlier = sorted(self._report.created["rights"])
            if earlier:
                self._admin.update_rights_request(earlier[0 if n % 2 else -1], state="Processing")

    def _send(self, action: str, body: dict[str, Any], wait: float | None = None) -> Any:
        """POST a command to the webhook; with `wait`, return its result (or None).

        Under chaos, the same request (same Idempotency-Key, so the same command id) is sent
        again while the webhook is down, answers 503 (Kafka unavailable) or 409 (the key's
        first request is still in progress, or its webhook was killed holding the lease), and
        while a `?wait` times out, until `chaos_retry_s` runs out."""
        params = {"wait": wait} if wait else None
        headers = {"Idempotency-Key": f"demo-{uuid.uuid4()}"}
        retry_until = time.monotonic() + (
            self._options.chaos_retry_s if self._options.chaos is not None else 0.0
        )
        while True:
            retrying = time.monotonic() < retry_until
            try:
                response = self._http.post(
                    f"/v1/commands/{action}", json=body, params=params, headers=headers
                )
            except httpx.TransportError:
                if not retrying:
                    raise
                with self._lock:
                    self._report.command_retries += 1
                time.sleep(0.5)
                continue
            if response.status_code in (409, 503) and retrying:
                with self._lock:
                    self._report.command_retries += 1
                time.sleep(0.5)
                continue
            if response.status_code not in (200, 202):
                raise RuntimeError(f"{action}: the webhook answered {response.status_code}")
            with self._lock:
                self._report.commands.add(response.headers["Command-Id"])
            if response.status_code == 200:
                return response.json()
            if not wait or not retrying:
                return None
            with self._lock:  # ?wait timed out: the same key answers with the same command
                self._report.wait_retries += 1

    def _send_command(self) -> None:
        n = self._round
        kind = self._rng.choice(
            [
                "create-task",
                "create-actor",
                "find-or-create-actor",
                "search-actors",
                "link-actor-to-processing",
                "create-rights-request",
            ]
        )
        if self._admin is None or not self._report.searches:
            # The first command is a search with `?wait`; in a real Dastra, searches only: the
            # demo writes nothing there.
            kind = "search-actors"
        if kind == "create-task":
            self._send("create-task", {"label": f"Follow up {n}", "priority": "High"})
        elif kind == "create-actor":
            self._send("create-actor", {"companyName": f"Vendor {n} SAS", "countryCode": "FR"})
        elif kind == "find-or-create-actor":
            self._send("find-or-create-actor", _ACME)
        elif kind == "search-actors":
            found = self._send("search-actors", {"q": "Vendor"}, wait=20)
            with self._lock:
                self._report.searches.append(len(found) if isinstance(found, list) else -1)
        elif kind == "link-actor-to-processing" and self._processing is not None:
            actor = self._send("find-or-create-actor", _ACME, wait=10)
            if isinstance(actor, dict) and actor.get("id"):
                self._send(
                    "link-actor-to-processing",
                    {
                        "actorIds": [actor["id"]],
                        "dataProcessingId": self._processing,
                        "type": "Recipient",
                        "recipientType": "Vendor",
                    },
                )
        else:
            self._send(
                "create-rights-request",
                {
                    "title": f"Request from the CRM {n}",
                    "purposes": ["Access"],
                    "email": f"crm{n}@example.org",
                },
            )


_ACME = {"companyName": "Acme Cloud", "email": "privacy@acme.example", "countryCode": "DE"}


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
            ("results of recipe commands (--recipe)", report.recipe_results),
            ("dead letters", report.dead_letters),
            ("hook deliveries (signature verified)", sum(report.deliveries.values())),
        ]
        if report.chaos is not None:
            rows += [
                ("chaos: services SIGKILLed", sum(report.chaos.kills.values())),
                ("chaos: broker restarts", report.chaos.broker_restarts),
                ("commands resent (same Idempotency-Key)", report.command_retries),
                ("?wait asked again", report.wait_retries),
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
    if report.chaos is not None:
        console.print(f"chaos (seed {report.chaos.plan.seed}):")
        for line in report.chaos.timeline:
            console.print(f"  {line}")
    console.print(table)


# --- run -----------------------------------------------------------------------------------------


def run(settings: Settings, catalogue: TopicCatalogue, options: DemoOptions) -> int:
    """Run the demo; return the process exit code (0 when every check passed)."""
    console = Console(stderr=options.as_json)
    report = DemoReport(privacy=options.privacy)
    privacy_env, privacy = _privacy(settings.privacy, options.privacy)
    lock = threading.Lock()
    stop = threading.Event()
    run_dir = options.run_dir or Path(tempfile.mkdtemp(prefix="dastra-kafka-demo-"))
    if options.chaos is not None:
        report.chaos = ChaosLog(options.chaos)
    with _signals(stop), contextlib.ExitStack() as stack:
        try:
            dastra, admin = stack.enter_context(_dastra(settings, console))
            _doctor(dastra, console)
            # Under chaos the demo owns its broker, on a data directory it can restart it on.
            data_dir = run_dir / "kafka" if options.chaos is not None else None
            kafka, broker = stack.enter_context(_kafka(settings, console, data_dir))
            console.print(_apply_topics(kafka, catalogue))
            if privacy_env:
                console.print(f'privacy: {options.privacy} mode (README "Privacy")')
            token = secrets.token_urlsafe(24)
            ports = _Ports(free_port(), free_port(), free_port(), free_port(), free_port())
            supervisor = stack.enter_context(Supervisor(run_dir))
            subscriber = stack.enter_context(_Subscriber(report, lock))
            enabled = {"RECIPES_ENABLE": ",".join(options.recipes)} if options.recipes else {}
            if options.chaos is not None:
                # A SIGKILLed worker leaves the group only when its session times out: the
                # restarted one is assigned its partitions sooner with a shorter session.
                enabled |= {"WORKER_SESSION_TIMEOUT_S": "10", "WORKER_HEARTBEAT_INTERVAL_S": "1"}
            base = {**_env(kafka, dastra), **privacy_env}
            for service in _services(base, ports, token, enabled):
                with console.status(f"starting {service.name}"):
                    supervisor.start(service)
                console.print(f"  {service.name} running (log: {supervisor.log_of(service.name)})")
            webhook_url = f"http://127.0.0.1:{ports.webhook}"
            _subscribe(webhook_url, token, subscriber, ports)
            tail = _Tail(kafka, report, lock)
            tail.start()
            stack.callback(tail.stop)
            _send_malformed(kafka, report)
            traffic = _Traffic(options, admin, webhook_url, token, report, lock)
            traffic.start()
            stack.callback(traffic.stop)
            monitor = stack.enter_context(
                LagMonitor(kafka, settings.lag, GroupSelection.of(kafka, settings.lag))
            )
            urls = {
                "webhook": f"{webhook_url}/docs",
                "lag page": f"http://127.0.0.1:{ports.lag}/",
                "logs": str(run_dir),
            }
            chaos = None
            if report.chaos is not None:
                chaos = Chaos(supervisor, broker, report.chaos, lock)
                chaos.start()
                stack.callback(chaos.stop)  # before the supervisor stops the services
            _watch(options, report, lock, stop, supervisor, monitor, traffic, chaos, urls, console)
            if options.privacy == "encrypted" and admin is not None and not stop.is_set():
                _erase_one(kafka, privacy, catalogue, report, lock, console)
        except (ServiceFailedError, LocalKafkaError, RuntimeError, httpx.HTTPError) as exc:
            console.print(f"[red]the demo could not run:[/] {exc}")
            report.errors.append(f"{type(exc).__name__}: {exc}"[:300])
    if options.as_json:
        print(json.dumps(_as_json(report), indent=2))
    else:
        _summary(report, console)
    return 0 if report.passed else 1


def _doctor(dastra: DastraSettings, console: Console) -> None:
    """`dastra-kafka doctor` against the Dastra the demo uses; a FAIL stops the demo."""
    watched = dastra.watched_workspaces()
    if not watched:
        raise RuntimeError("no workspace: set DASTRA_WORKSPACE_ID")
    with console.status("dastra-kafka doctor"):
        report = check(dastra, watched[0])
    show(report, console, title=f"dastra-kafka doctor: workspace {watched[0]}")
    if not report.ok:
        failed = ", ".join(f.name for f in report.findings if f.status == "FAIL")
        raise RuntimeError(f"the doctor found a FAIL ({failed}): see `dastra-kafka doctor`")


def _apply_topics(kafka: KafkaSettings, catalogue: TopicCatalogue) -> Table:
    """Apply topics.yaml; the topics as the cluster now has them."""
    admin = AdminClient(kafka.confluent_config())
    apply(admin, plan(admin, catalogue, kafka.topic_prefix))
    states = describe(admin, [kafka.topic(spec.name) for spec in catalogue])
    table = Table(title=f"topics: {len(catalogue)} applied from {catalogue.path.name}")
    table.add_column("topic", overflow="fold")  # whole names, folded on a narrow terminal
    for column in ("partitions", "cleanup", "retention", "personal data"):
        table.add_column(column)
    for spec in catalogue:
        state = states.get(kafka.topic(spec.name))
        configs = state.configs if state else {}
        table.add_row(
            spec.name,
            str(state.partitions) if state else "[red]missing[/]",
            configs.get("cleanup.policy", ""),
            retention_text(configs.get("retention.ms")),
            "yes" if spec.personal_data else "",
        )
    return table


@contextlib.contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C and SIGTERM end the traffic early; the summary still follows."""
    previous = {
        signum: signal.signal(signum, lambda _s, _f: stop.set())
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _subscribe(webhook_url: str, token: str, subscriber: _Subscriber, ports: _Ports) -> None:
    """Subscribe the loopback receiver to both created events, through the webhook's REST
    hooks, and wait until the dispatcher knows the subscriptions."""
    with httpx.Client(base_url=webhook_url, headers={"Authorization": f"Bearer {token}"}) as http:
        for event in ("rights_request.created", "task.created"):
            answer = http.post("/v1/hooks", json={"event": event, "target_url": subscriber.url})
            if answer.status_code != 201:
                raise RuntimeError(f"subscribing to {event}: {answer.status_code} {answer.text}")
            subscriber.add_secret(answer.json()["secret"])
    metrics = f"http://127.0.0.1:{ports.hooks_metrics}/metrics"
    _wait_until(
        lambda: _gauge(metrics, "dastra_hooks_subscriptions") >= 2,
        30,
        "the hook dispatcher to know both subscriptions",
    )


def _watch(
    options: DemoOptions,
    report: DemoReport,
    lock: threading.Lock,
    stop: threading.Event,
    supervisor: Supervisor,
    monitor: LagMonitor,
    traffic: _Traffic,
    chaos: Chaos | None,
    urls: dict[str, str],
    console: Console,
) -> None:
    """The live view while traffic flows (and chaos disrupts), then while the last results
    drain: under chaos, for up to `chaos_drain_s` after the last target came back."""
    started = time.monotonic()
    with Live(console=console, auto_refresh=False, transient=options.as_json) as live:
        # With a number of chaos rounds, the traffic flows until they are done too.
        while not stop.is_set() and (
            time.monotonic() - started < options.duration_s
            or (chaos is not None and chaos.rounds_pending)
        ):
            dead = supervisor.dead()
            if dead:
                with lock:
                    report.errors.append(f"service(s) exited: {', '.join(dead)}")
                break
            try:
                snapshot = monitor.refresh()
            except LagUnavailableError:
                snapshot = None
            with lock:
                report.lag = snapshot or report.lag
            live.update(_view(report, lock, urls, started, options.duration_s), refresh=True)
            stop.wait(1.0)
        drain_s = options.drain_timeout_s
        if chaos is not None:
            live.update(
                _view(report, lock, {**urls, "chaos": "bringing the last target back"}, started, 0),
                refresh=True,
            )
            chaos.stop()  # the last target is back when it returns
            drain_s = max(drain_s, options.chaos_drain_s)
        traffic.stop()
        _drain(report, lock, drain_s, live, urls, started)
    dead = supervisor.dead()
    with lock:
        if dead and not any(e.startswith("service(s) exited") for e in report.errors):
            report.errors.append(f"service(s) exited while draining: {', '.join(dead)}")


def _drain(
    report: DemoReport,
    lock: threading.Lock,
    timeout: float,
    live: Live,
    urls: dict[str, str],
    started: float,
) -> None:
    """Wait (with a deadline) until everything sent has come out at the other end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            settled = report.settled
        live.update(
            _view(report, lock, {**urls, "draining": "waiting for the last results"}, started, 0),
            refresh=True,
        )
        if settled:
            return
        time.sleep(0.5)


def _erase_one(
    kafka: KafkaSettings,
    privacy: PrivacySettings,
    catalogue: TopicCatalogue,
    report: DemoReport,
    lock: threading.Lock,
    console: Console,
) -> None:
    """`privacy erase` of the first requester whose request reached Kafka, then every encrypted
    rights request event opened with the key topic as it is now."""
    with lock:
        sealed = {rid: list(events) for rid, events in report.sealed.items()}
        requesters = dict(report.requesters)
    targets = [rid for rid in sorted(sealed) if rid in requesters]
    if len(targets) < 2:
        report.erasure = (False, "fewer than two requesters reached Kafka: run the demo longer")
        return
    erased_id = targets[0]
    master = privacy.master_key_bytes()
    assert master is not None  # `_privacy` sets it in encrypted mode
    try:
        with console.status(f"privacy erase: the requester of rights request {erased_id}"):
            plan, _audit = erase(
                kafka,
                privacy,
                catalogue,
                parse_subject(requesters[erased_id], None),
                by="dastra-kafka demo",
                count=False,
            )
            decryptor = Decryptor(MasterKey(master), load_ring(kafka))
    except (RuntimeError, ValueError, KafkaException) as exc:  # Erasure-, Privacy-, read errors
        report.erasure = (False, f"privacy erase failed: {exc}"[:300])
        return
    theirs = [decryptor.open(data) for data in sealed[erased_id]]
    others = [
        (rid, decryptor.open(data))
        for rid, events in sealed.items()
        if rid != erased_id
        for data in events
    ]
    # Requests the webhook created (`crm<n>@`) are not in `requesters`: readable is enough.
    readable = [
        opened
        for rid, opened in others
        if not opened.is_erased
        and opened.data.get("email") == requesters.get(rid, opened.data.get("email"))
    ]
    ok = bool(plan.key_ids) and all(o.is_erased for o in theirs) and len(readable) == len(others)
    report.erasure = (
        ok,
        f"{len(plan.key_ids)} data key(s) of the requester of request {erased_id} deleted: "
        f"{sum(o.is_erased for o in theirs)} of their {len(theirs)} events read as erased; "
        f"{len(readable)} of {len(others)} events of other requesters decrypt",
    )


def _gauge(url: str, name: str) -> float:
    """The value of an unlabelled gauge on a Prometheus endpoint (0 when absent)."""
    for line in httpx.get(url, timeout=2).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not _probe(condition):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _probe(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except httpx.HTTPError:
        return False


def _send_malformed(kafka: KafkaSettings, report: DemoReport) -> None:
    """One record that is not JSON, straight onto a command topic: it must be dead-lettered."""
    producer = Producer(kafka.producer_config(**{"enable.idempotence": True}))
    producer.produce(
        kafka.topic(command_topic("create-task")), key=b"demo-malformed", value=b"{not json"
    )
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
        "recipe_results": report.recipe_results,
        "dead_letters": report.dead_letters,
        "hook_deliveries": sum(report.deliveries.values()),
        "privacy": report.privacy,
        "chaos": None
        if report.chaos is None
        else {
            **report.chaos.as_json(),
            "command_retries": report.command_retries,
            "wait_retries": report.wait_retries,
            "tail_renewals": report.tail_renewals,
        },
    }
