"""Consumer-group administration that cannot crash the process: a group's committed offsets
(which also proves the principal may read the group) and deleting a group.

Consumes the Kafka settings and a group name; produces offsets, `KafkaAuthorizationError` for a
group the principal may not use, `KafkaUnavailableError` when the coordinator does not answer in
time. Nothing else.

Why not confluent-kafka's AdminClient, which the rest of the bus uses: when a
ListConsumerGroupOffsets answer carries a coordinator error (the coordinator of a new cluster or
group still loading), librdkafka 2.16 hands it to a consumer-group handle an admin client does
not have, and the process dies with SIGSEGV (a core dump shows `rd_kafka_cgrp_op` from
`rd_kafka_handle_OffsetFetch`); its other coordinator calls have a use-after-free of their own
across broker restarts (librdkafka issues #4605 and #5397). The worker died so at start-up.
`tests/bus/test_groups.py` meets the case on a fresh broker. aiokafka's pure-Python client answers
it with an exception, which is retried here until the deadline.

    committed_offsets(kafka, "dastra-worker")    # {("dastra.commands.create-task.v1", 0): 42}
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    NotCoordinatorError,
    RequestTimedOutError,
    for_code,
)
from aiokafka.protocol.admin import DeleteGroupsRequest
from aiokafka.protocol.commit import OffsetFetchRequest

from bus.errors import KafkaAuthorizationError, KafkaUnavailableError
from bus.settings import KafkaSettings

__all__ = ["committed_offsets", "delete_group"]

_T = TypeVar("_T")

# What a coordinator answers while it moves, starts or loads: asked again until the deadline.
_RETRIABLE = (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    KafkaConnectionError,
    NodeNotReadyError,
    RequestTimedOutError,
    KafkaTimeoutError,
)
# DeleteGroups answers for a group that has no offsets (already gone) or still has members.
_GROUP_ID_NOT_FOUND = 69
_NON_EMPTY_GROUP = 68


def committed_offsets(
    kafka: KafkaSettings, group: str, timeout_s: float = 30.0
) -> dict[tuple[str, int], int]:
    """The group's committed offsets ({} for a group that never committed). Raises
    `KafkaAuthorizationError` when the principal may not read the group."""

    async def ask(admin: AIOKafkaAdminClient) -> dict[tuple[str, int], int]:
        coordinator = await admin.find_coordinator(group)
        response = await admin._send_request(OffsetFetchRequest(group, None), coordinator)
        _raise_for(getattr(response, "error_code", 0), group, "READ")
        offsets: dict[tuple[str, int], int] = {}
        for topic, partitions in response.topics:
            for partition, offset, _metadata, error in partitions:
                _raise_for(error, group, "READ")
                if offset >= 0:
                    offsets[(topic, partition)] = offset
        return offsets

    return asyncio.run(_with_admin(kafka, group, "READ", ask, timeout_s))


def delete_group(kafka: KafkaSettings, group: str, timeout_s: float = 10.0) -> bool:
    """Delete the group (its committed positions). True when deleted or already gone; False
    while it still has members (one of them deletes it when it leaves, or the broker expires
    its offsets after `offsets.retention.minutes`)."""

    async def ask(admin: AIOKafkaAdminClient) -> bool:
        coordinator = await admin.find_coordinator(group)
        response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
        for _group, error in response.results:
            if error == _NON_EMPTY_GROUP:
                return False
            if error != _GROUP_ID_NOT_FOUND:
                _raise_for(error, group, "DELETE")
        return True

    return asyncio.run(_with_admin(kafka, group, "DELETE", ask, timeout_s))


async def _with_admin(
    kafka: KafkaSettings,
    group: str,
    operation: str,
    ask: Callable[[AIOKafkaAdminClient], Awaitable[_T]],
    timeout_s: float,
) -> _T:
    deadline = time.monotonic() + timeout_s
    config: dict[str, Any] = {
        **kafka.aiokafka_config(),
        "request_timeout_ms": max(1000, int(timeout_s * 1000)),
    }
    admin = AIOKafkaAdminClient(**config)
    try:
        while True:
            try:
                if not admin._started:
                    await asyncio.wait_for(admin.start(), max(0.1, deadline - time.monotonic()))
                return await asyncio.wait_for(ask(admin), max(0.1, deadline - time.monotonic()))
            except GroupAuthorizationFailedError as exc:
                raise KafkaAuthorizationError("group", group, operation) from exc
            except (*_RETRIABLE, TimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise KafkaUnavailableError(
                        f"the coordinator of group {group} did not answer within "
                        f"{timeout_s:.0f} s: {type(exc).__name__}"
                    ) from exc
                await asyncio.sleep(0.2)
            except KafkaError as exc:
                raise KafkaUnavailableError(f"group {group}: {type(exc).__name__}") from exc
    finally:
        await admin.close()


def _raise_for(error_code: int, group: str, operation: str) -> None:
    if not error_code:
        return
    error = for_code(error_code)
    if error is GroupAuthorizationFailedError:
        raise KafkaAuthorizationError("group", group, operation)
    raise error(f"group {group}")
