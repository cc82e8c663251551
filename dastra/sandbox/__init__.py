"""The Dastra sandbox: a local, stateful stand-in for Dastra's public API.

    with SandboxServer(SandboxSettings()) as sandbox:
        async with DastraClient(sandbox.dastra_settings()) as dastra: ...

See `app.py` for the API, `admin_api.py` for the `/_sandbox` test controls, `server.py` to
run it.
"""

from dastra.sandbox.admin import SandboxAdmin, SandboxAdminError
from dastra.sandbox.app import ADMIN_PREFIX, ADMIN_TOKEN_HEADER, create_app
from dastra.sandbox.controls import FaultSpec
from dastra.sandbox.server import SandboxServer, serve
from dastra.sandbox.settings import SandboxSettings

SandboxConfig = SandboxSettings

__all__ = [
    "ADMIN_PREFIX",
    "ADMIN_TOKEN_HEADER",
    "FaultSpec",
    "SandboxAdmin",
    "SandboxAdminError",
    "SandboxConfig",
    "SandboxServer",
    "SandboxSettings",
    "create_app",
    "serve",
]
