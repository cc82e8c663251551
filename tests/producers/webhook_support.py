"""Helpers for the webhook and hook tests: ASGI apps on loopback in a thread (uvicorn, real
HTTP, optionally TLS), a scripted subscriber that records what it receives, a trusted local CA."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trustme
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "Received",
    "ServerThread",
    "Subscriber",
    "TLSFiles",
    "make_tls",
]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started_event = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._started_event.set()


class ServerThread:
    """An ASGI app served by uvicorn on loopback (127.0.0.1 unless `host` says another
    127.x address) in a daemon thread (lifespan on)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._certfile = certfile
        self._keyfile = keyfile
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._certfile else "http"
        return f"{scheme}://{self._host}:{self.port}"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="on",
            log_config=None,
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=1,
            ssl_certfile=str(self._certfile) if self._certfile else None,
            ssl_keyfile=str(self._keyfile) if self._keyfile else None,
        )
        started = threading.Event()
        self._server = _Server(config, started)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not started.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start")
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(15)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TLSFiles:
    """A throw-away CA and a server certificate for localhost and 127.0.0.1."""
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    files = TLSFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    server.cert_chain_pems[0].write_to_path(str(files.cert))
    server.private_key_pem.write_to_path(str(files.key))
    return files


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Subscriber:
    """A scripted subscriber: per path, a list of answers used in turn (the last one repeats).
    An answer is a status code, ("redirect", url), ("retry-after", status, value or a callable
    giving it), or "hang" (never answers)."""

    script: dict[str, list[Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: asyncio.Event | None = None

    def answers(self, path: str, *answers: Any) -> None:
        self.script[path] = list(answers)

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def accepted(self, path: str) -> list[Received]:
        """Requests to `path` that were answered 2xx."""
        with self._lock:
            return [
                r for r in self.received if r.path == path and r.headers.get("_answer") == "2xx"
            ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        request = Request(scope, receive)
        body = await request.body()
        path = request.url.path
        with self._lock:
            count = sum(1 for r in self.received if r.path == path)
            plan = self.script.get(path, [200])
            answer = plan[min(count, len(plan) - 1)]
            headers = {k.lower(): v for k, v in request.headers.items()}
            if isinstance(answer, int) and 200 <= answer < 300:
                headers["_answer"] = "2xx"
            self.received.append(Received(path, headers, body, time.monotonic()))
        if answer == "hang":
            await asyncio.sleep(3600)
        if isinstance(answer, tuple) and answer[0] == "redirect":
            response: Response = Response(status_code=307, headers={"location": answer[1]})
        elif isinstance(answer, tuple) and answer[0] == "retry-after":
            value = answer[2]() if callable(answer[2]) else answer[2]  # a callable: when sent
            response = Response(status_code=answer[1], headers={"retry-after": str(value)})
        else:
            response = Response(status_code=int(answer))
        await response(scope, receive, send)
