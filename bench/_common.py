"""What every benchmark shares: a broker to run against and a percentile."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

from bus.localkafka import LocalKafka
from bus.settings import KafkaSettings

__all__ = ["kafka", "percentile"]


@contextlib.contextmanager
def kafka() -> Iterator[KafkaSettings]:
    """KAFKA_BOOTSTRAP_SERVERS when set, else a local broker; topics under a fresh prefix."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaSettings(bootstrap_servers=external, topic_prefix=prefix)
        return
    with LocalKafka() as broker:
        yield KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]
