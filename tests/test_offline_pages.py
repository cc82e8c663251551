"""Every page the project serves works with no internet, as on many enterprise networks: the
webhook's, the sandbox's and the lag service's `/docs` (Swagger UI from `dastra.apidocs`) and the
lag page, with their assets served by the project and nothing from a CDN.

The browser tests drive Debian's chromium through Playwright; every request to a host that is not
loopback is aborted and recorded, and must never have been attempted. The apps listen on
127.0.0.2, which Swagger UI does not take for "localhost" or "127.0.0.1" (it treats those as
local, as for its online validator), so the pages see an address like a deployment's."""

from __future__ import annotations

import ast
import hashlib
import ipaddress
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.routing import Route

from bus.hooks.settings import HooksSettings
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue, default_topics_file, load_catalogue
from consumers.lag import LagMonitor
from consumers.lag.web import create_app as create_lag_app
from consumers.recipes.settings import RecipesSettings
from dastra.apidocs import SWAGGER_UI_VERSION, add_api_docs, swagger_ui_dir
from dastra.sandbox import SandboxServer
from dastra.sandbox.app import create_app as create_sandbox_app
from dastra.sandbox.settings import SandboxSettings
from dastra.settings import DastraSettings
from dastra_kafka.studio.app import create_app as create_studio_app
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore
from producers.webhook import WebhookService
from producers.webhook import create_app as create_webhook_app
from producers.webhook.settings import WebhookSettings
from tests.conftest import PROJECT_ROOT
from tests.consumers.lag.support import fast_lag_settings
from tests.kafka_helpers import wait_for
from tests.producers.webhook_support import ServerThread

CHROMIUM = "/usr/bin/chromium"
HOST = "127.0.0.2"
_TOKEN = "tok-offline-0123456789"
_PACKAGES = ("bus", "dastra", "producers", "consumers", "dastra_kafka")
_ASSETS = f"/docs/assets/swagger-ui-{SWAGGER_UI_VERSION}"
# An external asset in HTML or CSS: an absolute or protocol-relative URL loaded by src=, href=,
# url() or @import (plain text such as "see https://..." in a description is not an asset).
_EXTERNAL_REF = re.compile(
    r"""(?:\b(?:src|href|srcset|action|poster|data)\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)"""
    r"""(?:https?:)?//""",
    re.IGNORECASE,
)
_CDNS = (
    "cdn.jsdelivr.net",
    "unpkg.com",
    "cdnjs.cloudflare.com",
    "fonts.googleapis.com",
    "fonts.gstatic.com",
    "ajax.googleapis.com",
    "code.jquery.com",
    "bootstrapcdn.com",
    "esm.sh",
    "cdn.skypack.dev",
)

# sha256 of swagger-ui-bundle.js and swagger-ui.css in npm's swagger-ui-dist@5.31.0.
_BUNDLE_SHA256 = "93b7b0862a80e2786f85b560be7693c2344354ffa7e7e224f850a54349724c31"
_CSS_SHA256 = "9e576f8322132c76949da47f9bb53c891373c303ea3a761ff548ffc9de50a98c"

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="needs Debian's chromium: run `make chromium`"
)


def _is_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the apps ------------------------------------------------------------------------------------


def _webhook_service(kafka: KafkaSettings) -> WebhookService:
    return WebhookService(
        kafka,
        WebhookSettings(tokens=[SecretStr(_TOKEN)]),
        HooksSettings(),
        DastraSettings(workspace_id=101),
        registry=CollectorRegistry(),
    )


@pytest.fixture
def webhook_url(kafka: KafkaSettings, topics: TopicCatalogue) -> Iterator[str]:
    with ServerThread(create_webhook_app(_webhook_service(kafka)), host=HOST) as server:
        yield server.url


@pytest.fixture
def sandbox_url() -> Iterator[str]:
    with SandboxServer(SandboxSettings(host=HOST, port=0)) as sandbox:
        yield sandbox.base_url


@pytest.fixture
def lag_url(kafka: KafkaSettings) -> Iterator[str]:
    lag = fast_lag_settings(refresh_interval_s=0.5)
    with ServerThread(create_lag_app(LagMonitor(kafka, lag), lag), host=HOST) as server:
        # /api/lag answers 503 until the first refresh; the page would show that state instead.
        wait_for(
            lambda: httpx.get(f"{server.url}/api/lag", timeout=5).status_code == 200,
            60,
            "the lag service's first refresh",
        )
        yield server.url


# --- the browser ---------------------------------------------------------------------------------


@dataclass
class _Visit:
    """What one page load did: requests refused for leaving loopback, loopback requests that
    failed or answered >= 400, and uncaught script errors."""

    outside: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


# One browser per test: Playwright's sync API keeps its event loop running in this thread while
# it is open, which the asyncio tests of a module must not share.
@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def offline_page(browser: Any) -> Iterator[tuple[Any, _Visit]]:
    """A fresh page in its own context, with the internet cut at the request level."""
    visit = _Visit()
    context = browser.new_context(service_workers="block")

    def guard(route: Any) -> None:
        url = route.request.url
        if _is_loopback(url):
            route.continue_()
        else:
            visit.outside.append(url)
            route.abort("internetdisconnected")

    def answered(response: Any) -> None:
        # A page without an icon link may make the browser ask for /favicon.ico: not a load.
        if urlsplit(response.url).path == "/favicon.ico":
            return
        if response.status >= 400 and _is_loopback(response.url):
            visit.failed.append(f"{response.status} {response.url}")

    def failed(request: Any) -> None:
        if _is_loopback(request.url):
            visit.failed.append(f"{request.failure} {request.url}")

    context.route("**/*", guard)
    page = context.new_page()
    page.on("response", answered)
    page.on("requestfailed", failed)
    page.on("pageerror", lambda exc: visit.errors.append(str(exc)))
    try:
        yield page, visit
    finally:
        context.close()


def _assert_swagger_ui_renders(page: Any, visit: _Visit, url: str, operation: str) -> None:
    page.goto(f"{url}/docs")
    assert visit.outside == [], f"requests that left loopback: {visit.outside}"
    page.locator(f'.opblock-summary-path[data-path="{operation}"]').first.wait_for(
        state="visible", timeout=60_000
    )
    # Swagger UI loads some parts (the validator badge among them) after the spec: let the page
    # settle so a late request to the internet would have been attempted.
    page.wait_for_load_state("networkidle", timeout=60_000)
    styled = page.evaluate(
        """() => [...document.styleSheets].some(
            (sheet) => (sheet.href || "").endsWith("/swagger-ui.css") && sheet.cssRules.length > 100
        )"""
    )
    assert styled, "swagger-ui.css was not applied"
    assert visit.outside == [], f"requests that left loopback: {visit.outside}"
    assert visit.failed == [] and visit.errors == [], (visit.failed, visit.errors)


@needs_chromium
def test_the_webhook_docs_render_with_no_internet(
    webhook_url: str, offline_page: tuple[Any, _Visit]
) -> None:
    page, visit = offline_page
    _assert_swagger_ui_renders(page, visit, webhook_url, "/v1/commands/create-task")


@needs_chromium
def test_the_sandbox_docs_render_with_no_internet(
    sandbox_url: str, offline_page: tuple[Any, _Visit]
) -> None:
    page, visit = offline_page
    _assert_swagger_ui_renders(page, visit, sandbox_url, "/v1/ws/{workspaceId}/Tasks")


@needs_chromium
def test_the_lag_docs_render_with_no_internet(
    lag_url: str, offline_page: tuple[Any, _Visit]
) -> None:
    page, visit = offline_page
    _assert_swagger_ui_renders(page, visit, lag_url, "/api/lag")


@needs_chromium
def test_the_lag_page_renders_with_no_internet(
    lag_url: str, offline_page: tuple[Any, _Visit]
) -> None:
    page, visit = offline_page
    with page.expect_response(lambda response: "/api/lag" in response.url, timeout=60_000):
        page.goto(f"{lag_url}/")
    page.get_by_role("heading", name="Consumer lag").wait_for(timeout=60_000)
    assert visit.outside == [], f"requests that left loopback: {visit.outside}"
    assert visit.failed == [] and visit.errors == [], (visit.failed, visit.errors)


# --- every served HTML, without a browser --------------------------------------------------------


def _served_apps(kafka: KafkaSettings) -> dict[str, FastAPI]:
    """Every FastAPI app the project serves; not started (no lifespan): only pages are read."""
    lag = fast_lag_settings()
    studio = StudioSettings(tokens=[SecretStr(_TOKEN)])
    return {
        "webhook": create_webhook_app(_webhook_service(kafka)),
        "sandbox": create_sandbox_app(SandboxSettings()),
        "lag": create_lag_app(LagMonitor(kafka, lag), lag),
        "studio": create_studio_app(
            StudioStore(kafka, studio),
            studio,
            RecipesSettings(),
            load_catalogue(default_topics_file()),
        ),
    }


async def test_no_served_html_references_an_external_asset(kafka: KafkaSettings) -> None:
    pages: dict[str, str] = {}
    for name, app in _served_apps(kafka).items():
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{HOST}") as client:
            for route in app.routes:
                if not isinstance(route, Route) or "GET" not in (route.methods or ()):
                    continue
                if "{" in route.path or route.path.startswith("/_sandbox"):
                    continue
                response = await client.get(route.path)
                if response.headers.get("content-type", "").startswith("text/html"):
                    pages[f"{name} {route.path}"] = response.text
    # The pages this test must at least have seen; a new HTML page joins them by itself.
    for expected in (
        "webhook /docs",
        "sandbox /docs",
        "lag /docs",
        "lag /",
        "lag /docs/oauth2-redirect",
        "studio /studio/",
        "studio /docs",
    ):
        assert expected in pages, sorted(pages)
    for where, html in pages.items():
        found = _EXTERNAL_REF.findall(html)
        assert not found, f"{where} loads from elsewhere: {found}"
    assert f'src="{_ASSETS}/swagger-ui-bundle.js"' in pages["webhook /docs"]
    assert f'href="{_ASSETS}/swagger-ui.css"' in pages["sandbox /docs"]
    assert '"validatorUrl": null' in pages["lag /docs"]


def test_every_fastapi_app_of_the_project_leaves_docs_to_apidocs() -> None:
    """FastAPI's own /docs and /redoc load Swagger UI and ReDoc from a CDN: every app built in
    the project's packages turns them off (and then adds `add_api_docs`)."""
    apps = 0
    for package in _PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Call) and _called(node) == "FastAPI"):
                    continue
                apps += 1
                given = {kw.arg: kw.value for kw in node.keywords}
                for option in ("docs_url", "redoc_url"):
                    value = given.get(option)
                    assert isinstance(value, ast.Constant) and value.value is None, (
                        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}: FastAPI(...) without "
                        f"{option}=None; serve the docs with dastra.apidocs.add_api_docs"
                    )
    assert apps >= 3


def _called(node: ast.Call) -> str:
    func = node.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def test_no_page_source_of_the_project_names_a_cdn() -> None:
    """Pages built from source files (templates, inline HTML, scripts, stylesheets) load no
    asset from another host, today's pages and any added later."""
    suffixes = {".py", ".html", ".htm", ".js", ".mjs", ".css", ".j2", ".jinja", ".svg"}
    offenders: list[str] = []
    for package in _PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*")):
            if path.suffix not in suffixes or not path.is_file():
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            where = str(path.relative_to(PROJECT_ROOT))
            offenders += [f"{where}: {cdn}" for cdn in _CDNS if cdn in text]
            if path.suffix != ".py":
                offenders += [f"{where}: {ref}" for ref in _EXTERNAL_REF.findall(text)]
    assert offenders == []


async def test_the_swagger_ui_files_are_served_pinned_and_self_contained() -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    add_api_docs(app)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        css = await client.get(f"{_ASSETS}/swagger-ui.css")
        js = await client.get(f"{_ASSETS}/swagger-ui-bundle.js")
        icon = await client.get(f"{_ASSETS}/favicon-32x32.png")
        other = await client.get(f"{_ASSETS}/index.html")  # loads the petstore from the web
    assert css.status_code == js.status_code == icon.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert js.headers["content-type"].startswith("text/javascript")
    assert "immutable" in js.headers["cache-control"]
    assert js.content == (swagger_ui_dir() / "swagger-ui-bundle.js").read_bytes()
    # The bytes of npm's swagger-ui-dist@5.31.0, as published by the Swagger UI project.
    for response, sha256 in ((js, _BUNDLE_SHA256), (css, _CSS_SHA256)):
        assert hashlib.sha256(response.content).hexdigest() == sha256
    assert not _EXTERNAL_REF.findall(css.text)
    assert other.status_code == 404


def test_add_api_docs_refuses_an_app_that_still_has_fastapis_cdn_docs() -> None:
    with pytest.raises(ValueError, match="docs_url=None, redoc_url=None"):
        add_api_docs(FastAPI())
    with pytest.raises(ValueError, match="redoc_url"):
        add_api_docs(FastAPI(docs_url=None))
    with pytest.raises(ValueError, match="openapi_url"):
        add_api_docs(FastAPI(docs_url=None, redoc_url=None, openapi_url=None))
