"""Consumer lag monitor. Reads, for each watched consumer group, the committed offsets and the
group's state and members (`bus.groups.read_groups`, over aiokafka: librdkafka's group admin
calls can crash the process while a coordinator loads) and the log start and end of each
partition (AdminClient `list_offsets`), then
the timestamp of the record at each committed offset that has lag (one reused `assign`+`seek`
consumer, cached by topic, partition and offset). Reads and writes `dastra.lag-window.v1`
(compacted): the evaluation window and each group's last status, so a restart keeps both.
Produces `LagSnapshot`s: per partition the committed offset, log start and end, lag, time lag
(age of the oldest unconsumed record; 0 when caught up), owner and status; per group its state,
members, totals, status (the worst of its partitions) and status changes since the last refresh.

    with LagMonitor(settings.kafka, settings.lag) as monitor:
        snapshot = monitor.refresh()

Watched groups (`GroupSelection`): the names given (`--group`, `LAG_GROUPS`), every group
(`--all`), or by default the project's groups: those whose name starts with
KAFKA_TOPIC_PREFIX + "dastra" (`project_group_prefix`).

Statuses, idle-aware (Burrow's names, not its blind spot for quiet topics). The window W of a
partition is its stored samples (committed offset, log end) of the last `window_s` seconds, at
most one per `sample_interval_s`, plus the current observation. The first matching rule wins:

1. OK      no committed offset yet (nothing to judge).
2. REWIND  the committed offset is below the highest one in W: it went back and has not caught
           up with where it was (an offset reset, a replay).
3. OK      lag is 0 now (caught up, however quiet the topic; never STOP).
4. OK      W holds fewer than `min_samples` samples (not enough history to judge yet).
5. OK      lag was 0 in some sample of W (caught up recently; Burrow's rule).
6. STOP    the committed offset is the same in all of W, lag > 0 throughout, no live member of
           the group owns the partition, and the log end grew during W: nobody consumes while
           records keep arriving.
7. STALL   the committed offset is the same in all of W and lag > 0 throughout, otherwise: a
           live member owns the partition but does not advance (stuck on a record, committing
           the same offset again and again: the Faust "commit offset not advancing" livelock),
           or nobody owns it and the backlog sits still while the log is quiet.
8. WARN    the committed offset advanced during W but the lag never decreased from one sample
           to the next and ended higher than it started: the consumer falls behind.
9. OK      otherwise (consuming; lag goes down or holds).

Severity, in `Status.code` order: OK 0 < WARN 1 < REWIND 2 < STALL 3 < STOP 4 < NOTFOUND 5
(a group asked for by name that does not exist). A group takes its worst partition's status.

Why ownership separates STALL from STOP: the admin API returns committed offsets but not when
they were committed (Burrow reads commit times from `__consumer_offsets`, which managed clusters
do not let clients read). "Committing the same offset" and "not committing" look the same in
the offsets; what differs is whether a live member holds the partition.

The package, one concern per module: `model` (what a snapshot holds), `evaluation` (the rules
above, pure), `window` (the window and its topic), `monitor` (reading Kafka, `LagMonitor`),
`web` and `page` (`lag serve`), `settings` (LAG_*).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bus.records.lag import LagWindowKey, LagWindowRecord, Status, StatusRecord, WindowRecord
    from consumers.lag.evaluation import evaluate_partition
    from consumers.lag.model import (
        GroupLag,
        GroupSelection,
        LagSnapshot,
        LagUnavailableError,
        PartitionLag,
        Sample,
        StatusChange,
        project_group_prefix,
    )
    from consumers.lag.monitor import LagMonitor
    from consumers.lag.window import KafkaWindowStore, LagWindow, WindowStore

# Imported when first used, not with the package: the settings of every role import
# `consumers.lag.settings`, and the CLI should not load the monitor (aiokafka) to read them.
_EXPORTS = {
    "LagWindowKey": "bus.records.lag",
    "LagWindowRecord": "bus.records.lag",
    "Status": "bus.records.lag",
    "StatusRecord": "bus.records.lag",
    "WindowRecord": "bus.records.lag",
    "evaluate_partition": "consumers.lag.evaluation",
    "GroupLag": "consumers.lag.model",
    "GroupSelection": "consumers.lag.model",
    "LagSnapshot": "consumers.lag.model",
    "LagUnavailableError": "consumers.lag.model",
    "PartitionLag": "consumers.lag.model",
    "Sample": "consumers.lag.model",
    "StatusChange": "consumers.lag.model",
    "project_group_prefix": "consumers.lag.model",
    "LagMonitor": "consumers.lag.monitor",
    "KafkaWindowStore": "consumers.lag.window",
    "LagWindow": "consumers.lag.window",
    "WindowStore": "consumers.lag.window",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "GroupLag",
    "GroupSelection",
    "KafkaWindowStore",
    "LagMonitor",
    "LagSnapshot",
    "LagUnavailableError",
    "LagWindow",
    "LagWindowKey",
    "LagWindowRecord",
    "PartitionLag",
    "Sample",
    "Status",
    "StatusChange",
    "StatusRecord",
    "WindowRecord",
    "WindowStore",
    "evaluate_partition",
    "project_group_prefix",
]
