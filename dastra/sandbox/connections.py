"""Dropped-connection faults: uvicorn's h11 protocol, remembering each connection's transport.

An ASGI app cannot close its TCP connection without answering; this protocol class records the
transport of every connection under the `(server, client)` addresses that also appear in the
ASGI scope, so the sandbox's middleware can abort the very connection a request came on.
Servers started by `SandboxServer` and `dastra-kafka sandbox` use it (`http=DroppableH11`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["DroppableH11", "abort_connection"]

_Key = tuple[tuple[Any, ...], tuple[Any, ...]]
_TRANSPORTS: dict[_Key, asyncio.Transport] = {}
_LOCK = threading.Lock()


def _key(server: Any, client: Any) -> _Key:
    return (tuple(server or ()), tuple(client or ()))


class DroppableH11(H11Protocol):
    """uvicorn's H11Protocol plus the registry `abort_connection` uses."""

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        with _LOCK:
            _TRANSPORTS[_key(self.server, self.client)] = transport

    def connection_lost(self, exc: Exception | None) -> None:
        with _LOCK:
            _TRANSPORTS.pop(_key(self.server, self.client), None)
        super().connection_lost(exc)


def abort_connection(scope: Mapping[str, Any]) -> bool:
    """Abort the TCP connection of `scope` (no response at all); False if not ours."""
    with _LOCK:
        transport = _TRANSPORTS.get(_key(scope.get("server"), scope.get("client")))
    if transport is None:
        return False
    transport.abort()
    return True
