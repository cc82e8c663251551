"""Request-body validation of the sandbox, answered the way ASP.NET Core answers.

Consumes a request body and the spec subset's schema for it. Produces `None` when the body is
acceptable, else the `errors` of ASP.NET's 400 ValidationProblemDetails:

- a member that cannot be converted (wrong JSON type, unknown enum value, bad date or uuid) is
  keyed by its JSON path (`"$.purposes[0]"`), and then nothing else is reported, since
  System.Text.Json stops there;
- otherwise a missing required member or a too long string is keyed by the property's .NET
  name (`"Title"`, `"Locale"`) with the data-annotation messages.

Unknown members are ignored, as ASP.NET does (the spec's `additionalProperties: false` is not
enforced on requests).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from jsonschema.exceptions import ValidationError

from dastra.spec import load_spec

__all__ = ["problem", "validate_body"]

_CONVERSION = {"type", "enum", "format", "anyOf"}
_NET_TYPES = {
    "integer": "System.Int32",
    "number": "System.Double",
    "boolean": "System.Boolean",
    "string": "System.String",
    "array": "System.Collections.Generic.List",
    "object": "an object",
}


def _pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def _dotnet_path(path: Sequence[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + _pascal(part))
    return out


def _json_path(path: Sequence[Any]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _target(error: ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "enum" or "enum" in schema:
        values = [v for v in schema.get("enum", []) if v is not None]
        return "an enum value (" + ", ".join(map(str, values)) + ")"
    fmt = schema.get("format")
    if fmt == "date-time":
        return "System.DateTime"
    if fmt == "uuid":
        return "System.Guid"
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "object")
    return _NET_TYPES.get(str(kind), "the expected type")


def validate_body(schema: str, body: Any) -> dict[str, list[str]] | None:
    """ASP.NET's validation errors for `body` against the component `schema`, or None."""
    if not isinstance(body, dict):
        return {"$": [f"The JSON value could not be converted to {schema}. Path: $"]}
    errors = load_spec().errors(schema, body, strict=False)
    conversion: dict[str, list[str]] = {}
    model: dict[str, list[str]] = {}
    for error in errors:
        path = list(error.absolute_path)
        if error.validator in _CONVERSION:
            where = _json_path(path)
            conversion.setdefault(where, []).append(
                f"The JSON value could not be converted to {_target(error)}. Path: {where}"
            )
        elif error.validator == "required":
            instance = error.instance if isinstance(error.instance, dict) else {}
            required: Any = error.validator_value
            for name in required:
                if name not in instance:
                    key = _dotnet_path([*path, name])
                    model.setdefault(key, []).append(f"The {_pascal(name)} field is required.")
        elif error.validator in ("maxLength", "minLength"):
            key = _dotnet_path(path)
            bound = "maximum" if error.validator == "maxLength" else "minimum"
            model.setdefault(key, []).append(
                f"The field {key} must be a string or array type with a {bound} length of "
                f"'{error.validator_value}'."
            )
        else:
            key = _dotnet_path(path) or "$"
            model.setdefault(key, []).append(f"The field {key} is invalid.")
    if conversion:
        return _unique(conversion)
    return _unique(model) or None


def _unique(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    return {key: list(dict.fromkeys(messages)) for key, messages in sorted(errors.items())}


def problem(status: int, title: str, errors: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """An RFC 7807 ProblemDetails body as ASP.NET Core writes it."""
    types = {
        400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
        401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
        403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
        404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
        500: "https://tools.ietf.org/html/rfc9110#section-15.6.1",
        503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
    }
    body: dict[str, Any] = {
        "type": types.get(status, "about:blank"),
        "title": title,
        "status": status,
    }
    if errors is not None:
        body["errors"] = errors
    body["traceId"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"
    return body
