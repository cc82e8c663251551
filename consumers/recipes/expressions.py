"""The expression language of the recipes: JMESPath expressions and `{{ expr }}` templates.

Consumes expression text from recipe files. Produces compiled `Expression`s (filters, paths) and
`Template`s (any JSON value whose strings may hold `{{ expr }}`), which evaluate against a JSON
context, and what an expression refers to (root names, functions) so that a recipe can be
checked before it runs.

Why JMESPath: it is a specified query language (jmespath.org) with implementations in most
languages, it only reads the document it is given, and it cannot call anything but the functions
registered with it: no attribute access, no imports, no loops that do not end. The functions
added here are pure and small (dates, text); none does I/O. A template is plain text with
`{{ expr }}` holes; a string that is exactly one hole keeps the expression's JSON type (a number
stays a number, `null` leaves an optional field unset).

    label = Template.parse("Answer request #{{ data.id }}", "label")
    label.render({"data": {"id": 4521}})                  # 'Answer request #4521'
    Expression("contains(data.purposes, 'Erasure')").matches({"data": {"purposes": ["Erasure"]}})
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import jmespath
from jmespath import exceptions as jmespath_errors
from jmespath import functions as jmespath_functions

__all__ = [
    "FUNCTIONS",
    "Expression",
    "ExpressionError",
    "Template",
    "format_datetime",
    "parse_datetime",
    "truthy",
]

_HOLE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


class ExpressionError(ValueError):
    """An expression does not compile, names an unknown function, or fails on its input.
    `field` is where, inside a template (`with.label`), when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.reason = message
        self.field = field


def parse_datetime(value: str) -> datetime:
    """An ISO 8601 date or date-time (UTC when it has no zone), as Dastra writes them."""
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        # The value is not quoted: it may be personal data, and errors end up in logs.
        raise ExpressionError("not an ISO 8601 date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_datetime(value: datetime) -> str:
    """UTC, milliseconds, `Z`: `2026-04-01T09:14:07.310Z`."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str:
    """A value as template text: null is empty, JSON for arrays and objects."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_F = TypeVar("_F", bound=Callable[..., Any])


def _signature(*arguments: dict[str, Any]) -> Callable[[_F], _F]:
    return cast(Callable[[_F], _F], jmespath_functions.signature(*arguments))


class _Functions(jmespath_functions.Functions):  # type: ignore[misc]
    """The functions the recipes add to JMESPath's built-ins (all pure, none does I/O)."""

    @_signature()
    def _func_now(self) -> str:
        return format_datetime(datetime.now(UTC))

    @_signature()
    def _func_today(self) -> str:
        return datetime.now(UTC).date().isoformat()

    @_signature({"types": ["string"]}, {"types": ["number"]})
    def _func_add_days(self, date: str, days: float) -> str:
        return format_datetime(parse_datetime(date) + timedelta(days=days))

    @_signature({"types": ["string"]})
    def _func_days_until(self, date: str) -> float:
        left = (parse_datetime(date) - datetime.now(UTC)).total_seconds() / 86400
        return round(left, 3)

    @_signature({"types": ["string"]})
    def _func_date(self, date: str) -> str:
        return parse_datetime(date).astimezone(UTC).date().isoformat()

    @_signature({"types": ["string"]})
    def _func_lower(self, text: str) -> str:
        return text.lower()

    @_signature({"types": ["string"]})
    def _func_upper(self, text: str) -> str:
        return text.upper()

    @_signature({"types": ["string"]})
    def _func_trim(self, text: str) -> str:
        return text.strip()

    @_signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, text: str, separator: str) -> list[str]:
        if not separator:
            raise ExpressionError("split(): the separator is empty")
        return [part.strip() for part in text.split(separator) if part.strip()]

    @_signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_replace(self, text: str, old: str, new: str) -> str:
        return text.replace(old, new) if old else text

    @_signature({"types": ["string"]}, {"types": ["number"]})
    def _func_truncate(self, text: str, length: float) -> str:
        limit = max(1, int(length))
        return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"

    @_signature({"types": ["string", "null"]})
    def _func_escape_html(self, text: str | None) -> str:
        return html.escape(text or "")

    @_signature({"types": []})
    def _func_text(self, value: Any) -> str | None:
        return None if value is None else _text(value)

    @_signature({"types": [], "variadic": True})
    def _func_concat(self, *values: Any) -> str:
        return "".join(_text(value) for value in values)

    @_signature({"types": [], "variadic": True})
    def _func_coalesce(self, *values: Any) -> Any:
        return next((value for value in values if value is not None), None)


_OPTIONS = jmespath.Options(custom_functions=_Functions())

# name -> (least number of arguments, most (None: any))
FUNCTIONS: dict[str, tuple[int, int | None]] = {
    name: (
        (len(spec["signature"]), None)
        if spec["signature"] and spec["signature"][-1].get("variadic")
        else (len(spec["signature"]), len(spec["signature"]))
    )
    for name, spec in _Functions.FUNCTION_TABLE.items()
}


def truthy(value: Any) -> bool:
    """JMESPath's truth: false, null, "", [] and {} are false; everything else is true."""
    return not (value is None or value is False or value in ("", [], {}))


# Node types whose first child is evaluated against the current node and the rest against
# its result (a projection's elements, a pipe's output).
_LEFT_THEN_ELSEWHERE = {
    "subexpression",
    "index_expression",
    "projection",
    "value_projection",
    "filter_projection",
    "pipe",
    "flatten",
}


def _chain(node: Mapping[str, Any]) -> list[str]:
    """The field names a path starts with, from the node it is evaluated against."""
    kind = node.get("type")
    if kind == "field":
        return [str(node["value"])]
    children = node.get("children") or []
    if kind == "subexpression":
        names = _chain(children[0]) if children else []
        if len(names) == 0:
            return []
        for child in children[1:]:
            if child.get("type") == "field":
                names.append(str(child["value"]))
                continue
            if child.get("type") in _LEFT_THEN_ELSEWHERE - {"pipe"}:
                names += _chain(child)
            break
        return names
    if kind in _LEFT_THEN_ELSEWHERE - {"subexpression", "pipe"} and children:
        return _chain(children[0])
    return []


@dataclass(frozen=True)
class _Walk:
    roots: list[tuple[str, ...]]
    functions: list[tuple[str, int]]
    pitfalls: list[str]


def _walk(node: Mapping[str, Any], at_root: bool, found: _Walk) -> None:
    kind = node.get("type")
    children = list(node.get("children") or [])
    if kind == "function_expression":
        found.functions.append((str(node["value"]), len(children)))
        for child in children:
            _walk(child, at_root and child.get("type") != "expref", found)
        return
    if kind in _LEFT_THEN_ELSEWHERE:
        if kind != "pipe" and children and children[0].get("type") == "not_expression":
            # `!data.archived` is `(!data).archived`: JMESPath's `!` binds tighter than `.`.
            found.pitfalls.append(
                "'!' applies only to the name right after it: write !(a.b), not !a.b"
            )
        if at_root:
            names = _chain(node)
            if names:
                found.roots.append(tuple(names))
        if children:
            _walk(children[0], at_root, found)
        for child in children[1:]:
            _walk(child, False, found)
        return
    if kind == "field":
        if at_root:
            found.roots.append((str(node["value"]),))
        return
    for child in children:
        _walk(child, at_root and child.get("type") != "expref", found)


class Expression:
    """A compiled JMESPath expression with the recipes' functions.

    Compiling checks the syntax, the function names and their number of arguments; `roots`
    lists the paths it reads from the context (e.g. `("steps", "actor", "result", "id")`).
    """

    __slots__ = ("_compiled", "roots", "text")

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        if not self.text:
            raise ExpressionError("empty expression")
        try:
            self._compiled = jmespath.compile(self.text)
        except jmespath_errors.JMESPathError as exc:
            raise ExpressionError(_syntax_message(self.text, exc)) from None
        except RecursionError:
            raise ExpressionError("expression nested too deeply") from None
        found = _Walk(roots=[], functions=[], pitfalls=[])
        _walk(self._compiled.parsed, True, found)
        if found.pitfalls:
            raise ExpressionError(f"{found.pitfalls[0]} in {self.text!r}")
        for name, count in found.functions:
            if name not in FUNCTIONS:
                raise ExpressionError(
                    f"unknown function {name}(); known: {', '.join(sorted(FUNCTIONS))}"
                )
            least, most = FUNCTIONS[name]
            if count < least or (most is not None and count > most):
                wanted = f"{least}" if most == least else f"at least {least}"
                raise ExpressionError(f"{name}() takes {wanted} argument(s), got {count}")
        self.roots: tuple[tuple[str, ...], ...] = tuple(dict.fromkeys(found.roots))

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def search(self, context: Any) -> Any:
        """The expression's value on `context`; `ExpressionError` when a function refuses its
        input (e.g. `lower(null)`)."""
        try:
            return self._compiled.search(context, options=_OPTIONS)
        except ExpressionError as exc:
            raise ExpressionError(f"{self.text}: {exc}") from None
        except jmespath_errors.JMESPathError as exc:
            raise ExpressionError(f"{self.text}: {_runtime_message(exc)}") from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ExpressionError(f"{self.text}: {type(exc).__name__}: {exc}") from None

    def matches(self, context: Any) -> bool:
        """The expression's value is true (JMESPath's truth, see `truthy`)."""
        return truthy(self.search(context))


def _syntax_message(text: str, exc: jmespath_errors.JMESPathError) -> str:
    position = getattr(exc, "lex_position", None)
    token = getattr(exc, "token_value", None)
    reason = getattr(exc, "msg", None) or str(exc).splitlines()[0]
    if isinstance(exc, jmespath_errors.IncompleteExpressionError):
        reason = "incomplete expression"
    where = f" at column {position + 1}" if isinstance(position, int) else ""
    near = f" near {token!r}" if token not in (None, "") else ""
    return f"not a valid JMESPath expression{where}{near}: {reason} in {text!r}"


def _runtime_message(exc: jmespath_errors.JMESPathError) -> str:
    if isinstance(exc, jmespath_errors.JMESPathTypeError):
        return (
            f"{exc.function_name}() got {exc.actual_type}, expected "
            f"{' or '.join(exc.expected_types)}"
        )
    return str(exc).splitlines()[0]


# --- templates -------------------------------------------------------------------------------


class Template:
    """A JSON value (mapping, list, string, number...) whose strings may hold `{{ expr }}`.

    A string that is exactly one `{{ expr }}` renders to the expression's value, whatever its
    type; any other string renders to text (null as empty, arrays and objects as JSON).

        Template.parse({"label": "Call {{ data.name }}", "objectId": "{{ data.id }}"}, "with")
    """

    __slots__ = ("_kind", "_value")

    def __init__(self, kind: str, value: Any) -> None:
        self._kind = kind
        self._value = value

    @classmethod
    def parse(cls, value: Any, field: str) -> Template:
        """Compile every expression inside `value`; `ExpressionError` names `field` (and the
        path below it) of the first one that does not compile."""
        if isinstance(value, Mapping):
            parts = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ExpressionError(f"keys must be text, got {key!r}", field)
                parts[key] = cls.parse(item, f"{field}.{key}")
            return cls("map", parts)
        if isinstance(value, list):
            return cls("list", [cls.parse(item, f"{field}[{i}]") for i, item in enumerate(value)])
        if isinstance(value, str) and "{{" in value:
            holes = list(_HOLE.finditer(value))
            rest = _HOLE.sub("", value)
            if "{{" in rest or "}}" in rest:
                raise ExpressionError(f"unbalanced '{{{{' or '}}}}' in {value!r}", field)
            try:
                if len(holes) == 1 and holes[0].span() == (0, len(value)):
                    return cls("raw", Expression(holes[0].group(1)))
                parts_text: list[str | Expression] = []
                end = 0
                for hole in holes:
                    if hole.start() > end:
                        parts_text.append(value[end : hole.start()])
                    parts_text.append(Expression(hole.group(1)))
                    end = hole.end()
                if end < len(value):
                    parts_text.append(value[end:])
            except ExpressionError as exc:
                raise ExpressionError(str(exc), field) from None
            return cls("text", parts_text)
        if value is None or isinstance(value, str | int | float | bool):
            return cls("literal", value)
        raise ExpressionError(f"{type(value).__name__} values are not allowed", field)

    @property
    def is_constant(self) -> bool:
        """True when the template holds no expression at all."""
        return not any(True for _ in self.expressions())

    @property
    def constant(self) -> Any:
        """The value of a template without expressions (`is_constant`)."""
        return self.render({})

    def field_names(self) -> list[str]:
        """The keys of a mapping template (empty for anything else)."""
        return list(self._value) if self._kind == "map" else []

    def item(self, key: str) -> Template:
        """The template under `key` of a mapping template."""
        if self._kind != "map":
            raise KeyError(key)
        template: Template = self._value[key]
        return template

    def expressions(self, field: str = "") -> Iterator[tuple[str, Expression]]:
        """Every expression inside, with the path below the template (`.label`, `[0]`)."""
        if self._kind == "map":
            for key, item in self._value.items():
                yield from item.expressions(f"{field}.{key}")
        elif self._kind == "list":
            for index, item in enumerate(self._value):
                yield from item.expressions(f"{field}[{index}]")
        elif self._kind == "raw":
            yield field, self._value
        elif self._kind == "text":
            for part in self._value:
                if isinstance(part, Expression):
                    yield field, part

    def render(self, context: Any, *, drop_nulls: bool = False) -> Any:
        """The JSON value for `context`; with `drop_nulls`, mapping entries whose value is null
        are left out (an optional field left unset)."""
        if self._kind == "map":
            rendered = {key: item.render(context) for key, item in self._value.items()}
            if drop_nulls:
                return {key: value for key, value in rendered.items() if value is not None}
            return rendered
        if self._kind == "list":
            return [item.render(context) for item in self._value]
        if self._kind == "raw":
            return self._value.search(context)
        if self._kind == "text":
            return "".join(
                _text(part.search(context)) if isinstance(part, Expression) else part
                for part in self._value
            )
        return self._value
