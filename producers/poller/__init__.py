"""Change poller: Dastra changes become Kafka events, exactly once.

Consumes Dastra's API per workspace (`GET /v1/ws/{ws}/DataSubjectRequests` and `.../Tasks`, in
`dateCreation` and `dateUpdate` order) and `dastra.poller-triggers.v1` (poll a workspace now).
Produces `eu.dastra.rights_request.created|updated` on `dastra.rights-requests.v1` and
`eu.dastra.task.created|updated` on `dastra.tasks.v1` (CloudEvents binary mode, key
`<workspaceId>:<id>`, data = the Dastra object in the topic's payload mode, PRIVACY_MODE_*: full
= unchanged; redacted, thin and encrypted minimise personal data, see `bus/privacy/`; the
mode travels in the `ce_dastrapayload` header when not full), and its cursor on the compacted
`dastra.poller-state.v1`, in one Kafka transaction per batch. In the same transaction: the data
keys and aliases on `dastra.privacy-keys.v1` that encrypted events need, and, with
PRIVACY_AUTO_ERASE, the erasure of a subject whose Erasure rights request is closed (key
tombstones, markers, an event on `dastra.privacy-audit.v1`). A fixed `transactional.id` per
workspace fences a second poller of the same workspace.

At start-up (first cycle) the poller probes what Dastra's spec leaves open (`dastra.doctor`):
the filter field casing that works, the offset at which Dastra reads filter dates, and whether
Tasks hides sub-tasks or archived ones by default; it adapts the client's filters and sends
`includeChildren`/`archived` explicitly, logs what it found once (`poller.dastra_profile`) and
exports it as metrics. A probe that cannot reach Dastra fails the cycle; the next one retries.

All events of a workspace go to one partition of their topic (chosen from the workspace id), so a
consumer sees them in creation order per workspace, as design §4 promises.

The cursor of each stream (creations, updates) is a keyset position: the newest timestamp
published, the ids published at exactly that timestamp, and the (id, timestamp) pairs published
within `late_window_s` before it. Each cycle reads forward from the newest timestamp, one
transaction per batch, reading the next batch while the previous one commits. At most every
`late_every_s` a late pass re-reads that window in the background (on the committed cursor) and
the stream's next batch publishes what it had not seen (items that became visible late); the
last cycle of a bounded run runs its late passes itself. The start-up probes run while the
producers initialise; after a cycle that found changes, the next starts `interval_min_s` after
its start. While idle it doubles up to the idle interval (see `PollerSettings.idle_interval`):
idle cycles of all workspaces never plan more than `idle_budget_share` of the client's rate
limit, so a cycle that finds changes or a triggered poll never queues behind them.

    registry = role_registry()   # served on POLLER_METRICS_PORT, with the client's metrics
    async with DastraClient(settings.dastra, metrics=DastraMetrics(registry)) as dastra:
        poller = Poller(settings.kafka, settings.poller, catalogue, dastra, workspaces=[12],
                        registry=registry)
        summary = await poller.run(stop=stop_event, max_cycles=1)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server

from bus.errors import KafkaUnavailableError
from bus.metrics import role_registry
from bus.reading import end_offsets
from bus.records.poller import Cursor, Mark, PollTrigger, Recent, trigger_record
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import POLLER_TRIGGERS, TopicCatalogue
from dastra.client import DastraClient
from dastra.doctor import Profile, detect
from dastra.errors import (
    DastraConfigError,
    DastraError,
    DastraRateLimited,
    DastraRejected,
    DastraRetryable,
)
from producers.poller.items import (
    KIND,
    RESOURCES,
    ChangedItem,
    PollerFencedError,
    PollSummary,
    Resource,
    StartFrom,
    parse_start,
)
from producers.poller.privacy import EventPrivacy
from producers.poller.settings import PollerSettings
from producers.poller.workspace import PollerMetrics, WorkspacePoller, load_cursors

__all__ = [
    "RESOURCES",
    "TRIGGER_GROUP",
    "ChangedItem",
    "Cursor",
    "Mark",
    "PollSummary",
    "PollTrigger",
    "Poller",
    "PollerFencedError",
    "Recent",
    "Resource",
    "StartFrom",
    "parse_start",
    "trigger_record",
]

_log = structlog.get_logger(__name__)

# The trigger consumer's group (under KAFKA_TOPIC_PREFIX): it assigns partitions, never commits.
TRIGGER_GROUP = "dastra-poller-triggers"


class Poller:
    """Polls every configured workspace until stopped (or for a bounded number of cycles)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: PollerSettings,
        catalogue: TopicCatalogue,
        dastra: DastraClient,
        *,
        workspaces: Sequence[int],
        start: StartFrom | None = None,
        host: str = "127.0.0.1",
        registry: CollectorRegistry | None = None,
        privacy: PrivacySettings | None = None,
    ) -> None:
        """Raises `ValueError` (`PrivacyError` for the privacy settings) on a bad setup."""
        if not workspaces:
            raise ValueError("the poller needs at least one workspace (DASTRA_WORKSPACE_ID)")
        missing = [r.topic for r in RESOURCES if r.topic not in catalogue.names]
        if missing:
            raise ValueError(f"{catalogue.path} does not declare {', '.join(missing)}")
        self._kafka = kafka
        self._settings = settings
        self._host = host
        self.registry = registry or role_registry()
        self._metrics = PollerMetrics(self.registry)
        chosen = start if start is not None else parse_start(settings.start_from)
        self._privacy = EventPrivacy(kafka, privacy or PrivacySettings())
        self._dastra = dastra
        self._profile: Profile | None = None
        self._profile_lock = asyncio.Lock()
        # Detection started with the run, while the producers start (see `run`).
        self._detecting: asyncio.Task[None] | None = None
        self._workspaces = {
            ws: WorkspacePoller(ws, kafka, settings, dastra, self._metrics, chosen, self._privacy)
            for ws in dict.fromkeys(workspaces)
        }
        # One request per stream is what an idle cycle costs (measured: 4 per cycle).
        self.idle_interval = settings.idle_interval(
            dastra.limiter.windows,
            workspaces=len(self._workspaces),
            streams=len(RESOURCES) * len(KIND),
        )
        self._metrics.idle_interval.set(self.idle_interval)

    @property
    def profile(self) -> Profile | None:
        """What was detected of Dastra and adapted to (None before the first cycle)."""
        return self._profile

    async def _adapt(self) -> None:
        """Detect Dastra's behaviour once and adapt the client and the task trigger to it.
        Raises `DastraError` when Dastra cannot be reached: the cycle fails, the next retries."""
        async with self._profile_lock:
            if self._profile is not None:
                return
            early, self._detecting = self._detecting, None
            if early is not None:
                await early  # its failure fails this cycle; the next one detects again
                return
            if not self._settings.detect:
                self._profile = Profile()
                return
            await self._detect()

    async def _detect(self) -> None:
        detection = await detect(self._dastra, next(iter(self._workspaces)))
        profile = detection.profile
        self._dastra.adapt(filter_case=profile.filter_case, filter_shift=profile.filter_shift)
        for worker in self._workspaces.values():
            worker.list_params = {"Tasks": dict(profile.task_params)}
        self._profile = profile
        task_params = ",".join(f"{k}={v}".lower() for k, v in profile.task_params.items())
        self._metrics.detected.labels(profile.filter_case, task_params).set(1)
        self._metrics.filter_shift.set(profile.filter_shift.total_seconds())
        _log.info(
            "poller.dastra_profile",
            filter_case=profile.filter_case,
            filter_shift_s=profile.filter_shift.total_seconds(),
            task_params=profile.task_params,
            warnings=[f"{f.name}: {f.summary}" for f in detection.findings if f.status != "PASS"],
        )

    def _forget_detection(self) -> None:
        early, self._detecting = self._detecting, None
        if early is None:
            return
        if early.done():
            if not early.cancelled():
                early.exception()  # retrieved: a failed probe of a run that stopped is no news
        else:
            early.cancel()

    def poll_now(self, workspace_id: int) -> None:
        """Make the poller poll a workspace at once (no-op for a workspace it does not watch)."""
        worker = self._workspaces.get(workspace_id)
        if worker is not None:
            worker.wake.set()

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        max_cycles: int | None = None,
        on_cycle: Callable[[int, int], None] | None = None,
        ready: asyncio.Event | None = None,
    ) -> PollSummary:
        """Poll until `stop` is set or each workspace ran `max_cycles` cycles. `ready` is set
        once every workspace's producer is initialised (older pollers fenced) and its cursor
        restored. Raises `PollerFencedError`, `KafkaUnavailableError` or `TopicMissingError`
        (bus/errors.py) when it cannot start."""
        stop = stop or asyncio.Event()
        summary = PollSummary()
        metrics_server = None
        triggers = _TriggerListener(self._kafka, self, asyncio.get_running_loop())
        try:
            if self._settings.metrics_port:
                metrics_server, _thread = start_http_server(
                    self._settings.metrics_port, addr=self._host, registry=self.registry
                )
            if self._profile is None and self._settings.detect:
                # Dastra's probes need no Kafka: they run while the producers start (a first
                # init_transactions can take seconds), and the first cycle awaits them.
                self._detecting = asyncio.ensure_future(self._detect())
            for worker in self._workspaces.values():
                await asyncio.to_thread(worker.open)
            await asyncio.to_thread(self._privacy.start)
            cursors = await asyncio.to_thread(load_cursors, self._kafka, list(self._workspaces))
            for ws, worker in self._workspaces.items():
                worker.restore(cursors[ws])
            await asyncio.to_thread(triggers.start)
            if self.idle_interval > self._settings.interval_max_s:
                _log.info(
                    "poller.idle_interval_stretched",
                    workspaces=len(self._workspaces),
                    idle_interval_s=round(self.idle_interval, 1),
                    interval_max_s=self._settings.interval_max_s,
                    idle_budget_share=self._settings.idle_budget_share,
                )
            if ready is not None:
                ready.set()
            await asyncio.gather(
                *(
                    self._loop(worker, stop, max_cycles, summary, on_cycle)
                    for worker in self._workspaces.values()
                )
            )
        finally:
            self._forget_detection()
            for worker in self._workspaces.values():
                worker.cancel_scans()
            await asyncio.to_thread(triggers.stop)
            for worker in self._workspaces.values():
                await asyncio.to_thread(worker.close)
            await asyncio.to_thread(self._privacy.stop)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        return summary

    async def _loop(
        self,
        worker: WorkspacePoller,
        stop: asyncio.Event,
        max_cycles: int | None,
        summary: PollSummary,
        on_cycle: Callable[[int, int], None] | None,
    ) -> None:
        ws = worker.workspace_id
        label = str(ws)
        interval = self._settings.interval_min_s
        cycles = 0
        summary.events.setdefault(ws, 0)
        summary.errors.setdefault(ws, 0)
        while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
            worker.wake.clear()
            began = time.monotonic()
            try:
                await self._adapt()
                # The last cycle of a bounded run does its late passes itself.
                last = max_cycles is not None and cycles + 1 >= max_cycles
                published = await worker.cycle(stop, wait_late=last)
            except PollerFencedError as exc:
                _log.error("poller.fenced", workspace=ws, error=str(exc))
                summary.fenced.append(ws)
                self._metrics.errors.labels(label, "fenced").inc()
                return
            except (DastraRejected, DastraConfigError) as exc:
                # Credentials, permissions, an unknown workspace: waiting will not fix these.
                kind = type(exc).__name__
                _log.error("poller.stopped", workspace=ws, error=kind, detail=str(exc)[:300])
                summary.failed[ws] = f"{kind}: {exc}"[:300]
                summary.errors[ws] += 1
                self._metrics.errors.labels(label, kind).inc()
                return
            except (DastraError, KafkaException, BufferError) as exc:
                failed = True
                kind = type(exc).__name__
                summary.errors[ws] += 1
                summary.last_error[ws] = kind
                self._metrics.errors.labels(label, kind).inc()
                interval = min(interval * 2, self.idle_interval)
                wait = interval
                if isinstance(exc, DastraRateLimited) and exc.retry_after:
                    wait = max(wait, exc.retry_after)
                _log.warning(
                    "poller.cycle_failed",
                    workspace=ws,
                    error=kind,
                    retryable=isinstance(exc, (DastraRetryable, KafkaException)),
                    detail=str(exc)[:300],
                    retry_in_s=round(wait, 2),
                )
            else:
                failed = False
                summary.events[ws] += published
                summary.last_error.pop(ws, None)
                self._metrics.cycles.labels(label).inc()
                self._metrics.last_success.labels(label).set(time.time())
                interval = (
                    self._settings.interval_min_s
                    if published
                    else min(interval * 2, self.idle_interval)
                )
                wait = interval
                if on_cycle is not None:
                    on_cycle(ws, published)
            cycles += 1
            summary.cycles[ws] = cycles
            self._metrics.interval.labels(label).set(wait)
            if max_cycles is not None and cycles >= max_cycles:
                break
            # After a success the interval runs from the cycle's start (a long cycle is not
            # followed by a full interval more); after a failure, from its end.
            if failed:
                began = time.monotonic()
            remaining = wait - (time.monotonic() - began)
            if remaining <= 0:
                continue
            waker = asyncio.ensure_future(worker.wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {waker, stopper}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waker.cancel()
                stopper.cancel()


class _TriggerListener:
    """Reads dastra.poller-triggers.v1 from its end in a thread and wakes the workspace's loop.
    `start` and `stop` block: call them through asyncio.to_thread."""

    def __init__(
        self, kafka: KafkaSettings, poller: Poller, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._kafka = kafka
        self._poller = poller
        self._loop = loop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="poller-triggers", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            self.stop()
            raise KafkaUnavailableError(
                f"the poll-trigger listener did not start: {self._failure or 'timed out'}"
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        topic = self._kafka.topic(POLLER_TRIGGERS)
        consumer: Consumer | None = None
        try:
            consumer = Consumer(
                self._kafka.confluent_config(
                    **{
                        "group.id": self._kafka.topic(TRIGGER_GROUP),
                        "enable.auto.commit": False,
                        "auto.offset.reset": "latest",
                    }
                )
            )
            info = consumer.list_topics(topic, timeout=15).topics.get(topic)
            if info is None or info.error is not None:
                self._failure = f"topic {topic} does not exist (run `dastra-kafka topics apply`)"
                return
            # Start at the current end, resolved now: a trigger sent after start() returns counts.
            ends = end_offsets(self._kafka, topic, list(info.partitions), 15)
            consumer.assign([TopicPartition(topic, p, ends.get(p, 0)) for p in info.partitions])
            self._ready.set()
            while not self._stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                try:
                    trigger = PollTrigger.model_validate_json(message.value() or b"{}")
                except ValueError:
                    _log.warning("poller.bad_trigger", offset=message.offset())
                    continue
                self._loop.call_soon_threadsafe(self._poller.poll_now, trigger.workspace_id)
        except KafkaException as exc:
            self._failure = exc.args[0].str() if exc.args else str(exc)
        finally:
            self._ready.set()
            if consumer is not None:
                consumer.close()
