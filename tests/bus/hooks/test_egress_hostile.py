"""The egress guard against hostile subscriber URLs: odd IPv4 spellings, IPv6 zones, IPv4
addresses embedded in IPv6, DNS answers that change between the check and the connection,
redirects, user-info tricks. Every name goes through a fake resolver and every POST through
httpx's MockTransport: nothing leaves the process."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import httpx
import pytest

from bus.hooks.egress import EgressRefusedError, Target, post, resolve_target
from bus.hooks.settings import HooksSettings

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:4700:4700::1111"

# What the fake DNS answers; a name missing here does not resolve.
DNS: dict[str, list[str]] = {
    "public.example": [PUBLIC_V4],
    "dual.example": [PUBLIC_V6, PUBLIC_V4],
    "xn--bcher-kva.example": [PUBLIC_V4],
    "hooks.zapier.com.": [PUBLIC_V4],
    "metadata.example": ["169.254.169.254"],
    "localhost": ["127.0.0.1", "::1"],
    "127.0.0.1.nip.io": ["127.0.0.1"],
    "mixed.example": [PUBLIC_V4, "10.0.0.1"],
    "mapped.example": ["::ffff:127.0.0.1"],
    "nat64.example": ["64:ff9b::a9fe:a9fe"],
    "sixtofour.example": ["2002:c0a8:101::1"],
    "zone.example": ["fe80::1%eth0"],
    "ula.example": ["fd12:3456::1"],
    "empty.example": [],
    "garbage.example": ["not-an-address"],
}


class FakeResolver:
    """Answers from a table, or from a list of successive answers per name (a rebinding DNS)."""

    def __init__(self, answers: Mapping[str, Sequence[Sequence[str]]] | None = None) -> None:
        self.answers = {name: list(seq) for name, seq in (answers or {}).items()}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        if host in self.answers:
            return self.answers[host].pop(0)
        if host in DNS:
            return DNS[host]
        raise OSError(f"no such host: {host}")


HOSTILE = [
    # IPv4 written in the forms other parsers (inet_aton, browsers, curl) read as internal.
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://0x7f.1/",
    "https://127.1/",
    "https://0x7f000001/",
    "https://017700000001/",
    "https://0x7f.0x0.0x0.0x1/",
    "https://127.000.000.001/",
    "https://0/",
    "https://127.0.0.1./",
    "https://0xa9fea9fe/",
    "https://3232235777/",  # 192.168.1.1
    "https://169.254.43518/",  # 169.254.169.254
    "https://%31%32%37.0.0.1/",
    "https://127\u30020\u30020\u30021/",  # ideographic full stops: IDNA makes them dots
    "https://0.0.0.0/",
    "https://100.64.0.1/",
    "https://198.18.0.1/",
    "https://224.0.0.1/",
    "https://255.255.255.255/",
    # IPv6 zones, and internal IPv6.
    "https://[fe80::1%25eth0]/",
    f"https://[{PUBLIC_V6}%25eth0]/",
    "https://[::1]/",
    "https://[::]/",
    "https://[fd00::1]/",
    "https://[ff02::1]/",
    "https://[2001:db8::1]/",
    # IPv4 embedded in IPv6: mapped, compatible, NAT64, local-use NAT64, 6to4, Teredo.
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]:8443/",
    "https://[0:0:0:0:0:ffff:169.254.169.254]/",
    "https://[::127.0.0.1]/",
    "https://[::a9fe:a9fe]/",
    "https://[64:ff9b::a9fe:a9fe]/",
    "https://[64:ff9b::127.0.0.1]/",
    "https://[64:ff9b::10.0.0.1]/",
    "https://[64:ff9b:1::a9fe:a9fe]/",
    "https://[64:ff9b:1::808:808]/",  # local-use NAT64 is never public
    "https://[::ffff:0:127.0.0.1]/",  # SIIT IPv4-translated
    "https://[::ffff:0:a9fe:a9fe]/",
    "https://[fec0::1]/",  # deprecated site-local
    "https://[5f00::1]/",  # SRv6 segment identifiers
    "https://[2002:a9fe:a9fe::1]/",
    "https://[2002:7f00:1::]/",
    "https://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo, client 127.0.0.1
    "https://[2001:0:4136:e378:8000:63bf:f7f7:f7f7]/",  # Teredo, client 8.8.8.8: still no
    # Names that resolve (all or in part) to internal addresses, or not at all.
    "https://metadata.example/latest/meta-data/",
    "https://localhost/",
    "https://127.0.0.1.nip.io/",
    "https://mixed.example/",
    "https://mapped.example/",
    "https://nat64.example/",
    "https://sixtofour.example/",
    "https://zone.example/",
    "https://ula.example/",
    "https://nowhere.example/",
    "https://empty.example/",
    "https://garbage.example/",
    # User info: the host is what follows the last '@'; no user info is accepted at all.
    "https://example.org@127.0.0.1/",
    "https://example.org:443@127.0.0.1/",
    "https://example.org\\@127.0.0.1/",
    "https://127.0.0.1@public.example/",
    "https://user:password@public.example/",
    # Scheme and syntax.
    "http://public.example/",
    "ftp://public.example/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
    "https://public.example/#@127.0.0.1",
    "https:///nohost",
    "https://xn--/",
]


@pytest.mark.parametrize("url", HOSTILE)
def test_every_hostile_target_is_refused(url: str) -> None:
    resolver = FakeResolver()
    with pytest.raises(EgressRefusedError):
        asyncio.run(resolve_target(url, HooksSettings(), resolver=resolver))


def test_the_table_is_large_enough() -> None:
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        (f"https://{PUBLIC_V4}/x", (PUBLIC_V4,)),
        (f"https://[{PUBLIC_V6}]:8443/x", (PUBLIC_V6,)),
        ("https://[::ffff:8.8.8.8]/", ("::ffff:808:808",)),
        ("https://[64:ff9b::8.8.8.8]/", ("64:ff9b::808:808",)),
        ("https://[2002:808:808::1]/", ("2002:808:808::1",)),
        ("https://[::ffff:0:8.8.8.8]/", ("::ffff:0:808:808",)),
        ("https://public.example/hooks/1", (PUBLIC_V4,)),
        ("https://dual.example/", (PUBLIC_V4, PUBLIC_V6)),  # IPv4 first
        ("https://b\u00fccher.example/", (PUBLIC_V4,)),
        ("https://hooks.zapier.com./hooks/standard/1/a/", (PUBLIC_V4,)),
    ],
)
def test_public_targets_are_allowed(url: str, addresses: tuple[str, ...]) -> None:
    target = asyncio.run(resolve_target(url, HooksSettings(), resolver=FakeResolver()))
    assert target.addresses == addresses


def test_the_allowlist_also_admits_the_embedded_forms_of_its_networks() -> None:
    settings = HooksSettings(allow_networks="127.0.0.0/8", allow_http=True)  # type: ignore[arg-type]
    for url in ("http://127.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://[64:ff9b::7f00:1]/"):
        assert asyncio.run(resolve_target(url, settings, resolver=FakeResolver())).addresses
    for url in ("http://[64:ff9b::a9fe:a9fe]/", "http://127.1/", "http://2130706433/"):
        with pytest.raises(EgressRefusedError):
            asyncio.run(resolve_target(url, settings, resolver=FakeResolver()))


def test_the_refusal_says_which_embedded_address_is_internal() -> None:
    with pytest.raises(EgressRefusedError, match=r"169\.254\.169\.254, link-local"):
        asyncio.run(resolve_target("https://[64:ff9b::a9fe:a9fe]/", HooksSettings()))


class _Recorder:
    """A MockTransport handler: records each request, answers from a list."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answers.pop(0) if self.answers else httpx.Response(200)


def _deliver(
    url: str, resolver: FakeResolver, recorder: _Recorder
) -> tuple[Target, httpx.Response | EgressRefusedError]:
    async def run() -> tuple[Target, httpx.Response | EgressRefusedError]:
        settings = HooksSettings()
        target = await resolve_target(url, settings, resolver=resolver)
        async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
            try:
                answer: httpx.Response | EgressRefusedError = await post(
                    client, target, b"{}", {}, settings, resolver=resolver
                )
            except EgressRefusedError as exc:
                answer = exc
        return target, answer

    return asyncio.run(run())


def test_a_rebinding_name_is_connected_to_at_the_address_checked() -> None:
    # First answer public, every later one loopback: the connection must not ask again.
    resolver = FakeResolver({"rebind.example": [[PUBLIC_V4], ["127.0.0.1"], ["127.0.0.1"]]})
    recorder = _Recorder()
    target, answer = _deliver("https://rebind.example/hook", resolver, recorder)
    assert isinstance(answer, httpx.Response) and answer.status_code == 200
    assert resolver.calls == ["rebind.example"]
    [request] = recorder.requests
    assert request.url.host == PUBLIC_V4 == target.addresses[0]
    assert request.headers["host"] == "rebind.example"
    assert request.extensions["sni_hostname"] == "rebind.example"


def test_a_same_origin_redirect_is_checked_again_and_refused_once_the_name_rebinds() -> None:
    resolver = FakeResolver({"rebind.example": [[PUBLIC_V4], ["127.0.0.1"]]})
    recorder = _Recorder(httpx.Response(307, headers={"location": "/elsewhere"}))
    _target, answer = _deliver("https://rebind.example/hook", resolver, recorder)
    assert isinstance(answer, EgressRefusedError) and "loopback" in str(answer)
    assert resolver.calls == ["rebind.example", "rebind.example"]
    assert len(recorder.requests) == 1  # nothing sent to loopback


@pytest.mark.parametrize(
    ("status", "location"),
    [
        (307, "https://127.0.0.1/"),
        (308, "https://169.254.169.254/latest/meta-data/"),
        (307, "//10.0.0.1/"),
        (307, "https://[64:ff9b::a9fe:a9fe]/"),
        (307, "http://public.example/"),  # downgrade to http
        (307, "https://public.example:8443/"),  # another port
        (302, "https://127.0.0.1/"),
        (301, "/same-origin-but-not-307"),
        (303, "https://localhost/"),
    ],
)
def test_redirects_elsewhere_are_never_followed(status: int, location: str) -> None:
    resolver = FakeResolver()
    recorder = _Recorder(httpx.Response(status, headers={"location": location}))
    _target, answer = _deliver("https://public.example/hook", resolver, recorder)
    assert isinstance(answer, httpx.Response) and answer.status_code == status
    assert [r.url.host for r in recorder.requests] == [PUBLIC_V4]
    assert resolver.calls == ["public.example"]


def test_a_same_origin_307_to_a_public_address_is_followed() -> None:
    recorder = _Recorder(httpx.Response(307, headers={"location": "/new"}))
    _target, answer = _deliver("https://public.example/hook", FakeResolver(), recorder)
    assert isinstance(answer, httpx.Response) and answer.status_code == 200
    assert [r.url.path for r in recorder.requests] == ["/hook", "/new"]


def test_an_ipv6_literal_target_gets_a_bracketed_host_header() -> None:
    recorder = _Recorder()
    _target, answer = _deliver(f"https://[{PUBLIC_V6}]:8443/x", FakeResolver(), recorder)
    assert isinstance(answer, httpx.Response) and answer.status_code == 200
    [request] = recorder.requests
    assert request.headers["host"] == f"[{PUBLIC_V6}]:8443"
    assert request.url.host == PUBLIC_V6 and request.url.port == 8443
