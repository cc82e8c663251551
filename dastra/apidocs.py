"""Swagger UI for the project's FastAPI apps, served by the app itself: nothing from a CDN, so
`/docs` works on a network without internet.

Consumes an app's OpenAPI document (`app.openapi_url`). Produces, under the app's `docs_url`:
the Swagger UI page, its OAuth2 redirect page, and the three files the page loads
(`<docs_url>/assets/swagger-ui-<version>/...`, cached for a year since the path names the
version). The files come from the pinned `swagger-ui-bundle-v2` package (Swagger UI
`SWAGGER_UI_VERSION`, Apache-2.0; its files are byte-identical to npm's `swagger-ui-dist` of the
same version), installed by pip with the rest of the runtime. ReDoc is not served.

It lives in `dastra/` (beside the sandbox, the HTTP side of the ground layer) so that the sandbox,
the webhook (`producers/`) and the lag service (`consumers/`) share it without a new arrow
between `dastra/` and `bus/`.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

__all__ = ["SWAGGER_UI_VERSION", "add_api_docs", "swagger_ui_dir"]

SWAGGER_UI_VERSION = "5.31.0"
"""The Swagger UI release served; must match the `swagger-ui-bundle-v2` pin in pyproject.toml."""

_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_IMMUTABLE = {"cache-control": "public, max-age=31536000, immutable"}


def swagger_ui_dir() -> Path:
    """The folder of the installed Swagger UI files; a clear error when they are missing.

    js = swagger_ui_dir() / "swagger-ui-bundle.js"
    """
    fix = f"install the pinned package: pip install swagger-ui-bundle-v2=={SWAGGER_UI_VERSION}"
    try:
        root = importlib.resources.files("swagger_ui_bundle")
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"Swagger UI is not installed; {fix}") from exc
    folder = Path(str(root)) / "vendor" / f"swagger-ui-{SWAGGER_UI_VERSION}"
    missing = [name for name in _ASSETS if not (folder / name).is_file()]
    if missing:
        raise RuntimeError(
            f"Swagger UI {SWAGGER_UI_VERSION} is not installed (missing {', '.join(missing)} "
            f"in {folder.parent}); {fix}"
        )
    return folder


def add_api_docs(app: FastAPI, *, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url` with assets from this app. Create the app with
    `docs_url=None, redoc_url=None` so FastAPI's CDN-loading pages are not registered.

        app = FastAPI(title="...", docs_url=None, redoc_url=None)
        add_api_docs(app)
    """
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError(
            "create the app with FastAPI(docs_url=None, redoc_url=None): FastAPI's own /docs "
            "and /redoc load their scripts from a CDN"
        )
    if app.openapi_url is None:
        raise ValueError("the app has no OpenAPI document (openapi_url=None) to show")
    if not docs_url.startswith("/") or docs_url.endswith("/"):
        raise ValueError(f"docs_url must start with '/' and not end with it, not {docs_url!r}")
    folder = swagger_ui_dir()
    assets = f"{docs_url}/assets/swagger-ui-{SWAGGER_UI_VERSION}"
    openapi_url = app.openapi_url
    redirect_url = app.swagger_ui_oauth2_redirect_url
    # No online validator: its badge (shown by Swagger UI's StandaloneLayout, should an app choose
    # it) sends the spec's URL to validator.swagger.io whenever the page is not on localhost.
    parameters: dict[str, Any] = {**(app.swagger_ui_parameters or {}), "validatorUrl": None}

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{assets}/swagger-ui.css",
            swagger_favicon_url=f"{root}{assets}/favicon-32x32.png",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=parameters,
        )

    async def asset(name: str) -> FileResponse:
        media_type = _ASSETS.get(name)
        if media_type is None:
            raise HTTPException(404, f"no such Swagger UI file: {name}")
        return FileResponse(folder / name, media_type=media_type, headers=_IMMUTABLE)

    app.add_api_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(f"{assets}/{{name}}", asset, methods=["GET"], include_in_schema=False)
    if redirect_url:

        async def oauth2_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_api_route(redirect_url, oauth2_redirect, methods=["GET"], include_in_schema=False)
