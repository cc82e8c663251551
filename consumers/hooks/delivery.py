"""One event to one subscriber: signed HTTPS POSTs until it is accepted, gone or undeliverable.

Consumes a prepared event (the record, its envelope and the JSON body) and the subscriber's
current subscription. Produces the POSTs (Standard Webhooks headers, `webhook-id` = the event's
`ce_id`, the same on every attempt), and `dastra.dead-letter.v1` records (the original event
record plus `dlq.*` headers and `dlq.hook.id`) for what is really undeliverable: a target the
egress guard refuses, a 4xx other than 408, 409, 410 and 429, or a spent retry budget
(`HOOKS_MAX_ATTEMPTS` attempts or `HOOKS_RETRY_DEADLINE_S` from the first attempt). 410 Gone
calls `unsubscribe`. Being slow never dead-letters: the budget starts at the first attempt.
Each delivery is one `process <topic>` span in the trace the event record carries
(`ce_traceparent`, from the poller); no target URL in it (a query may hold a secret).

    outcome = await deliverer.deliver(recipient, event)  # "delivered", "dead-lettered", ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
import structlog
from aiokafka import TopicPartition

from bus.deadletter import ErrorKind, OriginalRecord, dead_letter
from bus.envelope import Envelope
from bus.errors import KafkaUnavailableError
from bus.hooks.egress import EgressRefusedError, Target, post, resolve_target
from bus.hooks.settings import HooksSettings
from bus.hooks.signatures import standard_webhook_headers
from bus.producer import AsyncProducer
from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER
from bus.tracing import processing
from consumers.hooks.metrics import HookMetrics
from dastra.retry import backoff_delay, parse_retry_after

__all__ = ["Bucket", "Deliverer", "Prepared", "Recipient"]

_log = structlog.get_logger(__name__)

_COMPONENT = "hooks"
# 4xx answers that are worth retrying: timeout, conflict, too many requests (410 unsubscribes).
_RETRIED_4XX = frozenset({408, 409, 429})


@dataclass(frozen=True)
class Prepared:
    """One event record read for one subscriber, ready to POST."""

    tp: TopicPartition
    record: OriginalRecord
    timestamp_ms: int
    envelope: Envelope
    event: str
    body: bytes


class Bucket:
    """A token bucket: at most `rate` requests per second, bursts of `rate`."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = max(1.0, rate)
        self._at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            ceiling = max(1.0, self.rate)
            self._tokens = min(ceiling, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self.rate)


class Recipient(Protocol):
    """What a delivery needs of its subscriber (its current subscription can change)."""

    subscription: HookSubscription
    gone: bool
    bucket: Bucket


class Deliverer:
    """The HTTP side shared by every subscriber of one dispatcher."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: HooksSettings,
        client: httpx.AsyncClient,
        producer: AsyncProducer,
        metrics: HookMetrics,
        unsubscribe: Callable[[Recipient], Awaitable[None]],
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._client = client
        self._producer = producer
        self._metrics = metrics
        self._unsubscribe = unsubscribe

    async def deliver(self, recipient: Recipient, item: Prepared) -> str:
        """Attempt until accepted, gone, or undeliverable; the outcome, already counted."""
        record = item.record
        with processing(
            record.topic,
            record.partition,
            record.offset,
            record.headers,
            message_id=item.envelope.id,
            attributes={
                "dastra_kafka.hook.id": recipient.subscription.id,
                "dastra_kafka.hook.event": item.event,
            },
        ) as span:
            outcome = await self._attempts(recipient, item)
            span.set_attribute("dastra_kafka.hook.outcome", outcome)
        self._metrics.deliveries.labels(item.event, outcome).inc()
        return outcome

    async def _attempts(self, recipient: Recipient, item: Prepared) -> str:
        settings = self._settings
        attempt = 0
        last = ""
        deadline = time.monotonic() + settings.retry_deadline_s
        while True:
            if recipient.gone:
                return "unsubscribed"
            subscription = recipient.subscription
            attempt += 1
            try:
                target: Target = await resolve_target(subscription.target_url, settings)
            except EgressRefusedError as exc:
                _log.warning("hooks.target_refused", hook=subscription.id, reason=str(exc))
                return await self.dead_letter(
                    subscription.id, item, f"target refused: {exc}", attempts=attempt
                )
            await recipient.bucket.take()
            headers = {
                "content-type": "application/json",
                "user-agent": "dastra-kafka-hooks",
                **standard_webhook_headers(
                    subscription.secret.get_secret_value(), item.envelope.id, item.body
                ),
            }
            retry_after: float | None = None
            started = time.monotonic()
            try:
                response = await post(self._client, target, item.body, headers, settings)
            except (httpx.HTTPError, EgressRefusedError) as exc:
                last = f"attempt {attempt}: {type(exc).__name__}"
                self._metrics.attempts.labels("error").inc()
            else:
                status = response.status_code
                self._metrics.attempts.labels(f"{status // 100}xx").inc()
                self._metrics.latency.observe(time.monotonic() - started)
                if 200 <= status < 300:
                    return "delivered"
                if status == 410:
                    await self._unsubscribe(recipient)
                    return "unsubscribed"
                if 400 <= status < 500 and status not in _RETRIED_4XX:
                    return await self.dead_letter(
                        subscription.id, item, f"rejected: HTTP {status}", attempts=attempt
                    )
                last = f"attempt {attempt}: HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            wait = backoff_delay(
                attempt,
                base=settings.backoff_s,
                cap=settings.backoff_max_s,
                retry_after=retry_after,
            )
            if attempt >= settings.max_attempts or time.monotonic() + wait > deadline:
                return await self.dead_letter(
                    subscription.id, item, f"retry budget spent; last {last}", attempts=attempt
                )
            _log.info("hooks.retry", hook=subscription.id, attempt=attempt, wait_s=round(wait, 2))
            await asyncio.sleep(wait)

    async def dead_letter(
        self, subscription_id: str, item: Prepared, reason: str, *, attempts: int
    ) -> str:
        """The event could not be delivered to this subscriber: keep it on the DLQ."""
        key, value, headers = dead_letter(
            item.record,
            kind=ErrorKind.DELIVERY_FAILED,
            message=f"subscription {subscription_id}: {reason}",
            component=_COMPONENT,
            attempts=attempts,
        )
        headers.append(("dlq.hook.id", subscription_id.encode()))
        while True:
            try:
                await self._producer.produce(
                    self._kafka.topic(DEAD_LETTER), key=key, value=value, headers=list(headers)
                )
                break
            except KafkaUnavailableError:
                # Never move the position past an event that is neither delivered nor kept.
                await asyncio.sleep(1.0)
        record = item.record
        _log.warning(
            "hooks.dead_lettered",
            hook=subscription_id,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            attempts=attempts,
        )
        return "dead-lettered"
