"""The whole settings tree, read once at the entry point.

Consumes environment variables (one prefix per part: `KAFKA_*`, `DASTRA_*`, `SERVICE_*`,
`SANDBOX_*`, `LAG_*`, `WORKER_*`, `OTEL_*`, ...) and an optional `.env` file. Produces a frozen
`Settings` tree composed of the parts, each defined next to what it configures; the parts are
passed explicitly to the code that needs them.

    settings = load_settings()            # in the CLI, once
    producer = Producer(settings.kafka.confluent_config())
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.hooks.settings import HooksSettings
from bus.settings import KafkaSettings, PrivacySettings, ServiceSettings
from consumers.lag.settings import LagSettings
from consumers.recipes.settings import RecipesSettings
from consumers.settings import WorkerSettings
from dastra.sandbox.settings import SandboxSettings
from dastra.settings import DastraSettings
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.tracing import TracingSettings
from producers.poller.settings import PollerSettings
from producers.webhook.settings import WebhookSettings

__all__ = ["Settings", "SettingsError", "env_prefixes", "load_settings"]


class Settings(BaseSettings):
    """The whole configuration tree. Build it with `load_settings()`."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    dastra: DastraSettings = Field(default_factory=DastraSettings)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    poller: PollerSettings = Field(default_factory=PollerSettings)
    lag: LagSettings = Field(default_factory=LagSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)
    hooks: HooksSettings = Field(default_factory=HooksSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    recipes: RecipesSettings = Field(default_factory=RecipesSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    studio: StudioSettings = Field(default_factory=StudioSettings)


class SettingsError(ValueError):
    """Invalid configuration. `problems` name the environment variable at fault, never a value
    (a value may be a secret): `["RECIPES_DEADLINE_WARNING_DAYS: Input should be ..."]`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def load_settings(env_file: Path | None = Path(".env")) -> Settings:
    """Read the environment (and `env_file` if it exists) once, into a frozen tree; raises
    `SettingsError` naming every variable at fault.

    settings = load_settings(Path(".env"))
    """
    source = env_file if env_file is not None and env_file.is_file() else None
    parts: dict[str, BaseSettings] = {}
    problems: list[str] = []
    for name, field in Settings.model_fields.items():
        part = field.annotation
        assert isinstance(part, type) and issubclass(part, BaseSettings)
        try:
            parts[name] = part(_env_file=source)
        except ValidationError as exc:
            prefix = str(part.model_config.get("env_prefix", ""))
            for error in exc.errors():
                where = str(error["loc"][0]).upper() if error["loc"] else "*"
                problems.append(f"{prefix}{where}: {error['msg']}")
    if problems:
        raise SettingsError(problems)
    return Settings.model_validate(parts)


def env_prefixes() -> tuple[str, ...]:
    """The environment variable prefix of every part of the settings tree."""
    prefixes = []
    for field in Settings.model_fields.values():
        part = field.annotation
        assert isinstance(part, type) and issubclass(part, BaseSettings)
        prefixes.append(str(part.model_config.get("env_prefix", "")))
    return tuple(prefixes)
