"""REST hook settings (`HOOKS_*`): delivery by the dispatcher, URL checks by the webhook.

hooks = HooksSettings(allow_http=True)
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from bus.settings import comma_separated, part_config

__all__ = ["HooksSettings"]


class HooksSettings(BaseSettings):
    """REST hook delivery (`HOOKS_*`): `dastra-kafka hooks`, and the subscribe-time URL checks
    of the webhook service."""

    model_config = part_config("HOOKS_")

    timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # The retry budget of one event to one subscriber: attempts and time, whichever ends first;
    # then the event goes to dastra.dead-letter.v1.
    max_attempts: int = Field(default=10, ge=1)
    retry_deadline_s: float = Field(default=3600.0, gt=0)
    # Jittered exponential backoff: first ceiling, doubling up to the max (Retry-After wins).
    backoff_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    # Deliveries in flight per subscriber, and requests per second per subscriber (Zapier
    # accepts about 30 per second per hook).
    concurrency: int = Field(default=4, ge=1, le=100)
    rate_per_s: float = Field(default=25.0, gt=0)
    # Events read ahead per subscriber (waiting or in flight). When they are all taken, the
    # subscriber's reading pauses: it falls behind on the topics (its lag grows) and catches up
    # later; nothing is dropped. Bounds memory per subscriber together with the fetch size.
    buffer_max: int = Field(default=200, ge=1)
    # Bytes fetched at once per partition for one subscriber (a bigger record is still fetched).
    fetch_partition_bytes: int = Field(default=65536, ge=1024)
    # Egress (SSRF) guard: targets must be https and resolve only to public addresses, unless
    # these networks admit them (e.g. ["10.0.0.0/8"]; tests admit 127.0.0.0/8).
    allow_networks: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = (
        Field(default_factory=list)
    )
    allow_http: bool = False
    # Extra CA certificates to trust for subscriber TLS (PEM file), besides the system ones.
    ca_file: Path | None = None
    # Redirects are followed only to the same scheme, host and port, and only 307/308.
    max_redirects: int = Field(default=3, ge=0, le=10)
    # Where a subscription with no stored position starts: "created" (the first event at or
    # after the subscription's created_at), "latest" (the end of the topics when its first
    # dispatcher joins) or "earliest" (everything the topics still hold).
    start_from: Literal["created", "latest", "earliest"] = "created"
    # Each subscription's position is the consumer group `<group>.<subscription id>`.
    group: str = "dastra-hooks"
    # A dispatcher that dies is replaced in its subscriptions' groups after this long.
    session_timeout_s: float = Field(default=10.0, ge=1)
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no metrics server")

    _split_networks = field_validator("allow_networks", mode="before")(comma_separated)
