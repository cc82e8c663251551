"""Webhook service (`dastra-kafka webhook`): the HTTP face of the bus for Zapier and any client.

Consumes HTTP requests: commands (`POST /v1/commands/{action}`), REST hook management
(`/v1/hooks`), Dastra's own webhooks (`POST /v1/dastra/webhook`). Produces, each acknowledged by
the broker (`acks=all`, idempotent producer) before any 2xx answer:

- a CloudEvent (binary mode, `ce_type` `eu.dastra.command.<action>`, `ce_id` = the command id,
  key = the command id, or for actor commands the actor's pseudonymous identity
  `actor:<sha256>` so that commands for one actor share a partition) on
  `dastra.commands.<action>.v1`;
- subscriptions and tombstones on the compacted `dastra.hook-subscriptions.v1`;
- Idempotency-Key claims and answers on `dastra.webhook-idempotency.v1`;
- poll triggers on `dastra.poller-triggers.v1`.

With PRIVACY_MODE_COMMANDS=encrypted the personal fields of each command are encrypted with the
key of its data subject (`bus/privacy.py`), whose key records go to `dastra.privacy-keys.v1`
first; with PRIVACY_MASTER_KEY, encrypted results (`?wait`) and samples are decrypted.

Also reads: `dastra.command-results.v1` from its end (one tailer per process) for `?wait=N`,
`dastra.hook-subscriptions.v1`, `dastra.webhook-idempotency.v1` and `dastra.privacy-keys.v1`
from the beginning (every replica holds the same tables), and the event topics' newest records
for hook samples.
Kafka unavailable: 503 with Retry-After and nothing written. Logs carry ids, never bodies,
names, e-mails, target URLs or secrets.

    service = WebhookService(settings.kafka, settings.webhook, settings.hooks, settings.dastra)
    app = create_app(service)
    uvicorn.run(app, host="127.0.0.1", port=settings.webhook.port)
"""

# No `from __future__ import annotations`: FastAPI must see the route signatures built inside
# create_app (their dependencies and limits are local names).

import asyncio
import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from bus.envelope import EnvelopeError, decode, encode_binary, new_event, record_headers
from bus.errors import KafkaUnavailableError, RecordTooLargeError
from bus.hooks.egress import EgressRefusedError, resolve_target
from bus.hooks.events import EVENT_TOPICS, event_keys, hook_event_of, hook_payload
from bus.hooks.settings import HooksSettings
from bus.hooks.signatures import verify_dastra_signature
from bus.hooks.subscriptions import SubscriptionTable
from bus.keystore import KeyStore, key_record, master_key_of
from bus.privacy import PAYLOAD_EXTENSION, PrivacyError, seal_command
from bus.producer import AsyncProducer, Delivered
from bus.records.commands import (
    COMMAND_MODELS,
    Command,
    CommandResult,
    command_record_key,
    command_type,
)
from bus.records.poller import trigger_record
from bus.records.subscriptions import HOOK_EVENTS, HookEvent, HookSubscription
from bus.settings import KafkaSettings, PrivacySettings
from bus.tailer import TopicTailer
from bus.topics import ACTIONS, COMMAND_RESULTS, POLLER_TRIGGERS, command_topic
from dastra.settings import DastraSettings
from producers.webhook.idempotency import (
    IdempotencyConflictError,
    IdempotencyInProgressError,
    IdempotencyStore,
    scope_of,
)
from producers.webhook.settings import WebhookSettings

__all__ = [
    "COMMAND_EVENT_SOURCE",
    "CommandAccepted",
    "HookCreate",
    "HookCreated",
    "HookView",
    "Problem",
    "WebhookService",
    "command_event_type",
    "create_app",
]

_log = structlog.get_logger(__name__)

COMMAND_EVENT_SOURCE = "urn:dastra-kafka:webhook"


command_event_type = command_type  # the CloudEvents type of a command (kept for importers)


# --- HTTP models ---------------------------------------------------------------------------------


class Problem(BaseModel):
    """Every error answer."""

    status: int
    error: str = Field(description="A stable code, e.g. invalid-command, kafka-unavailable")
    message: str
    field_errors: dict[str, list[str]] = Field(default_factory=dict)
    command_id: str | None = None


class CommandAccepted(BaseModel):
    """202: the command is durably on its topic; its result will be on the results topic."""

    command_id: str
    action: str
    topic: str
    partition: int
    offset: int
    status: Literal["accepted"] = "accepted"
    replayed: bool = Field(description="True when this answers a repeated Idempotency-Key")


class HookCreate(BaseModel):
    """A REST hook subscription request (Zapier's performSubscribe)."""

    model_config = ConfigDict(extra="forbid")

    event: HookEvent
    target_url: str = Field(min_length=1, max_length=2048)
    workspace_id: int | None = Field(default=None, ge=1)


class HookView(BaseModel):
    """A subscription as listed (the secret is shown only when it is created)."""

    id: str
    event: HookEvent
    target_url: str
    workspace_id: int | None = None
    created_at: datetime


class HookCreated(HookView):
    """201: the new subscription and its Standard Webhooks signing secret (`whsec_...`)."""

    secret: str


class Me(BaseModel):
    authenticated: Literal[True] = True
    token_id: str = Field(description="A short fingerprint of the token used (not the token)")
    actions: list[str]
    hook_events: list[str]


class DastraWebhookAck(BaseModel):
    status: Literal["ok"] = "ok"
    workspaces: list[int]


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)


def _problem(
    status: int, error: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = Problem(status=status, error=error, message=message, **extra)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


class _Refused(Exception):  # noqa: N818 - an answer, not an error
    """An error answer raised from inside a route or dependency."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        headers: dict[str, str] | None = None,
        field_errors: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.response = _problem(status, error, message, headers, field_errors=field_errors or {})


# --- results for ?wait ---------------------------------------------------------------------------


class _Results:
    """The newest command results, from one tailer of the results topic per process."""

    def __init__(self, kafka: KafkaSettings, capacity: int) -> None:
        self._kafka = kafka
        self._capacity = capacity
        self._cache: OrderedDict[str, CommandResult] = OrderedDict()
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}
        self._lock = threading.Lock()  # the tailer's thread and the event loop share both maps
        self.topic = kafka.topic(COMMAND_RESULTS)
        self.tailer = TopicTailer(kafka, self.topic, self._apply, start="end", name="results")

    def _apply(self, message: Message) -> None:
        result = _parse_result(message)
        if result is None:
            return
        with self._lock:
            self._cache[result.command_id] = result
            self._cache.move_to_end(result.command_id)
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
            waiters = self._waiters.pop(result.command_id, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_settle, future, result)

    async def wait(self, command_id: str, within: float, since_ms: int) -> CommandResult | None:
        """The result of `command_id`, waiting up to `timeout`; None if it did not come."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            found = self._cache.get(command_id)
            if found is not None:
                return found
            self._waiters.setdefault(command_id, []).append((loop, future))
        try:
            if since_ms < self.tailer.started_at_ms:
                # Produced before this process started to follow results: look back once.
                earlier = await asyncio.to_thread(_find_result, self._kafka, command_id, since_ms)
                if earlier is not None:
                    return earlier
            result: CommandResult = await asyncio.wait_for(future, within)
            return result
        except TimeoutError:
            return None
        finally:
            with self._lock:
                waiters = self._waiters.get(command_id, [])
                remaining = [w for w in waiters if w[1] is not future]
                if remaining:
                    self._waiters[command_id] = remaining
                else:
                    self._waiters.pop(command_id, None)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _parse_result(message: Message) -> CommandResult | None:
    try:
        envelope = decode(record_headers(message), message.value(), fallback_id="")
        return CommandResult.model_validate(envelope.data)
    except (EnvelopeError, ValidationError):
        _log.warning("webhook.bad_result_record", offset=message.offset())
        return None


def _find_result(kafka: KafkaSettings, command_id: str, since_ms: int) -> CommandResult | None:
    """Scan the results topic from `since_ms` to its end for one command's result."""
    topic = kafka.topic(COMMAND_RESULTS)
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": kafka.topic(f"dastra-webhook-lookup-{uuid.uuid4().hex}"),
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=5)
        partitions = list(metadata.topics[topic].partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in partitions], timeout=5
        )
        assignment = [tp for tp in starts if tp.offset >= 0]
        if not assignment:
            return None
        consumer.assign(assignment)
        pending = {tp.partition for tp in assignment}
        deadline = time.monotonic() + 10
        key = command_id.encode()
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition() or 0)
                continue
            if message.key() == key:
                result = _parse_result(message)
                if result is not None and result.command_id == command_id:
                    return result
        return None
    except KafkaException:
        return None
    finally:
        consumer.close()


# --- the service ---------------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "dastra_webhook_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "dastra_webhook_request_seconds",
            "HTTP request duration by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.commands = Counter(
            "dastra_webhook_commands_accepted",
            "Commands durably produced",
            ["action"],
            registry=registry,
        )
        self.replays = Counter(
            "dastra_webhook_idempotent_replays",
            "Requests answered from an earlier Idempotency-Key answer",
            registry=registry,
        )
        self.unavailable = Counter(
            "dastra_webhook_kafka_unavailable",
            "Requests answered 503 because Kafka did not acknowledge",
            registry=registry,
        )
        self.waits = Counter(
            "dastra_webhook_waits",
            "?wait outcomes",
            ["outcome"],
            registry=registry,
        )


class WebhookService:
    """Everything the HTTP routes use; opened and closed by the app's lifespan."""

    def __init__(
        self,
        kafka: KafkaSettings,
        webhook: WebhookSettings,
        hooks: HooksSettings,
        dastra: DastraSettings,
        *,
        registry: CollectorRegistry | None = None,
        privacy: PrivacySettings | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = webhook
        self.privacy = privacy or PrivacySettings()
        if self.privacy.mode_commands == "encrypted":
            master_key_of(self.privacy, "PRIVACY_MODE_COMMANDS=encrypted")
        self.keys: KeyStore | None = event_keys(kafka, self.privacy, "webhook")
        self.hooks = hooks
        self.dastra = dastra
        self.registry = registry or CollectorRegistry()
        self.metrics = _Metrics(self.registry)
        self.producer = AsyncProducer(
            kafka, timeout_s=webhook.kafka_timeout_s, max_record_bytes=webhook.max_record_bytes
        )
        self.idempotency = IdempotencyStore(kafka, webhook, self.producer)
        self.results = _Results(kafka, webhook.results_cache)
        self.subscriptions = SubscriptionTable(kafka)
        self._tokens = [t.get_secret_value().encode() for t in webhook.tokens]
        self._sweeper: asyncio.Task[None] | None = None
        self.started = False

    async def start(self) -> None:
        self.producer.open()
        try:
            await asyncio.gather(
                asyncio.to_thread(self.results.tailer.start),
                asyncio.to_thread(self.subscriptions.start),
                asyncio.to_thread(self.idempotency.start),
                *([asyncio.to_thread(self.keys.start)] if self.keys is not None else []),
            )
        except BaseException:
            await self.stop()
            raise
        self._sweeper = asyncio.create_task(self._sweep())
        self.started = True

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await asyncio.to_thread(self.results.tailer.stop)
        await asyncio.to_thread(self.subscriptions.stop)
        await asyncio.to_thread(self.idempotency.stop)
        if self.keys is not None:
            await asyncio.to_thread(self.keys.stop)
        await asyncio.to_thread(self.producer.close)
        self.started = False

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(60)
            self.idempotency.sweep()

    def authenticate(self, presented: str | None) -> str | None:
        """The matching configured token, compared in constant time; None otherwise."""
        if not presented:
            return None
        candidate = presented.encode()
        match = None
        for token in self._tokens:
            if hmac.compare_digest(token, candidate):
                match = token
        return match.decode() if match is not None else None

    # --- commands -------------------------------------------------------------------------

    async def produce_command(self, action: str, command: Command, command_id: str) -> Delivered:
        data: Any = command.model_dump(mode="json", by_alias=True, exclude_unset=True)
        extensions = None
        if self.privacy.mode_commands == "encrypted":
            data = await self._seal_command(action, command, command_id, data)
            extensions = {PAYLOAD_EXTENSION: "encrypted"}
        headers, value = encode_binary(
            new_event(
                type=command_event_type(action),
                source=COMMAND_EVENT_SOURCE,
                id=command_id,
                subject=action,
                data=data,
                extensions=extensions,
            )
        )
        delivered = await self.producer.produce(
            self.kafka.topic(command_topic(action)),
            key=command_record_key(action, command, command_id),
            value=value,
            headers=headers,
        )
        self.metrics.commands.labels(action).inc()
        return delivered

    async def _seal_command(
        self, action: str, command: Command, command_id: str, data: dict[str, Any]
    ) -> Any:
        """The command's personal fields encrypted; their key records written first."""
        if self.keys is None:
            raise PrivacyError("PRIVACY_MODE_COMMANDS=encrypted needs PRIVACY_MASTER_KEY")
        workspace = command.workspace_id or self.dastra.workspace_id
        batch = self.keys.encryptor().batch()
        sealed = seal_command(batch, action, data, workspace_id=workspace, command_id=command_id)
        for record in batch.records:
            key, value = key_record(record)
            await self.producer.produce(self.keys.topic, key=key, value=value)
        batch.commit()
        return sealed

    async def open_result(self, result: CommandResult) -> Any:
        """The Dastra object(s) of a result, decrypted when they are encrypted and we can."""
        if self.keys is None or result.result is None:
            return result.result
        try:
            return (await self.keys.open(result.result)).data
        except PrivacyError:  # made with another master key: as it is on the topic
            return result.result

    async def samples(self, event: str, limit: int) -> list[dict[str, Any]]:
        entity = event.split(".", 1)[0]
        topic = self.kafka.topic(EVENT_TOPICS[entity])
        keys = self.keys
        if keys is not None:
            await keys.async_sync(keys.wait_s)
        return await asyncio.to_thread(
            _newest_events, self.kafka, topic, event, limit, self.settings.samples_scan, keys
        )


def _newest_events(
    kafka: KafkaSettings,
    topic: str,
    event: str,
    limit: int,
    per_partition: int,
    keys: KeyStore | None = None,
) -> list[dict[str, Any]]:
    """The newest `limit` events of type `event` among the last records of each partition."""
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": kafka.topic(f"dastra-webhook-samples-{uuid.uuid4().hex}"),
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": 10,
            }
        )
    )
    found: list[tuple[int, dict[str, Any]]] = []
    try:
        metadata = consumer.list_topics(topic, timeout=5)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            raise KafkaUnavailableError(f"topic {topic} is not available")
        assignment = []
        for partition in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 5)
            if high > low:
                assignment.append(TopicPartition(topic, partition, max(low, high - per_partition)))
        if not assignment:
            return []
        consumer.assign(assignment)
        pending = {tp.partition for tp in assignment}
        deadline = time.monotonic() + 10
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition() or 0)
                continue
            try:
                envelope = decode(record_headers(message), message.value(), fallback_id="")
            except EnvelopeError:
                continue
            if hook_event_of(envelope.type) != event:
                continue
            stamp = envelope.time.timestamp() if envelope.time else 0.0
            order = int(stamp * 1000) or message.timestamp()[1]
            try:
                payload = hook_payload(envelope, message.key(), keys)
            except PrivacyError:  # made with another master key: as it is on the topic
                payload = hook_payload(envelope, message.key())
            found.append((order, payload))
    except KafkaException as exc:
        raise KafkaUnavailableError(str(exc)) from exc
    finally:
        consumer.close()
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [payload for _order, payload in found[:limit]]


# --- request plumbing ----------------------------------------------------------------------------


class _BodyLimit:
    """413 at once for a declared Content-Length above the limit (bodies without one are
    counted as they are read: see `_read_body`)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", []):
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = -1
                    if declared > self.limit:
                        response = _problem(
                            413, "too-large", f"the body exceeds {self.limit} bytes"
                        )
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)


class _Measure:
    """Request counts and durations by route template (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would cost more than the rest of a request)."""

    def __init__(self, app: ASGIApp, metrics: _Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: ASGIMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            label = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)


async def _read_body(request: Request, limit: int) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _Refused(413, "too-large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_body(raw: bytes) -> Any:
    if not raw:
        raise _Refused(400, "malformed-json", "the body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise _Refused(400, "malformed-json", "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        where = f" at line {exc.lineno} column {exc.colno}"
        raise _Refused(400, "malformed-json", f"the body is not JSON{where}") from None


def _field_errors(exc: ValidationError) -> dict[str, list[str]]:
    """Field path -> messages, without the values sent (they may be personal data)."""
    errors: dict[str, list[str]] = {}
    for error in exc.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or "(body)"
        errors.setdefault(path, []).append(error["msg"])
    return errors


def _fingerprint(action: str, command: Command, token: str) -> str:
    """The body's fingerprint on the idempotency topic: keyed by the caller's token, so that a
    reader of the topic cannot confirm a guessed body (an e-mail search, say)."""
    canonical = json.dumps(
        command.model_dump(mode="json", by_alias=True, exclude_unset=True),
        sort_keys=True,
        separators=(",", ":"),
    )
    key = hashlib.sha256(token.encode()).digest()
    return hmac.new(key, f"{action}\0{canonical}".encode(), hashlib.sha256).hexdigest()


def _token_id(token: str) -> str:
    return "tok_" + hashlib.sha256(token.encode()).hexdigest()[:12]


_FAILED_STATUS = {
    "invalid-command": 422,
    "unknown-action": 404,
    "dastra-rejected": 422,
    "dastra-not-found": 404,
}


def _failed_status(result: CommandResult) -> int:
    error = result.error
    if error is None:
        return 502
    if error.kind == "dastra-rejected" and error.status == 409:
        return 409
    return _FAILED_STATUS.get(error.kind, 502)


_PROBLEM = {"model": Problem}
_UNAVAILABLE = {
    "model": Problem,
    "description": "Kafka did not acknowledge: nothing was written; retry after Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown token"},
}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# --- the app -------------------------------------------------------------------------------------


def create_app(service: WebhookService) -> FastAPI:
    """The FastAPI app of one webhook process; its lifespan opens and closes `service`."""
    settings = service.settings

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="dastra-kafka webhook",
        version="1.0.0",
        description=(
            "Send Dastra commands to Kafka, get results synchronously with ?wait, and "
            "subscribe REST hooks to Dastra events (Zapier-compatible)."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    metrics = service.metrics
    app.add_middleware(_Measure, metrics=metrics)

    @app.exception_handler(_Refused)
    async def _refused(_request: Request, exc: _Refused) -> JSONResponse:
        return exc.response

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc.status_code, "http-error", str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            path = ".".join(str(part) for part in error.get("loc", ())) or "(request)"
            errors.setdefault(path, []).append(str(error.get("msg", "invalid")))
        return _problem(422, "invalid-request", "the request is invalid", field_errors=errors)

    @app.exception_handler(KafkaUnavailableError)
    async def _unavailable(_request: Request, exc: KafkaUnavailableError) -> JSONResponse:
        metrics.unavailable.inc()
        _log.warning("webhook.kafka_unavailable", reason=str(exc)[:200])
        return _problem(
            503,
            "kafka-unavailable",
            "Kafka did not acknowledge; nothing was written. Retry later.",
            {"Retry-After": str(settings.retry_after_s)},
        )

    @app.exception_handler(RecordTooLargeError)
    async def _too_large(_request: Request, exc: RecordTooLargeError) -> JSONResponse:
        _log.warning("webhook.record_too_large", reason=str(exc)[:200])
        return _problem(
            413,
            "too-large",
            "the command's Kafka record is larger than the command topic accepts "
            f"({settings.max_record_bytes} bytes with its envelope; an encrypted command grows "
            "by about a third); nothing was written. Send a smaller body.",
        )

    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <token>")

    async def token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        key: Annotated[str | None, Security(api_key)],
    ) -> str:
        presented = credentials.credentials if credentials is not None else key
        matched = service.authenticate(presented)
        if matched is None:
            raise _Refused(
                401,
                "unauthorized",
                "send a valid token as Authorization: Bearer <token> or X-API-Key: <token>",
                {"WWW-Authenticate": "Bearer"},
            )
        return matched

    Token = Annotated[str, Depends(token)]  # noqa: N806 - a type alias

    # --- probes --------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready"}},
        tags=["operations"],
    )
    async def readyz() -> Response:
        """Kafka answers and this replica's tables are loaded."""
        checks = {
            "kafka": await asyncio.to_thread(service.producer.probe, 2.0),
            "subscriptions": service.subscriptions.tailer.caught_up,
            "idempotency": service.idempotency.tailer.caught_up,
            "results": service.results.tailer.alive,
        }
        ready = all(checks.values())
        body = Health(status="ready" if ready else "not-ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/me", response_model=Me, responses=_AUTH_ERRORS, tags=["auth"])
    async def me(matched: Token) -> Me:
        """Who am I: Zapier's connection test."""
        return Me(token_id=_token_id(matched), actions=list(ACTIONS), hook_events=list(HOOK_EVENTS))

    # --- commands ------------------------------------------------------------------------

    wait_max = settings.wait_max_s

    async def send_command(
        action: str, request: Request, matched: str, wait: float, idempotency_key: str | None
    ) -> Response:
        raw = await _read_body(request, settings.max_body_bytes)
        data = _json_body(raw)
        model = COMMAND_MODELS[action]
        try:
            command = model.model_validate(data)
        except ValidationError as exc:
            raise _Refused(
                422, "invalid-command", "the command is invalid", field_errors=_field_errors(exc)
            ) from None
        since_ms = int(time.time() * 1000)
        if idempotency_key is not None:
            scope = scope_of(matched, idempotency_key)

            async def produce(command_id: str) -> Delivered:
                return await service.produce_command(action, command, command_id)

            try:
                outcome = await service.idempotency.run(
                    scope, action, _fingerprint(action, command, matched), produce
                )
            except IdempotencyConflictError as exc:
                raise _Refused(422, "idempotency-key-reused", str(exc)) from None
            except IdempotencyInProgressError as exc:
                raise _Refused(
                    409, "idempotency-key-in-progress", str(exc), {"Retry-After": "1"}
                ) from None
            accepted = CommandAccepted(
                command_id=outcome.command_id,
                action=action,
                topic=outcome.topic,
                partition=outcome.partition,
                offset=outcome.offset,
                replayed=outcome.replayed,
            )
            if outcome.replayed:
                metrics.replays.inc()
                since_ms = outcome.at_ms - 5000
        else:
            command_id = str(uuid.uuid4())
            delivered = await service.produce_command(action, command, command_id)
            accepted = CommandAccepted(
                command_id=command_id,
                action=action,
                topic=delivered.topic,
                partition=delivered.partition,
                offset=delivered.offset,
                replayed=False,
            )
        _log.info(
            "webhook.command_accepted",
            action=action,
            command_id=accepted.command_id,
            partition=accepted.partition,
            offset=accepted.offset,
            replayed=accepted.replayed,
        )
        headers = {"Command-Id": accepted.command_id}
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
        if wait > 0:
            result = await service.results.wait(accepted.command_id, wait, since_ms)
            if result is not None:
                metrics.waits.labels(result.status).inc()
                return _result_response(result, headers, await service.open_result(result))
            metrics.waits.labels("timeout").inc()
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers=headers)

    def _command_route(action: str) -> None:
        model = COMMAND_MODELS[action]

        async def route(
            request: Request,
            matched: Token,
            wait: Annotated[
                float,
                Query(
                    ge=0,
                    le=wait_max,
                    description="Seconds to wait for the result (200 with it); 202 on timeout",
                ),
            ] = 0,
            idempotency_key: Annotated[
                str | None,
                Header(
                    alias="Idempotency-Key",
                    min_length=1,
                    max_length=255,
                    description="Repeats with the same key get the first answer; no new record",
                ),
            ] = None,
        ) -> Response:
            return await send_command(action, request, matched, wait, idempotency_key)

        route.__name__ = f"command_{action.replace('-', '_')}"
        route.__doc__ = (
            f"{(model.__doc__ or '').strip()}\n\nProduces the command to "
            f"`{command_topic(action)}`; 202 once the broker acknowledged it. With `wait`, "
            "200 with the Dastra object (a search: a list, best match first) or an error."
        )
        app.post(
            f"/v1/commands/{action}",
            status_code=202,
            response_model=CommandAccepted,
            tags=["commands"],
            openapi_extra=_body_doc(model.model_json_schema()),
            responses={
                200: {
                    "description": "With wait: the command succeeded; the Dastra object(s)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    {"type": "object"},
                                    {"type": "array", "items": {"type": "object"}},
                                ]
                            }
                        }
                    },
                },
                400: {"model": Problem, "description": "Malformed JSON"},
                401: _PROBLEM,
                404: {"model": Problem, "description": "With wait: Dastra found no such object"},
                409: {"model": Problem, "description": "Idempotency-Key in use, or a conflict"},
                413: {"model": Problem, "description": "Body too large"},
                422: {"model": Problem, "description": "Field errors"},
                502: {"model": Problem, "description": "With wait: the command failed"},
                503: _UNAVAILABLE,
            },
        )(route)

    for action in ACTIONS:
        _command_route(action)

    @app.post("/v1/commands/{action}", include_in_schema=False)
    async def unknown_action(action: str, matched: Token) -> Response:
        return _problem(404, "unknown-action", f"unknown action; known: {', '.join(ACTIONS)}")

    # --- REST hooks ------------------------------------------------------------------------

    HookId = Annotated[str, Path(pattern=r"^hook_[0-9a-f]{32}$", max_length=37)]  # noqa: N806

    @app.post(
        "/v1/hooks",
        status_code=201,
        response_model=HookCreated,
        tags=["hooks"],
        openapi_extra=_body_doc(HookCreate.model_json_schema()),
        responses={
            400: {"model": Problem, "description": "Malformed JSON"},
            401: _PROBLEM,
            413: _PROBLEM,
            422: {"model": Problem, "description": "Invalid body, or a refused target URL"},
            503: _UNAVAILABLE,
        },
    )
    async def subscribe(request: Request, matched: Token) -> JSONResponse:
        """Subscribe a target URL to an event (Zapier's performSubscribe). The URL must be
        https and resolve to public addresses. The answer carries the signing secret."""
        raw = await _read_body(request, settings.max_body_bytes)
        try:
            wanted = HookCreate.model_validate(_json_body(raw))
        except ValidationError as exc:
            return _problem(
                422, "invalid-hook", "the subscription is invalid", field_errors=_field_errors(exc)
            )
        try:
            await resolve_target(wanted.target_url, service.hooks)
        except EgressRefusedError as exc:
            return _problem(
                422,
                "target-refused",
                "the target URL is refused",
                field_errors={"target_url": [str(exc)]},
            )
        subscription = HookSubscription.new(
            event=wanted.event, target_url=wanted.target_url, workspace_id=wanted.workspace_id
        )
        await service.producer.produce(
            service.subscriptions.topic,
            key=subscription.id.encode(),
            value=subscription.model_dump_json().encode(),
        )
        service.subscriptions.put(subscription.id, subscription)
        _log.info("webhook.hook_subscribed", hook=subscription.id, hook_event=subscription.event)
        created = HookCreated(
            id=subscription.id,
            event=subscription.event,
            target_url=subscription.target_url,
            workspace_id=subscription.workspace_id,
            created_at=subscription.created_at,
            secret=subscription.secret.get_secret_value(),
        )
        return JSONResponse(created.model_dump(mode="json"), status_code=201)

    @app.get("/v1/hooks", response_model=list[HookView], responses=_AUTH_ERRORS, tags=["hooks"])
    async def list_hooks(matched: Token) -> list[HookView]:
        """Every subscription (without secrets)."""
        return [
            HookView(
                id=s.id,
                event=s.event,
                target_url=s.target_url,
                workspace_id=s.workspace_id,
                created_at=s.created_at,
            )
            for s in service.subscriptions.all()
        ]

    @app.delete(
        "/v1/hooks/{hook_id}",
        status_code=204,
        response_class=Response,
        tags=["hooks"],
        responses={401: _PROBLEM, 404: _PROBLEM, 422: _PROBLEM, 503: _UNAVAILABLE},
    )
    async def unsubscribe(hook_id: HookId, matched: Token) -> Response:
        """Remove a subscription (Zapier's performUnsubscribe)."""
        if service.subscriptions.get(hook_id) is None:
            return _problem(404, "unknown-hook", "no such subscription")
        await service.producer.produce(
            service.subscriptions.topic, key=hook_id.encode(), value=None
        )
        service.subscriptions.put(hook_id, None)
        _log.info("webhook.hook_unsubscribed", hook=hook_id)
        return Response(status_code=204)

    @app.get(
        "/v1/hooks/samples/{event}",
        response_model=list[dict[str, Any]],
        tags=["hooks"],
        responses={401: _PROBLEM, 422: _PROBLEM, 503: _UNAVAILABLE},
    )
    async def samples(
        event: HookEvent,
        matched: Token,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> list[dict[str, Any]]:
        """Recent payloads of an event, newest first, exactly as subscribers receive them
        (Zapier's performList)."""
        return await service.samples(event, limit)

    # --- Dastra's own webhooks ---------------------------------------------------------------

    @app.post(
        "/v1/dastra/webhook",
        response_model=DastraWebhookAck,
        tags=["dastra"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        responses={
            400: _PROBLEM,
            401: {"model": Problem, "description": "Missing or wrong Dastra-Signature"},
            404: {"model": Problem, "description": "No DASTRA_WEBHOOK_SIGNING_KEY configured"},
            413: _PROBLEM,
            422: _PROBLEM,
            503: _UNAVAILABLE,
        },
    )
    async def dastra_webhook(
        request: Request,
        signature: Annotated[str | None, Header(alias="Dastra-Signature")] = None,
        workspace_id: Annotated[
            int | None,
            Query(alias="workspaceId", ge=1, description="The workspace this webhook is for"),
        ] = None,
    ) -> DastraWebhookAck:
        """A Dastra webhook (signed with `Dastra-Signature`): poll the workspace now. The poller
        stays the source of truth; this only makes it look at once."""
        key = service.dastra.webhook_signing_key
        if key is None:
            raise _Refused(404, "not-configured", "DASTRA_WEBHOOK_SIGNING_KEY is not set")
        raw = await _read_body(request, settings.max_body_bytes)
        if not verify_dastra_signature(key.get_secret_value(), raw, signature):
            raise _Refused(401, "bad-signature", "the Dastra-Signature does not match the body")
        body = _json_body(raw)
        workspaces = _workspaces_of(body, workspace_id, service.dastra)
        if not workspaces:
            raise _Refused(
                422,
                "no-workspace",
                "no workspace: add ?workspaceId= to the webhook URL or set DASTRA_WORKSPACE_ID",
            )
        event_name = body.get("eventType") if isinstance(body, dict) else None
        reason = f"dastra-webhook:{event_name}" if isinstance(event_name, str) else "dastra-webhook"
        for ws in workspaces:
            key_bytes, value = trigger_record(ws, reason[:100])
            await service.producer.produce(
                service.kafka.topic(POLLER_TRIGGERS), key=key_bytes, value=value
            )
        _log.info("webhook.dastra_webhook", workspaces=workspaces)
        return DastraWebhookAck(workspaces=workspaces)

    return app


def _result_response(result: CommandResult, headers: dict[str, str], opened: Any) -> JSONResponse:
    headers = {**headers, "Command-Status": result.status}
    if result.status == "succeeded":
        body: Any = opened
        if body is None:
            body = {"command_id": result.command_id, "status": "succeeded"}
        return JSONResponse(body, status_code=200, headers=headers)
    error = result.error
    status = _failed_status(result)
    return _problem(
        status,
        error.kind if error else "failed",
        error.message if error else "the command failed",
        headers,
        field_errors=error.field_errors if error else {},
        command_id=result.command_id,
    )


def _workspaces_of(body: Any, query: int | None, dastra: DastraSettings) -> list[int]:
    if query is not None:
        return [query]
    if isinstance(body, dict):
        inner = body.get("data")
        places: list[dict[str, Any]] = [body, inner if isinstance(inner, dict) else {}]
        for place in places:
            for name in ("workspaceId", "workSpaceId", "WorkspaceId"):
                value = place.get(name)
                if isinstance(value, int) and value > 0:
                    return [value]
                if isinstance(value, str) and value.isdigit():
                    return [int(value)]
    return dastra.watched_workspaces()
