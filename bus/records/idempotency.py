"""The webhook's Idempotency-Key records (dastra.webhook-idempotency.v1).

IdempotencyRecord.model_validate_json(value)
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["IdempotencyRecord"]


class IdempotencyRecord(BaseModel):
    """The value on dastra.webhook-idempotency.v1."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: Literal["claim", "answer", "release"]
    claim_id: str
    command_id: str
    action: str
    fingerprint: str
    at: datetime
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
