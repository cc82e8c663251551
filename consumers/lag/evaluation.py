"""The status of one partition from its window of samples, pure (the rules are in the package
docstring, `consumers.lag`).

    status, reason = evaluate_partition(samples, current, owned=True, min_samples=3)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from bus.records.lag import Status
from consumers.lag.model import Sample

__all__ = ["evaluate_partition"]


def evaluate_partition(
    history: Sequence[Sample], current: Sample | None, owned: bool, min_samples: int
) -> tuple[Status, str]:
    """The status of one partition (rules 1 to 9 of the module docstring) and why.

    `history`: stored samples inside the window, oldest first; `current`: this refresh's
    observation (None without a committed offset); `owned`: a live member holds the partition.

        evaluate_partition([Sample(0, 5, 9), Sample(15, 5, 12)], Sample(30, 5, 20), False, 3)
        # (Status.STOP, "...")
    """
    if current is None:
        return Status.OK, "no committed offset"
    window = [*history, current]
    highest = max(s.committed for s in window)
    if current.committed < highest:
        return Status.REWIND, f"committed offset went back from {highest} to {current.committed}"
    if current.lag == 0:
        return Status.OK, "caught up"
    if len(window) < min_samples:
        return Status.OK, f"lag {current.lag}; judged after {min_samples} samples"
    if any(s.lag == 0 for s in window):
        return Status.OK, f"lag {current.lag}; caught up within the window"
    span = current.at - window[0].at
    if all(s.committed == current.committed for s in window):
        grew = current.end - window[0].end
        if not owned and grew > 0:
            return Status.STOP, (
                f"no consumer: offset {current.committed} unchanged for {span:.0f} s while "
                f"{grew} records arrived (lag {current.lag})"
            )
        if owned:
            return Status.STALL, (
                f"owned but stuck at offset {current.committed} for {span:.0f} s "
                f"(lag {current.lag})"
            )
        return Status.STALL, (
            f"backlog of {current.lag} untouched for {span:.0f} s; no consumer, no new records"
        )
    lags = [s.lag for s in window]
    if all(b >= a for a, b in itertools.pairwise(lags)) and lags[-1] > lags[0]:
        return Status.WARN, f"consuming but falling behind: lag {lags[0]} -> {lags[-1]}"
    return Status.OK, f"consuming (lag {current.lag})"
