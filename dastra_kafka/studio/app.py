"""The studio (`dastra-kafka studio`): its page and API, to build, check, test and store recipes.

Consumes HTTP requests under `/studio/api/` (token auth as the webhook's: `Authorization: Bearer`
or `X-API-Key`; STUDIO_TOKENS may change recipes, STUDIO_READ_TOKENS may only read, validate,
export and dry-run) and dastra.recipes.v1 (the studio recipes, read from the beginning). Produces
every change as a `StudioRecipeVersion` on dastra.recipe-changes.v1 (audit) then
dastra.recipes.v1 (compacted), see `store.py`; workers with RECIPES_STUDIO=true pick it up.

The page (`GET /studio/`, its files in `page/`, served by this app: nothing from a CDN) uses
these routes:

    GET    /studio/api/catalogue                   what the builder offers (topics, event
                                                   types, actions and their JSON Schemas, the
                                                   picker's paths) and the caller's role
    POST   /studio/api/yaml                        {"recipe": {...}} -> the YAML file
    GET    /studio/api/recipes                     every recipe: name, source (shipped, file,
                                                   studio), version, enabled, valid
    GET    /studio/api/recipes/{name}              one, with its document and problems
    POST   /studio/api/validate                    {"recipe": {...}} -> problems, field paths
    PUT    /studio/api/recipes/{name}              {"recipe", "base_version"} -> a new version
    POST   /studio/api/recipes/{name}/enable|disable   {"base_version"}
    DELETE /studio/api/recipes/{name}?base_version=N
    GET    /studio/api/recipes/{name}/export       the YAML file (any source)
    POST   /studio/api/import?base_version=N       a YAML file -> a new version
    POST   /studio/api/dry-run                     {"recipe", "event"} -> the commands and
                                                   messages it would send; nothing is sent

A draft is checked by `consumers.recipes.studio.check_studio_document`, the very function every
worker applies before a version replaces the running one: the checks of `recipes validate`,
plus a name no shipped or file recipe has. Logs carry recipe names, versions and token ids,
never recipe values or tokens.

    app = create_app(store, settings.studio, settings.recipes, catalogue)
"""

# No `from __future__ import annotations`: FastAPI must see the route signatures.

import contextlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
import yaml
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from bus.errors import KafkaUnavailableError, RecordTooLargeError
from bus.records.studio_recipes import StudioChange, StudioRecipeVersion
from bus.topics import TopicCatalogue
from consumers.recipes.language import (
    Problem,
    Recipe,
    event_context,
    load_recipes,
    preview_run,
    shipped_recipes_dir,
)
from consumers.recipes.model import error_location
from consumers.recipes.settings import RecipesSettings
from consumers.recipes.studio import check_studio_document
from dastra.apidocs import add_api_docs
from dastra_kafka.studio.catalogue import builder_catalogue
from dastra_kafka.studio.runs import StudioRuns, runs_router
from dastra_kafka.studio.settings import StudioSettings
from dastra_kafka.studio.store import StudioStore
from producers.webhook.http import token_id

__all__ = ["create_app"]

_log = structlog.get_logger(__name__)

Role = Literal["editor", "reader"]


class _Caller(BaseModel):
    token_id: str
    role: Role


class SaveBody(BaseModel):
    """A new version: the whole recipe document, and the version it was edited from (None for
    a new recipe)."""

    recipe: dict[str, Any]
    base_version: int | None = Field(default=None, ge=1)


class SwitchBody(BaseModel):
    base_version: int | None = Field(default=None, ge=1)


class DraftBody(BaseModel):
    recipe: dict[str, Any]


class SampleEvent(BaseModel):
    """A pasted sample: the event's data and, optionally, its CloudEvent attributes."""

    data: Any = None
    type: str | None = None
    key: str | None = None
    source: str | None = None
    subject: str | None = None
    results: dict[str, Any] = Field(
        default_factory=dict, description="Results to assume for the steps' commands, by step id"
    )


class DryRunBody(BaseModel):
    recipe: dict[str, Any]
    event: SampleEvent


def _problems(problems: list[Problem]) -> list[dict[str, str]]:
    return [{"field": p.field, "message": p.message} for p in problems]


def _answer(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"status": status, "error": error, "message": message, **extra}, status_code=status
    )


class _Refused(Exception):  # noqa: N818 - an answer, not an error
    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.response = _answer(status, error, message, **extra)


def create_app(
    store: StudioStore,
    settings: StudioSettings,
    recipes: RecipesSettings,
    catalogue: TopicCatalogue,
    runs: StudioRuns | None = None,
) -> FastAPI:
    """The studio's FastAPI app; its lifespan opens and closes `store` and `runs` (by default
    on the store's Kafka: samples, runs, send once and retry, `runs.py`)."""
    runs = runs if runs is not None else StudioRuns(store.kafka, settings)
    shipped_dir = shipped_recipes_dir().resolve()
    files = load_recipes(recipes, catalogue)
    sources: dict[str, tuple[str, Recipe]] = {}
    for recipe in files.recipes:
        source = "shipped" if recipe.source.resolve().parent == shipped_dir else "file"
        sources[recipe.name] = (source, recipe)
    reserved = set(sources) | {p.recipe for p in files.problems if p.recipe is not None}
    editors = [token.get_secret_value().encode() for token in settings.tokens]
    readers = [token.get_secret_value().encode() for token in settings.read_tokens]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with store, runs:
            yield

    app = FastAPI(
        title="dastra-kafka studio",
        version="0.1.0",
        description="Build, check, test and store recipes: the page at /studio/ and its API.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    add_api_docs(app)

    @app.exception_handler(_Refused)
    async def _refused(_request: Request, exc: _Refused) -> JSONResponse:
        return exc.response

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return _answer(exc.status_code, "http-error", str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": error_location(error.get("loc", ())[1:]) or "(request)",
                "message": str(error.get("msg", "invalid")),
            }
            for error in exc.errors()
        ]
        return _answer(422, "invalid-request", "the request is invalid", problems=errors)

    @app.exception_handler(KafkaUnavailableError)
    async def _unavailable(_request: Request, exc: KafkaUnavailableError) -> JSONResponse:
        _log.warning("studio.kafka_unavailable", reason=str(exc)[:200])
        response = _answer(503, "kafka-unavailable", "Kafka did not acknowledge; retry later.")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RecordTooLargeError)
    async def _too_large(_request: Request, exc: RecordTooLargeError) -> JSONResponse:
        return _answer(413, "too-large", "the recipe is larger than its topic accepts")

    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <token>")

    async def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        key: Annotated[str | None, Security(api_key)],
    ) -> _Caller:
        presented = credentials.credentials if credentials is not None else key
        if presented:
            candidate = presented.encode()
            role: Role | None = None
            for token in editors:
                if hmac.compare_digest(token, candidate):
                    role = "editor"
            for token in readers:
                if hmac.compare_digest(token, candidate) and role is None:
                    role = "reader"
            if role is not None:
                return _Caller(token_id=token_id(presented), role=role)
        raise _Refused(
            401,
            "unauthorized",
            "send a valid token as Authorization: Bearer <token> or X-API-Key: <token>",
        )

    async def editor(who: Annotated[_Caller, Depends(caller)]) -> _Caller:
        if who.role != "editor":
            raise _Refused(403, "read-only-token", "this token may read recipes, not change them")
        return who

    Reader = Annotated[_Caller, Depends(caller)]  # noqa: N806 - a type alias
    Editor = Annotated[_Caller, Depends(editor)]  # noqa: N806 - a type alias

    def check(document: Any, source: str) -> tuple[Recipe | None, list[Problem]]:
        return check_studio_document(document, source, recipes, catalogue, reserved)

    def summary(version: StudioRecipeVersion) -> dict[str, Any]:
        recipe, problems = check(version.recipe, f"studio:{version.name}@{version.version}")
        return {
            "name": version.name,
            "source": "studio",
            "version": version.version,
            "enabled": version.enabled,
            "valid": not problems,
            "description": (version.recipe or {}).get("description"),
            "trigger": recipe.describe_trigger() if recipe is not None else None,
            "saved_by": version.saved_by,
            "saved_at": version.saved_at.isoformat(),
            "read_only": False,
        }

    # --- the page ----------------------------------------------------------------------------

    @app.get("/studio", include_in_schema=False)
    async def studio_root() -> RedirectResponse:
        return RedirectResponse("/studio/")

    @app.get("/studio/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page_file("studio.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/studio/assets/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise _Refused(404, "not-found", f"no asset is named {name!r}")
        return Response(
            _page_file(name), media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"}
        )

    builder = builder_catalogue(catalogue, recipes)

    @app.get("/studio/api/catalogue", tags=["builder"])
    async def builder_offer(who: Reader) -> dict[str, Any]:
        """What the builder offers (topics, actions and their schemas, the picker's paths) and
        who is asking (role)."""
        return {**builder, "me": {"role": who.role, "token_id": who.token_id}}

    @app.post("/studio/api/yaml", tags=["builder"])
    async def as_yaml(body: DraftBody, _who: Reader) -> Response:
        """A draft as the YAML file `recipes validate` reads (what export gives once saved)."""
        text = yaml.safe_dump(body.recipe, sort_keys=False, allow_unicode=True)
        return Response(text, media_type="application/yaml")

    # --- reading -----------------------------------------------------------------------------

    @app.get("/studio/api/recipes", tags=["recipes"])
    async def list_recipes(_who: Reader) -> dict[str, Any]:
        await store.refresh()
        found = [
            {
                "name": name,
                "source": source,
                "version": None,
                "enabled": recipe.enabled,
                "valid": True,
                "description": recipe.description,
                "trigger": recipe.describe_trigger(),
                "read_only": True,
            }
            for name, (source, recipe) in sorted(sources.items())
        ]
        found += [summary(version) for version in store.all()]
        return {"recipes": found}

    @app.get("/studio/api/recipes/{name}", tags=["recipes"])
    async def get_recipe(name: str, _who: Reader) -> dict[str, Any]:
        await store.refresh()
        if name in sources:
            source, recipe = sources[name]
            document = yaml.safe_load(recipe.source.read_text(encoding="utf-8"))
            return {
                "name": name,
                "source": source,
                "version": None,
                "enabled": recipe.enabled,
                "read_only": True,
                "recipe": document,
                "problems": [],
            }
        version = store.current(name)
        if version is None:
            raise _Refused(404, "unknown-recipe", f"no recipe is named {name!r}")
        _recipe, problems = check(version.recipe, f"studio:{name}@{version.version}")
        return {**summary(version), "recipe": version.recipe, "problems": _problems(problems)}

    @app.post("/studio/api/validate", tags=["recipes"])
    async def validate(body: DraftBody, _who: Reader) -> dict[str, Any]:
        _recipe, problems = check(body.recipe, "studio:draft")
        return {"valid": not problems, "problems": _problems(problems)}

    @app.get("/studio/api/recipes/{name}/export", tags=["recipes"])
    async def export(name: str, _who: Reader) -> Response:
        document = (await get_recipe(name, _who))["recipe"]
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
        return Response(
            text,
            media_type="application/yaml",
            headers={"Content-Disposition": f'attachment; filename="{name}.yaml"'},
        )

    # --- changing ----------------------------------------------------------------------------

    async def change(
        name: str,
        who: _Caller,
        base_version: int | None,
        kind: StudioChange,
        document: dict[str, Any] | None,
    ) -> JSONResponse:
        if name in sources:
            raise _Refused(
                409,
                "read-only-recipe",
                f"{name!r} is a {sources[name][0]} recipe (read-only): save a copy under "
                "another name",
            )
        async with store.lock:
            await store.refresh()
            current = store.current(name)
            now_version = current.version if current is not None else None
            if base_version != now_version:
                raise _Refused(
                    409,
                    "stale-version",
                    f"{name!r} is at version {now_version}, not {base_version}: reload it, "
                    "then save your change on top",
                    current_version=now_version,
                )
            if kind in ("enabled", "disabled", "deleted") and current is None:
                raise _Refused(404, "unknown-recipe", f"no studio recipe is named {name!r}")
            if document is None and kind in ("enabled", "disabled"):
                assert current is not None and current.recipe is not None
                document = {**current.recipe, "enabled": kind == "enabled"}
            if document is not None:
                if document.get("name") != name:
                    raise _Refused(
                        422,
                        "invalid-recipe",
                        "the recipe is invalid",
                        problems=[{"field": "name", "message": f"must be {name!r} (the URL's)"}],
                    )
                _recipe, problems = check(document, f"studio:{name}")
                if problems:
                    raise _Refused(
                        422, "invalid-recipe", "the recipe is invalid", problems=_problems(problems)
                    )
            version = StudioRecipeVersion(
                name=name,
                version=(now_version or 0) + 1,
                change=kind,
                recipe=document,
                saved_by=who.token_id,
                saved_at=datetime.now(UTC),
            )
            await store.write(version)
        status = 201 if now_version is None else 200
        return JSONResponse(
            {"name": name, "version": version.version, "change": kind, "enabled": version.enabled},
            status_code=status,
        )

    @app.put("/studio/api/recipes/{name}", tags=["recipes"])
    async def save(name: str, body: SaveBody, who: Editor) -> JSONResponse:
        return await change(name, who, body.base_version, "saved", body.recipe)

    @app.post("/studio/api/recipes/{name}/enable", tags=["recipes"])
    async def enable(name: str, body: SwitchBody, who: Editor) -> JSONResponse:
        return await change(name, who, body.base_version, "enabled", None)

    @app.post("/studio/api/recipes/{name}/disable", tags=["recipes"])
    async def disable(name: str, body: SwitchBody, who: Editor) -> JSONResponse:
        return await change(name, who, body.base_version, "disabled", None)

    @app.delete("/studio/api/recipes/{name}", tags=["recipes"])
    async def delete(
        name: str, who: Editor, base_version: Annotated[int, Query(ge=1)]
    ) -> JSONResponse:
        return await change(name, who, base_version, "deleted", None)

    @app.post("/studio/api/import", tags=["recipes"])
    async def import_yaml(
        request: Request,
        who: Editor,
        base_version: Annotated[int | None, Query(ge=1)] = None,
    ) -> JSONResponse:
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            raise _Refused(413, "too-large", f"at most {settings.max_body_bytes} bytes")
        try:
            document = yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise _Refused(
                422,
                "invalid-yaml",
                "not valid YAML",
                problems=[{"field": where, "message": str(getattr(exc, "problem", "") or exc)}],
            ) from None
        if not isinstance(document, dict) or not isinstance(document.get("name"), str):
            raise _Refused(
                422,
                "invalid-recipe",
                "the recipe is invalid",
                problems=[
                    {"field": "name", "message": "a recipe file holds one mapping with a name"}
                ],
            )
        return await change(document["name"], who, base_version, "imported", document)

    # --- testing -----------------------------------------------------------------------------

    @app.post("/studio/api/dry-run", tags=["recipes"])
    async def dry_run(body: DryRunBody, _who: Reader) -> dict[str, Any]:
        recipe, problems = check(body.recipe, "studio:draft")
        if recipe is None or problems:
            raise _Refused(
                422, "invalid-recipe", "the recipe is invalid", problems=_problems(problems)
            )
        return _dry_run(recipe, body.event, recipes)

    app.include_router(
        runs_router(
            runs,
            store,
            reader=caller,
            editor=editor,
            read_only={name: recipe for name, (_source, recipe) in sources.items()},
            check=check,
        )
    )
    return app


_PAGE_DIR = Path(__file__).parent / "page"
_ASSETS = {
    "studio.js": "text/javascript; charset=utf-8",
    "studio.css": "text/css; charset=utf-8",
}


def _page_file(name: str) -> str:
    return (_PAGE_DIR / name).read_text(encoding="utf-8")


def _dry_run(recipe: Recipe, sample: SampleEvent, settings: RecipesSettings) -> dict[str, Any]:
    """What the recipe would send for `sample` (`preview_run`): each command (with its id, topic
    and data, checked against its action's model) and each message; nothing is sent."""
    ours = recipe.trigger.ours if recipe.trigger else True
    run_key = f"dry-run:{recipe.name}"
    event = event_context(
        id=run_key,
        data=sample.data,
        type=sample.type or (recipe.trigger.type if recipe.trigger else None),
        source=sample.source or ("dastra://workspaces/101" if ours else None),
        subject=sample.subject,
        time=datetime.now(UTC),
        key=sample.key,
        topic=recipe.trigger.topic if recipe.trigger else None,
        partition=0,
        offset=0,
    )
    preview = preview_run(recipe, event, settings, run_key=run_key, results=sample.results)
    problems = []
    for found in preview.problems:
        if found.step is None:
            where = "trigger.filter" if recipe.trigger else "schedule.filter"
        else:
            where = f"steps[{found.step}]" + (f"[{found.item}]" if found.item is not None else "")
            if found.field:
                where += f".with.{found.field}"
        problems.append({"field": where, "message": found.message})
    return {
        "matches": preview.matches,
        "commands": preview.commands,
        "messages": preview.messages,
        "problems": problems,
    }
