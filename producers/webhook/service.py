"""The webhook service: owns the webhook's Kafka producer, the results tailer, the subscription
and idempotency tables and the key store; opened and closed by the app's lifespan.

Consumes its settings. Produces command records, subscriptions, poll triggers and the
samples of hook events.

    service = WebhookService(settings.kafka, settings.webhook, settings.hooks, settings.dastra)
"""

import asyncio
import contextlib
import hmac
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from prometheus_client import CollectorRegistry, Counter, Histogram

from bus.envelope import EnvelopeError, decode, encode_binary, new_event
from bus.errors import KafkaUnavailableError
from bus.hooks.events import EVENT_TOPICS, event_keys, hook_event_of, hook_payload
from bus.hooks.settings import HooksSettings
from bus.hooks.subscriptions import SubscriptionTable
from bus.metrics import role_registry
from bus.privacy import PAYLOAD_EXTENSION, PrivacyError, seal_command
from bus.privacy.keystore import KeyStore, key_record, master_key_of
from bus.producer import AsyncProducer, Delivered
from bus.reading import read_to_end
from bus.records.commands import (
    Command,
    CommandResult,
    command_record_key,
    command_type,
)
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import command_topic
from bus.tracing import inject, sending
from dastra.settings import DastraSettings
from producers.webhook.idempotency import IdempotencyStore
from producers.webhook.results import ResultWaiter
from producers.webhook.settings import WebhookSettings

__all__ = ["COMMAND_EVENT_SOURCE", "WebhookMetrics", "WebhookService", "command_event_type"]


class WebhookMetrics:
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
        self.registry = registry or role_registry()
        self.metrics = WebhookMetrics(self.registry)
        self.producer = AsyncProducer(
            kafka, timeout_s=webhook.kafka_timeout_s, max_record_bytes=webhook.max_record_bytes
        )
        self.idempotency = IdempotencyStore(kafka, webhook, self.producer)
        self.results = ResultWaiter(kafka, webhook.results_cache)
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
        topic = self.kafka.topic(command_topic(action))
        with sending(topic, message_id=command_id, event_type=command_event_type(action)):
            delivered = await self.producer.produce(
                topic,
                key=command_record_key(action, command, command_id),
                value=value,
                headers=inject(headers),
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
            newest_events, self.kafka, topic, event, limit, self.settings.samples_scan, keys
        )


def newest_events(
    kafka: KafkaSettings,
    topic: str,
    event: str,
    limit: int,
    per_partition: int,
    keys: KeyStore | None = None,
) -> list[dict[str, Any]]:
    """The newest `limit` events of type `event` among the last records of each partition."""
    found: list[tuple[int, dict[str, Any]]] = []
    records = read_to_end(kafka, topic, timeout=10, last=per_partition)
    try:
        for record in records:
            try:
                envelope = decode(record.headers, record.value, fallback_id="")
            except EnvelopeError:
                continue
            if hook_event_of(envelope.type) != event:
                continue
            stamp = envelope.time.timestamp() if envelope.time else 0.0
            order = int(stamp * 1000) or record.timestamp_ms
            try:
                payload = hook_payload(envelope, record.key, keys)
            except PrivacyError:  # made with another master key: as it is on the topic
                payload = hook_payload(envelope, record.key)
            found.append((order, payload))
    except KafkaException as exc:
        # Not read to the end in time: the samples found so far (as before this reader).
        if exc.args[0].code() != KafkaError._TIMED_OUT:
            raise KafkaUnavailableError(str(exc)) from exc
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [payload for _order, payload in found[:limit]]


COMMAND_EVENT_SOURCE = "urn:dastra-kafka:webhook"


command_event_type = command_type  # the CloudEvents type of a command (kept for importers)
