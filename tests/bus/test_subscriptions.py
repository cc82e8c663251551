"""The hook subscription contract: the secret survives the topic round trip, never a repr."""

from __future__ import annotations

from bus.records.subscriptions import HookSubscription, event_type_of


def test_round_trip_keeps_the_secret_and_reprs_hide_it() -> None:
    subscription = HookSubscription.new(event="task.created", target_url="https://example.org/h")
    secret = subscription.secret.get_secret_value()
    assert secret.startswith("whsec_")
    assert secret not in repr(subscription)

    again = HookSubscription.model_validate_json(subscription.model_dump_json())

    assert again == subscription
    assert again.secret.get_secret_value() == secret
    assert event_type_of(again.event) == "eu.dastra.task.created"
