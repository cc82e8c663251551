"""Keyed concurrency for the records of Kafka partitions: the one engine under the agents'
dispatcher (`consumers/dispatcher.py`) and the recipe runner (`consumers/recipes/runner.py`).

Consumes the records a Faust agent takes with `stream.noack()` (`submit`: the Faust event, and
the domain's item built from it, naming its partition and ordering keys), and the rebalance and
shutdown signals (`open`, `end_epoch`, `drain`). Produces calls of the domain's `process(item)`,
at most `max_in_flight` records taken and unfinished, each one after the earlier records sharing
any of its keys; and the acks of the Faust events, in offset order per partition.

The rules, and why (the dispatcher's module docstring has the whole story):

- **Capacity.** `submit` waits while `max_in_flight` records are unfinished, so the agent stops
  taking records from Kafka; a record frees its place when its processing ends, however it ends.
- **Keys.** A record waits for the earlier records sharing any of its keys (`_tails`: the last
  record of each key), then runs. Same key: in order; different keys: concurrently.
- **Acks in offset order, per partition and epoch.** `process` returning means done; the record
  is acked once every earlier record of its partition (taken in the same epoch) is done too:
  faust-streaming commits the end of the first run of consecutive acked offsets, so acking out of
  order could commit past a record still in flight. `process` raising `Abandoned` (or being
  cancelled) leaves the record unacked; any other exception is a bug: it is logged
  (`<name>.crash`, with `describe(item)`) and crashes the worker (`on_crash`, once).
- **Epochs.** A rebalance or shutdown ends the epoch (`end_epoch(grace)`): records not started are
  cancelled, those running get `grace` seconds and are then cancelled (`<name>.abandoned`), all
  unacked; records taken before the epoch ended never start, never ack, and only free their
  capacity. Nothing runs until `open` (the new assignment is processed). `epoch_over` is set when
  the epoch ends, for processing that waits (a retry's backoff) to notice at once; processing that
  writes checks `current(epoch)` first, so an old epoch's work never writes after the partition
  moved on.

    engine = KeyedEngine[Work](max_in_flight=100, process=..., on_crash=app.crash, gauge=...,
                               log=_log, name="agents", describe=..., task_name=...)
    await engine.submit(event, lambda epoch: Work(..., epoch=epoch))   # in the agent
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Gauge

__all__ = ["Abandoned", "Keyed", "KeyedEngine"]

_TP = tuple[str, int]


class Abandoned(Exception):  # noqa: N818 - control flow, never escapes the engine
    """Raised by `process`: the record's epoch is over (rebalance, shutdown); leave it unacked."""


class Keyed(Protocol):
    """What the engine reads of a domain item: its partition and its ordering keys."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def keys(self) -> Sequence[str]: ...


_T = TypeVar("_T", bound=Keyed)


@dataclass(eq=False)
class _Ticket(Generic[_T]):
    """One record taken: the domain's item and the engine's bookkeeping."""

    item: _T
    event: Any  # the Faust event; released (None) once handed out for acking
    epoch: int
    tp: _TP
    started: bool = False
    done: bool = False


class _PartitionAcks(Generic[_T]):
    """The records of one partition taken in one epoch, in the order they were taken."""

    def __init__(self) -> None:
        self._queue: deque[_Ticket[_T]] = deque()

    def add(self, ticket: _Ticket[_T]) -> None:
        self._queue.append(ticket)

    def complete(self, ticket: _Ticket[_T]) -> list[Any]:
        """Mark `ticket` done; the events now ackable, in offset order."""
        ticket.done = True
        events = []
        while self._queue and self._queue[0].done:
            head = self._queue.popleft()
            events.append(head.event)
            head.event = None
        return events


class KeyedEngine(Generic[_T]):
    """Capacity, per-key order, epochs and in-order acks; see the module docstring.

    `name` prefixes the log events (`agents`, `recipes`); `describe(item)` gives the fields of a
    crash's log line; `task_name(item)` names the asyncio task of a record; `gauge` is set to the
    number of records in flight.
    """

    def __init__(
        self,
        *,
        max_in_flight: int,
        process: Callable[[_T], Awaitable[None]],
        on_crash: Callable[[BaseException], Awaitable[None]],
        gauge: Gauge,
        log: Any,
        name: str,
        describe: Callable[[_T], dict[str, Any]],
        task_name: Callable[[_T], str],
    ) -> None:
        self._process = process
        self._on_crash = on_crash
        self._gauge = gauge
        self._log = log
        self._name = name
        self._describe = describe
        self._task_name = task_name
        self._capacity = asyncio.Semaphore(max_in_flight)
        self._tails: dict[str, asyncio.Future[None]] = {}
        self._tasks: dict[asyncio.Task[None], _Ticket[_T]] = {}
        self._acks: dict[tuple[_TP, int], _PartitionAcks[_T]] = {}
        self._epoch = 0
        self._epoch_over = asyncio.Event()
        self._ready = asyncio.Event()
        self._stopping = False
        self._crashed = False

    # --- state -------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def epoch_over(self) -> asyncio.Event:
        """Set when the current epoch ends (a new event for each epoch)."""
        return self._epoch_over

    def current(self, epoch: int) -> bool:
        """Whether `epoch` (an item's) is still the current one: its work may write."""
        return epoch == self._epoch

    @property
    def ready(self) -> bool:
        """Opened after the last assignment, not stopping: records are being processed."""
        return self._ready.is_set() and not self._stopping

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """The assignment is processed: records of the current epoch may run (unless stopping)."""
        if not self._stopping:
            self._ready.set()

    async def end_epoch(self, grace: float) -> None:
        """End the epoch: cancel the records not started, give the running ones `grace`
        seconds, then cancel them; none of them acks."""
        self._ready.clear()
        self._epoch += 1
        over, self._epoch_over = self._epoch_over, asyncio.Event()
        over.set()
        old = dict(self._tasks)
        for task, ticket in old.items():
            if not ticket.started:
                task.cancel()  # queued, nothing done yet: the next owner gets the record
        if old:
            _done, pending = await asyncio.wait(old, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                self._log.warning(f"{self._name}.abandoned", records=len(pending))
        for key in [k for k in self._acks if k[1] < self._epoch]:
            del self._acks[key]

    async def drain(self, grace: float) -> None:
        """Stop taking records; end the epoch with `grace`."""
        self._stopping = True
        await self.end_epoch(grace)

    async def crash(self, exc: BaseException) -> None:
        """Stop processing and report `exc` to `on_crash` (the first time only)."""
        if self._crashed:
            return
        self._crashed = True
        self._ready.clear()
        await self._on_crash(exc)

    # --- records -----------------------------------------------------------------------------

    async def submit(
        self,
        event: Any,
        build: Callable[[int], _T],
        *,
        before: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Take one record: wait for capacity, run `before` (if any), build its item for the
        current epoch, queue it behind the records sharing its keys, and return. A record taken
        while stopping, after a crash, or across the end of an epoch is dropped unacked (the next
        owner gets it). If `before` or `build` raises, the record's capacity is freed and the
        exception propagates."""
        epoch = self._epoch
        if self._stopping or self._crashed:
            return
        await self._capacity.acquire()
        try:
            if before is not None:
                await before()
            if self._stopping or self._crashed or epoch != self._epoch:
                self._capacity.release()  # taken before a rebalance: the next owner gets it
                return
            item = build(epoch)
        except BaseException:
            self._capacity.release()
            raise
        keys = list(item.keys)
        waits = [self._tails[key] for key in keys if key in self._tails]
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._tails[key] = done
        ticket = _Ticket(item=item, event=event, epoch=epoch, tp=(item.topic, item.partition))
        acks = self._acks.get((ticket.tp, epoch))
        if acks is None:
            acks = self._acks[(ticket.tp, epoch)] = _PartitionAcks[_T]()
        acks.add(ticket)
        task = asyncio.create_task(self._run(ticket, waits), name=self._task_name(item))
        self._tasks[task] = ticket
        # The bookkeeping of the record's end runs as the task's done callback, not in a
        # `finally` of `_run`: a task cancelled before the loop ever ran it (`end_epoch` right
        # after `submit`) never enters its coroutine, and would otherwise keep its key (the next
        # record with that key, e.g. the same command redelivered, waiting forever), its place
        # and its in-flight count.
        task.add_done_callback(lambda ended: self._ended(ended, keys, done))
        self._gauge.set(len(self._tasks))

    async def _run(self, ticket: _Ticket[_T], waits: list[asyncio.Future[None]]) -> None:
        try:
            if waits:
                await asyncio.wait(waits)  # never gather: it would cancel the predecessors
            await self._ready.wait()
            if ticket.epoch != self._epoch:
                return
            ticket.started = True
            await self._process(ticket.item)
            self._complete(ticket)
        except (asyncio.CancelledError, Abandoned):
            pass
        except Exception as exc:
            self._log.exception(f"{self._name}.crash", **self._describe(ticket.item))
            await self.crash(exc)

    def _ended(self, task: asyncio.Task[None], keys: list[str], done: asyncio.Future[None]) -> None:
        """A record's task ended, however (even cancelled before it ran): free its keys (the
        records waiting for them go on), its place and its count."""
        if not done.done():
            done.set_result(None)
        for key in keys:
            if self._tails.get(key) is done:
                del self._tails[key]
        self._tasks.pop(task, None)
        self._gauge.set(len(self._tasks))
        self._capacity.release()

    def _complete(self, ticket: _Ticket[_T]) -> None:
        acks = self._acks.get((ticket.tp, ticket.epoch))
        if acks is None:
            return
        for event in acks.complete(ticket):
            event.ack()
