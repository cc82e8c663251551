"""The recipe runner's two readers, in process on the real broker: step results (waited for
through the agents' result index, or found by a scan) and the run store (dastra.recipe-runs.v1
read into memory, never letting an older record replace a newer one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from bus.envelope import encode_binary, new_event
from bus.records.commands import RESULT_SUCCEEDED, CommandResult
from bus.records.recipe_runs import RecipeRun, TriggerRef
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, RECIPE_RUNS, TopicCatalogue
from consumers.recipes.results import StepResults
from consumers.recipes.state import RunStore
from consumers.result_index import ResultIndex


def _result(command_id: str, task_id: int) -> CommandResult:
    now = datetime.now(UTC)
    return CommandResult(
        command_id=command_id,
        action="create-task",
        status="succeeded",
        result={"id": task_id},
        attempts=1,
        received_at=now,
        completed_at=now,
        source_topic="dastra.commands.create-task.v1",
        source_partition=0,
        source_offset=0,
    )


async def _write_result(
    producer: AIOKafkaProducer, kafka: KafkaSettings, result: CommandResult
) -> None:
    event = new_event(
        type=RESULT_SUCCEEDED,
        source="tests",
        id=f"result:{result.command_id}",
        data=result.model_dump(mode="json"),
    )
    headers, value = encode_binary(event)
    await producer.send_and_wait(
        kafka.topic(COMMAND_RESULTS),
        key=result.command_id.encode(),
        value=value,
        headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers if v],
    )


@pytest.mark.timeout(120)
async def test_results_are_found_when_they_exist_and_awaited_otherwise(
    kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    producer = AIOKafkaProducer(**kafka.aiokafka_config(), acks="all")
    await producer.start()
    partitions = await producer.partitions_for(kafka.topic(COMMAND_RESULTS))
    index = ResultIndex(kafka, kafka.topic(COMMAND_RESULTS))
    results = StepResults(kafka, index)
    try:
        # Older results, including one for the same command before the one that counts.
        await _write_result(producer, kafka, _result("recipe:r:e1:task", 1))
        await _write_result(producer, kafka, _result("recipe:r:e1:other", 2))
        await _write_result(producer, kafka, _result("recipe:r:e1:task", 3))
        await index.start(partitions)
        await results.start(partitions)
        await index.catch_up(30)

        async def must_not_send() -> None:
            raise AssertionError("a command with a result must not be sent again")

        since = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp() * 1000)
        found = await results.result(
            "recipe:r:e1:task", send=must_not_send, since_ms=since, wait_s=5
        )
        assert found.result == {"id": 3}
        # A scan from after the records were written falls back to the partition's start.
        late = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp() * 1000)
        other = await results.lookup("recipe:r:e1:other", late)
        assert other is not None and other.result == {"id": 2}
        assert await results.lookup("recipe:r:never", since) is None

        sent: list[str] = []

        async def send() -> None:
            sent.append("recipe:r:e2:task")
            await _write_result(producer, kafka, _result("recipe:r:e2:task", 4))

        awaited = await results.result("recipe:r:e2:task", send=send, since_ms=since, wait_s=30)
        assert awaited.result == {"id": 4} and sent == ["recipe:r:e2:task"]
        assert results.waiting == 0

        async def nothing() -> None:
            return None

        with pytest.raises(TimeoutError):
            await results.result("recipe:r:e3:task", send=nothing, since_ms=since, wait_s=0.5)
        assert results.waiting == 0
    finally:
        await results.stop()
        await index.stop()
        await producer.stop()


def _run(key: str, status: str, at: datetime) -> RecipeRun:
    return RecipeRun(
        recipe="r",
        run_key=key,
        status=status,  # type: ignore[arg-type]
        trigger=TriggerRef(event_id=key),
        started_at=at,
        updated_at=at,
        finished_at=at if status != "running" else None,
    )


@pytest.mark.timeout(120)
async def test_the_run_store_keeps_the_newest_state_of_each_run(
    kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    producer = AIOKafkaProducer(**kafka.aiokafka_config(), acks="all")
    await producer.start()
    store = RunStore(kafka)
    t0 = datetime.now(UTC)
    try:
        topic = kafka.topic(RECIPE_RUNS)
        for run in (_run("a", "running", t0), _run("a", "succeeded", t0 + timedelta(seconds=1)),
                    _run("b", "running", t0), _run("c", "failed", t0)):  # fmt: skip
            await producer.send_and_wait(
                topic, key=run.key.encode(), value=run.model_dump_json().encode()
            )
        await producer.send_and_wait(topic, key=b"r:c", value=None)  # erased
        await producer.send_and_wait(topic, key=b"r:bad", value=b"not json")
        await store.start(await producer.partitions_for(topic))
        await store.catch_up(30)

        assert store.outcome("r:a") == "succeeded" and store.get("r:a") is None
        assert store.get("r:b") is not None and store.outcome("r:b") is None
        assert store.outcome("r:c") is None and store.get("r:c") is None
        assert len(store) == 2

        # The runner's own newer write is noted at once; the older record read later loses.
        store.note(_run("b", "succeeded", t0 + timedelta(seconds=5)))
        await producer.send_and_wait(
            topic,
            key=b"r:b",
            value=_run("b", "running", t0 + timedelta(seconds=2)).model_dump_json().encode(),
        )
        await store.catch_up(30)
        assert store.outcome("r:b") == "succeeded"
    finally:
        await store.stop()
        await producer.stop()


async def test_a_store_that_is_not_started_says_so(kafka: KafkaSettings) -> None:
    with pytest.raises(RuntimeError, match="not started"):
        await RunStore(kafka).catch_up(1)
