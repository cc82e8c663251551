"""The sandbox's data: workspaces, users, areas, processings, actors, rights requests, tasks.

Consumes validated request bodies (the routes validate them against the spec subset first).
Produces complete Dastra DTOs as the spec describes them: every property present (unset ones
`null`, or .NET's default for non-nullable ones), ids like Dastra's (increasing integers, uuids
for processings), `dateCreation`/`dateUpdate` in ISO 8601 UTC with milliseconds. Kept in memory;
with a `db` file every change is also written to SQLite and read back at start.

Assumptions where Dastra is undocumented are marked [I] (see ../shared/dastra-api.md).
"""

from __future__ import annotations

import functools
import html
import json
import re
import sqlite3
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dastra.sandbox.settings import SandboxSettings
from dastra.spec import load_spec

__all__ = [
    "COLLECTIONS",
    "DOTNET_MIN_DATE",
    "NotFoundError",
    "SandboxState",
    "StateError",
    "blank",
    "format_date",
    "now_iso",
    "project",
]

# Collections per workspace, in the order `state()` lists them.
COLLECTIONS = ("areas", "processings", "actors", "rightsRequests", "tasks")
_SCHEMAS = {
    "areas": "AreaDto",
    "processings": "DataProcessingDto",
    "actors": "ActorDto",
    "rightsRequests": "DataSubjectRequestDto",
    "tasks": "TaskDto",
    "users": "UserDto",
    "workspaces": "WorkSpaceDto",
}
_FIRST_ID = {
    "workspaces": 101,
    "users": 301,
    "areas": 201,
    "actors": 401,
    "rightsRequests": 1001,
    "tasks": 5001,
    "steps": 901,
}
DOTNET_MIN_DATE = "0001-01-01T00:00:00.000Z"
_TENANT_ID = 7
_RIGHTS_REQUEST_DAYS = 30  # the legal deadline: one month [I]
_NAMESPACE = uuid.UUID("6f1d2d1e-5b9a-4c1b-9a57-0c3a4f1e2d77")
_TAG = re.compile(r"<[^>]+>")


class StateError(Exception):
    """A request the state refuses: `errors` in ASP.NET's shape (`{"AreaId": ["..."]}`)."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


class NotFoundError(Exception):
    """No such object (404)."""


def format_date(moment: datetime) -> str:
    """ISO 8601, UTC, milliseconds, `Z`: 2024-05-01T12:34:56.789Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_iso() -> str:
    return format_date(datetime.now(UTC))


def _default(prop: Mapping[str, Any], schemas: Mapping[str, Any]) -> Any:
    ref = prop.get("$ref")
    if isinstance(ref, str):
        target = schemas[ref.rsplit("/", 1)[-1]]
        if "enum" in target:
            return target["enum"][0]  # .NET's default(enum): its first member
        return None
    if prop.get("nullable"):
        return [] if prop.get("type") == "array" else None
    kind = prop.get("type")
    if kind == "array":
        return []
    if kind == "boolean":
        return False
    if kind == "integer":
        return 0
    if kind == "number":
        return 0.0
    if kind == "object":
        return None
    if prop.get("format") == "date-time":
        return DOTNET_MIN_DATE
    if prop.get("format") == "uuid":
        return str(uuid.UUID(int=0))
    return ""


@functools.cache
def _blank_template(schema: str) -> dict[str, Any]:
    spec = load_spec()
    return {name: _default(prop, spec.schemas) for name, prop in spec.properties(schema).items()}


@functools.cache
def _properties(schema: str) -> dict[str, Any]:
    return load_spec().properties(schema)


def blank(schema: str) -> dict[str, Any]:
    """Every property of the spec schema `schema`, with its unset value."""
    return {
        name: [] if isinstance(value, list) else value
        for name, value in _blank_template(schema).items()
    }


def project(obj: Mapping[str, Any] | None, schema: str) -> dict[str, Any] | None:
    """`obj` reduced to the properties of `schema` (missing ones at their unset value)."""
    if obj is None:
        return None
    base = blank(schema)
    return {name: obj.get(name, default) for name, default in base.items()}


def _writable(body: Mapping[str, Any], schema: str, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The members of `body` that `schema` declares and a client may set."""
    props = _properties(schema)
    skipped = {"id", "dateCreation", "dateUpdate", *skip}
    return {
        name: value
        for name, value in body.items()
        if name in props and name not in skipped and not props[name].get("readOnly")
    }


def _days_until(deadline: str | None, now: datetime) -> int | None:
    if not deadline:
        return None
    try:
        moment = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - now).days


class SandboxState:
    """Everything the sandbox knows, per workspace. Not thread-safe: one event loop owns it."""

    def __init__(self, config: SandboxSettings) -> None:
        self._config = config
        self._db: sqlite3.Connection | None = None
        if config.db is not None:
            Path(config.db).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(config.db), check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS objects (kind TEXT NOT NULL, ws INTEGER NOT NULL,"
                " id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id))"
            )
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS counters (kind TEXT PRIMARY KEY, next INTEGER)"
            )
            self._db.commit()
        self._clear()
        if not self._load():
            self._seed()

    # --- storage -----------------------------------------------------------------------------

    def _clear(self) -> None:
        self.workspaces: dict[int, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self._data: dict[str, dict[int, dict[Any, dict[str, Any]]]] = {k: {} for k in COLLECTIONS}
        self._where: dict[str, dict[Any, int]] = {k: {} for k in COLLECTIONS}
        self._steps: dict[int, dict[str, list[dict[str, Any]]]] = {}
        self._next = dict(_FIRST_ID)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _put(self, kind: str, ws: int, obj: dict[str, Any]) -> None:
        key = obj["id"]
        if kind == "workspaces":
            self.workspaces[key] = obj
        elif kind == "users":
            self.users[key] = obj
        else:
            self._data[kind].setdefault(ws, {})[key] = obj
            self._where[kind][key] = ws

    def _save(self, rows: Iterable[tuple[str, int, dict[str, Any]]]) -> None:
        if self._db is None:
            return
        self._db.executemany(
            "INSERT OR REPLACE INTO objects (kind, ws, id, body) VALUES (?, ?, ?, ?)",
            [(kind, ws, str(obj["id"]), json.dumps(obj)) for kind, ws, obj in rows],
        )
        self._db.executemany(
            "INSERT OR REPLACE INTO counters (kind, next) VALUES (?, ?)", list(self._next.items())
        )
        self._db.commit()

    def _store(self, kind: str, ws: int, obj: dict[str, Any]) -> dict[str, Any]:
        self._put(kind, ws, obj)
        self._save([(kind, ws, obj)])
        return obj

    def _load(self) -> bool:
        if self._db is None:
            return False
        rows = self._db.execute("SELECT kind, ws, body FROM objects ORDER BY rowid").fetchall()
        if not rows:
            return False
        for kind, ws, body in rows:
            obj = json.loads(body)
            if kind == "steps":
                continue
            self._put(kind, ws, obj)
        for kind, value in self._db.execute("SELECT kind, next FROM counters"):
            self._next[kind] = value
        for ws in self.workspaces:
            self._steps[ws] = self._workflow_steps(ws, fixed=True)
        # rows come back in insertion order; keep each collection ordered by id
        for kind in COLLECTIONS:
            for ws, objects in self._data[kind].items():
                if kind != "processings":
                    self._data[kind][ws] = dict(sorted(objects.items()))
        return True

    def reset(self) -> None:
        """Back to the freshly seeded state (and an empty database)."""
        if self._db is not None:
            self._db.execute("DELETE FROM objects")
            self._db.execute("DELETE FROM counters")
            self._db.commit()
        self._clear()
        self._seed()

    def _take_id(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] = value + 1
        return value

    # --- reading -----------------------------------------------------------------------------

    def has_workspace(self, ws: int) -> bool:
        return ws in self.workspaces

    def items(self, kind: str, ws: int) -> list[dict[str, Any]]:
        return list(self._data[kind].get(ws, {}).values())

    def get(self, kind: str, ws: int, key: Any) -> dict[str, Any]:
        obj = self._data[kind].get(ws, {}).get(key)
        if obj is None:
            raise NotFoundError(f"{kind} {key} not found")
        return obj

    def workspace_of(self, kind: str, key: Any) -> int:
        try:
            return self._where[kind][key]
        except KeyError:
            raise NotFoundError(f"{kind} {key} not found") from None

    def api_user(self) -> dict[str, Any]:
        return next(u for u in self.users.values() if u["role"] == "API")

    def ui_user(self) -> dict[str, Any]:
        return next(u for u in self.users.values() if u["role"] == "Admin")

    def default_area(self, ws: int) -> dict[str, Any]:
        areas = self.items("areas", ws)
        return next((a for a in areas if a["type"] == "Area"), areas[0])

    def snapshot(self, ws: int | None = None, collection: str | None = None) -> dict[str, Any]:
        """The state as JSON: one workspace's collections, or every workspace's."""

        def one(w: int) -> dict[str, Any]:
            kinds = [collection] if collection else list(COLLECTIONS)
            return {k: self.items(k, w) for k in kinds}

        if ws is not None:
            return {"workspace": self.workspaces[ws], "users": list(self.users.values()), **one(ws)}
        return {
            "workspaces": list(self.workspaces.values()),
            "users": list(self.users.values()),
            "byWorkspace": {str(w): one(w) for w in self.workspaces},
        }

    # --- seed --------------------------------------------------------------------------------

    def _user(self, given: str, family: str, role: str, email: str) -> dict[str, Any]:
        user = blank("UserDto")
        user.update(
            id=self._take_id("users"),
            givenName=given,
            familyName=family,
            displayName=f"{given} {family}",
            email=email,
            role=role,
            active=True,
            emailVerified=True,
            canReceiveNotification=role != "API",
            isOwner=role == "Admin",
            language="fr",
            timeZone="Europe/Paris",
            tenantId=_TENANT_ID,
            dateCreation="2023-01-09T08:00:00.000Z",
            color="#4c6ef5",
        )
        return user

    def _workflow_steps(self, ws: int, *, fixed: bool = False) -> dict[str, list[dict[str, Any]]]:
        # Step ids are derived from the workspace id so that they are stable across restarts.
        base = _FIRST_ID["steps"] + (ws - _FIRST_ID["workspaces"]) * 10
        steps: dict[str, list[dict[str, Any]]] = {}
        plan = {
            "DataSubject": [("New", "Open"), ("In progress", "Processing"), ("Done", "Closed")],
            "Task": [("To do", "Open"), ("Doing", "Active"), ("Done", "Closed")],
        }
        offset = 0
        for kind, entries in plan.items():
            steps[kind] = []
            for order, (label, state) in enumerate(entries):
                step = blank("WorkFlowStepDto")
                step.update(
                    id=base + offset,
                    label=label,
                    color=["#868e96", "#228be6", "#40c057"][order],
                    order=order,
                    type=kind,
                    finalStep=order == len(entries) - 1,
                    initialStep=order == 0,
                    mappedState=state,
                )
                steps[kind].append(step)
                offset += 1
        return steps

    def _step_for(self, ws: int, kind: str, state: str) -> dict[str, Any]:
        steps = self._steps[ws][kind]
        return next((s for s in steps if s["mappedState"] == state), steps[0])

    def _seed(self) -> None:
        rows: list[tuple[str, int, dict[str, Any]]] = []
        for user in (
            self._user("Alice", "Martin", "Admin", "alice.martin@acme.example"),
            self._user("Bruno", "Keller", "User", "bruno.keller@acme.example"),
            self._user("Dastra", "API", "API", "api@acme.example"),
        ):
            self._put("users", 0, user)
            rows.append(("users", 0, user))
        for index in range(self._config.workspaces):
            rows.extend(self._seed_workspace(index))
        self._save(rows)
        for ws in list(self.workspaces):
            for n in range(self._config.seed_items):
                self.create_rights_request(
                    ws,
                    {
                        "title": f"Sample request {n + 1}",
                        "locale": "fr",
                        "areaId": self.default_area(ws)["id"],
                        "purposes": ["Access"],
                        "email": f"subject{n + 1}@example.com",
                        "givenName": "Sample",
                        "familyName": f"Subject {n + 1}",
                        "channel": "Form",
                    },
                    creator=self.ui_user(),
                )
                self.create_task(
                    ws, {"label": f"Sample task {n + 1}", "priority": "Medium"}, creator=None
                )

    def _seed_workspace(self, index: int) -> list[tuple[str, int, dict[str, Any]]]:
        rows: list[tuple[str, int, dict[str, Any]]] = []
        ws = self._take_id("workspaces")
        workspace = blank("WorkSpaceDto")
        workspace.update(
            id=ws,
            tenantId=_TENANT_ID,
            label="Acme Europe" if index == 0 else f"Acme workspace {index + 1}",
            state="Active",
            primaryColor="#1c7ed6",
            dataSubjectArchivedRetentionDays=365,
            nbEntities=1,
            permissions=[],
        )
        self._put("workspaces", ws, workspace)
        rows.append(("workspaces", ws, workspace))
        self._steps[ws] = self._workflow_steps(ws)
        created = "2023-01-09T08:00:00.000Z"

        entity = blank("AreaDto")
        entity.update(
            id=self._take_id("areas"),
            type="Entity",
            label="Acme SAS",
            ref="ACME",
            countryCode="FR",
            city="Lyon",
            order=0,
            children=[],
            teams=[],
        )
        self._put("areas", ws, entity)
        rows.append(("areas", ws, entity))
        for order, label in enumerate(("Customer service", "Human resources"), start=1):
            area = blank("AreaDto")
            area.update(
                id=self._take_id("areas"),
                type="Area",
                label=label,
                parentId=entity["id"],
                order=order,
                children=[],
                teams=[],
            )
            self._put("areas", ws, area)
            rows.append(("areas", ws, area))
        owner = project(self.ui_user(), "UserLightDto")
        for label, ref, area_index in (
            ("Customer management", "T-001", 1),
            ("Recruitment", "T-002", 2),
            ("Newsletter", "T-003", 1),
        ):
            area = self.items("areas", ws)[area_index]
            processing = blank("DataProcessingDto")
            processing.update(
                id=str(uuid.uuid5(_NAMESPACE, f"{ws}:{label}")),
                label=label,
                ref=ref,
                state="Active",
                processingType="Default",
                processingState="InProduction",
                description=f"{label} processing activity.",
                areaId=area["id"],
                area=project(area, "AreaBaseDto"),
                entity=project(entity, "AreaBaseDto"),
                owner=owner,
                ownerId=owner["id"] if owner else None,
                creatorUser=owner,
                workSpaceId=ws,
                editable=True,
                visible=True,
                progression=0.6,
                quality=0.5,
                dateCreation=created,
            )
            self._put("processings", ws, processing)
            rows.append(("processings", ws, processing))
        for body in (
            {"actorType": "Morale", "companyName": "Salesforce Inc.", "countryCode": "US",
             "email": "privacy@salesforce.example", "vendorType": "B2B"},
            {"actorType": "Morale", "companyName": "Mailchimp", "countryCode": "US",
             "email": "dpo@mailchimp.example", "vendorType": "B2B"},
            {"actorType": "Morale", "companyName": "OVHcloud", "countryCode": "FR",
             "email": "dpo@ovhcloud.example", "vendorType": "B2B"},
            {"actorType": "Physical", "givenName": "Jeanne", "familyName": "Dupont",
             "email": "jeanne.dupont@acme.example", "countryCode": "FR"},
        ):  # fmt: skip
            actor = self._new_actor(ws, body, creator=self.ui_user(), when=created)
            self._put("actors", ws, actor)
            rows.append(("actors", ws, actor))
        first_processing = self.items("processings", ws)[0]
        self._link(
            ws, first_processing, [self.items("actors", ws)[0]], {"type": "Recipient",
            "recipientType": "Vendor", "jobTitle": "Processor"}, when=created,
        )  # fmt: skip
        return rows

    # --- rights requests ---------------------------------------------------------------------

    def _check_area(self, ws: int, area_id: Any, field: str = "AreaId") -> dict[str, Any]:
        area = self._data["areas"].get(ws, {}).get(area_id)
        if area is None:
            raise StateError({field: [f"The area {area_id} does not exist in this workspace."]})
        return area

    def _check_user(self, user_id: Any, field: str) -> dict[str, Any] | None:
        if user_id is None:
            return None
        user = self.users.get(user_id)
        if user is None:
            raise StateError({field: [f"The user {user_id} does not exist."]})
        return user

    def _new_rights_request(
        self, ws: int, body: Mapping[str, Any], *, creator: dict[str, Any] | None, when: str
    ) -> dict[str, Any]:
        if not body.get("purposes"):
            raise StateError({"Purposes": ["At least one purpose is required."]})
        area = self._check_area(ws, body.get("areaId"))
        operator = self._check_user(body.get("operatorId"), "OperatorId")
        obj = blank("DataSubjectRequestDto")
        obj.update(_writable(body, "DataSubjectRequestDto", skip=("area", "creator", "operator")))
        state = obj.get("state") or "Open"
        now = datetime.fromisoformat(when.replace("Z", "+00:00"))
        expiry = obj.get("expiryTime") or format_date(now + timedelta(days=_RIGHTS_REQUEST_DAYS))
        step = self._step_for(ws, "DataSubject", state)
        obj.update(
            id=self._take_id("rightsRequests"),
            state=state,
            channel=body.get("channel") or "Internal",
            area=area,
            creator=project(creator, "UserLightDto"),
            operator=project(operator, "UserLightDto"),
            workFlowStepId=body.get("workFlowStepId") or step["id"],
            workFlowStep=step,
            expiryTime=expiry,
            remainingDays=_days_until(expiry, now),
            emailValidationDate=DOTNET_MIN_DATE,
            dateCreation=when,
            dateUpdate=None,
            tags=obj.get("tags") or [],
            attachments=obj.get("attachments") or [],
        )
        if state == "Closed":
            obj["dateClosed"] = when
        return obj

    def create_rights_request(
        self,
        ws: int,
        body: Mapping[str, Any],
        *,
        creator: dict[str, Any] | None = None,
        backdate_s: float = 0.0,
    ) -> dict[str, Any]:
        """Store a new rights request. `backdate_s` stamps it that many seconds in the past, as a
        slow database transaction makes an item visible after newer ones (a test control)."""
        when = format_date(datetime.now(UTC) - timedelta(seconds=backdate_s))
        obj = self._new_rights_request(ws, body, creator=creator or self.api_user(), when=when)
        return self._store("rightsRequests", ws, obj)

    def update_rights_request(self, key: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a rights request as a Dastra user would in the app (bumps `dateUpdate`)."""
        ws = self.workspace_of("rightsRequests", key)
        obj = dict(self.get("rightsRequests", ws, key))
        allowed = _writable(changes, "DataSubjectRequestDto", skip=("area", "creator"))
        if "areaId" in allowed:
            obj["area"] = self._check_area(ws, allowed["areaId"])
        obj.update(allowed)
        when = now_iso()
        if "state" in allowed:
            step = self._step_for(ws, "DataSubject", obj["state"])
            obj.update(workFlowStepId=step["id"], workFlowStep=step)
            obj["dateClosed"] = when if obj["state"] == "Closed" else None
        obj["dateUpdate"] = when
        return self._store("rightsRequests", ws, obj)

    def delete(self, kind: str, key: Any) -> dict[str, Any]:
        """Remove an object as a Dastra user deleting it in the app; returns it."""
        ws = self.workspace_of(kind, key)
        obj = self._data[kind][ws].pop(key)
        del self._where[kind][key]
        if self._db is not None:
            self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, str(key)))
            self._db.commit()
        return obj

    # --- tasks -------------------------------------------------------------------------------

    def _new_task(
        self, ws: int, body: Mapping[str, Any], *, creator: dict[str, Any] | None, when: str
    ) -> dict[str, Any]:
        area_id = body.get("areaId") or self.items("areas", ws)[0]["id"]  # 0/absent: root [I]
        area = self._check_area(ws, area_id)
        owner = self._check_user(body.get("ownerId"), "OwnerId")
        assignee = self._check_user(body.get("assignedToUserId"), "AssignedToUserId")
        obj = blank("TaskDto")
        obj.update(_writable(body, "TaskDto", skip=("workSpace", "area", "owner", "creator")))
        state = obj.get("state") if "state" in body else "Open"
        step = self._step_for(ws, "Task", state or "Open")
        key = self._take_id("tasks")
        description = body.get("descriptionHtml")
        now = datetime.fromisoformat(when.replace("Z", "+00:00"))
        obj.update(
            id=key,
            order=key,
            state=state,
            priority=body.get("priority") or "Medium",  # [I] Dastra's default is unknown
            areaId=area_id,
            area=project(area, "AreaLightDto"),
            workspaceId=ws,
            workSpace=self.workspaces[ws],
            owner=project(owner, "UserLightDto"),
            assignedToUser=project(assignee, "UserLightDto"),
            creator=project(creator or self.api_user(), "UserLightDto"),
            workFlowStepId=body.get("workFlowStepId") or step["id"],
            workFlowStep=step,
            descriptionPlainText=(
                html.unescape(_TAG.sub(" ", description)).strip() if description else None
            ),
            remainingDays=_days_until(body.get("deadline"), now),
            dateActivated=when if state == "Active" else body.get("dateActivated"),
            dateClosed=when if state == "Closed" else body.get("dateClosed"),
            dateCreation=when,
            dateUpdate=None,
            tags=obj.get("tags") or [],
            attachments=obj.get("attachments") or [],
            children=[],
        )
        return obj

    def create_task(
        self,
        ws: int,
        body: Mapping[str, Any],
        *,
        creator: dict[str, Any] | None = None,
        backdate_s: float = 0.0,
    ) -> dict[str, Any]:
        when = format_date(datetime.now(UTC) - timedelta(seconds=backdate_s))
        return self._store("tasks", ws, self._new_task(ws, body, creator=creator, when=when))

    def update_task(self, key: int, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a task as a Dastra user would in the app (bumps `dateUpdate`)."""
        ws = self.workspace_of("tasks", key)
        obj = dict(self.get("tasks", ws, key))
        allowed = _writable(changes, "TaskDto", skip=("workSpace", "area", "owner", "creator"))
        if "areaId" in allowed:
            obj["area"] = project(self._check_area(ws, allowed["areaId"]), "AreaLightDto")
        if "assignedToUserId" in allowed:
            user = self._check_user(allowed["assignedToUserId"], "AssignedToUserId")
            obj["assignedToUser"] = project(user, "UserLightDto")
        obj.update(allowed)
        when = now_iso()
        if "state" in allowed:
            step = self._step_for(ws, "Task", obj["state"])
            obj.update(workFlowStepId=step["id"], workFlowStep=step)
            if obj["state"] == "Closed":
                obj["dateClosed"] = when
            if obj["state"] == "Active" and not obj.get("dateActivated"):
                obj["dateActivated"] = when
        obj["dateUpdate"] = when
        return self._store("tasks", ws, obj)

    # --- actors and links --------------------------------------------------------------------

    def _new_actor(
        self, ws: int, body: Mapping[str, Any], *, creator: dict[str, Any] | None, when: str
    ) -> dict[str, Any]:
        obj = blank("ActorDto")
        obj.update(_writable(body, "ActorDto", skip=("recipients", "creator")))
        actor_type = body.get("actorType") or ("Morale" if body.get("companyName") else "Physical")
        person = " ".join(p for p in (body.get("givenName"), body.get("familyName")) if p)
        display = body.get("companyName") if actor_type == "Morale" else person
        obj.update(
            id=self._take_id("actors"),
            actorType=actor_type,
            displayName=display or body.get("companyName") or person or body.get("email"),
            creator=project(creator or self.api_user(), "UserLightDto"),
            nbReferences=0,
            recipients=[],
            tags=obj.get("tags") or [],
            attachments=obj.get("attachments") or [],
            dateCreation=when,
            dateUpdate=None,
        )
        return obj

    def create_actor(
        self, ws: int, body: Mapping[str, Any], *, creator: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return self._store("actors", ws, self._new_actor(ws, body, creator=creator, when=now_iso()))

    def _link(
        self,
        ws: int,
        processing: dict[str, Any],
        actors: list[dict[str, Any]],
        body: Mapping[str, Any],
        *,
        when: str,
    ) -> tuple[int, list[dict[str, Any]]]:
        role = body.get("type") or "Recipient"
        field = {"Recipient": "recipients", "DataController": "dataControllers"}.get(
            role, "stakeHolders"
        )
        existing = {
            (link.get("actorId"), link.get("type", "DataController"))
            for name in ("recipients", "stakeHolders", "dataControllers")
            for link in processing.get(name) or []
        }
        created = 0
        changed: list[dict[str, Any]] = []
        for actor in actors:
            if (actor["id"], role) in existing and not self._config.duplicate_links:
                continue  # already linked in this role: Dastra keeps one link [I]
            existing.add((actor["id"], role))
            link = blank("DataProcessingActorDto")
            link.update(
                id=str(uuid.uuid4()),
                actorId=actor["id"],
                actor=project(actor, "ActorLightDto"),
                type=role,
                recipientType=body.get("recipientType") or link["recipientType"],
                jobTitle=body.get("jobTitle") or link["jobTitle"],
                label=body.get("label"),
                description=body.get("description"),
                displayName=actor.get("displayName"),
                areaId=processing.get("areaId"),
                area=processing.get("area"),
            )
            if field == "dataControllers":
                link = project(link, "DataProcessingDataControllerDto") or {}
            processing[field] = [*(processing.get(field) or []), link]
            light = project(processing, "ActorDataProcessingLightDto") or {}
            light.update(
                type=role,
                recipientType=body.get("recipientType") or "InternalService",
                jobTitle=body.get("jobTitle") or "Other",
                workspaceId=ws,
                dateUpdate=processing.get("dateUpdate") or processing["dateCreation"],
            )
            updated_actor = dict(actor)
            updated_actor["recipients"] = [*(actor.get("recipients") or []), light]
            updated_actor["nbReferences"] = int(actor.get("nbReferences") or 0) + 1
            self._put("actors", ws, updated_actor)
            changed.append(updated_actor)
            created += 1
        if created:
            processing["dateUpdate"] = when
        return created, changed

    def link_actors(self, ws: int, body: Mapping[str, Any]) -> int:
        """`recipients/batch`: link each actor once per role; the number of links created."""
        try:
            processing_id = str(uuid.UUID(str(body.get("dataProcessingId"))))
        except ValueError:
            raise StateError(
                {"DataProcessingId": ["A processing id (uuid) is required."]}
            ) from None
        processing = self._data["processings"].get(ws, {}).get(processing_id)
        if processing is None:
            raise StateError(
                {"DataProcessingId": [f"The processing {processing_id} does not exist."]}
            )
        ids = list(dict.fromkeys(body.get("actorIds") or []))
        missing = [i for i in ids if i not in self._data["actors"].get(ws, {})]
        if missing:
            raise StateError(
                {"ActorIds": [f"The actor {i} does not exist in this workspace." for i in missing]}
            )
        actors = [self._data["actors"][ws][i] for i in ids]
        processing = dict(processing)
        created, changed = self._link(ws, processing, actors, body, when=now_iso())
        if created:
            self._put("processings", ws, processing)
            self._save([("processings", ws, processing), *(("actors", ws, a) for a in changed)])
        return created

    # --- bulk --------------------------------------------------------------------------------

    def bulk_create(self, kind: str, ws: int, count: int, template: Mapping[str, Any]) -> list[Any]:
        """Create `count` objects fast (one SQLite transaction); `{n}` in a string of
        `template` becomes the object's 1-based rank. Returns the ids."""
        builders = {
            "rightsRequests": lambda body, when: self._new_rights_request(
                ws, body, creator=self.ui_user(), when=when
            ),
            "tasks": lambda body, when: self._new_task(ws, body, creator=self.ui_user(), when=when),
            "actors": lambda body, when: self._new_actor(
                ws, body, creator=self.ui_user(), when=when
            ),
        }
        if kind not in builders:
            raise StateError({"kind": [f"bulk creation takes {', '.join(builders)}"]})
        placeholders = {k: v for k, v in template.items() if isinstance(v, str) and "{n}" in v}
        rows: list[tuple[str, int, dict[str, Any]]] = []
        for n in range(1, count + 1):
            body = dict(template)
            for name, value in placeholders.items():
                body[name] = value.replace("{n}", str(n))
            obj = builders[kind](body, now_iso())
            self._put(kind, ws, obj)
            rows.append((kind, ws, obj))
        self._save(rows)
        return [obj["id"] for _, _, obj in rows]
