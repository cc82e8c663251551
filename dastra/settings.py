"""How to reach Dastra's API (`DASTRA_*`): read once at the entry point, passed to the client.

dastra = DastraSettings(base_url="https://api.dastra.eu", api_key=SecretStr("..."))
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["BUDGET_ROLES", "BudgetRole", "DastraSettings"]

# The processes that call Dastra. The recipe runner runs inside the worker processes (its calls
# are theirs); the webhook service and the hook dispatcher never call Dastra.
BudgetRole = Literal["poller", "workers"]
BUDGET_ROLES: tuple[BudgetRole, ...] = ("poller", "workers")


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
    # The API key's limits (Dastra's: 500/min and 10 000/10 min), shared by every process that
    # uses the key: each process takes its share (below) of them.
    rate_limit_per_minute: int = Field(default=500, ge=1)
    rate_limit_per_10_minutes: int = Field(default=10_000, ge=1)
    # Explicit (limit, seconds) windows instead of the two above (tests, benchmarks): [[60, 10]].
    rate_limit_windows: list[tuple[int, float]] | None = None
    # How the key's limits are split between the roles that call Dastra, as weights
    # ("poller=1,workers=3", the default: the poller gets 1/4, 125/min, enough to poll both
    # streams every second; the workers together 3/4).
    budget_shares: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=lambda: {"poller": 1.0, "workers": 3.0}
    )
    # Worker processes sharing the key: the workers' share is divided among them.
    workers: int = Field(default=1, ge=1)
    # This process's role; the `poller` and `worker` verbs set theirs. None: the process is
    # alone on the key and uses all of it (a script of yours can set DASTRA_BUDGET_ROLE).
    budget_role: BudgetRole | None = None
    # The validation key of Dastra's own webhooks (`Dastra-Signature`): the webhook's
    # `signatureKey`. Dastra gives each registered webhook its own key, and a rights request's
    # delivery does not name its workspace: one webhook per workspace (URL with ?workspaceId=)
    # means one key each, listed in DASTRA_WEBHOOK_SIGNING_KEYS (comma-separated).
    webhook_signing_key: SecretStr | None = None
    webhook_signing_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    @field_validator("webhook_signing_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def webhook_keys(self) -> list[SecretStr]:
        """Every key a Dastra webhook delivery may be signed with."""
        first = [self.webhook_signing_key] if self.webhook_signing_key is not None else []
        return first + list(self.webhook_signing_keys)

    @field_validator("budget_shares", mode="before")
    @classmethod
    def _parse_shares(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            return json.loads(text)
        shares: dict[str, str] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            role, sep, weight = part.partition("=")
            if not sep:
                raise ValueError(f"write role=weight, e.g. poller=1,workers=3 (not {part!r})")
            shares[role.strip()] = weight.strip()
        return shares

    @model_validator(mode="after")
    def _check_budget(self) -> DastraSettings:
        unknown = sorted(set(self.budget_shares) - set(BUDGET_ROLES))
        if unknown:
            raise ValueError(
                f"DASTRA_BUDGET_SHARES: unknown role(s) {', '.join(unknown)}; "
                f"the roles are {', '.join(BUDGET_ROLES)}"
            )
        if any(w < 0 for w in self.budget_shares.values()) or not sum(self.budget_shares.values()):
            raise ValueError("DASTRA_BUDGET_SHARES: weights are >= 0 and at least one is > 0")
        if self.budget_role is not None:
            self.process_windows()  # raises when this role's part is under one request
        return self

    def key_windows(self) -> list[tuple[int, float]]:
        """The API key's limits as (limit, period in seconds)."""
        if self.rate_limit_windows is not None:
            return [(int(limit), float(period)) for limit, period in self.rate_limit_windows]
        return [(self.rate_limit_per_minute, 60.0), (self.rate_limit_per_10_minutes, 600.0)]

    def process_windows(self) -> list[tuple[int, float]]:
        """The limits this process keeps to: its role's share of the key's limits, divided
        among `workers` for the workers, rounded down (so all processes together never exceed
        the key's limits). Without a role, the key's limits.

            DastraSettings(budget_role="workers", workers=2).process_windows()
            # [(200, 60.0), (4000, 600.0)]
        """
        windows = self.key_windows()
        if self.budget_role is None:
            return windows
        total = sum(Fraction(str(w)) for w in self.budget_shares.values())
        share = Fraction(str(self.budget_shares.get(self.budget_role, 0))) / total
        if self.budget_role == "workers":
            share /= self.workers
        split = [(int(limit * share), period) for limit, period in windows]
        if any(limit < 1 for limit, _period in split):
            raise ValueError(
                f"the {self.budget_role} role's part of the Dastra rate limit is under one "
                "request per window: raise its weight in DASTRA_BUDGET_SHARES"
                + (" or lower DASTRA_WORKERS" if self.budget_role == "workers" else "")
            )
        return split

    def for_role(self, role: BudgetRole) -> DastraSettings:
        """These settings for a process of `role`; raises ValueError when that role's part of
        the key comes to under one request per window.

            settings.dastra.for_role("poller").process_windows()  # [(100, 60.0), (2000, 600.0)]
        """
        return self.model_validate({**self.model_dump(), "budget_role": role})

    @property
    def uses_sandbox(self) -> bool:
        return self.base_url is None

    def watched_workspaces(self) -> list[int]:
        if self.workspace_ids:
            return list(self.workspace_ids)
        return [self.workspace_id] if self.workspace_id is not None else []
