"""Dastra's `filters` query parameter: JsonRuleEngine.Net rules, built with types.

Consumes field names (as Dastra's JSON output spells them), operators and values. Produces the
JSON rule string that list endpoints take as `?filters=`:

    Rule("dateCreation", "greaterThan", since)                  # one rule
    RuleGroup("And", [Rule("state", "equal", "Open"), Rule("email", "isNotNull")])
    Rule("refId", "in", ["a", "b"]).dumps()  # '{"field":"refId","operator":"in","value":["a","b"]}'

Dates become ISO 8601 strings, enums their value. `adapt_filter` rewrites a rule for a server
that spells fields in PascalCase or reads filter dates in its own time zone (what
`dastra.doctor` detects):

    adapt_filter(Rule("dateCreation", "greaterThan", t), case="pascal", shift=timedelta(hours=1))
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from typing import Any, Literal, TypeAlias
from uuid import UUID

__all__ = [
    "OPERATORS",
    "Filter",
    "FilterCase",
    "Operator",
    "Rule",
    "RuleGroup",
    "Separator",
    "adapt_filter",
    "filters_param",
    "pascal",
]

Operator: TypeAlias = Literal[
    "equal",
    "notEqual",
    "lessThan",
    "lessThanInclusive",
    "greaterThan",
    "greaterThanInclusive",
    "in",
    "notIn",
    "contains",
    "doesNotContains",
    "isNull",
    "isNotNull",
    "isEmpty",
    "isNotEmpty",
]
Separator: TypeAlias = Literal["And", "Or"]
FilterCase: TypeAlias = Literal["camel", "pascal"]

OPERATORS: frozenset[str] = frozenset(Operator.__args__)  # type: ignore[attr-defined]
_NO_VALUE = frozenset({"isNull", "isNotNull", "isEmpty", "isNotEmpty"})


def _value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_value(item) for item in value]
    return value


@dataclass(frozen=True)
class Rule:
    """One comparison: `field operator value` (no value for isNull, isNotNull, isEmpty...)."""

    field: str
    operator: Operator
    value: Any = None

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ValueError(f"unknown filter operator {self.operator!r}")

    def to_json(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"field": self.field, "operator": self.operator}
        if self.operator not in _NO_VALUE:
            rule["value"] = _value(self.value)
        return rule

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


@dataclass(frozen=True)
class RuleGroup:
    """Rules (or groups) joined by `And` or `Or`."""

    separator: Separator
    rules: Sequence[Rule | RuleGroup]

    def __post_init__(self) -> None:
        if self.separator not in ("And", "Or"):
            raise ValueError(f"unknown filter separator {self.separator!r}")

    def to_json(self) -> dict[str, Any]:
        return {"separator": self.separator, "rules": [rule.to_json() for rule in self.rules]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))


Filter: TypeAlias = Rule | RuleGroup | Mapping[str, Any] | str


def filters_param(value: Filter | None) -> str | None:
    """The `filters` query value for a rule, a group, a JSON-ready mapping or a JSON string."""
    if value is None:
        return None
    if isinstance(value, (Rule, RuleGroup)):
        return value.dumps()
    if isinstance(value, str):
        return value
    return json.dumps(_value_tree(value), separators=(",", ":"))


def _value_tree(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {key: _value_tree(item) for key, item in node.items()}
    if isinstance(node, (list, tuple)):
        return [_value_tree(item) for item in node]
    return _value(node)


def pascal(field: str) -> str:
    """`dateCreation` -> `DateCreation`, each part of a dotted path (`a.b` -> `A.B`)."""
    return ".".join(part[:1].upper() + part[1:] for part in field.split("."))


def _shifted(value: Any, shift: timedelta) -> Any:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment + shift
    if isinstance(value, (list, tuple)):
        return [_shifted(item, shift) for item in value]
    return value


def adapt_filter(value: Filter | None, *, case: FilterCase, shift: timedelta) -> Filter | None:
    """The same filter for a server that resolves `case` field names and reads filter dates as
    its local time, `shift` ahead of UTC: field names re-spelled, datetime values moved by
    `shift` (so that the server's reading is the instant meant). JSON strings pass unchanged."""
    if value is None or isinstance(value, str):
        return value
    if case == "camel" and not shift:
        return value
    if isinstance(value, Rule):
        field = pascal(value.field) if case == "pascal" else value.field
        return Rule(field, value.operator, _shifted(value.value, shift))
    if isinstance(value, RuleGroup):
        rules = [adapt_filter(rule, case=case, shift=shift) for rule in value.rules]
        return RuleGroup(value.separator, [r for r in rules if isinstance(r, (Rule, RuleGroup))])
    adapted: Mapping[str, Any] = _adapt_mapping(value, case, shift)
    return adapted


def _adapt_mapping(node: Any, case: FilterCase, shift: timedelta) -> Any:
    if isinstance(node, Mapping):
        adapted = {key: _adapt_mapping(item, case, shift) for key, item in node.items()}
        if case == "pascal" and isinstance(node.get("field"), str):
            adapted["field"] = pascal(node["field"])
        return adapted
    if isinstance(node, (list, tuple)):
        return [_adapt_mapping(item, case, shift) for item in node]
    return _shifted(node, shift)
