"""How to reach Dastra's API (`DASTRA_*`): read once at the entry point, passed to the client.

dastra = DastraSettings(base_url="https://api.dastra.eu", api_key=SecretStr("..."))
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DastraSettings"]


class DastraSettings(BaseSettings):
    """How to reach Dastra's API (`DASTRA_*`). No base URL means: use the embedded sandbox."""

    model_config = SettingsConfigDict(
        env_prefix="DASTRA_", frozen=True, extra="ignore", env_file_encoding="utf-8"
    )

    base_url: str | None = None
    api_key: SecretStr | None = None
    # OAuth2 client credentials: the public and private parts of a Dastra API key.
    client_id: str | None = None
    client_secret: SecretStr | None = None
    token_url: str = "https://account.dastra.eu/connect/token"  # noqa: S105 - a URL
    workspace_id: int | None = None
    # Workspaces the poller watches; empty means just `workspace_id`.
    workspace_ids: list[int] = Field(default_factory=list)
    timeout_s: float = Field(default=30.0, gt=0)
    retry_deadline_s: float = Field(default=60.0, ge=0)
    # Jittered exponential backoff between retries: first ceiling, then doubling up to the max.
    retry_backoff_s: float = Field(default=0.5, gt=0)
    retry_backoff_max_s: float = Field(default=30.0, gt=0)
    rate_limit_per_minute: int = Field(default=500, ge=1)
    rate_limit_per_10_minutes: int = Field(default=10_000, ge=1)
    # The validation key of Dastra's own webhooks (`Dastra-Signature`).
    webhook_signing_key: SecretStr | None = None

    @property
    def uses_sandbox(self) -> bool:
        return self.base_url is None

    def watched_workspaces(self) -> list[int]:
        if self.workspace_ids:
            return list(self.workspace_ids)
        return [self.workspace_id] if self.workspace_id is not None else []
