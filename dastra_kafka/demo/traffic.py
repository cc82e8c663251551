"""The demo's traffic and its REST hook subscriber.

Consumes the Dastra sandbox's admin API (when the demo runs the sandbox), the webhook's HTTP API
and the hook dispatcher's metrics. Produces, as a Dastra user and the systems around it would:
rights requests and tasks created in the sandbox, with `updated` events following (`Traffic`);
commands sent through the webhook, a search with `?wait` first, each with an Idempotency-Key
(sent again with it under chaos); one record that is not JSON, straight onto a command topic
(`send_malformed`); and a loopback subscriber (`Subscriber`) of both created events
(`subscribe`) that verifies each delivery's Standard Webhooks signature. What was created, sent
and delivered goes into the `DemoReport`.

    with Subscriber(report, lock) as subscriber:
        subscribe(webhook_url, token, subscriber, ports)
        Traffic(options, admin, webhook_url, token, report, lock).start()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from confluent_kafka import Producer

from bus.settings import KafkaSettings
from bus.topics import command_topic
from dastra.sandbox import SandboxAdmin
from dastra_kafka.demo.report import DemoOptions, DemoReport
from dastra_kafka.demo.services import Ports

__all__ = ["Subscriber", "Traffic", "send_malformed", "subscribe"]


class Subscriber:
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

    def __enter__(self) -> Subscriber:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class Traffic(threading.Thread):
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


def subscribe(webhook_url: str, token: str, subscriber: Subscriber, ports: Ports) -> None:
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


def send_malformed(kafka: KafkaSettings, report: DemoReport) -> None:
    """One record that is not JSON, straight onto a command topic: it must be dead-lettered."""
    producer = Producer(kafka.producer_config(**{"enable.idempotence": True}))
    producer.produce(
        kafka.topic(command_topic("create-task")), key=b"demo-malformed", value=b"{not json"
    )
    if producer.flush(15) == 0:
        report.malformed_sent += 1
