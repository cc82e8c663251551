"""The local Dastra sandbox's settings (`SANDBOX_*`): `dastra-kafka sandbox`, tests, demo.

sandbox = SandboxSettings(rate_limit=False)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["SandboxSettings"]


class SandboxSettings(BaseSettings):
    """The local Dastra sandbox (`SANDBOX_*`): `dastra-kafka sandbox`, tests, demo, benchmarks."""

    model_config = SettingsConfigDict(
        env_prefix="SANDBOX_", frozen=True, extra="ignore", env_file_encoding="utf-8"
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8800, ge=0, le=65535)
    # A Dastra API key has a public and a private part: X-API-Key takes the private part, the
    # OAuth2 token endpoint takes Basic base64(public:private).
    public_key: str = "sandbox-public-key"
    private_key: SecretStr = SecretStr("sandbox-private-key")
    # Required on /_sandbox/* when set (header X-Sandbox-Admin-Token).
    admin_token: SecretStr | None = None
    token_lifetime_s: int = Field(default=3600, ge=1)
    rate_limit: bool = True
    rate_limit_per_minute: int = Field(default=500, ge=1)
    rate_limit_per_10_minutes: int = Field(default=10_000, ge=1)
    # Explicit (limit, seconds) windows instead of the two above, e.g. [[100, 1.0]] in tests.
    rate_limit_windows: list[tuple[int, float]] | None = None
    # SQLite file that keeps the state across restarts; in memory when unset.
    db: Path | None = None
    workspaces: int = Field(default=1, ge=1, le=50)
    # Rights requests and tasks created in each workspace at start (on an empty state).
    seed_items: int = Field(default=0, ge=0)
    # Strict modes: each reproduces one way the live API may differ where the spec is silent
    # (README "Doctor"). `pascal`: filter fields resolve only spelled in PascalCase.
    filter_case: Literal["any", "pascal"] = "any"
    # Filter dates are read as wall-clock time in this zone, whatever their suffix says.
    tz: str = "UTC"
    # GET .../Tasks hides sub-tasks unless includeChildren=true...
    task_children_hidden: bool = False
    # ...and archived tasks unless archived=true (which then lists every task).
    task_archived_hidden: bool = False
    # A field left out of a POST body takes the .NET default of its type, as ASP.NET binds it: a
    # task without `areaId` (0) is refused, one without `priority` gets the enum's first value.
    dotnet_defaults: bool = False
    # Linking an actor to a processing activity in a role it already has there adds a second
    # link instead of keeping the one (the spec does not say which Dastra does).
    duplicate_links: bool = False
    # Seconds between a creation and its webhook delivery (Dastra's own queue lags 60-120 s).
    webhook_delay_s: float = Field(default=0.0, ge=0.0)

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"SANDBOX_TZ: unknown time zone {value!r}") from None
        return value

    def windows(self) -> list[tuple[int, float]]:
        """The effective rate-limit windows as (limit, period in seconds); empty when off."""
        if not self.rate_limit:
            return []
        if self.rate_limit_windows is not None:
            return [(int(limit), float(period)) for limit, period in self.rate_limit_windows]
        return [(self.rate_limit_per_minute, 60.0), (self.rate_limit_per_10_minutes, 600.0)]
