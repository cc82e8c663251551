"""Dastra's OpenAPI subset as JSON Schema validators, shared by the sandbox and the tests.

Consumes `dastra-api-subset.json` (written by `python -m dastra.spec.extract`). Produces the
operations we use (method, path template, request and response schemas) and jsonschema
validators for them. The OpenAPI 3.0 schemas are converted on load to JSON Schema 2020-12:

- `nullable: true` becomes a `"null"` member of `type` (and of `enum`);
- a property that is a bare `$ref` to an *object* schema also accepts `null`: Swashbuckle cannot
  mark a `$ref` nullable in OpenAPI 3.0, and .NET serialises a missing reference as `null`
  (references to enums stay non-nullable: .NET enums are value types);
- formats `date-time`, `uuid`, `int32` and `int64` are asserted, not just annotated;
- `strict=False` drops `additionalProperties: false`, as ASP.NET ignores unknown JSON members
  when it reads a request body (the sandbox validates bodies that way; the contract tests use
  the strict form, so the client never sends a member the spec does not know).

`load_spec` adds the members Dastra's documentation shows and its OpenAPI document lacks
(`DOCUMENTED_MEMBERS`, each marked `x-dastra-kafka-source: docs`); the subset file stays what
the extractor writes.

    spec = load_spec()
    errors = spec.request_errors("POST", "/v1/ws/1/Tasks", {"label": "x"})
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = [
    "DOCUMENTED_MEMBERS",
    "FORMAT_CHECKER",
    "SUBSET_FILE",
    "DastraSpec",
    "Operation",
    "load_spec",
]

SUBSET_FILE = Path(__file__).with_name("dastra-api-subset.json")
_BASE_URI = "urn:dastra-kafka:dastra-api-subset"
_REF_PREFIX = "#/components/schemas/"
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?$")

FORMAT_CHECKER = FormatChecker(formats=())

# Members of Dastra's objects that its documentation shows and its OpenAPI document does not
# declare (dastra-api.md: the 2023 example of a rights request has `customFields {}`, an object
# of the workspace's custom-field slugs). Both directions carry them: a create body and a read.
DOCUMENTED_MEMBERS: dict[str, dict[str, Any]] = {
    "DataSubjectRequestDto": {
        "customFields": {
            "type": "object",
            "nullable": True,
            "description": "The workspace's custom fields, by slug (Dastra's documentation).",
            "x-dastra-kafka-source": "docs",
        },
    },
}


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    # ISO 8601 as .NET writes it: an offset is usual but optional (DateTimeKind.Unspecified).
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@FORMAT_CHECKER.checks("uuid", raises=ValueError)
def _is_uuid(value: object) -> bool:
    if isinstance(value, str):
        uuid.UUID(value)
    return True


@FORMAT_CHECKER.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@FORMAT_CHECKER.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


@dataclass(frozen=True)
class Operation:
    """One operation of the subset."""

    method: str  # upper case
    path: str  # the template, e.g. /v1/ws/{workspaceId}/Tasks/{id}
    operation_id: str
    request_schema: str | None  # component name of the JSON body, if any
    response_schema: dict[str, Any] | None  # the 200 response's schema, if declared
    parameters: tuple[Mapping[str, Any], ...]

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


def _is_object_schema(schema: Mapping[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def _convert(node: Any, schemas: Mapping[str, Any], *, strict: bool) -> Any:
    if isinstance(node, list):
        return [_convert(item, schemas, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "nullable":
            continue
        if key == "properties":
            out[key] = {
                name: _nullable_ref(_convert(prop, schemas, strict=strict), schemas)
                for name, prop in value.items()
            }
        elif key == "additionalProperties" and value is False and not strict:
            continue
        else:
            out[key] = _convert(value, schemas, strict=strict)
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list):
            out["enum"] = [*out["enum"], None]
    return out


def _nullable_ref(prop: dict[str, Any], schemas: Mapping[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if not isinstance(ref, str) or not ref.startswith(_REF_PREFIX):
        return prop
    if not _is_object_schema(schemas[ref[len(_REF_PREFIX) :]]):
        return prop
    rest = {k: v for k, v in prop.items() if k != "$ref"}
    return {**rest, "anyOf": [{"$ref": ref}, {"type": "null"}]}


def _json_schema(node: Any) -> dict[str, Any] | None:
    if not isinstance(node, dict):
        return None
    content = node.get("content") or {}
    media = content.get("application/json") or next(iter(content.values()), None)
    if not isinstance(media, dict) or "schema" not in media:
        return None
    schema = media["schema"]
    return schema if isinstance(schema, dict) else None


class DastraSpec:
    """The subset document with path matching and cached validators."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.schemas: Mapping[str, Any] = document["components"]["schemas"]
        self._registries = {
            strict: Registry().with_resource(
                _BASE_URI,
                Resource.from_contents(
                    {
                        "components": {
                            "schemas": {
                                name: _convert(schema, self.schemas, strict=strict)
                                for name, schema in self.schemas.items()
                            }
                        }
                    },
                    default_specification=DRAFT202012,
                ),
            )
            for strict in (True, False)
        }
        self.operations: dict[str, Operation] = {}
        self._matchers: list[tuple[re.Pattern[str], Operation]] = []
        for path, methods in document["paths"].items():
            for method, op in methods.items():
                request = _json_schema(op.get("requestBody"))
                request_ref = request.get("$ref") if request else None
                operation = Operation(
                    method=method.upper(),
                    path=path,
                    operation_id=op.get("operationId", ""),
                    request_schema=(
                        request_ref[len(_REF_PREFIX) :] if isinstance(request_ref, str) else None
                    ),
                    response_schema=_json_schema(op.get("responses", {}).get("200")),
                    parameters=tuple(op.get("parameters", [])),
                )
                self.operations[operation.key] = operation
                pattern = re.escape(path)
                pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", pattern)
                self._matchers.append((re.compile(f"^{pattern}$", re.IGNORECASE), operation))
        # Literal segments win over parameters (recipients/batch before {id}).
        self._matchers.sort(key=lambda item: item[1].path.count("{"))

    def match(self, method: str, path: str) -> Operation | None:
        """The operation serving `method path` (a concrete path, without the query string)."""
        for pattern, operation in self._matchers:
            if operation.method == method.upper() and pattern.match(path):
                return operation
        return None

    def enum_values(self, name: str) -> list[str]:
        """The values of the enum schema `name`."""
        return list(self.schemas[name]["enum"])

    def properties(self, name: str) -> dict[str, Any]:
        """The (OpenAPI) properties of the object schema `name`."""
        return dict(self.schemas[name].get("properties", {}))

    @functools.cache  # noqa: B019 - one spec per process, cached by load_spec
    def _validator(self, schema_json: str, strict: bool) -> Draft202012Validator:
        schema = _convert(json.loads(schema_json), self.schemas, strict=strict)
        schema = _rebase(schema)
        return Draft202012Validator(
            schema, registry=self._registries[strict], format_checker=FORMAT_CHECKER
        )

    def validator(self, schema: Mapping[str, Any] | str, *, strict: bool = True) -> Any:
        """A jsonschema validator for a component name or an OpenAPI schema object."""
        node = {"$ref": _REF_PREFIX + schema} if isinstance(schema, str) else dict(schema)
        return self._validator(json.dumps(node, sort_keys=True), strict)

    def errors(
        self, schema: Mapping[str, Any] | str, instance: Any, *, strict: bool = True
    ) -> list[ValidationError]:
        """Every validation error of `instance` against `schema`, in document order."""
        found: Iterator[ValidationError] = self.validator(schema, strict=strict).iter_errors(
            instance
        )
        return sorted(found, key=lambda e: [str(p) for p in e.absolute_path])

    def request_errors(
        self, method: str, path: str, body: Any, *, strict: bool = True
    ) -> list[ValidationError]:
        """Errors of a request body against its operation's schema (no body schema: none)."""
        operation = self.match(method, path)
        if operation is None:
            raise KeyError(f"{method} {path} is not an operation of the Dastra subset")
        if operation.request_schema is None:
            return []
        return self.errors(operation.request_schema, body, strict=strict)

    def response_errors(self, method: str, path: str, body: Any) -> list[ValidationError]:
        """Errors of a 200 response body against its operation's declared schema (strict)."""
        operation = self.match(method, path)
        if operation is None:
            raise KeyError(f"{method} {path} is not an operation of the Dastra subset")
        if operation.response_schema is None:
            return []
        return self.errors(operation.response_schema, body)


def _rebase(node: Any) -> Any:
    """Point local `#/components/...` references at the registered subset resource."""
    if isinstance(node, list):
        return [_rebase(item) for item in node]
    if isinstance(node, dict):
        return {
            key: (
                _BASE_URI + value
                if key == "$ref" and isinstance(value, str) and value.startswith("#/")
                else _rebase(value)
            )
            for key, value in node.items()
        }
    return node


@functools.cache
def load_spec() -> DastraSpec:
    """The project's Dastra OpenAPI subset (read once per process), with `DOCUMENTED_MEMBERS`."""
    document = json.loads(SUBSET_FILE.read_text(encoding="utf-8"))
    for schema, members in DOCUMENTED_MEMBERS.items():
        document["components"]["schemas"][schema]["properties"].update(members)
    return DastraSpec(document)
