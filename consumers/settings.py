"""The command agents' settings (`WORKER_*`), and the parts of the settings tree a worker reads.

worker = WorkerSettings(concurrency=4)
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from bus.settings import KafkaSettings, PrivacySettings, ServiceSettings, part_config
from bus.topics import ACTIONS
from consumers.recipes.settings import RecipesSettings
from dastra.settings import DastraSettings

__all__ = ["WorkerConfig", "WorkerSettings"]


class WorkerSettings(BaseSettings):
    """The command agents (`WORKER_*`): `dastra-kafka worker`, the Faust app of consumers/."""

    model_config = part_config("WORKER_")

    # The Faust app id: its consumer group, under KAFKA_TOPIC_PREFIX like every group name.
    app_id: str = Field(default="dastra-agents", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    # The Faust web server (/metrics, /ready): loopback unless the operator opens it.
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    # Actions this worker runs; empty means all six.
    actions: list[str] = Field(default_factory=list)
    # Commands calling Dastra at once (different keys; one key runs in order).
    concurrency: int = Field(default=16, ge=1, le=1000)
    # Records taken from Kafka and not finished yet; the agents stop reading beyond this.
    max_in_flight: int = Field(default=2000, ge=1)
    # A record value larger than this goes to the dead-letter topic as `oversized`. At least
    # what the webhook produces (WEBHOOK_MAX_BODY_BYTES + WEBHOOK_RECORD_OVERHEAD_BYTES).
    max_record_bytes: int = Field(default=1_100_000, ge=1)
    # Defaults for commands without workspaceId / areaId (else DASTRA_WORKSPACE_ID; the area of
    # a rights request is then the workspace's first area).
    workspace_id: int | None = Field(default=None, ge=1)
    area_id: int | None = Field(default=None, ge=1)
    # At start-up, probe Dastra's filter field casing and filter time zone in the default
    # workspace (dastra.doctor, in the background) and adapt the commands' filters to them.
    detect: bool = True
    # Timeouts, 5xx and 429 are retried with jittered exponential backoff (at least Retry-After)
    # until this long after the first attempt; then a failed result and a dead letter.
    retry_deadline_s: float = Field(default=120.0, gt=0)
    retry_backoff_s: float = Field(default=0.5, gt=0)
    retry_backoff_max_s: float = Field(default=15.0, gt=0)
    # Natural-key look-ups accept objects created this long before the command's record
    # timestamp (clock skew between producers and Dastra).
    lookup_skew_s: float = Field(default=300.0, ge=0)
    # Consumer group timing (a dead worker's partitions move after session_timeout_s).
    session_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    commit_interval_s: float = Field(default=2.0, gt=0)
    # On a rebalance, in-flight commands get this long to finish before they are abandoned (and
    # redelivered to the new owner); on SIGTERM, shutdown_grace_s.
    revoke_grace_s: float = Field(default=5.0, ge=0)
    shutdown_grace_s: float = Field(default=15.0, ge=0)
    # How long a worker may take to read dastra.command-results.v1 to its end (the dedupe index)
    # before it processes newly assigned partitions.
    index_timeout_s: float = Field(default=120.0, gt=0)
    # Faust's data directory (no tables: it stays empty); a temporary directory when unset.
    data_dir: Path | None = None

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        unknown = sorted(set(self.actions) - set(ACTIONS))
        if unknown:
            raise ValueError(
                f"WORKER_ACTIONS: unknown action(s) {', '.join(unknown)}; known: "
                + ", ".join(ACTIONS)
            )
        if self.retry_backoff_max_s < self.retry_backoff_s:
            raise ValueError("WORKER_RETRY_BACKOFF_MAX_S must be >= WORKER_RETRY_BACKOFF_S")
        if self.heartbeat_interval_s >= self.session_timeout_s:
            raise ValueError("WORKER_HEARTBEAT_INTERVAL_S must be below WORKER_SESSION_TIMEOUT_S")
        return self

    def selected_actions(self) -> tuple[str, ...]:
        """The actions to run, in the catalogue's order."""
        return tuple(a for a in ACTIONS if not self.actions or a in self.actions)


class WorkerConfig(Protocol):
    """The parts of the settings tree a worker reads; the shell's `Settings` has them all.

    app = create_app(load_settings())
    """

    @property
    def kafka(self) -> KafkaSettings: ...

    @property
    def dastra(self) -> DastraSettings: ...

    @property
    def service(self) -> ServiceSettings: ...

    @property
    def worker(self) -> WorkerSettings: ...

    @property
    def privacy(self) -> PrivacySettings: ...

    @property
    def recipes(self) -> RecipesSettings: ...
