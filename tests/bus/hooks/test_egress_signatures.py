"""The egress guard's address rules and the two webhook signatures, checked against an
independent implementation (the standardwebhooks package) and known vectors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json

import pytest
from standardwebhooks import Webhook

from bus.hooks.egress import EgressRefusedError, address_allowed, check_url, resolve_target
from bus.hooks.settings import HooksSettings
from bus.hooks.signatures import (
    dastra_signature,
    sign_standard_webhook,
    standard_webhook_headers,
    verify_dastra_signature,
)

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("127.0.0.1", False),
        ("::1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("::ffff:10.0.0.1", False),  # IPv4-mapped private
        ("::ffff:93.184.216.34", True),
        ("fd00::1", False),  # unique local
    ],
)
def test_only_public_addresses_are_allowed_by_default(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), HooksSettings()) is allowed


def test_the_allowlist_admits_its_networks_only() -> None:
    settings = HooksSettings(allow_networks="10.1.0.0/16, 127.0.0.0/8")  # type: ignore[arg-type]
    assert address_allowed(ipaddress.ip_address("10.1.2.3"), settings)
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), settings)
    assert not address_allowed(ipaddress.ip_address("10.2.0.1"), settings)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), settings)


def test_url_rules() -> None:
    settings = HooksSettings()
    assert check_url("https://hooks.zapier.com/hooks/standard/1/a/", settings).host == (
        "hooks.zapier.com"
    )
    for bad in ("http://hooks.zapier.com/x", "ftp://x.example/", "https://", "https://a.b/#f"):
        with pytest.raises(EgressRefusedError):
            check_url(bad, settings)
    assert check_url("http://x.example/", HooksSettings(allow_http=True)).scheme == "http"


def test_a_name_is_checked_by_every_address_it_resolves_to() -> None:
    with pytest.raises(EgressRefusedError, match="loopback"):
        asyncio.run(resolve_target("https://localhost/x", HooksSettings()))
    admitted = HooksSettings(allow_networks="127.0.0.0/8,::1/128")  # type: ignore[arg-type]
    target = asyncio.run(resolve_target("https://localhost:8443/x", admitted))
    assert target.addresses[0] == "127.0.0.1" and target.url.port == 8443


def test_standard_webhooks_signature_verifies_with_the_reference_library() -> None:
    body = json.dumps({"id": "dastra:1:task.created:2", "data": {"id": 2}}).encode()
    headers = standard_webhook_headers(SECRET, "dastra:1:task.created:2", body)
    assert Webhook(SECRET).verify(body, headers) == json.loads(body)
    expected = base64.b64encode(
        hmac.new(b"k" * 32, b"msg_1.1700000000." + body, hashlib.sha256).digest()
    ).decode()
    assert sign_standard_webhook(SECRET, "msg_1", 1_700_000_000, body) == f"v1,{expected}"


def test_dastra_signature_is_base64_hmac_of_the_raw_body() -> None:
    body = b'{"webhookId": 1, "eventType": "TaskCreation"}'
    key = "0b6f0c3e-5b0c-4a52-a1e7-3a0d3b1f0c11"
    expected = base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()
    assert dastra_signature(key, body) == expected
    assert verify_dastra_signature(key, body, expected)
    assert not verify_dastra_signature(key, body + b" ", expected)
    assert not verify_dastra_signature("other", body, expected)
    assert not verify_dastra_signature(key, body, None)
    assert not verify_dastra_signature(key, body, "")
