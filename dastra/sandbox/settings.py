"""The local Dastra sandbox's settings (`SANDBOX_*`): `dastra-kafka sandbox`, tests, demo.

sandbox = SandboxSettings(rate_limit=False)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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

    def windows(self) -> list[tuple[int, float]]:
        """The effective rate-limit windows as (limit, period in seconds); empty when off."""
        if not self.rate_limit:
            return []
        if self.rate_limit_windows is not None:
            return [(int(limit), float(period)) for limit, period in self.rate_limit_windows]
        return [(self.rate_limit_per_minute, 60.0), (self.rate_limit_per_10_minutes, 600.0)]
