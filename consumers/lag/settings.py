"""The consumer lag monitor's settings (`LAG_*`).

lag = LagSettings(window_s=60, sample_interval_s=5)
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings

from bus.settings import part_config

__all__ = ["LagSettings"]


class LagSettings(BaseSettings):
    """The consumer lag monitor (`LAG_*`): `dastra-kafka lag` and `dastra-kafka lag serve`."""

    model_config = part_config("LAG_")

    # `lag serve` listens on SERVICE_HOST (127.0.0.1 unless set) and this port.
    port: int = Field(default=8090, ge=1, le=65535)
    # The `cluster_name` label of every metric (kafka-lag-exporter's label).
    cluster_name: str = "default"
    # Groups to watch; empty means the project's groups: every group whose name starts with
    # KAFKA_TOPIC_PREFIX + "dastra". `--group` and `--all` override it.
    groups: list[str] = Field(default_factory=list)
    # How often `lag serve` and `lag --watch` refresh.
    refresh_interval_s: float = Field(default=5.0, gt=0)
    # The evaluation window: samples of the last `window_s` seconds, at most one per
    # `sample_interval_s`; a status other than OK needs `min_samples` of them (the current
    # observation included). Make the window several times the consumers' commit interval.
    window_s: float = Field(default=300.0, gt=0)
    sample_interval_s: float = Field(default=15.0, ge=0)
    min_samples: int = Field(default=3, ge=2)
    # Keep the window in the compacted topic dastra.lag-window.v1 so a restart keeps it.
    persist_window: bool = True
    # Admin requests (and so the wait before exit code 3 when Kafka is unreachable).
    timeout_s: float = Field(default=10.0, gt=0)
    # At most this long per refresh reading the timestamps of the records at committed offsets.
    lookup_timeout_s: float = Field(default=2.0, gt=0)
    # How much lag history the web page charts.
    trend_s: float = Field(default=900.0, gt=0)
    # Optional alert webhook: a JSON POST on every change of a group's status. A secret,
    # because such URLs usually carry a token (Slack, Teams, PagerDuty).
    alert_url: SecretStr | None = None
    alert_max_attempts: int = Field(default=6, ge=1)
    alert_backoff_s: float = Field(default=1.0, gt=0)
    alert_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _check_window(self) -> LagSettings:
        if self.sample_interval_s >= self.window_s:
            raise ValueError(
                f"LAG_SAMPLE_INTERVAL_S ({self.sample_interval_s:g}) must be below "
                f"LAG_WINDOW_S ({self.window_s:g})"
            )
        return self
