"""The recipes' expression language: JMESPath with a few pure functions, `{{ }}` templates, and
the checks done when an expression is compiled."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.recipes.expressions import FUNCTIONS, Expression, ExpressionError, Template, truthy

CONTEXT: dict[str, Any] = {
    "data": {
        "id": 4521,
        "title": "Access <b>request</b>",
        "purposes": ["Access", "Erasure"],
        "tags": ["GDPR", "billing"],
        "expiryTime": "2026-04-01T09:14:07.310Z",
        "email": None,
        "nested": {"list": [{"name": "a", "n": 1}, {"name": "b", "n": 2}]},
    },
    "settings": {"erasure_systems": ["CRM", "Billing"], "dpo_user_id": None},
    "steps": {"actor": {"status": "succeeded", "result": {"id": 7}}},
}


def test_a_single_hole_keeps_the_value_s_type_and_text_interpolates() -> None:
    template = Template.parse(
        {
            "objectId": "{{ data.id }}",
            "purposes": "{{ data.purposes }}",
            "label": "Answer #{{ data.id }} ({{ join(', ', data.purposes) }})",
            "missing": "{{ data.email }}",
            "inText": "to: {{ data.email }}.",
            "actorIds": ["{{ steps.actor.result.id }}", 9],
            "literal": True,
            "nested": {"list": "{{ data.nested.list[?n > `1`].name }}"},
        },
        "with",
    )
    rendered = template.render(CONTEXT)
    assert rendered == {
        "objectId": 4521,
        "purposes": ["Access", "Erasure"],
        "label": "Answer #4521 (Access, Erasure)",
        "missing": None,
        "inText": "to: .",
        "actorIds": [7, 9],
        "literal": True,
        "nested": {"list": ["b"]},
    }
    assert "missing" not in template.render(CONTEXT, drop_nulls=True)
    assert not template.is_constant
    assert Template.parse({"a": [1, "x"]}, "f").is_constant


def test_text_renders_numbers_booleans_and_json() -> None:
    template = Template.parse("{{ `1.0` }} {{ `2.5` }} {{ `true` }} {{ data.purposes }}", "f")
    assert template.render(CONTEXT) == '1 2.5 true ["Access","Erasure"]'


def test_the_added_functions() -> None:
    def run(text: str) -> Any:
        return Expression(text).search(CONTEXT)

    assert run("add_days(data.expiryTime, `2`)") == "2026-04-03T09:14:07.310Z"
    assert run("add_days('2026-04-01', `-1.5`)") == "2026-03-30T12:00:00.000Z"
    assert run("date(data.expiryTime)") == "2026-04-01"
    assert run("lower(data.tags[0])") == "gdpr" and run("upper('x')") == "X"
    assert run("trim('  a b ')") == "a b"
    assert run("split('a, b,,c', ',')") == ["a", "b", "c"]
    assert run("replace('a-b-c', '-', '+')") == "a+b+c"
    assert run("truncate('abcdefgh', `5`)") == "abcd…" and run("truncate('abc', `5`)") == "abc"
    assert run("escape_html(data.title)") == "Access &lt;b&gt;request&lt;/b&gt;"
    assert run("escape_html(data.email)") == ""
    assert run("text(data.id)") == "4521" and run("text(data.email)") is None
    assert (
        run("concat('#', data.id, ' ', data.email, data.purposes)") == '#4521 ["Access","Erasure"]'
    )
    assert run("coalesce(data.email, settings.dpo_user_id, 'fallback')") == "fallback"
    assert run("contains(map(&lower(@), data.tags), 'gdpr')") is True
    now = datetime.fromisoformat(run("now()").replace("Z", "+00:00"))
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5
    assert run("today()") == datetime.now(UTC).date().isoformat()
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    assert 1.9 < Expression("days_until(@)").search(soon) <= 2.0
    assert set(FUNCTIONS) >= {"add_days", "now", "lower", "concat", "join", "contains"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data.[", "incomplete expression"),
        ("a ==", "incomplete expression"),
        ("data.x ] y", "not a valid JMESPath expression at column"),
        ("nope(data)", "unknown function nope()"),
        ("lower(data.a, data.b)", "lower() takes 1 argument(s), got 2"),
        ("concat()", "concat() takes at least 1 argument(s), got 0"),
        ("!data.archived", "write !(a.b), not !a.b"),
        ("", "empty expression"),
    ],
)
def test_compile_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        Expression(text)


def test_template_errors_name_the_field() -> None:
    with pytest.raises(ExpressionError, match=r"^with\.label: .*unknown function foo\(\)"):
        Template.parse({"label": "x {{ foo(data) }}"}, "with")
    with pytest.raises(ExpressionError, match=r"^with\.a\[1\]: unbalanced"):
        Template.parse({"a": ["ok", "{{ data.id "]}, "with")
    with pytest.raises(ExpressionError, match="set values are not allowed"):
        Template.parse({"a": {1, 2}}, "with")


def test_runtime_errors_name_the_function_not_the_value() -> None:
    with pytest.raises(ExpressionError, match=r"lower\(\) got null, expected string"):
        Expression("lower(data.email)").search(CONTEXT)
    with pytest.raises(ExpressionError) as caught:
        Expression("add_days(data.title, `1`)").search(CONTEXT)
    assert "not an ISO 8601 date" in str(caught.value)
    assert "Access" not in str(caught.value)  # the input may be personal data


def test_expressions_only_read_their_document() -> None:
    # No attribute access, no calls into Python: a dunder is just a missing key.
    assert Expression("data.__class__").search(CONTEXT) is None
    assert Expression("__import__").search(CONTEXT) is None
    assert Expression("data.id.__class__.__mro__").search(CONTEXT) is None


def test_roots_list_what_an_expression_reads_from_the_context() -> None:
    assert set(Expression("steps.actor.result[0].id").roots) >= {("steps", "actor", "result")}
    roots = Expression("data.items[?name == settings.x].id | [0]").roots
    assert ("data", "items") in roots
    assert not any(root[0] in ("name", "settings") for root in roots)  # relative to each item
    roots = Expression("map(&lower(@), data.tags || `[]`) && item").roots
    assert ("data", "tags") in roots and ("item",) in roots
    assert Expression("{a: data.x, b: [steps.s.result]}").roots[0][0] == "data"
    assert ("settings", "erasure_systems") in Expression("settings.erasure_systems[*]").roots


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), (False, False), ("", False), ([], False), ({}, False), (0, True), ("x", True)],
)
def test_truth_is_jmespath_s(value: Any, expected: bool) -> None:
    assert truthy(value) is expected
