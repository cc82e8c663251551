"""Helpers for the hook dispatcher tests: a dispatcher in a thread, subscriptions written
straight to the topic, task.created events published as the poller would."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import threading
import traceback
from datetime import UTC, datetime
from types import TracebackType

from confluent_kafka import Producer

from bus.envelope import encode_binary, new_event
from bus.hooks.settings import HooksSettings
from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import HOOK_SUBSCRIPTIONS, TASKS
from consumers.hooks import HookDispatcher

__all__ = ["DispatcherThread", "publish", "put", "subscribe", "unsubscribe"]


class DispatcherThread:
    """A HookDispatcher in its own thread and event loop, started and stopped by the test."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: HooksSettings,
        privacy: PrivacySettings | None = None,
    ) -> None:
        self._kafka = kafka
        self._settings = settings
        self._privacy = privacy
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.dispatcher: HookDispatcher | None = None

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            ready = asyncio.Event()
            async with HookDispatcher(
                self._kafka, self._settings, privacy=self._privacy
            ) as dispatcher:
                self.dispatcher = dispatcher
                waiter = asyncio.create_task(ready.wait())
                waiter.add_done_callback(lambda _t: self._ready.set())
                await dispatcher.run(stop=self._stop, ready=ready)

        try:
            asyncio.run(run())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> DispatcherThread:
        self._thread.start()
        assert self._ready.wait(60), "the dispatcher did not become ready"
        assert self._error is None, self._error
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), f"the dispatcher did not stop:\n{self._where()}"

    def _where(self) -> str:
        """Where the dispatcher's thread and its tasks are stuck (for a failed stop)."""
        frame = sys._current_frames().get(self._thread.ident or 0)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)\n"
        tasks: set[asyncio.Task[object]] = set()
        with contextlib.suppress(RuntimeError):  # the loop's task set changed meanwhile
            tasks = asyncio.all_tasks(self._loop) if self._loop is not None else set()
        awaiting = []
        for task in tasks:
            lines = io.StringIO()
            task.print_stack(limit=8, file=lines)
            awaiting.append(lines.getvalue())
        return stack + "\n".join(awaiting)

    def knows(self, subscription_id: str) -> bool:
        return (
            self.dispatcher is not None and self.dispatcher.table.get(subscription_id) is not None
        )


def subscribe(
    kafka: KafkaSettings, url: str, event: str = "task.created", rate_per_s: float | None = None
) -> HookSubscription:
    """A subscription written straight to the topic, as any producer could."""
    subscription = HookSubscription.new(
        event=event,  # type: ignore[arg-type]
        target_url=url,
        rate_per_s=rate_per_s,
    )
    put(kafka, subscription)
    return subscription


def put(kafka: KafkaSettings, subscription: HookSubscription) -> None:
    """Write (or overwrite) a subscription record."""
    producer = Producer(kafka.confluent_config())
    producer.produce(
        kafka.topic(HOOK_SUBSCRIPTIONS),
        key=subscription.id.encode(),
        value=subscription.model_dump_json().encode(),
    )
    assert producer.flush(10) == 0


def unsubscribe(kafka: KafkaSettings, *subscriptions: HookSubscription) -> None:
    producer = Producer(kafka.confluent_config())
    for subscription in subscriptions:
        producer.produce(kafka.topic(HOOK_SUBSCRIPTIONS), key=subscription.id.encode(), value=None)
    assert producer.flush(10) == 0


def publish(kafka: KafkaSettings, *task_ids: int, ws: int = 101, pad: int = 0) -> None:
    """task.created events for `task_ids` (`pad` bytes of description each)."""
    producer = Producer(kafka.confluent_config(**{"linger.ms": 5}))
    for task_id in task_ids:
        headers, value = encode_binary(
            new_event(
                type="eu.dastra.task.created",
                source=f"dastra://workspaces/{ws}",
                id=f"dastra:{ws}:task.created:{task_id}",
                subject=str(task_id),
                time=datetime.now(UTC),
                data={"id": task_id, "label": f"task {task_id}"}
                | ({"description": "x" * pad} if pad else {}),
            )
        )
        producer.produce(
            kafka.topic(TASKS), key=f"{ws}:{task_id}".encode(), value=value, headers=headers
        )
        producer.poll(0)
    assert producer.flush(30) == 0
