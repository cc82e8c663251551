"""`adapt_filter`: the same filter for a PascalCase server, or one reading dates as local time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx

from dastra import DastraClient, Rule, RuleGroup
from dastra.filters import adapt_filter, filters_param, pascal
from dastra.settings import DastraSettings

AT = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)


def test_pascal_spells_each_part_of_a_path() -> None:
    assert pascal("dateCreation") == "DateCreation"
    assert pascal("area.label") == "Area.Label"
    assert pascal("Id") == "Id"


def test_rules_groups_and_mappings_are_re_spelled_and_dates_shifted() -> None:
    group = RuleGroup(
        "And", [Rule("dateCreation", "greaterThanInclusive", AT), Rule("refId", "equal", "x")]
    )
    adapted = adapt_filter(group, case="pascal", shift=timedelta(hours=1))
    assert json.loads(filters_param(adapted) or "") == {
        "separator": "And",
        "rules": [
            {"field": "DateCreation", "operator": "greaterThanInclusive",
             "value": "2026-12-03T03:00:00Z"},
            {"field": "RefId", "operator": "equal", "value": "x"},
        ],
    }  # fmt: skip
    mapping = {"field": "dateUpdate", "operator": "lessThan", "value": AT}
    adapted_mapping = adapt_filter(mapping, case="camel", shift=timedelta(hours=-5))
    assert json.loads(filters_param(adapted_mapping) or "")["value"] == "2026-12-02T21:00:00Z"
    # Nothing to adapt, or a JSON string: unchanged.
    rule = Rule("email", "equal", "a@b.c")
    assert adapt_filter(rule, case="camel", shift=timedelta(0)) is rule
    assert adapt_filter('{"field":"x"}', case="pascal", shift=timedelta(1)) == '{"field":"x"}'


async def test_an_adapted_client_sends_the_adapted_filter() -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.params["filters"])
        return httpx.Response(200, json={"items": [], "total": 0, "size": 1, "page": 1})

    settings = DastraSettings(base_url="https://dastra.test", api_key="k")
    async with DastraClient(settings, transport=httpx.MockTransport(answer)) as dastra:
        await dastra.tasks_page(101, filters=Rule("dateCreation", "greaterThan", AT))
        dastra.adapt(filter_case="pascal", filter_shift=timedelta(hours=1))
        await dastra.tasks_page(101, filters=Rule("dateCreation", "greaterThan", AT))
    assert [json.loads(s) for s in sent] == [
        {"field": "dateCreation", "operator": "greaterThan", "value": "2026-12-03T02:00:00Z"},
        {"field": "DateCreation", "operator": "greaterThan", "value": "2026-12-03T03:00:00Z"},
    ]
