"""Settings: one tree from the environment; SASL reaches both clients; secrets stay secret."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from pathlib import Path

import pytest
import trustme
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from confluent_kafka import KafkaException, Producer
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from bus.localkafka import LocalKafka
from bus.logs import configure_logging
from bus.settings import KafkaSettings, ServiceSettings
from consumers.settings import WorkerSettings
from dastra_kafka.settings import SettingsError, load_settings
from producers.webhook.settings import WebhookSettings

PASSWORD = "s3cr3t-Pa55word"


def test_environment_and_env_file_build_one_tree(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = tmp_path / ".env"
    env.write_text("KAFKA_BOOTSTRAP_SERVERS=from-file:9092\nDASTRA_WORKSPACE_ID=7\n")
    monkeypatch.setenv("DASTRA_API_KEY", "k-123")
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", "staging.")

    settings = load_settings(env)

    assert settings.kafka.bootstrap_servers == "from-file:9092"
    assert settings.kafka.topic("dastra.tasks.v1") == "staging.dastra.tasks.v1"
    assert settings.dastra.workspace_id == 7
    assert settings.dastra.watched_workspaces() == [7]
    assert settings.dastra.api_key is not None
    assert settings.dastra.api_key.get_secret_value() == "k-123"
    with pytest.raises(ValidationError):
        settings.kafka.bootstrap_servers = "x"  # type: ignore[misc]  # frozen


def test_sasl_settings_reach_both_client_configurations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    kafka = load_settings(None).kafka

    confluent = kafka.confluent_config()
    assert confluent["security.protocol"] == "SASL_SSL"
    assert confluent["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (confluent["sasl.username"], confluent["sasl.password"]) == ("svc", PASSWORD)
    aio = kafka.aiokafka_config()
    assert aio["security_protocol"] == "SASL_SSL"
    assert aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (aio["sasl_plain_username"], aio["sasl_plain_password"]) == ("svc", PASSWORD)
    assert aio["ssl_context"] is not None


def test_sasl_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(SettingsError, match="KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME"):
        load_settings(None)


def test_every_invalid_variable_is_named_and_no_value_is_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECIPES_DEADLINE_WARNING_DAYS", "-1")
    monkeypatch.setenv("POLLER_PAGE_SIZE", "501")
    monkeypatch.setenv("PRIVACY_HASH_KEY", "short-secret")
    with pytest.raises(SettingsError) as raised:
        load_settings(None)
    names = [problem.split(":", 1)[0] for problem in raised.value.problems]
    assert names == ["POLLER_PAGE_SIZE", "PRIVACY_HASH_KEY", "RECIPES_DEADLINE_WARNING_DAYS"]
    assert "short-secret" not in str(raised.value)


def test_secrets_are_absent_from_reprs_and_logs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("DASTRA_API_KEY", "dastra-private-key")
    monkeypatch.setenv("DASTRA_CLIENT_SECRET", "oauth-private-secret")
    settings = load_settings(None)

    configure_logging(ServiceSettings(log_level="debug"))
    logging.getLogger("test").info("settings loaded: %r", settings)
    import structlog

    structlog.get_logger("test").info("loaded", settings=settings, kafka=settings.kafka)

    for text in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        capsys.readouterr().err,
    ):
        for secret in (PASSWORD, "dastra-private-key", "oauth-private-secret"):
            assert secret not in text


@pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")
def test_sasl_plain_authenticates_both_clients_against_a_real_broker() -> None:
    with LocalKafka(sasl_users={"svc": PASSWORD}, quick_jit=True) as broker:
        good = KafkaSettings(
            bootstrap_servers=broker.bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="svc",
            sasl_password=PASSWORD,  # type: ignore[arg-type]
        )
        bad = KafkaSettings(**{**good.model_dump(), "sasl_password": "wrong"})

        assert Producer(good.confluent_config()).list_topics(timeout=20).brokers
        with pytest.raises(KafkaException):
            Producer(bad.confluent_config()).list_topics(timeout=5)

        async def aio(settings: KafkaSettings) -> None:
            producer = AIOKafkaProducer(**settings.aiokafka_config(), request_timeout_ms=5000)
            try:
                await producer.start()
            finally:
                await producer.stop()

        asyncio.run(aio(good))
        with pytest.raises(AIOKafkaError):
            asyncio.run(aio(bad))


def _tls_files(tmp_path: Path, key_password: str) -> tuple[trustme.CA, dict[str, Path]]:
    """A CA (trustme) and a client certificate it issued, with an encrypted private key."""
    ca = trustme.CA()
    client = ca.issue_cert("svc@dastra-kafka.test")
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(key_password.encode()),
    )
    files = {"cafile": tmp_path / "ca.pem", "certfile": tmp_path / "client.pem"}
    files["keyfile"] = tmp_path / "client.key"
    ca.cert_pem.write_to_path(str(files["cafile"]))
    client.cert_chain_pems[0].write_to_path(str(files["certfile"]))
    files["keyfile"].write_bytes(encrypted)
    return ca, files


def _handshake(client_context: ssl.SSLContext, server_context: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS handshake in memory between the two contexts (no socket)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(c_in, c_out, server_hostname="kafka.dastra-kafka.test")
    server = server_context.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client
    raise AssertionError("the TLS handshake did not finish")


def test_ssl_settings_reach_both_client_configurations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca, files = _tls_files(tmp_path, PASSWORD)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    for name, path in files.items():
        monkeypatch.setenv(f"KAFKA_SSL_{name.upper()}", str(path))
    monkeypatch.setenv("KAFKA_SSL_KEY_PASSWORD", PASSWORD)
    kafka = load_settings(None).kafka
    assert PASSWORD not in repr(kafka)

    confluent = kafka.confluent_config()
    assert confluent["security.protocol"] == "SSL"
    assert confluent["ssl.ca.location"] == str(files["cafile"])
    assert confluent["ssl.certificate.location"] == str(files["certfile"])
    assert confluent["ssl.key.location"] == str(files["keyfile"])
    assert confluent["ssl.key.password"] == PASSWORD
    # librdkafka loads the CA, certificate and (encrypted) key when the client is created.
    producer = Producer(confluent)
    del producer
    with pytest.raises(KafkaException, match="ssl"):
        Producer(kafka.confluent_config(**{"ssl.key.password": "wrong"}))

    aio = kafka.aiokafka_config()
    assert aio["security_protocol"] == "SSL"
    context = aio["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # The context trusts our CA and presents our client certificate to a broker asking for one.
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("kafka.dastra-kafka.test").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    session = _handshake(context, server_context)
    assert session.version() is not None

    plaintext = KafkaSettings(security_protocol="PLAINTEXT", ssl_cafile=files["cafile"])
    assert "ssl_context" not in plaintext.aiokafka_config()  # PLAINTEXT: no TLS


def test_webhook_and_worker_limits_agree_and_are_checked() -> None:
    webhook, worker = WebhookSettings(), WorkerSettings()
    # What the webhook accepts (a 1 MiB body and its envelope) the worker does not call oversized.
    assert webhook.max_body_bytes == 1_048_576
    assert webhook.max_record_bytes == worker.max_record_bytes == 1_100_000
    # ?wait stays inside Zapier's 30 s.
    assert WebhookSettings(wait_max_s=25).wait_max_s == 25
    with pytest.raises(ValidationError, match="less than or equal to 25"):
        WebhookSettings(wait_max_s=26)
    with pytest.raises(ValidationError, match="WORKER_ACTIONS: unknown action"):
        WorkerSettings(actions=["create-task", "nope"])
