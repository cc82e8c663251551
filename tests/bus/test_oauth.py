"""OAUTHBEARER settings and token providers without a broker: the OIDC provider's request,
cache and refresh (httpx MockTransport), its errors, the Amazon MSK IAM wiring into each client
stack with fake AWS credentials (there is no MSK here: the signer runs for real, offline, and the
token it signs is checked, not used), and KAFKA_CLIENT_CONFIG. The real broker is in
test_oauthbearer.py."""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest
from faust.auth import OAuthCredentials
from pydantic import SecretStr

import bus.oauth
from bus.oauth import MskIamTokenProvider, OAuthTokenError, OidcTokenProvider
from bus.settings import KafkaSettings
from consumers.app import _credentials
from dastra_kafka.settings import SettingsError, load_settings

SECRET = "the-Cl1ent-secret-value"
URL = "https://idp.example/oauth2/token"


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _issuer(requests: list[httpx.Request], expires_in: int = 600) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(
            200, json={"access_token": f"tok-{len(requests)}", "expires_in": expires_in}
        )

    return httpx.MockTransport(handle)


def test_the_oidc_provider_asks_with_client_credentials_caches_and_renews_before_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = _Clock()
    monkeypatch.setattr(bus.oauth.time, "monotonic", clock)
    requests: list[httpx.Request] = []
    provider = OidcTokenProvider(
        URL, "svc", SecretStr(SECRET), scope="kafka.write", transport=_issuer(requests)
    )

    async def tokens() -> list[str]:
        got = list(await asyncio.gather(*(provider.token() for _ in range(5))))
        clock.now += 400  # 200 s left of 600: still good
        got.append(await provider.token())
        clock.now += 90  # 110 s left: under a fifth of the lifetime, renewed
        got.append(await provider.token())
        return got

    assert asyncio.run(tokens()) == ["tok-1"] * 6 + ["tok-2"]
    assert len(requests) == 2
    request = requests[0]
    assert request.method == "POST" and str(request.url) == URL
    assert dict(urllib.parse.parse_qsl(request.content.decode())) == {
        "grant_type": "client_credentials",
        "scope": "kafka.write",
    }
    basic = base64.b64decode(request.headers["Authorization"].removeprefix("Basic ")).decode()
    assert basic == f"svc:{SECRET}"


def test_oidc_errors_name_the_endpoint_and_reason_never_the_secret() -> None:
    def refuse(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "invalid_client", "error_description": "nope"})

    def no_token(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token_type": "Bearer"})

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    expected = {
        refuse: "refused the client credentials: HTTP 401 (invalid_client nope)",
        no_token: "answered without an access_token",
        down: "did not answer: ConnectError",
    }
    for handler, text in expected.items():
        provider = OidcTokenProvider(
            URL, "svc", SecretStr(SECRET), transport=httpx.MockTransport(handler)
        )
        with pytest.raises(OAuthTokenError) as raised:
            asyncio.run(provider.token())
        message = str(raised.value)
        assert text in message and URL in message and "'svc'" in message
        assert SECRET not in message and SECRET not in repr(raised.value.__cause__)
        assert SECRET not in repr(provider)


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Fake static AWS credentials in the environment, no config files, no instance metadata."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKEFAKE",
        "AWS_SECRET_ACCESS_KEY": "fake/secret/access/key/value/0000000000",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    return "AKIAFAKEFAKEFAKEFAKE"


def _signed_url(token: str) -> str:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()


def test_aws_msk_iam_wires_the_signer_into_every_client_stack(
    monkeypatch: pytest.MonkeyPatch, fake_aws: str
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "AWS_MSK_IAM")
    monkeypatch.setenv("KAFKA_SASL_AWS_REGION", "eu-west-3")
    kafka = load_settings(None).kafka

    # librdkafka: OAUTHBEARER with an oauth_cb returning (token, expiry in epoch seconds).
    confluent = kafka.confluent_config()
    assert confluent["sasl.mechanism"] == "OAUTHBEARER"
    assert "sasl.oauthbearer.method" not in confluent
    token, expiry = confluent["oauth_cb"]("")
    assert time.time() < expiry <= time.time() + 3600
    url = _signed_url(token)
    assert url.startswith("https://kafka.eu-west-3.amazonaws.com/?Action=kafka-cluster%3AConnect")
    assert f"X-Amz-Credential={fake_aws}" in url and "eu-west-3%2Fkafka-cluster" in url

    # aiokafka: the provider signs in a thread and caches.
    aio = kafka.aiokafka_config()
    assert aio["sasl_mechanism"] == "OAUTHBEARER" and aio["security_protocol"] == "SASL_SSL"
    provider = aio["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider)

    async def twice() -> tuple[str, str]:
        return await provider.token(), await provider.token()

    first, second = asyncio.run(twice())
    assert first == second and "X-Amz-Signature=" in _signed_url(first)
    assert kafka.aiokafka_producer_config()["sasl_oauth_token_provider"] is provider

    # Faust: OAuthCredentials around the same provider, over TLS.
    credentials = _credentials(kafka)
    assert isinstance(credentials, OAuthCredentials)
    assert credentials.oauth_cb is provider and credentials.ssl_context is not None


def test_aws_msk_iam_without_aws_credentials_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, fake_aws: str
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(OAuthTokenError, match="could not sign a token for region 'eu-west-3'"):
        asyncio.run(MskIamTokenProvider("eu-west-3").token())


def test_oauthbearer_settings_reach_librdkafka_aiokafka_and_faust(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "OAUTHBEARER")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL", URL)
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_CLIENT_ID", "svc")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_SCOPE", "kafka")
    monkeypatch.setenv(
        "KAFKA_SASL_OAUTHBEARER_EXTENSIONS", "logicalCluster=lkc-1, identityPoolId=pool-2"
    )
    settings = load_settings(None)
    kafka = settings.kafka
    confluent = kafka.confluent_config()
    assert {
        "sasl.mechanism": "OAUTHBEARER",
        "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": URL,
        "sasl.oauthbearer.client.id": "svc",
        "sasl.oauthbearer.client.secret": SECRET,
        "sasl.oauthbearer.scope": "kafka",
        "sasl.oauthbearer.extensions": "logicalCluster=lkc-1,identityPoolId=pool-2",
    }.items() <= confluent.items()
    provider = kafka.aiokafka_config()["sasl_oauth_token_provider"]
    assert isinstance(provider, OidcTokenProvider)
    assert provider.extensions() == {"logicalCluster": "lkc-1", "identityPoolId": "pool-2"}
    credentials = _credentials(kafka)
    assert isinstance(credentials, OAuthCredentials) and credentials.oauth_cb is provider
    for text in (repr(settings), settings.model_dump_json(), repr(provider), repr(credentials)):
        assert SECRET not in text


@pytest.mark.parametrize(
    ("env", "named"),
    [
        (
            {"KAFKA_SASL_MECHANISM": "OAUTHBEARER", "KAFKA_SASL_OAUTHBEARER_CLIENT_ID": "svc"},
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL, KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
        ),
        ({"KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"}, "KAFKA_SASL_AWS_REGION"),
    ],
)
def test_missing_oauthbearer_variables_are_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_OAUTHBEARER_SCOPE", SECRET)  # shown nowhere either
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings(None)
    assert named in str(raised.value) and SECRET not in str(raised.value)


def test_client_config_reaches_librdkafka_and_aiokafka_with_its_secrets_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "KAFKA_CLIENT_CONFIG",
        "socket.keepalive.enable=true, request.timeout.ms=20000,"
        f"ssl.key.pem={SECRET},sasl.oauthbearer.assertion.private.key.passphrase=pw-{SECRET}",
    )
    settings = load_settings(None)
    kafka = settings.kafka
    confluent = kafka.producer_config(**{"enable.idempotence": True})
    assert confluent["socket.keepalive.enable"] == "true"
    assert confluent["request.timeout.ms"] == "20000"
    assert confluent["ssl.key.pem"] == SECRET
    assert confluent["enable.idempotence"] is True  # the caller's guarantees win
    aio = kafka.aiokafka_config()
    assert aio["request_timeout_ms"] == 20000 and "socket_keepalive_enable" not in aio
    for text in (repr(settings), str(kafka), settings.model_dump_json()):
        assert SECRET not in text and "socket.keepalive.enable" in text
    # A copy through model_dump keeps the real values (the demo rebuilds settings this way).
    assert KafkaSettings(**kafka.model_dump()).client_properties() == kafka.client_properties()

    monkeypatch.setenv("KAFKA_CLIENT_CONFIG", '{"linger.ms": 5, "enable.auto.commit": false}')
    assert load_settings(None).kafka.client_properties() == {
        "linger.ms": "5",
        "enable.auto.commit": "false",
    }
    for bad, problem in (
        (f"ssl.key.pem {SECRET}", "key=value"),
        ('{"linger.ms": ', "not a valid JSON object"),
        ("request.timeout.ms=soon", "request.timeout.ms must be a whole number"),
    ):
        monkeypatch.setenv("KAFKA_CLIENT_CONFIG", bad)
        with pytest.raises(SettingsError) as raised:
            load_settings(None)
        assert "KAFKA_CLIENT_CONFIG" in str(raised.value) and problem in str(raised.value)
        assert SECRET not in str(raised.value)
