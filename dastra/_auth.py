"""How the client authenticates: a private API key, or OAuth2 client credentials.

Consumes `DastraSettings` (`api_key`, or `client_id` + `client_secret` and `token_url`).
Produces the request headers. The OAuth2 token is cached, renewed shortly before it expires,
fetched by one task at a time, and dropped when Dastra answers 401 with it.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from typing import Protocol

import httpx
from pydantic import SecretStr

from dastra._http import error_for_response, error_for_transport
from dastra.errors import DastraAuthError, DastraConfigError, DastraResponseError
from dastra.settings import DastraSettings

__all__ = ["ApiKeyAuth", "Auth", "OAuth2ClientCredentials", "auth_from_settings"]


class Auth(Protocol):
    mode: str

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]: ...

    def invalidate(self, headers: dict[str, str]) -> bool:
        """Forget the credential in `headers` after a 401; True when a retry may succeed."""
        ...


class ApiKeyAuth:
    mode = "api-key"

    def __init__(self, api_key: SecretStr) -> None:
        self._api_key = api_key

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        return {"X-API-Key": self._api_key.get_secret_value()}

    def invalidate(self, headers: dict[str, str]) -> bool:
        return False


class OAuth2ClientCredentials:
    mode = "oauth2"

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._token: SecretStr | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def headers(self, http: httpx.AsyncClient) -> dict[str, str]:
        token = self._valid_token()
        if token is None:
            async with self._lock:
                token = self._valid_token()  # another task may have renewed it meanwhile
                if token is None:
                    token = await self._fetch(http)
        return {"Authorization": f"Bearer {token.get_secret_value()}"}

    def invalidate(self, headers: dict[str, str]) -> bool:
        if self._token is not None and headers.get("Authorization") == (
            f"Bearer {self._token.get_secret_value()}"
        ):
            self._token = None
        return True

    def _valid_token(self) -> SecretStr | None:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        return None

    async def _fetch(self, http: httpx.AsyncClient) -> SecretStr:
        pair = f"{self._client_id}:{self._client_secret.get_secret_value()}".encode()
        path = httpx.URL(self._token_url).path or "/"
        try:
            response = await http.post(
                self._token_url,
                data={"grant_type": "client_credentials", "scope": "api1"},
                headers={"Authorization": f"Basic {base64.b64encode(pair).decode()}"},
            )
        except httpx.TransportError as exc:
            raise error_for_transport(exc, "POST", path) from exc
        if response.status_code in (400, 401, 403):
            raise DastraAuthError(
                f"POST {path}: the token endpoint refused the client credentials "
                f"({response.status_code})",
                status=response.status_code,
                method="POST",
                path=path,
            )
        if not response.is_success:
            raise error_for_response(response, "POST", path)
        try:
            body = response.json()
            token = body["access_token"]
            lifetime = float(body.get("expires_in", 3600))
        except (ValueError, KeyError, TypeError):
            raise DastraResponseError(
                f"POST {path}: the token endpoint's answer has no access_token",
                method="POST",
                path=path,
                status=response.status_code,
            ) from None
        if not isinstance(token, str) or not token:
            raise DastraResponseError(
                f"POST {path}: the token endpoint's access_token is empty",
                method="POST",
                path=path,
                status=response.status_code,
            )
        # Renew a little before expiry: a tenth of the lifetime, at most a minute.
        self._token = SecretStr(token)
        self._renew_at = self._clock() + lifetime - min(60.0, lifetime / 10)
        self.fetches += 1
        return self._token


def auth_from_settings(settings: DastraSettings) -> Auth:
    """X-API-Key when `api_key` is set, else OAuth2 client credentials."""
    if settings.api_key is not None and settings.api_key.get_secret_value():
        return ApiKeyAuth(settings.api_key)
    if settings.client_id and settings.client_secret is not None:
        return OAuth2ClientCredentials(
            settings.token_url, settings.client_id, settings.client_secret
        )
    raise DastraConfigError(
        "no Dastra credentials: set DASTRA_API_KEY, or DASTRA_CLIENT_ID and DASTRA_CLIENT_SECRET"
    )
