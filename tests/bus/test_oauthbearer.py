"""SASL/OAUTHBEARER against a real broker that validates signed JWTs against a JWKS.

One broker for this module (`LocalKafka(oauth=...)`, an INTERNAL PLAINTEXT listener for the
controller and inter-broker traffic) and a local OIDC issuer (tests/oidc_issuer.py). Every client
stack of the project authenticates with client credentials from `KafkaSettings`: librdkafka
(admin, producer, consumer: its built-in OIDC method), aiokafka (producer and consumer: the
project's token provider) and a `dastra-kafka worker` (Faust's OAuthCredentials) running one
command. A wrong client secret fails with a clear error and the secret appears nowhere. The
librdkafka `oauth_cb` and aiokafka provider of AWS_MSK_IAM are exercised too, with the AWS
signer replaced by this issuer (there is no MSK here).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import bus.oauth
from bus.localkafka import LocalKafka
from bus.oauth import OAuthTokenError
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, TopicCatalogue
from dastra.sandbox import SandboxServer
from tests.consumers.agents_support import RecordProducer, Tail, WorkerProcess, command_record
from tests.kafka_helpers import consume, create_catalogue_topics, unique
from tests.oidc_issuer import OidcIssuer

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="needs Java 17")

CLIENT_ID = "dastra-bridge"
SECRET = "oidc-Cl1ent-s3cret-value"
WRONG = "not-the-oidc-secret-value"


@dataclass
class OAuthCluster:
    issuer: OidcIssuer
    broker: LocalKafka

    def settings(self, secret: str = SECRET, **more: object) -> KafkaSettings:
        return KafkaSettings(
            bootstrap_servers=self.broker.bootstrap_servers,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="OAUTHBEARER",
            sasl_oauthbearer_token_endpoint_url=self.issuer.token_url,
            sasl_oauthbearer_client_id=CLIENT_ID,
            sasl_oauthbearer_client_secret=secret,  # type: ignore[arg-type]
            sasl_oauthbearer_scope="kafka",
            topic_prefix=unique("oauth") + ".",
            **more,  # type: ignore[arg-type]
        )

    def env(self, kafka: KafkaSettings) -> dict[str, str]:
        return {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": "OAUTHBEARER",
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": self.issuer.token_url,
            "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": CLIENT_ID,
            "KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET": SECRET,
            "KAFKA_SASL_OAUTHBEARER_SCOPE": "kafka",
        }


@pytest.fixture(scope="module")
def cluster() -> Iterator[OAuthCluster]:
    """The issuer and the OAUTHBEARER broker: the broker's whole lifetime is this module."""
    with (
        OidcIssuer({CLIENT_ID: SECRET}) as issuer,
        LocalKafka(oauth=issuer.listener(), quick_jit=True) as broker,
    ):
        yield OAuthCluster(issuer, broker)


def _create_topic(kafka: KafkaSettings, name: str) -> str:
    topic = kafka.topic(name)
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=30)
    return topic


# What Confluent Cloud's identity pools ask for; Kafka's own validator accepts them.
EXTENSIONS = {"logicalCluster": "lkc-test", "identityPoolId": "pool-test"}


def test_librdkafka_admin_producer_and_consumer_authenticate_with_client_credentials(
    cluster: OAuthCluster,
) -> None:
    kafka = cluster.settings(sasl_oauthbearer_extensions=EXTENSIONS)
    issued = cluster.issuer.issued
    topic = _create_topic(kafka, "librdkafka")
    producer = Producer(kafka.producer_config(**{"enable.idempotence": True}))
    for i in range(5):
        producer.produce(topic, key=f"k{i}", value=f"v{i}")
    assert producer.flush(30) == 0
    records = consume(kafka, topic, expected=5)
    assert sorted(r.value for r in records) == [f"v{i}".encode() for i in range(5)]
    assert cluster.issuer.issued > issued  # librdkafka fetched its own tokens


def test_aiokafka_producer_and_consumer_authenticate_with_the_token_provider(
    cluster: OAuthCluster,
) -> None:
    kafka = cluster.settings(sasl_oauthbearer_extensions=EXTENSIONS)
    assert kafka.token_provider().extensions() == EXTENSIONS
    topic = _create_topic(kafka, "aiokafka")
    issued = cluster.issuer.issued

    async def roundtrip() -> list[bytes]:
        producer = AIOKafkaProducer(**kafka.aiokafka_producer_config(), enable_idempotence=True)
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(topic, f"a{i}".encode(), key=b"same")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, **kafka.aiokafka_config(), group_id=unique("g"), auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < 3 and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=500)
                got += [r.value for records in batches.values() for r in records if r.value]
            return got
        finally:
            await consumer.stop()

    assert asyncio.run(roundtrip()) == [b"a0", b"a1", b"a2"]
    # One provider per settings object: every connection of both clients shared one token.
    assert cluster.issuer.issued == issued + 1


def test_the_worker_authenticates_through_faust_and_runs_a_command(
    cluster: OAuthCluster,
    catalogue: TopicCatalogue,
    sandbox: SandboxServer,
    tmp_path: Path,
) -> None:
    kafka = cluster.settings()
    create_catalogue_topics(kafka, catalogue)
    sandbox.admin.configure(rate_limit=False)
    results = Tail(kafka, COMMAND_RESULTS)
    producer = RecordProducer(kafka)
    worker = WorkerProcess(
        kafka, sandbox, tmp_path, WORKER_ACTIONS='["create-task"]', **cluster.env(kafka)
    )
    try:
        worker.start(ready_within=90)
        command_id = unique("cmd")
        label = f"Answer {command_id}"
        headers, value = command_record(
            {"label": label, "priority": "High"}, command_id=command_id, action="create-task"
        )
        producer.send("dastra.commands.create-task.v1", [(command_id.encode(), headers, value)])
        [record] = results.wait_for_keys([command_id], timeout=60)[command_id]
        assert record.headers["ce_type"] == b"eu.dastra.command.succeeded"
        assert [t["label"] for t in sandbox.admin.objects("tasks")].count(label) == 1
    finally:
        assert worker.stop() is not None
        log = worker.log_file.read_text(errors="replace")
        results.close()
        producer.close()
    assert SECRET not in log


def test_a_wrong_client_secret_fails_clearly_and_never_shows_the_secret(
    cluster: OAuthCluster, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = cluster.settings(secret=WRONG)
    refused = cluster.issuer.refused
    caplog.set_level(logging.DEBUG)

    with pytest.raises(KafkaException) as librdkafka_error:
        Producer(bad.confluent_config()).list_topics(timeout=5)

    async def connect() -> None:
        producer = AIOKafkaProducer(**bad.aiokafka_config(), request_timeout_ms=5000)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises((OAuthTokenError, AIOKafkaError)) as aiokafka_error:
        asyncio.run(connect())
    assert isinstance(aiokafka_error.value, OAuthTokenError), aiokafka_error.value
    message = str(aiokafka_error.value)
    assert "refused the client credentials: HTTP 401 (invalid_client" in message
    assert cluster.issuer.token_url in message and CLIENT_ID in message
    assert cluster.issuer.refused >= refused + 2  # both stacks asked, both were refused

    captured = capfd.readouterr()
    # librdkafka's own exception is a generic transport failure; its log line says why.
    assert f'Failed to retrieve OIDC token from "{cluster.issuer.token_url}"' in captured.err
    assert "invalid_client" in captured.err
    for text in (
        str(librdkafka_error.value),
        message,
        repr(aiokafka_error.value.__cause__),
        caplog.text,
        captured.out,
        captured.err,
        repr(bad),
        repr(bad.token_provider()),
    ):
        assert WRONG not in text and SECRET not in text


def test_msk_iam_wiring_authenticates_each_client_through_its_callback(
    cluster: OAuthCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_MSK_IAM wires a token callback into librdkafka (`oauth_cb`) and a provider into
    aiokafka; here the AWS signer is replaced by a client-credentials token from this issuer,
    so both paths reach a real broker (the signer itself is tested in test_oauth.py)."""
    regions: list[str] = []

    def fake_signer(region: str) -> tuple[str, float]:
        regions.append(region)
        answer = httpx.post(
            cluster.issuer.token_url,
            data={"grant_type": "client_credentials"},
            auth=(CLIENT_ID, SECRET),
            timeout=10,
        )
        answer.raise_for_status()
        return str(answer.json()["access_token"]), 3600.0

    monkeypatch.setattr(bus.oauth, "msk_iam_token", fake_signer)
    kafka = KafkaSettings(
        bootstrap_servers=cluster.broker.bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="AWS_MSK_IAM",
        sasl_aws_region="eu-west-3",
        topic_prefix=unique("msk") + ".",
    )
    topic = _create_topic(kafka, "msk")  # librdkafka admin through oauth_cb

    async def produce() -> None:
        producer = AIOKafkaProducer(**kafka.aiokafka_producer_config())
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"signed")
        finally:
            await producer.stop()

    asyncio.run(produce())
    producer = Producer(kafka.producer_config())  # librdkafka producer through oauth_cb
    producer.produce(topic, key=b"k", value=b"also signed")
    assert producer.flush(30) == 0
    values = sorted(r.value for r in consume(kafka, topic, expected=2))
    assert values == [b"also signed", b"signed"]
    assert set(regions) == {"eu-west-3"} and len(regions) >= 3
