"""Running the sandbox: in a background thread for tests, demo and benchmarks, or in the
foreground for `dastra-kafka sandbox`.

Consumes `SandboxSettings`. Produces a uvicorn server on loopback serving `create_app(config)`
with the drop-capable h11 protocol, and the addresses and credentials to reach it.

    with SandboxServer(SandboxSettings(rate_limit=False)) as sandbox:
        settings = sandbox.dastra_settings()          # DastraSettings pointing at it
        sandbox.admin.create_rights_request(title="Access to my data")
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import uvicorn
from pydantic import SecretStr

from dastra.sandbox.admin import SandboxAdmin
from dastra.sandbox.app import SandboxRuntime, create_app
from dastra.sandbox.connections import DroppableH11
from dastra.sandbox.settings import SandboxSettings
from dastra.settings import DastraSettings

__all__ = ["SandboxServer", "serve"]


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started()


def _uvicorn_config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=DroppableH11,
        ws="none",
        lifespan="on",
        log_config=None,  # leave the process's logging alone
        access_log=False,
        timeout_graceful_shutdown=2,
        # Idle connections kept longer than clients keep theirs (httpx: 5 s), as load balancers
        # in front of real APIs do (60 s and more). With uvicorn's default, also 5 s, the server
        # could close a connection just as a client sent a request on it, and the request failed
        # with "Server disconnected without sending a response" (seen once in a clean-clone run,
        # on the test session's sandbox after an idle spell).
        timeout_keep_alive=75,
    )


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


class SandboxServer:
    """The sandbox on a loopback port (a free one by default) in a background thread."""

    def __init__(
        self,
        config: SandboxSettings | None = None,
        *,
        port: int = 0,
        startup_timeout_s: float = 20.0,
    ) -> None:
        self.config = config or SandboxSettings()
        self._port = port
        self._startup_timeout_s = startup_timeout_s
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._admin: SandboxAdmin | None = None
        self._started = threading.Event()
        self.base_url = ""
        self.workspace_id = 0
        self.runtime: SandboxRuntime | None = None

    # --- credentials and addresses -----------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The private key, for `X-API-Key` (a sandbox key, not a secret)."""
        return self.config.private_key.get_secret_value()

    @property
    def client_id(self) -> str:
        return self.config.public_key

    @property
    def client_secret(self) -> str:
        return self.config.private_key.get_secret_value()

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/connect/token"

    @property
    def admin(self) -> SandboxAdmin:
        """A synchronous client of the `/_sandbox` test controls."""
        if not self.base_url:
            raise RuntimeError("the sandbox is not running: use `with SandboxServer(...)`")
        if self._admin is None:
            token = self.config.admin_token
            self._admin = SandboxAdmin(
                self.base_url, admin_token=token.get_secret_value() if token else None
            )
        return self._admin

    def dastra_settings(self, *, oauth: bool = False, **overrides: Any) -> DastraSettings:
        """DastraSettings pointing at this sandbox (X-API-Key, or OAuth2 with `oauth=True`)."""
        values: dict[str, Any] = {
            "base_url": self.base_url,
            "workspace_id": self.workspace_id,
            "token_url": self.token_url,
        }
        if oauth:
            values |= {"client_id": self.client_id, "client_secret": SecretStr(self.client_secret)}
        else:
            values["api_key"] = SecretStr(self.api_key)
        return DastraSettings(**(values | overrides))

    def env(self) -> dict[str, str]:
        """`DASTRA_*` variables for a subprocess that should use this sandbox."""
        return {
            "DASTRA_BASE_URL": self.base_url,
            "DASTRA_API_KEY": self.api_key,
            "DASTRA_WORKSPACE_ID": str(self.workspace_id),
            "DASTRA_TOKEN_URL": self.token_url,
        }

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("this SandboxServer was already started")
        sock = _bind(self.config.host, self._port)
        app = create_app(self.config)
        self.runtime = app.state.runtime
        assert self.runtime is not None
        self.workspace_id = next(iter(self.runtime.state.workspaces))
        server = _Server(_uvicorn_config(app), self._started.set)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="dastra-sandbox", daemon=True
        )
        self._thread.start()
        if not self._started.wait(self._startup_timeout_s):
            self.stop()
            raise RuntimeError("the Dastra sandbox did not start in time")
        host, port = sock.getsockname()[:2]
        self.base_url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        return self

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(10)
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

    def __repr__(self) -> str:
        return f"SandboxServer(base_url={self.base_url!r}, workspace_id={self.workspace_id})"


def serve(config: SandboxSettings, on_ready: Callable[[str, int], None]) -> None:
    """Run the sandbox in the foreground until SIGINT/SIGTERM; `on_ready(base_url, ws)` once
    it accepts connections."""
    sock = _bind(config.host, config.port)
    app = create_app(config)
    runtime: SandboxRuntime = app.state.runtime
    host, port = sock.getsockname()[:2]
    base_url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    workspace = next(iter(runtime.state.workspaces))
    _Server(_uvicorn_config(app), lambda: on_ready(base_url, workspace)).run(sockets=[sock])
