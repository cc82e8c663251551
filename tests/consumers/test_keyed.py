"""The keyed engine under the agents and the recipe runner (consumers/_keyed.py), with no broker:
key order, concurrency, capacity, acks in offset order, epochs, crashes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from consumers._keyed import Abandoned, KeyedEngine


@dataclass
class _Event:
    offset: int
    acks: list[int]

    def ack(self) -> None:
        self.acks.append(self.offset)


@dataclass(eq=False)
class _Item:
    topic: str
    partition: int
    offset: int
    keys: list[str]
    epoch: int
    release: asyncio.Event = field(default_factory=asyncio.Event)


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def exception(self, event: str, **fields: Any) -> None:
        self.lines.append(("exception", event, fields))


class _Harness:
    """An engine whose `process` records starts and ends and waits for each item's `release`
    (or runs `behave(item)` instead, when given)."""

    def __init__(
        self,
        max_in_flight: int = 10,
        behave: Callable[[_Item], Awaitable[None]] | None = None,
    ) -> None:
        self.acks: list[int] = []
        self.started: list[int] = []
        self.finished: list[int] = []
        self.crashes: list[BaseException] = []
        self.items: dict[int, _Item] = {}
        self.log = _Log()
        self.registry = CollectorRegistry()
        self.gauge = Gauge("in_flight", "in flight", registry=self.registry)
        self._behave = behave

        async def crash(exc: BaseException) -> None:
            self.crashes.append(exc)

        self.engine = KeyedEngine[_Item](
            max_in_flight=max_in_flight,
            process=self._process,
            on_crash=crash,
            gauge=self.gauge,
            log=self.log,
            name="test",
            describe=lambda item: {"offset": item.offset},
            task_name=lambda item: f"item {item.offset}",
        )

    async def _process(self, item: _Item) -> None:
        self.started.append(item.offset)
        if self._behave is not None:
            await self._behave(item)
        else:
            await item.release.wait()
        self.finished.append(item.offset)

    async def submit(self, offset: int, *keys: str, partition: int = 0) -> None:
        def build(epoch: int) -> _Item:
            item = _Item("t", partition, offset, list(keys), epoch)
            self.items[offset] = item
            return item

        await self.engine.submit(_Event(offset, self.acks), build)

    def release(self, *offsets: int) -> None:
        for offset in offsets:
            self.items[offset].release.set()

    def in_flight_gauge(self) -> float:
        value = self.registry.get_sample_value("in_flight")
        assert value is not None
        return value


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _until(condition: Callable[[], bool], within: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.001)


async def test_records_sharing_a_key_run_in_order() -> None:
    h = _Harness()
    h.engine.open()
    await h.submit(0, "a")
    await h.submit(1, "b", "a")  # shares "a" with 0
    await h.submit(2, "b")  # shares "b" with 1
    await _settle()
    assert h.started == [0]
    h.release(0)
    await _until(lambda: h.started == [0, 1])
    await _settle()
    assert h.started == [0, 1]
    h.release(1, 2)
    await _until(lambda: h.acks == [0, 1, 2])
    assert h.started == [0, 1, 2]
    assert h.engine.in_flight == 0 and h.in_flight_gauge() == 0


async def test_records_with_other_keys_run_concurrently() -> None:
    h = _Harness()
    h.engine.open()
    for offset, key in enumerate("abc"):
        await h.submit(offset, key)
    await _until(lambda: sorted(h.started) == [0, 1, 2])
    assert h.finished == []
    assert h.engine.in_flight == 3 and h.in_flight_gauge() == 3
    h.release(0, 1, 2)
    await _until(lambda: h.acks == [0, 1, 2])


async def test_nothing_runs_before_open() -> None:
    h = _Harness()
    await h.submit(0, "a")
    await _settle()
    assert h.started == [] and h.engine.in_flight == 1 and not h.engine.ready
    h.engine.open()
    assert h.engine.ready
    await _until(lambda: h.started == [0])
    h.release(0)
    await _until(lambda: h.acks == [0])


async def test_capacity_bounds_the_records_taken_and_unfinished() -> None:
    h = _Harness(max_in_flight=2)
    h.engine.open()
    await h.submit(0, "a")
    await h.submit(1, "b")
    third = asyncio.create_task(h.submit(2, "c"))
    await _settle()
    assert not third.done() and 2 not in h.items  # waiting for a place, not built
    assert h.engine.in_flight == 2 and h.in_flight_gauge() == 2
    h.release(1)  # any record ending frees a place, even one whose ack must wait
    async with asyncio.timeout(2):
        await third
    await _until(lambda: 2 in h.started)
    h.release(0, 2)
    await _until(lambda: h.acks == [0, 1, 2])
    assert h.engine.in_flight == 0


async def test_acks_come_in_offset_order_when_records_finish_out_of_order() -> None:
    h = _Harness()
    h.engine.open()
    for offset in range(4):
        await h.submit(offset, f"k{offset}")
    await h.submit(10, "other", partition=1)  # another partition: acked on its own
    await _until(lambda: len(h.started) == 5)
    h.release(3)
    h.release(1)
    await _until(lambda: h.finished == [3, 1])
    await _settle()
    assert h.acks == []
    h.release(10)
    await _until(lambda: h.acks == [10])
    h.release(0)
    await _until(lambda: h.acks == [10, 0, 1])
    await _settle()
    assert h.acks == [10, 0, 1]  # 2 is still in flight: 3 waits for it
    h.release(2)
    await _until(lambda: h.acks == [10, 0, 1, 2, 3])


async def test_end_of_epoch_gives_grace_then_cancels_and_old_work_never_acks() -> None:
    h = _Harness()
    h.engine.open()
    await h.submit(0, "a")  # finishes within the grace: acked
    await h.submit(1, "b")  # never finishes: cancelled after the grace, unacked
    await h.submit(2, "b")  # queued behind 1, not started: cancelled at once, never runs
    await _until(lambda: sorted(h.started) == [0, 1])
    over = h.engine.epoch_over
    assert not over.is_set() and h.engine.current(0)

    async def finish_zero_soon() -> None:
        await over.wait()  # the epoch has ended: 0 finishes within its grace
        h.release(0)

    helper = asyncio.create_task(finish_zero_soon())
    loop = asyncio.get_running_loop()
    began = loop.time()
    await h.engine.end_epoch(0.3)
    took = loop.time() - began
    await helper
    assert 0.25 <= took < 2
    assert over.is_set() and not h.engine.epoch_over.is_set()
    assert h.engine.epoch == 1 and not h.engine.current(0) and h.engine.current(1)
    assert h.acks == [0]
    assert h.started == [0, 1] and h.finished == [0]
    assert h.engine.in_flight == 0 and h.in_flight_gauge() == 0
    assert ("warning", "test.abandoned", {"records": 1}) in h.log.lines
    assert not h.engine.ready  # closed until the next assignment is processed

    # Releasing the old work now changes nothing; the key "b" is free for the new epoch.
    h.release(1, 2)
    await h.submit(3, "b")
    h.engine.open()
    await _until(lambda: 3 in h.started)
    h.release(3)
    await _until(lambda: h.acks == [0, 3])
    assert h.crashes == []


async def test_a_record_taken_across_the_end_of_an_epoch_is_dropped_and_frees_its_place() -> None:
    h = _Harness(max_in_flight=1)
    h.engine.open()
    gate = asyncio.Event()
    built: list[int] = []

    async def before() -> None:
        await gate.wait()

    def build(epoch: int) -> _Item:
        built.append(epoch)
        return _Item("t", 0, 0, ["a"], epoch)

    taking = asyncio.create_task(h.engine.submit(_Event(0, h.acks), build, before=before))
    await _settle()
    await h.engine.end_epoch(0.1)
    gate.set()
    async with asyncio.timeout(2):
        await taking
    assert built == [] and h.engine.in_flight == 0
    h.engine.open()
    async with asyncio.timeout(2):
        await h.submit(1, "a")  # its place was given back
    await _until(lambda: h.started == [1])
    h.release(1)
    await _until(lambda: h.acks == [1])


async def test_a_record_whose_task_never_ran_when_its_epoch_ended_frees_its_key_and_place() -> None:
    # Submitted, then the epoch ends before the event loop ever ran the record's task: the
    # cancelled task's coroutine never starts (so no `finally` of it runs). Its key, its place
    # and its in-flight count must be freed all the same, or the next owner's copy of a record
    # with that key (the same command, redelivered after a rebalance) waits for it forever.
    h = _Harness(max_in_flight=1)
    h.engine.open()
    await h.submit(0, "a")  # no await in between: its task has not run yet
    await h.engine.end_epoch(0.1)
    assert h.started == [] and h.engine.in_flight == 0 and h.in_flight_gauge() == 0
    h.engine.open()
    async with asyncio.timeout(2):
        await h.submit(1, "a")  # its place was given back
    await _until(lambda: h.started == [1])  # not held behind the key of the record dropped
    h.release(1)
    await _until(lambda: h.acks == [1])
    assert h.crashes == []


async def test_a_failing_build_frees_its_place_and_raises() -> None:
    h = _Harness(max_in_flight=1)

    def build(epoch: int) -> _Item:
        raise ValueError("bad record")

    try:
        await h.engine.submit(_Event(0, h.acks), build)
    except ValueError:
        pass
    else:
        raise AssertionError("the build's error was swallowed")
    async with asyncio.timeout(2):
        await h.submit(1, "a")


async def test_abandoned_work_is_not_acked_and_holds_the_partition_back() -> None:
    async def behave(item: _Item) -> None:
        if item.offset == 0:
            raise Abandoned

    h = _Harness(behave=behave)
    h.engine.open()
    await h.submit(0, "a")
    await h.submit(1, "b")
    await _until(lambda: h.finished == [1])
    await _settle()
    assert h.acks == [] and h.crashes == [] and h.engine.in_flight == 0


async def test_a_bug_crashes_once_leaves_the_record_unacked_and_stops_taking() -> None:
    async def behave(item: _Item) -> None:
        raise RuntimeError(f"bug at {item.offset}")

    h = _Harness(behave=behave)
    h.engine.open()
    await h.submit(0, "a")
    await h.submit(1, "b")
    await _until(lambda: len(h.crashes) == 1)
    await _settle()
    assert [str(exc) for exc in h.crashes] == ["bug at 0"]
    assert ("exception", "test.crash", {"offset": 0}) in h.log.lines
    # The crash closed the engine: the other record does not start (the worker stops).
    assert h.started == [0] and h.acks == [] and not h.engine.ready
    await h.submit(2, "c")  # after a crash: dropped
    assert 2 not in h.items
    await h.engine.crash(RuntimeError("again"))
    assert len(h.crashes) == 1
    await h.engine.drain(0.1)  # the shutdown
    assert h.started == [0] and h.acks == [] and h.engine.in_flight == 0


async def test_drain_stops_taking_records() -> None:
    h = _Harness()
    h.engine.open()
    await h.submit(0, "a")
    await _until(lambda: h.started == [0])
    h.release(0)
    await h.engine.drain(1.0)
    assert h.acks == [0] and h.engine.stopping and not h.engine.ready
    await h.submit(1, "b")
    h.engine.open()  # stopping: stays closed
    assert 1 not in h.items and not h.engine.ready
