"""The studio's settings (`STUDIO_*`).

studio = StudioSettings(tokens=[SecretStr("editor")], read_tokens=[SecretStr("viewer")])
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from bus.settings import comma_separated, part_config

__all__ = ["StudioSettings"]


class StudioSettings(BaseSettings):
    """The studio's API (`STUDIO_*`): `dastra-kafka studio`."""

    model_config = part_config("STUDIO_")

    # Listens on SERVICE_HOST (127.0.0.1 unless set) and this port.
    port: int = Field(default=8070, ge=0, le=65535)
    # Editor tokens (may save, enable, disable, delete, import), as the webhook's:
    # `Authorization: Bearer <token>` or `X-API-Key: <token>`; a JSON list or comma-separated.
    tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Read-only tokens (list, get, validate, export, dry-run): a save gets 403.
    read_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # A larger request body gets 413.
    max_body_bytes: int = Field(default=262_144, ge=1024)
    # A save the broker has not acknowledged by then is given up: 503 with Retry-After.
    kafka_timeout_s: float = Field(default=5.0, gt=0)
    # How long reading dastra.recipes.v1 to its end (at start, and after a save) may take.
    read_timeout_s: float = Field(default=30.0, gt=0)

    _split = field_validator("tokens", "read_tokens", mode="before")(comma_separated)
