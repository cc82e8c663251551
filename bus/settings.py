"""Typed settings, read once at the entry point.

Consumes environment variables (one prefix per part: `KAFKA_*`, `DASTRA_*`, `SERVICE_*`,
`SANDBOX_*`, `LAG_*`, `WORKER_*`, ...) and an optional
`.env` file.
Produces a frozen `Settings` tree whose parts are passed explicitly to the code that needs them,
plus the client configuration dicts for librdkafka (confluent-kafka) and aiokafka (Faust).
Secrets are `SecretStr`: they never appear in `repr`, logs or error messages.

    settings = load_settings()            # in cli.py, once
    producer = Producer(settings.kafka.confluent_config())
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import ssl
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bus.topics import ACTIONS, COMMAND_RESULTS, NOTIFICATIONS, RIGHTS_REQUESTS, TASKS

__all__ = [
    "DastraSettings",
    "HooksSettings",
    "KafkaSettings",
    "LagSettings",
    "PayloadMode",
    "PollerSettings",
    "PrivacySettings",
    "RecipesSettings",
    "SandboxSettings",
    "ServiceSettings",
    "Settings",
    "WebhookSettings",
    "WorkerSettings",
    "env_prefixes",
    "load_settings",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix,
        frozen=True,
        extra="ignore",
        env_file_encoding="utf-8",
    )


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (`KAFKA_*`)."""

    model_config = _config("KAFKA_")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "dastra-kafka"
    # Prepended to every topic and group name of the catalogue: isolates tests and lets several
    # deployments share one cluster. Empty in production, so the names are exactly design §2's.
    topic_prefix: str = ""
    # Overrides the replication factor of every topic in topics.yaml (3 on a production cluster).
    replication_factor: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            missing = [
                name
                for name, value in (
                    ("KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                    ("KAFKA_SASL_USERNAME", self.sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.sasl_password),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs {', '.join(missing)}"
                )
        return self

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def confluent_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for Producer, Consumer and AdminClient."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism is not None:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username is not None:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile is not None:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        if self.ssl_certfile is not None:
            conf["ssl.certificate.location"] = str(self.ssl_certfile)
        if self.ssl_keyfile is not None:
            conf["ssl.key.location"] = str(self.ssl_keyfile)
        if self.ssl_key_password is not None:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(overrides)
        return conf

    def ssl_context(self) -> ssl.SSLContext | None:
        """An SSL context for aiokafka and Faust, or None on plaintext listeners."""
        if not self.uses_ssl:
            return None
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile is not None:
            context.load_cert_chain(
                certfile=str(self.ssl_certfile),
                keyfile=str(self.ssl_keyfile) if self.ssl_keyfile else None,
                password=(
                    self.ssl_key_password.get_secret_value() if self.ssl_key_password else None
                ),
            )
        return context

    def aiokafka_config(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka clients (the driver under Faust)."""
        conf: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism is not None:
            conf["sasl_mechanism"] = self.sasl_mechanism
            conf["sasl_plain_username"] = self.sasl_username
            conf["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        context = self.ssl_context()
        if context is not None:
            conf["ssl_context"] = context
        return conf

    def topic(self, name: str) -> str:
        """The physical name of a catalogue topic or group under `topic_prefix`."""
        return f"{self.topic_prefix}{name}"


class DastraSettings(BaseSettings):
    """How to reach Dastra's API (`DASTRA_*`). No base URL means: use the embedded sandbox."""

    model_config = _config("DASTRA_")

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


class ServiceSettings(BaseSettings):
    """Where this process's own servers listen (`SERVICE_*`)."""

    model_config = _config("SERVICE_")

    host: str = "127.0.0.1"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False
    topics_file: Path = Path("topics.yaml")


class SandboxSettings(BaseSettings):
    """The local Dastra sandbox (`SANDBOX_*`): `dastra-kafka sandbox`, tests, demo, benchmarks."""

    model_config = _config("SANDBOX_")

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


class PollerSettings(BaseSettings):
    """The change poller (`POLLER_*`)."""

    model_config = _config("POLLER_")

    # Poll again after this long when the last cycle found changes...
    interval_min_s: float = Field(default=1.0, gt=0)
    # ...and back off, doubling, up to this long while nothing changes.
    interval_max_s: float = Field(default=15.0, gt=0)
    page_size: int = Field(default=500, ge=1, le=500)
    # Events per Kafka transaction: a long backfill commits (and survives a crash) in steps.
    batch_size: int = Field(default=500, ge=1)
    # Where a workspace without a stored cursor starts: "now", "beginning" or an ISO date.
    start_from: str = "now"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no metrics server")
    transaction_timeout_s: float = Field(default=60.0, gt=0)
    # Items can become visible after newer ones (a slow database transaction, skewed clocks):
    # each cycle also re-reads this far behind the cursor and publishes what it had not seen.
    late_window_s: float = Field(default=60.0, ge=0)
    # At most this many recently published ids are remembered for that check.
    late_max_tracked: int = Field(default=5000, ge=0)
    # That re-read runs at most this often per stream (0: every cycle). After a burst of items
    # it reads up to `late_max_tracked` of them again: the poller's main cost, and requests
    # taken from Dastra's rate limit.
    late_every_s: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> PollerSettings:
        if self.interval_max_s < self.interval_min_s:
            raise ValueError("POLLER_INTERVAL_MAX_S must be >= POLLER_INTERVAL_MIN_S")
        if self.start_from not in ("now", "beginning"):
            try:
                datetime.fromisoformat(self.start_from.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("POLLER_START_FROM takes now, beginning or an ISO date") from None
        return self


class LagSettings(BaseSettings):
    """The consumer lag monitor (`LAG_*`): `dastra-kafka lag` and `dastra-kafka lag serve`."""

    model_config = _config("LAG_")

    # `lag serve` listens on SERVICE_HOST (127.0.0.1 unless set) and this port.
    port: int = Field(default=8090, ge=1, le=65535)
    # The `cluster_name` label of every metric (kafka-lag-exporter's label).
    cluster_name: str = "default"
    # Groups to watch; empty means the project's groups: every group whose name starts with
    # KAFKA_TOPIC_PREFIX + "dastra". `--group` and `--all` override it.
    groups: list[str] = Field(default_factory=list)
    # How often `lag serve` and `lag --watch` refresh.
    refresh_interval_s: float = Field(default=5.0, gt=0)
    # The evaluation window: samples of the last `window_s` seconds, at most one per
    # `sample_interval_s`; a status other than OK needs `min_samples` of them (the current
    # observation included). Make the window several times the consumers' commit interval.
    window_s: float = Field(default=300.0, gt=0)
    sample_interval_s: float = Field(default=15.0, ge=0)
    min_samples: int = Field(default=3, ge=2)
    # Keep the window in the compacted topic dastra.lag-window.v1 so a restart keeps it.
    persist_window: bool = True
    # Admin requests (and so the wait before exit code 3 when Kafka is unreachable).
    timeout_s: float = Field(default=10.0, gt=0)
    # At most this long per refresh reading the timestamps of the records at committed offsets.
    lookup_timeout_s: float = Field(default=2.0, gt=0)
    # How much lag history the web page charts.
    trend_s: float = Field(default=900.0, gt=0)
    # Optional alert webhook: a JSON POST on every change of a group's status. A secret,
    # because such URLs usually carry a token (Slack, Teams, PagerDuty).
    alert_url: SecretStr | None = None
    alert_max_attempts: int = Field(default=6, ge=1)
    alert_backoff_s: float = Field(default=1.0, gt=0)
    alert_timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _check_window(self) -> LagSettings:
        if self.sample_interval_s >= self.window_s:
            raise ValueError(
                f"LAG_SAMPLE_INTERVAL_S ({self.sample_interval_s:g}) must be below "
                f"LAG_WINDOW_S ({self.window_s:g})"
            )
        return self


def _list_of_words(value: Any) -> Any:
    # A JSON list, or words separated by commas: WEBHOOK_TOKENS=tok1,tok2 reads naturally.
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [word.strip() for word in text.split(",") if word.strip()]
    return value


class WebhookSettings(BaseSettings):
    """The webhook service (`WEBHOOK_*`): `dastra-kafka webhook`, the HTTP face for Zapier."""

    model_config = _config("WEBHOOK_")

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

    _split_tokens = field_validator("tokens", mode="before")(_list_of_words)

    @property
    def max_record_bytes(self) -> int:
        """The largest command record the webhook produces (1 100 000 by default)."""
        return self.max_body_bytes + self.record_overhead_bytes


class HooksSettings(BaseSettings):
    """REST hook delivery (`HOOKS_*`): `dastra-kafka hooks`, and the subscribe-time URL checks
    of the webhook service."""

    model_config = _config("HOOKS_")

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
    # Events waiting per subscriber; past it, further events go to the dead-letter topic
    # for that subscriber, so one dead subscriber never holds the others (or memory).
    queue_max: int = Field(default=1000, ge=1)
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
    # Where a new consumer group starts: "latest" (no backlog to new subscribers) or "earliest".
    start_from: Literal["latest", "earliest"] = "latest"
    group: str = "dastra-hooks"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no metrics server")

    _split_networks = field_validator("allow_networks", mode="before")(_list_of_words)


class WorkerSettings(BaseSettings):
    """The command agents (`WORKER_*`): `dastra-kafka worker`, the Faust app of consumers/."""

    model_config = _config("WORKER_")

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


PayloadMode = Literal["full", "redacted", "thin", "encrypted"]


class PrivacySettings(BaseSettings):
    """Privacy of the bus (`PRIVACY_*`): how much personal data each topic carries, the keys that
    hash and encrypt it, and erasure. See README "Privacy" and `bus/privacy.py`."""

    model_config = _config("PRIVACY_")

    # Payload mode of each event topic (poller, hook deliveries, samples) and of the agents'
    # results: full (unchanged), redacted (keyed hashes), thin (ids, state, dates + dataref),
    # encrypted (personal fields encrypted per data subject; erasable).
    mode_rights_requests: PayloadMode = "full"
    mode_tasks: PayloadMode = "full"
    mode_results: PayloadMode = "full"
    # Commands the webhook produces, and the agents' dead letters of commands.
    mode_commands: Literal["full", "encrypted"] = "full"
    mode_dead_letters: Literal["full", "encrypted"] = "full"
    # redacted mode: personal fields replaced by HMAC-SHA256 (hash) or left out (remove).
    redaction: Literal["hash", "remove"] = "hash"
    hash_key: SecretStr | None = None
    # Base64 of 32 random bytes (`dastra-kafka privacy keygen`): wraps every data key.
    master_key: SecretStr | None = None
    # Erase a subject when the poller sees their Erasure rights request closed.
    auto_erase: bool = False
    # How long a reader waits for an unknown key id to reach it before calling it erased.
    key_wait_s: float = Field(default=10.0, ge=0)

    @field_validator("master_key")
    @classmethod
    def _check_master_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("PRIVACY_MASTER_KEY must be base64 (of 32 random bytes)") from None
        if len(raw) != 32:
            raise ValueError("PRIVACY_MASTER_KEY must decode to exactly 32 bytes")
        return value

    @field_validator("hash_key")
    @classmethod
    def _check_hash_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("PRIVACY_HASH_KEY must have at least 16 characters")
        return value

    def mode_of(self, topic: str) -> PayloadMode:
        """The payload mode of an event topic or the results topic (catalogue name)."""
        modes: dict[str, PayloadMode] = {
            RIGHTS_REQUESTS: self.mode_rights_requests,
            TASKS: self.mode_tasks,
            COMMAND_RESULTS: self.mode_results,
        }
        return modes.get(topic, "full")

    def master_key_bytes(self) -> bytes | None:
        """The master key, decoded; None when not configured."""
        if self.master_key is None:
            return None
        return base64.b64decode(self.master_key.get_secret_value())

    def hash_key_bytes(self) -> bytes | None:
        """The redaction key as bytes; None when not configured."""
        return None if self.hash_key is None else self.hash_key.get_secret_value().encode()

    @property
    def uses_keys(self) -> bool:
        """Does any mode of this process's settings encrypt (or may erasure run)?"""
        return (
            "encrypted"
            in (
                self.mode_rights_requests,
                self.mode_tasks,
                self.mode_results,
                self.mode_commands,
                self.mode_dead_letters,
            )
            or self.auto_erase
        )


_CommaList = Annotated[list[str], NoDecode, BeforeValidator(_list_of_words)]


class RecipesSettings(BaseSettings):
    """The recipes the worker runs (`RECIPES_*`), and the values recipes read as `settings.*`."""

    model_config = _config("RECIPES_")

    # Recipes switched on (or off) whatever their file says: RECIPES_ENABLE=name1,name2.
    enable: _CommaList = Field(default_factory=list)
    disable: _CommaList = Field(default_factory=list)
    # Directories (or files) of your own recipes, after the shipped ones; a recipe of yours with
    # the name of a shipped one replaces it. RECIPES_DIRS=/etc/dastra-kafka/recipes,./more
    dirs: _CommaList = Field(default_factory=list)
    # Load the recipes shipped in recipes/ (all disabled unless enabled above).
    shipped: bool = True
    # --- read by recipes as settings.<name> ---
    # The DPO's Dastra user id: tasks for the DPO are assigned to them (unassigned when unset).
    dpo_user_id: int | None = Field(default=None, ge=1)
    # The systems an erasure must reach: one task per system.
    erasure_systems: _CommaList = Field(
        default_factory=lambda: ["CRM", "Billing", "E-mail marketing", "Customer support"]
    )
    notifications_topic: str = NOTIFICATIONS
    # Your CRM's topic for messages about rights requests (not in topics.yaml: yours).
    crm_topic: str = "crm.dastra-updates"
    # The processing a newly onboarded vendor is linked to when its event names none.
    vendor_processing_id: str | None = None
    # A rights request this close to its deadline (days) and not closed gets escalated.
    deadline_warning_days: int = Field(default=5, ge=0)
    # Free values for your own recipes: RECIPES_VARS='{"team": "privacy"}' -> settings.vars.team
    vars: dict[str, Any] = Field(default_factory=dict)
    # --- how the worker runs them ---
    # How often periodic recipes (schedule) look at Dastra.
    schedule_interval_s: float = Field(default=3600.0, gt=0)
    # How long a step waits for its command's result before the run fails.
    step_timeout_s: float = Field(default=600.0, gt=0)
    # Trigger records taken from Kafka and not finished; the recipe agents stop reading beyond.
    max_in_flight: int = Field(default=500, ge=1)
    # How long a worker may take to read dastra.recipe-runs.v1 to its end after an assignment.
    state_timeout_s: float = Field(default=120.0, gt=0)

    def expression_settings(self) -> dict[str, Any]:
        """What recipes see as `settings` in their expressions."""
        return {
            "dpo_user_id": self.dpo_user_id,
            "erasure_systems": list(self.erasure_systems),
            "notifications_topic": self.notifications_topic,
            "crm_topic": self.crm_topic,
            "vendor_processing_id": self.vendor_processing_id,
            "deadline_warning_days": self.deadline_warning_days,
            "vars": dict(self.vars),
        }


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


def load_settings(env_file: Path | None = Path(".env")) -> Settings:
    """Read the environment (and `env_file` if it exists) once, into a frozen tree.

    settings = load_settings(Path(".env"))
    """
    source = env_file if env_file is not None and env_file.is_file() else None
    parts: dict[str, BaseSettings] = {}
    for name, field in Settings.model_fields.items():
        part = field.annotation
        assert isinstance(part, type) and issubclass(part, BaseSettings)
        parts[name] = part(_env_file=source)
    return Settings.model_validate(parts)


def env_prefixes() -> tuple[str, ...]:
    """The environment variable prefix of every part of the settings tree."""
    prefixes = []
    for field in Settings.model_fields.values():
        part = field.annotation
        assert isinstance(part, type) and issubclass(part, BaseSettings)
        prefixes.append(str(part.model_config.get("env_prefix", "")))
    return tuple(prefixes)
