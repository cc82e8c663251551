"""SASL/OAUTHBEARER tokens for aiokafka (and so Faust) and for librdkafka's `oauth_cb`.

Consumes an OIDC token endpoint (the client-credentials grant, RFC 6749 §4.4, over httpx) or
AWS credentials from the environment (Amazon MSK IAM, through AWS's signer library). Produces
bearer tokens, cached and refreshed before they expire. librdkafka fetches OIDC tokens itself
(`sasl.oauthbearer.method=oidc`); it uses `msk_iam_oauth_cb` only for MSK IAM.

    provider = OidcTokenProvider(url, client_id, secret, scope=None)
    AIOKafkaConsumer(..., sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=provider)

The client secret travels only in the token request's Basic authorization header: it is never
in an error message, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiokafka.abc import AbstractTokenProvider
from pydantic import SecretStr

from bus.errors import BusError

__all__ = [
    "MskIamTokenProvider",
    "OAuthTokenError",
    "OidcTokenProvider",
    "msk_iam_oauth_cb",
    "msk_iam_token",
]

# A token is renewed when less than this share of its lifetime is left (and at least
# _MIN_MARGIN_S before it ends): a connection opened just before expiry still authenticates.
_REFRESH_SHARE = 0.2
_MIN_MARGIN_S = 30.0
_REQUEST_TIMEOUT_S = 10.0


class OAuthTokenError(BusError):
    """A bearer token could not be obtained (token endpoint refused us, did not answer, or
    returned no token; or the AWS signer failed). The message names the endpoint or region and
    the reason the server gave, never the secret."""


def _refresh_at(now: float, expires_in: float) -> float:
    margin = max(expires_in * _REFRESH_SHARE, min(_MIN_MARGIN_S, expires_in / 2))
    return now + expires_in - margin


class _CachedToken:
    """One token and the monotonic time it must be renewed at; one fetch at a time."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _lock_for_this_loop(self) -> asyncio.Lock:
        # A settings object may outlive one event loop (tests, CLI verbs): a lock belongs to one.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = asyncio.Lock(), loop
        return self._lock

    async def get(self, fetch: Callable[[], Awaitable[tuple[str, float]]]) -> str:
        if self._token is not None and time.monotonic() < self._renew_at:
            return self._token
        async with self._lock_for_this_loop():
            if self._token is not None and time.monotonic() < self._renew_at:
                return self._token
            token, expires_in = await fetch()
            self._token, self._renew_at = token, _refresh_at(time.monotonic(), expires_in)
            return token


class OidcTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's token provider for OIDC client credentials: POSTs
    `grant_type=client_credentials` (and `scope`) to the token endpoint with HTTP Basic
    authentication, caches the access token and renews it before `expires_in` runs out.

        provider = OidcTokenProvider("https://idp/oauth2/token", "svc", SecretStr("..."))
        token = await provider.token()
    """

    def __init__(
        self,
        token_endpoint_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str | None = None,
        extensions: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = token_endpoint_url
        self._client_id = client_id
        self._secret = client_secret
        self._scope = scope
        self._extensions = dict(extensions or {})
        self._transport = transport
        self._cache = _CachedToken()

    def __repr__(self) -> str:
        return f"OidcTokenProvider(url={self._url!r}, client_id={self._client_id!r})"

    async def token(self) -> str:
        return await self._cache.get(self._fetch)

    def extensions(self) -> dict[str, str]:
        """SASL extensions sent beside the token (KAFKA_SASL_OAUTHBEARER_EXTENSIONS)."""
        return dict(self._extensions)

    async def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if self._scope:
            form["scope"] = self._scope
        where = f"the OAuth token endpoint {self._url} (client id {self._client_id!r})"
        try:
            # A client per fetch: a token lives minutes to hours, and no connection is left
            # open between fetches for anyone to close.
            async with httpx.AsyncClient(
                transport=self._transport, timeout=_REQUEST_TIMEOUT_S
            ) as client:
                response = await client.post(
                    self._url,
                    data=form,
                    auth=(self._client_id, self._secret.get_secret_value()),
                    headers={"Accept": "application/json"},
                )
        except httpx.HTTPError as exc:
            raise OAuthTokenError(
                f"{where} did not answer: {type(exc).__name__}: {exc}"
            ) from None  # the request (and its Authorization header) stays out of tracebacks
        body: dict[str, Any] = {}
        try:
            parsed = response.json()
            if isinstance(parsed, dict):
                body = parsed
        except ValueError:
            pass
        if response.status_code != 200:
            reason = " ".join(
                str(body[name]) for name in ("error", "error_description") if body.get(name)
            )
            raise OAuthTokenError(
                f"{where} refused the client credentials: HTTP {response.status_code}"
                + (f" ({reason})" if reason else "")
            )
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise OAuthTokenError(f"{where} answered without an access_token")
        expires_in = body.get("expires_in", 300)
        if not isinstance(expires_in, int | float) or expires_in <= 0:
            expires_in = 300
        return token, float(expires_in)


def msk_iam_token(region: str) -> tuple[str, float]:
    """A signed Amazon MSK IAM token for `region` and its lifetime in seconds, from the AWS
    credentials of the environment (variables, profile, instance or task role). Blocking."""
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    try:
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
    except Exception as exc:  # botocore's NoCredentialsError and friends
        raise OAuthTokenError(
            f"the AWS MSK IAM signer could not sign a token for region {region!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return str(token), max(1.0, expiry_ms / 1000 - time.time())


def msk_iam_oauth_cb(region: str) -> Callable[[str], tuple[str, float]]:
    """librdkafka's `oauth_cb` for Amazon MSK IAM: returns (token, expiry as epoch seconds)."""

    def oauth_cb(_config: str) -> tuple[str, float]:
        token, lifetime = msk_iam_token(region)
        return token, time.time() + lifetime

    return oauth_cb


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's token provider for Amazon MSK IAM: the AWS signer's token, cached until
    shortly before it expires (signed in a thread: botocore blocks).

        provider = MskIamTokenProvider("eu-west-1")
    """

    def __init__(self, region: str) -> None:
        self._region = region
        self._cache = _CachedToken()

    def __repr__(self) -> str:
        return f"MskIamTokenProvider(region={self._region!r})"

    async def token(self) -> str:
        return await self._cache.get(self._fetch)

    async def _fetch(self) -> tuple[str, float]:
        return await asyncio.to_thread(msk_iam_token, self._region)
