"""What the lag monitor reports: the watched groups, each partition's and group's lag and
status, the snapshot of one refresh, and the samples of the window.

    selection = GroupSelection(names=("dastra-agents",))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bus.errors import KafkaUnavailableError
from bus.groups import TP, GroupMember
from bus.records.lag import Status
from bus.settings import KafkaSettings
from consumers.lag.settings import LagSettings

__all__ = [
    "TP",
    "Clock",
    "GroupLag",
    "GroupSelection",
    "LagSnapshot",
    "LagUnavailableError",
    "PartitionLag",
    "Sample",
    "StatusChange",
    "WindowKey",
    "project_group_prefix",
    "round_or_none",
]


Clock = Callable[[], float]


WindowKey = tuple[str, str, int]  # group, topic, partition


class LagUnavailableError(KafkaUnavailableError):
    """Kafka did not answer the monitor's admin requests in time (a `KafkaUnavailableError`
    of bus/errors.py, so a `BusError` and, as before, a RuntimeError)."""


class Sample(NamedTuple):
    """One observation of a partition: when (monitor clock, s), committed offset, log end."""

    at: float
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


def project_group_prefix(kafka: KafkaSettings) -> str:
    """The prefix of the project's own consumer groups: KAFKA_TOPIC_PREFIX + "dastra"."""
    return kafka.topic("dastra")


@dataclass(frozen=True)
class GroupSelection:
    """Which groups to watch: `names` exactly, `all_groups`, else names starting with `prefix`."""

    names: tuple[str, ...] = ()
    all_groups: bool = False
    prefix: str = "dastra"

    @classmethod
    def of(
        cls,
        kafka: KafkaSettings,
        lag: LagSettings,
        names: Sequence[str] = (),
        all_groups: bool = False,
    ) -> GroupSelection:
        """The CLI's choice (`--group`, `--all`), else LAG_GROUPS, else the project's groups."""
        chosen = tuple(names) or (() if all_groups else tuple(lag.groups))
        return cls(names=chosen, all_groups=all_groups, prefix=project_group_prefix(kafka))

    def describe(self) -> str:
        if self.names:
            return "groups " + ", ".join(self.names)
        if self.all_groups:
            return "every consumer group"
        return f"groups whose name starts with {self.prefix!r}"


@dataclass(frozen=True)
class PartitionLag:
    """One partition of one group. `lag` and `time_lag_s` are None when unknown."""

    topic: str
    partition: int
    committed: int | None
    log_start: int | None
    log_end: int | None
    lag: int | None
    time_lag_s: float | None
    # The offset of the record whose timestamp gave the time lag: above `committed` when the
    # records at the committed offset were deleted (retention) or compacted away.
    oldest_offset: int | None
    status: Status
    reason: str
    consumer_id: str = ""
    client_id: str = ""
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "log_start": self.log_start,
            "log_end": self.log_end,
            "lag": self.lag,
            "time_lag_s": round_or_none(self.time_lag_s),
            "oldest_offset": self.oldest_offset,
            "status": self.status.value,
            "status_code": self.status.code,
            "reason": self.reason,
            "consumer_id": self.consumer_id,
            "client_id": self.client_id,
            "host": self.host,
        }


@dataclass(frozen=True)
class StatusChange:
    """A group's status changed between two refreshes (or since the last run)."""

    group: str
    previous: Status | None
    status: Status
    reason: str
    at: float


@dataclass(frozen=True)
class GroupLag:
    """One consumer group: state, members, partitions, and its worst partition's status."""

    group: str
    state: str
    simple: bool
    members: tuple[GroupMember, ...]
    partitions: tuple[PartitionLag, ...]
    status: Status
    reason: str
    status_since: float | None = None

    @property
    def lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)

    @property
    def max_lag(self) -> int:
        return max((p.lag or 0 for p in self.partitions), default=0)

    @property
    def max_time_lag_s(self) -> float:
        return max((p.time_lag_s or 0.0 for p in self.partitions), default=0.0)

    @property
    def topics(self) -> dict[str, int]:
        """Lag summed per topic."""
        sums: dict[str, int] = {}
        for p in self.partitions:
            sums[p.topic] = sums.get(p.topic, 0) + (p.lag or 0)
        return sums

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "simple": self.simple,
            "status": self.status.value,
            "status_code": self.status.code,
            "reason": self.reason,
            "status_since": self.status_since,
            "lag": self.lag,
            "max_lag": self.max_lag,
            "max_time_lag_s": round_or_none(self.max_time_lag_s),
            "topics": self.topics,
            "members": [
                {
                    "consumer_id": m.member_id,
                    "client_id": m.client_id,
                    "host": m.host,
                    "partitions": [{"topic": t, "partition": p} for t, p in m.partitions],
                }
                for m in self.members
            ],
            "partitions": [p.to_dict() for p in self.partitions],
        }


@dataclass(frozen=True)
class LagSnapshot:
    """Everything one refresh saw."""

    cluster: str
    taken_at: float
    poll_ms: float
    selection: str
    groups: tuple[GroupLag, ...]
    changes: tuple[StatusChange, ...] = ()

    def worst(self) -> Status:
        return max((g.status for g in self.groups), key=lambda s: s.code, default=Status.OK)

    def group(self, name: str) -> GroupLag:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "taken_at": self.taken_at,
            "poll_ms": round(self.poll_ms, 2),
            "selection": self.selection,
            "status": self.worst().value,
            "status_code": self.worst().code,
            "groups": [g.to_dict() for g in self.groups],
            "changes": [
                {
                    "group": c.group,
                    "previous": c.previous.value if c.previous else None,
                    "status": c.status.value,
                    "reason": c.reason,
                    "at": c.at,
                }
                for c in self.changes
            ],
        }


def round_or_none(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
