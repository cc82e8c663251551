"""List queries of the sandbox: JsonRuleEngine filters, sorting, paging and field selection.

Consumes the query parameters of Dastra's list endpoints (`filters`, `sortBy`, `asc`, `page`,
`size`, `skip`, `select`) and the stored objects. Produces the page of objects to return.

Semantics follow JsonRuleEngine.Net over SQL Server as far as we can tell [I]: field names match
the output's properties case-insensitively (dots reach into nested objects); string comparisons
ignore case (SQL Server's default collation); dates compare as instants; `null` sorts first.
Two strict modes (`FilterMode`) reproduce what the spec leaves open: field names resolved only
in PascalCase, and rule dates read as wall-clock time in a zone, whatever their suffix says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from dastra.filters import OPERATORS

__all__ = [
    "MAX_SIZE",
    "FilterMode",
    "QueryError",
    "compile_filter",
    "page_of",
    "select_fields",
    "sort_items",
]

MAX_SIZE = 500
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True)
class FilterMode:
    """How strictly filters are read: `pascal` accepts only PascalCase field names; `tz` is the
    zone rule dates are read in, their offset ignored (None: dates are instants)."""

    pascal: bool = False
    tz: str | None = None


class QueryError(Exception):
    """An invalid query parameter: `param` names it in the 400 body."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def _resolver(
    field: str, known: set[str], *, pascal: bool = False
) -> Callable[[Mapping[str, Any]], Any]:
    parts = field.split(".")
    if not parts[0] or parts[0].casefold() not in known:
        raise QueryError("filters", f"The field '{field}' is not a property of the results.")
    if pascal and not all(p[:1].isupper() for p in parts):
        # A case-sensitive engine over .NET properties: `dateCreation` is not `DateCreation`.
        raise QueryError("filters", f"The field '{field}' is not a property of the results.")
    lowered = [p.casefold() for p in parts]

    def get(obj: Mapping[str, Any]) -> Any:
        value: Any = obj
        for part in lowered:
            if not isinstance(value, Mapping):
                return None
            key = next((k for k in value if k.casefold() == part), None)
            if key is None:
                return None
            value = value[key]
        return value

    return get


def _date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _comparable(field_value: Any, rule_value: Any) -> tuple[Any, Any] | None:
    """Both sides in one comparable type, or None when they cannot be compared."""
    if field_value is None or rule_value is None:
        return None
    if isinstance(field_value, bool):
        if isinstance(rule_value, str) and rule_value.casefold() in ("true", "false"):
            rule_value = rule_value.casefold() == "true"
        return (field_value, rule_value) if isinstance(rule_value, bool) else None
    if isinstance(field_value, (int, float)):
        try:
            return field_value, float(rule_value)
        except (TypeError, ValueError):
            return None
    if isinstance(field_value, str):
        left, right = _date(field_value), _date(rule_value)
        if left is not None and right is not None:
            return left, right
        return field_value.casefold(), str(rule_value).casefold()
    return None


def _equal(field_value: Any, rule_value: Any) -> bool:
    if isinstance(field_value, list):
        return any(_equal(item, rule_value) for item in field_value)
    pair = _comparable(field_value, rule_value)
    return pair is not None and pair[0] == pair[1]


def _order(op: str) -> Callable[[Any, Any], bool]:
    def compare(field_value: Any, rule_value: Any) -> bool:
        pair = _comparable(field_value, rule_value)
        if pair is None:
            return False
        left, right = pair
        try:
            if op == "lessThan":
                return bool(left < right)
            if op == "lessThanInclusive":
                return bool(left <= right)
            if op == "greaterThan":
                return bool(left > right)
            return bool(left >= right)
        except TypeError:
            return False

    return compare


def _values(rule_value: Any) -> list[Any]:
    if isinstance(rule_value, list):
        return rule_value
    if isinstance(rule_value, str):
        return [part.strip() for part in rule_value.split(",")]
    return [rule_value]


def _contains(field_value: Any, rule_value: Any) -> bool:
    if isinstance(field_value, list):
        return any(_equal(item, rule_value) for item in field_value)
    if isinstance(field_value, str) and rule_value is not None:
        return str(rule_value).casefold() in field_value.casefold()
    return False


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "equal": _equal,
    "notEqual": lambda f, v: not _equal(f, v),
    "lessThan": _order("lessThan"),
    "lessThanInclusive": _order("lessThanInclusive"),
    "greaterThan": _order("greaterThan"),
    "greaterThanInclusive": _order("greaterThanInclusive"),
    "in": lambda f, v: any(_equal(f, item) for item in _values(v)),
    "notIn": lambda f, v: not any(_equal(f, item) for item in _values(v)),
    "contains": _contains,
    "doesNotContains": lambda f, v: not _contains(f, v),
    "isNull": lambda f, v: f is None,
    "isNotNull": lambda f, v: f is not None,
    "isEmpty": lambda f, v: _empty(f),
    "isNotEmpty": lambda f, v: not _empty(f),
}


def _local(value: Any, zone: ZoneInfo) -> Any:
    """A rule date read as wall-clock time in `zone` (its own offset ignored), as UTC text."""
    if isinstance(value, list):
        return [_local(item, zone) for item in value]
    moment = _date(value)
    if moment is None:
        return value
    wall = moment.replace(tzinfo=None) if "T" in value else None
    if wall is None:
        return value
    return wall.replace(tzinfo=zone).astimezone(UTC).isoformat()


def _compile(node: Any, known: set[str], mode: FilterMode) -> Predicate:
    if not isinstance(node, Mapping):
        raise QueryError("filters", "A filter is a JSON object (a rule or a group of rules).")
    if "rules" in node:
        rules = node.get("rules")
        if not isinstance(rules, list):
            raise QueryError("filters", "'rules' must be a list.")
        separator = str(node.get("separator") or "And")
        if separator.casefold() not in ("and", "or"):
            raise QueryError("filters", f"Unknown separator '{separator}' (And, Or).")
        parts = [_compile(rule, known, mode) for rule in rules]
        if separator.casefold() == "or":
            return lambda obj: any(p(obj) for p in parts)
        return lambda obj: all(p(obj) for p in parts)
    field, operator = node.get("field"), node.get("operator")
    if not isinstance(field, str) or not isinstance(operator, str):
        raise QueryError("filters", "A rule needs a 'field' and an 'operator'.")
    op = next((o for o in OPERATORS if o.casefold() == operator.casefold()), None)
    if op is None:
        raise QueryError("filters", f"Unknown operator '{operator}'.")
    get = _resolver(field, known, pascal=mode.pascal)
    test = _TESTS[op]
    value = node.get("value")
    if mode.tz is not None:
        value = _local(value, ZoneInfo(mode.tz))
    return lambda obj: test(get(obj), value)


def compile_filter(
    text: str | None, known_fields: Iterable[str], mode: FilterMode | None = None
) -> Predicate | None:
    """The predicate of a `filters` JSON rule, or None when there is no filter."""
    if text is None or not text.strip():
        return None
    try:
        node = json.loads(text)
    except ValueError:
        raise QueryError("filters", "The filters parameter is not valid JSON.") from None
    return _compile(node, {f.casefold() for f in known_fields}, mode or FilterMode())


def sort_items(
    items: list[dict[str, Any]], sort_by: str | None, asc: bool, known_fields: Iterable[str]
) -> list[dict[str, Any]]:
    """Sorted by `sort_by` (default `id`), nulls first when ascending; ties by id, same way."""
    field = sort_by or "id"
    try:
        get = _resolver(field, {f.casefold() for f in known_fields})
    except QueryError:
        raise QueryError("sortBy", f"Cannot sort by '{field}': not a property.") from None

    def rank(value: Any) -> tuple[int, Any]:
        if value is None:
            return (0, 0)
        if isinstance(value, str):
            moment = _date(value)
            return (1, moment.timestamp()) if moment else (2, value.casefold())
        if isinstance(value, (bool, int, float)):
            return (1, float(value))
        return (3, json.dumps(value, sort_keys=True))

    def key(obj: Mapping[str, Any]) -> tuple[tuple[int, Any], tuple[int, Any]]:
        return rank(get(obj)), rank(obj.get("id"))

    return sorted(items, key=key, reverse=not asc)


def page_of(
    items: list[dict[str, Any]], page: int | None, size: int | None, skip: int | None
) -> tuple[list[dict[str, Any]], int, int]:
    """The slice for `page`/`size` (or `skip`/`size`); returns (items, page, size)."""
    size = 20 if size is None else size
    if not 1 <= size <= MAX_SIZE:
        raise QueryError("size", f"The field size must be between 1 and {MAX_SIZE}.")
    if skip is not None:
        if skip < 0:
            raise QueryError("skip", "The field skip must be 0 or more.")
        return items[skip : skip + size], skip // size + 1, size
    page = 1 if page is None else page
    if page < 1:
        raise QueryError("page", "The field page must be 1 or more.")
    start = (page - 1) * size
    return items[start : start + size], page, size


def select_fields(items: list[dict[str, Any]], select: str | None) -> list[dict[str, Any]]:
    """Only the comma-separated fields of `select` (case-insensitive), when given."""
    if not select:
        return items
    wanted = {name.strip().casefold() for name in select.split(",") if name.strip()}
    return [{k: v for k, v in item.items() if k.casefold() in wanted} for item in items]
