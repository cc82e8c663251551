"""The webhook service's settings (`WEBHOOK_*`).

webhook = WebhookSettings(tokens=[SecretStr("t")])
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from bus.settings import comma_separated, part_config

__all__ = ["WebhookSettings"]


class WebhookSettings(BaseSettings):
    """The webhook service (`WEBHOOK_*`): `dastra-kafka webhook`, the HTTP face for Zapier."""

    model_config = part_config("WEBHOOK_")

    # Listens on SERVICE_HOST (127.0.0.1 unless set) and this port.
    port: int = Field(default=8080, ge=0, le=65535)
    # Accepted API tokens (`Authorization: Bearer <token>` or `X-API-Key: <token>`): a JSON list
    # or comma-separated. Several tokens allow rotation and one token per client.
    tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # A larger body gets 413. Its command record (the body re-encoded, CloudEvent headers, key)
    # may take up to this plus WEBHOOK_RECORD_OVERHEAD_BYTES (the producer's message.max.bytes);
    # the command topics (max.message.bytes) and WORKER_MAX_RECORD_BYTES take that much.
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    record_overhead_bytes: int = Field(default=51_424, ge=1024)
    # `?wait=N` is capped here: Zapier gives an action 30 s in all.
    wait_max_s: float = Field(default=25.0, ge=0, le=25)
    # How long a repeat with the same Idempotency-Key gets the first answer.
    idempotency_retention_s: float = Field(default=86_400.0, gt=0)
    # How long a replica's claim on an Idempotency-Key holds before another may take it over.
    idempotency_lease_s: float = Field(default=15.0, gt=0)
    # A record the broker has not acknowledged by then is given up: 503 with Retry-After.
    kafka_timeout_s: float = Field(default=5.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)
    # Command results kept in memory for `?wait` (the newest ones).
    results_cache: int = Field(default=10_000, ge=100)
    # `GET /v1/hooks/samples/{event}` reads back at most this many records per partition.
    samples_scan: int = Field(default=200, ge=1, le=10_000)

    _split_tokens = field_validator("tokens", mode="before")(comma_separated)

    @property
    def max_record_bytes(self) -> int:
        """The largest command record the webhook produces (1 100 000 by default)."""
        return self.max_body_bytes + self.record_overhead_bytes
