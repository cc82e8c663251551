"""The Dastra sandbox: a local, stateful stand-in for Dastra's public API.

    with SandboxServer(SandboxSettings()) as sandbox:
        async with DastraClient(sandbox.dastra_settings()) as dastra: ...

See `app.py` for the API, `admin_api.py` for the `/_sandbox` test controls, `server.py` to
run it.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dastra.sandbox.admin import SandboxAdmin, SandboxAdminError
    from dastra.sandbox.app import ADMIN_PREFIX, ADMIN_TOKEN_HEADER, create_app
    from dastra.sandbox.controls import FaultSpec
    from dastra.sandbox.server import SandboxServer, serve
    from dastra.sandbox.settings import SandboxSettings


# Imported when first used, not with the package: the settings of every role import
# `dastra.sandbox.settings`, and the CLI should not load the sandbox's web app to read them.
_EXPORTS = {
    "SandboxAdmin": "dastra.sandbox.admin",
    "SandboxAdminError": "dastra.sandbox.admin",
    "ADMIN_PREFIX": "dastra.sandbox.app",
    "ADMIN_TOKEN_HEADER": "dastra.sandbox.app",
    "create_app": "dastra.sandbox.app",
    "FaultSpec": "dastra.sandbox.controls",
    "SandboxServer": "dastra.sandbox.server",
    "serve": "dastra.sandbox.server",
    "SandboxSettings": "dastra.sandbox.settings",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ADMIN_PREFIX",
    "ADMIN_TOKEN_HEADER",
    "FaultSpec",
    "SandboxAdmin",
    "SandboxAdminError",
    "SandboxServer",
    "SandboxSettings",
    "create_app",
    "serve",
]
