"""The REST hook subscription table: every subscription, rebuilt from the compacted
dastra.hook-subscriptions.v1 and kept current by a tailer. The webhook writes and lists
subscriptions through it; the hook dispatcher routes events with it.

    table = SubscriptionTable(kafka); table.start(); table.matching("task.created", 42)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from confluent_kafka import Message
from pydantic import ValidationError

from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings
from bus.tailer import TopicTailer
from bus.topics import HOOK_SUBSCRIPTIONS

__all__ = ["SubscriptionTable"]

_log = structlog.get_logger(__name__)


class SubscriptionTable:
    """Every subscription, rebuilt from the compacted topic and kept current by a tailer."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._subscriptions: dict[str, HookSubscription] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, HookSubscription | None], None]] = []
        self.topic = kafka.topic(HOOK_SUBSCRIPTIONS)
        self.tailer = TopicTailer(kafka, self.topic, self._apply, start="beginning", name="hooks")

    def start(self, timeout: float = 30.0) -> None:
        self.tailer.start(timeout)

    def stop(self) -> None:
        self.tailer.stop()

    def listen(self, listener: Callable[[str, HookSubscription | None], None]) -> None:
        """`listener(id, subscription or None)` on every change (called in the tailer thread)."""
        self._listeners.append(listener)

    def _apply(self, message: Message) -> None:
        key = (message.key() or b"").decode()
        value = message.value()
        if not key:
            return
        if value is None:
            self.put(key, None)
            return
        try:
            subscription = HookSubscription.model_validate_json(value)
        except ValidationError:
            _log.warning("hooks.bad_subscription_record", offset=message.offset())
            return
        self.put(key, subscription)

    def put(self, key: str, subscription: HookSubscription | None) -> None:
        """Apply a change (the tailer does; writers do too, to read their own writes)."""
        with self._lock:
            if subscription is None:
                if self._subscriptions.pop(key, None) is None:
                    return
            else:
                if self._subscriptions.get(key) == subscription:
                    return
                self._subscriptions[key] = subscription
        for listener in self._listeners:
            listener(key, subscription)

    def get(self, key: str) -> HookSubscription | None:
        with self._lock:
            return self._subscriptions.get(key)

    def all(self) -> list[HookSubscription]:
        with self._lock:
            return sorted(self._subscriptions.values(), key=lambda s: (s.created_at, s.id))

    def matching(self, event: str, workspace_id: int | None) -> list[HookSubscription]:
        with self._lock:
            return [
                s
                for s in self._subscriptions.values()
                if s.event == event and (s.workspace_id is None or s.workspace_id == workspace_id)
            ]
