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
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
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
from aiokafka.protocol.admin import DeleteGroupsRequest, DescribeGroupsRequest
from aiokafka.protocol.commit import OffsetFetchRequest

from bus.errors import BusError, KafkaAuthorizationError, KafkaUnavailableError
from bus.settings import KafkaSettings

__all__ = [
    "GroupMember",
    "GroupRead",
    "committed_offsets",
    "delete_group",
    "read_groups",
]

_T = TypeVar("_T")
TP = tuple[str, int]

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
# DescribeGroups' states, by the names librdkafka's ConsumerGroupState gives them.
_STATES = {
    "Stable": "STABLE",
    "Empty": "EMPTY",
    "Dead": "DEAD",
    "PreparingRebalance": "PREPARING_REBALANCING",
    "CompletingRebalance": "COMPLETING_REBALANCING",
}


@dataclass(frozen=True)
class GroupMember:
    """A live member of a group and the partitions it was assigned."""

    member_id: str
    client_id: str
    host: str
    partitions: tuple[TP, ...]


@dataclass(frozen=True)
class GroupRead:
    """One group as its coordinator describes it, with its committed offsets. `state` is
    STABLE, EMPTY, DEAD, PREPARING_REBALANCING, COMPLETING_REBALANCING or UNKNOWN; `simple` when
    the offsets are committed by clients that never join (no protocol type); `found` is False
    for a group the coordinator does not know."""

    state: str
    simple: bool
    members: tuple[GroupMember, ...]
    committed: dict[TP, int]
    found: bool = True


def committed_offsets(kafka: KafkaSettings, group: str, timeout_s: float = 30.0) -> dict[TP, int]:
    """The group's committed offsets ({} for a group that never committed). Raises
    `KafkaAuthorizationError` when the principal may not read the group."""
    result = _each_group(
        kafka, [group], functools.partial(_offsets, operation="READ"), "READ", timeout_s
    )[group]
    if isinstance(result, BusError):
        raise result
    return result


def read_groups(
    kafka: KafkaSettings, groups: Sequence[str], timeout_s: float = 30.0
) -> dict[str, GroupRead | BusError]:
    """Each group's description and committed offsets, all groups in flight at once over one
    client (what the lag monitor needs on every refresh): per group a `GroupRead`, or the
    `KafkaAuthorizationError` (DESCRIBE on the group) / `KafkaUnavailableError` it met."""
    return _each_group(kafka, groups, _read, "DESCRIBE", timeout_s)


def _each_group(
    kafka: KafkaSettings,
    groups: Sequence[str],
    ask_one: Callable[[AIOKafkaAdminClient, str], Awaitable[_T]],
    operation: str,
    timeout_s: float,
) -> dict[str, _T | BusError]:
    """`ask_one(admin, group)` for every group at once over one client, each retried on its
    own; per group its answer or the `BusError` it met."""

    async def ask_all(admin: AIOKafkaAdminClient, deadline: float) -> dict[str, _T | BusError]:
        answers = await asyncio.gather(
            *(
                _retrying(functools.partial(ask_one, admin, g), g, operation, deadline)
                for g in groups
            ),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, BusError):
                raise answer
        return dict(zip(groups, answers, strict=True))  # type: ignore[arg-type]

    if not groups:
        return {}
    return asyncio.run(_with_admin(kafka, ",".join(groups), ask_all, timeout_s))


def delete_group(kafka: KafkaSettings, group: str, timeout_s: float = 10.0) -> bool:
    """Delete the group (its committed positions). True when deleted or already gone; False
    while it still has members (one of them deletes it when it leaves, or the broker expires
    its offsets after `offsets.retention.minutes`)."""

    async def delete(admin: AIOKafkaAdminClient) -> bool:
        coordinator = await admin.find_coordinator(group)
        response = await admin._send_request(DeleteGroupsRequest([group]), coordinator)
        for _group, error in response.results:
            if error == _NON_EMPTY_GROUP:
                return False
            if error != _GROUP_ID_NOT_FOUND:
                _raise_for(error, group, "DELETE")
        return True

    async def ask(admin: AIOKafkaAdminClient, deadline: float) -> bool:
        return await _retrying(lambda: delete(admin), group, "DELETE", deadline)

    return asyncio.run(_with_admin(kafka, group, ask, timeout_s))


async def _read(admin: AIOKafkaAdminClient, group: str) -> GroupRead:
    coordinator = await admin.find_coordinator(group)
    response = await admin._send_request(DescribeGroupsRequest([group]), coordinator)
    (described,) = response.groups
    error, _name, state, protocol_type = described[:4]
    if error == _GROUP_ID_NOT_FOUND:
        return GroupRead("DEAD", False, (), {}, found=False)
    _raise_for(error, group, "DESCRIBE")
    members = tuple(_member(m, protocol_type) for m in described[5])
    committed = await _offsets(admin, group, "DESCRIBE")
    found = not (state == "Dead" and not committed)
    return GroupRead(
        _STATES.get(state, "UNKNOWN"), protocol_type == "", members, committed, found=found
    )


def _member(member: tuple[Any, ...], protocol_type: str) -> GroupMember:
    # (member_id, [group_instance_id from v4,] client_id, client_host, metadata, assignment)
    member_id, client_id, host, assignment = member[0], member[-4], member[-3], member[-1]
    partitions: list[TP] = []
    if protocol_type == "consumer" and assignment:
        decoded = ConsumerProtocolMemberAssignment.decode(assignment)
        partitions = [(topic, p) for topic, parts in decoded.assignment for p in parts]
    return GroupMember(member_id, client_id, host, tuple(sorted(partitions)))


async def _offsets(admin: AIOKafkaAdminClient, group: str, operation: str) -> dict[TP, int]:
    coordinator = await admin.find_coordinator(group)
    # The admin client's own list_consumer_group_offsets ignores the answer's top-level error
    # (a refused group reads as "no offsets"), so the request is sent here.
    response = await admin._send_request(OffsetFetchRequest(group, None), coordinator)
    _raise_for(getattr(response, "error_code", 0), group, operation)
    offsets: dict[TP, int] = {}
    for topic, partitions in response.topics:
        for partition, offset, _metadata, error in partitions:
            if not error and offset >= 0:  # a partition error is that partition's, not the group's
                offsets[(topic, partition)] = offset
    return offsets


async def _retrying(
    ask: Callable[[], Awaitable[_T]], group: str, operation: str, deadline: float
) -> _T:
    """`ask()` again while the coordinator moves or loads, until `deadline` (monotonic)."""
    while True:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                return await ask()
        except GroupAuthorizationFailedError as exc:
            raise KafkaAuthorizationError("group", group, operation) from exc
        except (*_RETRIABLE, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise KafkaUnavailableError(
                    f"the coordinator of group {group} did not answer in time: {type(exc).__name__}"
                ) from exc
            await asyncio.sleep(0.2)
        except KafkaError as exc:
            raise KafkaUnavailableError(f"group {group}: {type(exc).__name__}") from exc


async def _with_admin(
    kafka: KafkaSettings,
    what: str,
    ask: Callable[[AIOKafkaAdminClient, float], Awaitable[_T]],
    timeout_s: float,
) -> _T:
    deadline = time.monotonic() + timeout_s
    config: dict[str, Any] = {
        **kafka.aiokafka_config(),
        "request_timeout_ms": max(1000, int(timeout_s * 1000)),
    }
    admin = AIOKafkaAdminClient(**config)
    try:
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await admin.start()
        except (KafkaError, TimeoutError) as exc:
            raise KafkaUnavailableError(
                f"Kafka did not answer for group(s) {what}: {type(exc).__name__}"
            ) from exc
        return await ask(admin, deadline)
    finally:
        await admin.close()


def _raise_for(error_code: int, group: str, operation: str) -> None:
    if not error_code:
        return
    error = for_code(error_code)
    if error is GroupAuthorizationFailedError:
        raise KafkaAuthorizationError("group", group, operation)
    raise error(f"group {group}")
