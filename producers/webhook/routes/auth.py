"""The webhook's token check: a FastAPI dependency that accepts `Authorization: Bearer <token>`
or `X-API-Key: <token>` and yields the matched token, or answers 401 with a problem body."""

from typing import Annotated, Any

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from producers.webhook.models import Refused
from producers.webhook.service import WebhookService

__all__ = ["token_dependency"]


def token_dependency(service: WebhookService) -> Any:
    """`Annotated[str, Depends(...)]`: the token of the request, checked by `service`."""
    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <token>")

    async def token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        key: Annotated[str | None, Security(api_key)],
    ) -> str:
        presented = credentials.credentials if credentials is not None else key
        matched = service.authenticate(presented)
        if matched is None:
            raise Refused(
                401,
                "unauthorized",
                "send a valid token as Authorization: Bearer <token> or X-API-Key: <token>",
                {"WWW-Authenticate": "Bearer"},
            )
        return matched

    return Annotated[str, Depends(token)]
