"""The settings of the bus layer, and the helpers every part of the settings tree shares.

Consumes environment variables `KAFKA_*`, `SERVICE_*` and `PRIVACY_*` (and a `.env` file, when
the entry point passes one). Produces frozen settings parts whose `confluent_config()` and
`aiokafka_config()` are the client dicts for librdkafka and aiokafka (Faust). The whole tree is
composed in `dastra_kafka/settings.py`; every other part lives next to what it configures.
Secrets are `SecretStr`: they never appear in `repr`, logs or error messages.

    kafka = KafkaSettings()
    producer = Producer(kafka.confluent_config())
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bus.topics import COMMAND_RESULTS, RIGHTS_REQUESTS, TASKS

__all__ = [
    "KafkaSettings",
    "PayloadMode",
    "PrivacySettings",
    "ServiceSettings",
    "comma_separated",
    "part_config",
]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
# AWS_MSK_IAM is OAUTHBEARER on the wire, with a token signed by AWS's MSK IAM signer.
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]


def part_config(prefix: str) -> SettingsConfigDict:
    """The model config of one part of the settings tree: its prefix, frozen, unknowns ignored."""
    return SettingsConfigDict(
        env_prefix=prefix,
        frozen=True,
        extra="ignore",
        env_file_encoding="utf-8",
    )


# A KAFKA_CLIENT_CONFIG key naming one of these holds a secret: its value is a SecretStr.
_SECRET_WORDS = ("password", "secret", "token", "key")

# KAFKA_CLIENT_CONFIG properties aiokafka has an equivalent for, on every aiokafka client the
# project builds (consumer, producer, admin). The others are librdkafka-only.
_AIOKAFKA_EQUIVALENTS = {
    "request.timeout.ms": "request_timeout_ms",
    "metadata.max.age.ms": "metadata_max_age_ms",
    "connections.max.idle.ms": "connections_max_idle_ms",
    "retry.backoff.ms": "retry_backoff_ms",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
}


def _key_values(value: Any, variable: str) -> Any:
    """A JSON object, or `key=value,key=value` (a value holding a comma needs the JSON form)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            raise ValueError(f"{variable} is not a valid JSON object") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"{variable} must be a JSON object or key=value,key=value")
        return parsed
    pairs = {}
    for number, item in enumerate(text.split(","), start=1):
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            # The item is not echoed: it may be a secret missing its "key=".
            raise ValueError(
                f"{variable} must be a JSON object or key=value,key=value "
                f"(item {number} is not key=value)"
            )
        pairs[key.strip()] = val.strip()
    return pairs


def _as_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _client_properties(value: Any) -> Any:
    """KAFKA_CLIENT_CONFIG as a dict; secret-looking keys become SecretStr so no repr, log or
    JSON dump shows them."""
    value = _key_values(value, "KAFKA_CLIENT_CONFIG")
    if not isinstance(value, dict):
        raise ValueError("KAFKA_CLIENT_CONFIG must be a JSON object or key=value,key=value")
    properties: dict[str, str | SecretStr] = {}
    for key, val in value.items():
        if isinstance(val, SecretStr):
            properties[str(key)] = val
            continue
        secret = any(word in str(key).lower() for word in _SECRET_WORDS)
        properties[str(key)] = SecretStr(_as_text(val)) if secret else _as_text(val)
    return properties


def comma_separated(value: Any) -> Any:
    """A JSON list, or words separated by commas: WEBHOOK_TOKENS=tok1,tok2 reads naturally."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [word.strip() for word in text.split(",") if word.strip()]
    return value


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (`KAFKA_*`)."""

    model_config = part_config("KAFKA_")

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
    # The codec of every batch the project writes. gzip is the one codec every mainstream client
    # reads without a plugin (KafkaJS reads no other); the project's own consumers read them all.
    compression_type: Compression = "gzip"
    # min.insync.replicas of every topic `topics apply` creates or updates (2 with 3 replicas).
    min_insync_replicas: int | None = Field(default=None, ge=1)
    # SASL/OAUTHBEARER with OIDC client credentials (KAFKA_SASL_MECHANISM=OAUTHBEARER).
    sasl_oauthbearer_token_endpoint_url: str | None = None
    sasl_oauthbearer_client_id: str | None = None
    sasl_oauthbearer_client_secret: SecretStr | None = None
    sasl_oauthbearer_scope: str | None = None
    # SASL extensions sent with the token (Confluent Cloud: logicalCluster, identityPoolId).
    sasl_oauthbearer_extensions: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Amazon MSK IAM (KAFKA_SASL_MECHANISM=AWS_MSK_IAM): the cluster's AWS region; credentials
    # come from the AWS environment (variables, profile, instance or task role).
    sasl_aws_region: str | None = None
    # Extra librdkafka properties for every client (KAFKA_CLIENT_CONFIG), see README.
    client_config: Annotated[dict[str, str | SecretStr], NoDecode] = Field(default_factory=dict)
    _token_provider: Any = PrivateAttr(default=None)

    @field_validator("client_config", mode="before")
    @classmethod
    def _parse_client_config(cls, value: Any) -> Any:
        return _client_properties(value)

    @field_validator("sasl_oauthbearer_extensions", mode="before")
    @classmethod
    def _parse_extensions(cls, value: Any) -> Any:
        pairs = _key_values(value, "KAFKA_SASL_OAUTHBEARER_EXTENSIONS")
        if isinstance(pairs, dict):
            return {str(key): _as_text(val) for key, val in pairs.items()}
        return pairs

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_"):
            needed: list[tuple[str, Any]] = [("KAFKA_SASL_MECHANISM", self.sasl_mechanism)]
            if self.sasl_mechanism == "OAUTHBEARER":
                needed += [
                    (
                        "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL",
                        self.sasl_oauthbearer_token_endpoint_url,
                    ),
                    ("KAFKA_SASL_OAUTHBEARER_CLIENT_ID", self.sasl_oauthbearer_client_id),
                    ("KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", self.sasl_oauthbearer_client_secret),
                ]
            elif self.sasl_mechanism == "AWS_MSK_IAM":
                needed += [("KAFKA_SASL_AWS_REGION", self.sasl_aws_region)]
            else:
                needed += [
                    ("KAFKA_SASL_USERNAME", self.sasl_username),
                    ("KAFKA_SASL_PASSWORD", self.sasl_password),
                ]
            missing = [name for name, value in needed if value is None]
            if missing:
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs {', '.join(missing)}"
                )
        elif self.sasl_mechanism in ("OAUTHBEARER", "AWS_MSK_IAM"):
            raise ValueError(
                f"KAFKA_SASL_MECHANISM={self.sasl_mechanism} needs KAFKA_SECURITY_PROTOCOL="
                "SASL_SSL (or SASL_PLAINTEXT)"
            )
        for key, name in _AIOKAFKA_EQUIVALENTS.items():
            value = self.client_config.get(key)
            if name.endswith("_ms") and isinstance(value, str) and not value.isdigit():
                raise ValueError(f"KAFKA_CLIENT_CONFIG: {key} must be a whole number of ms")
        return self

    @property
    def uses_oauthbearer(self) -> bool:
        """OAUTHBEARER on the wire: OIDC client credentials or Amazon MSK IAM."""
        return self.security_protocol.startswith("SASL_") and self.sasl_mechanism in (
            "OAUTHBEARER",
            "AWS_MSK_IAM",
        )

    def token_provider(self) -> Any:
        """aiokafka's `sasl_oauth_token_provider` for OAUTHBEARER or AWS_MSK_IAM (one per
        settings object, so every client shares its cached token); None otherwise."""
        if not self.uses_oauthbearer:
            return None
        if self._token_provider is None:
            from bus.oauth import MskIamTokenProvider, OidcTokenProvider

            if self.sasl_mechanism == "AWS_MSK_IAM":
                assert self.sasl_aws_region is not None
                self._token_provider = MskIamTokenProvider(self.sasl_aws_region)
            else:
                assert self.sasl_oauthbearer_token_endpoint_url is not None
                assert self.sasl_oauthbearer_client_id is not None
                assert self.sasl_oauthbearer_client_secret is not None
                self._token_provider = OidcTokenProvider(
                    self.sasl_oauthbearer_token_endpoint_url,
                    self.sasl_oauthbearer_client_id,
                    self.sasl_oauthbearer_client_secret,
                    scope=self.sasl_oauthbearer_scope,
                    extensions=self.sasl_oauthbearer_extensions,
                )
        return self._token_provider

    def client_properties(self) -> dict[str, str]:
        """KAFKA_CLIENT_CONFIG with its secrets revealed: for building clients only."""
        return {
            key: value.get_secret_value() if isinstance(value, SecretStr) else value
            for key, value in self.client_config.items()
        }

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def confluent_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for Producer, Consumer and AdminClient: the settings, then
        KAFKA_CLIENT_CONFIG's extra properties, then the caller's `overrides` (the project's
        own guarantees: idempotence, transactions, isolation, partitioner)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism == "AWS_MSK_IAM":
            from bus.oauth import msk_iam_oauth_cb

            assert self.sasl_aws_region is not None
            conf["sasl.mechanism"] = "OAUTHBEARER"
            conf["oauth_cb"] = msk_iam_oauth_cb(self.sasl_aws_region)
        elif self.sasl_mechanism == "OAUTHBEARER":
            conf["sasl.mechanism"] = "OAUTHBEARER"
            conf["sasl.oauthbearer.method"] = "oidc"
            conf["sasl.oauthbearer.token.endpoint.url"] = self.sasl_oauthbearer_token_endpoint_url
            conf["sasl.oauthbearer.client.id"] = self.sasl_oauthbearer_client_id
            if self.sasl_oauthbearer_client_secret is not None:
                conf["sasl.oauthbearer.client.secret"] = (
                    self.sasl_oauthbearer_client_secret.get_secret_value()
                )
            if self.sasl_oauthbearer_scope:
                conf["sasl.oauthbearer.scope"] = self.sasl_oauthbearer_scope
            if self.sasl_oauthbearer_extensions:
                conf["sasl.oauthbearer.extensions"] = ",".join(
                    f"{key}={value}" for key, value in self.sasl_oauthbearer_extensions.items()
                )
        elif self.sasl_mechanism is not None:
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
        conf.update(self.client_properties())
        conf.update(overrides)
        return conf

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration for a Producer: `confluent_config()` plus Kafka's own
        partitioner (murmur2 of the key, as Java clients, Kafka Connect and aiokafka place
        records) and the configured compression. A key lands on the same partition whichever
        client of any language produced it, so per-key order holds across producers."""
        return self.confluent_config(
            **{
                "partitioner": "murmur2_random",
                "compression.type": self.compression_type,
                **overrides,
            }
        )

    def aiokafka_producer_config(self) -> dict[str, Any]:
        """Keyword arguments for an AIOKafkaProducer: `aiokafka_config()` plus the configured
        compression. aiokafka's default partitioner is already Kafka's murmur2."""
        compression = None if self.compression_type == "none" else self.compression_type
        return {**self.aiokafka_config(), "compression_type": compression}

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
        """Keyword arguments for aiokafka clients (the driver under Faust). Of
        KAFKA_CLIENT_CONFIG, only the properties with an aiokafka equivalent on every client
        apply (request, metadata, idle and retry timings; Kerberos service name)."""
        conf: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        for key, value in self.client_properties().items():
            name = _AIOKAFKA_EQUIVALENTS.get(key)
            if name is not None:
                conf[name] = value if name.startswith("sasl_") else int(value)
        if self.uses_oauthbearer:
            conf["sasl_mechanism"] = "OAUTHBEARER"
            conf["sasl_oauth_token_provider"] = self.token_provider()
        elif self.sasl_mechanism is not None:
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


class ServiceSettings(BaseSettings):
    """Where this process's own servers listen (`SERVICE_*`)."""

    model_config = part_config("SERVICE_")

    host: str = "127.0.0.1"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False
    topics_file: Path = Path("topics.yaml")


PayloadMode = Literal["full", "redacted", "thin", "encrypted"]


class PrivacySettings(BaseSettings):
    """Privacy of the bus (`PRIVACY_*`): how much personal data each topic carries, the keys that
    hash and encrypt it, and erasure. See README "Privacy" and `bus/privacy/`."""

    model_config = part_config("PRIVACY_")

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
