"""Egress guard for subscriber URLs (SSRF protection) and the pinned POST that uses it.

Consumes a target URL and `HooksSettings` (`allow_networks`, `allow_http`, `ca_file`,
`max_redirects`). Produces a `Target`: the URL checked (https, no odd parts), its host resolved
ONCE and every address checked (public, or inside an allowed network), and `post(...)`, which
connects to that checked address (the Host header and TLS server name stay the URL's host, so
certificates are verified as usual) and follows only 307/308 redirects to the same scheme, host
and port. A URL that fails raises `EgressRefusedError`; no connection is made to it.

    target = await resolve_target("https://hooks.zapier.com/hooks/standard/1/abc/", settings)
    response = await post(client, target, body, headers, settings)
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from bus.hooks.settings import HooksSettings

__all__ = [
    "EgressRefusedError",
    "Target",
    "address_allowed",
    "check_url",
    "client_for",
    "post",
    "resolve_target",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_RESOLVE_TIMEOUT_S = 5.0


class EgressRefusedError(ValueError):
    """The URL may not be called: wrong scheme, unresolvable, or a non-public address."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses it resolved to (all allowed), IPv4 first."""

    url: httpx.URL
    addresses: tuple[str, ...]


def address_allowed(address: IPAddress, settings: HooksSettings) -> bool:
    """A public (globally routable) address, or one inside `HOOKS_ALLOW_NETWORKS`."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in settings.allow_networks):
        return True
    return address.is_global and not address.is_multicast


def check_url(url: str, settings: HooksSettings) -> httpx.URL:
    """Syntax checks, without DNS: https (or http when allowed), a host, no fragment."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise EgressRefusedError(f"not a valid URL: {exc}") from None
    allowed = ("https", "http") if settings.allow_http else ("https",)
    if parsed.scheme not in allowed:
        raise EgressRefusedError(f"the URL must use {' or '.join(allowed)}")
    if not parsed.host:
        raise EgressRefusedError("the URL has no host")
    if parsed.fragment:
        raise EgressRefusedError("the URL may not have a fragment")
    return parsed


async def resolve_target(url: str | httpx.URL, settings: HooksSettings) -> Target:
    """Check `url`, resolve its host once and check every address it resolves to."""
    parsed = check_url(str(url), settings)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), _RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise EgressRefusedError(f"the host does not resolve ({type(exc).__name__})") from None
        addresses = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise EgressRefusedError("the host does not resolve")
    refused = [a for a in addresses if not address_allowed(a, settings)]
    if refused:
        raise EgressRefusedError(
            "the host resolves to a non-public address "
            f"({_kind(refused[0])}); only public addresses are allowed"
        )
    addresses.sort(key=lambda a: a.version)
    return Target(url=parsed, addresses=tuple(str(a) for a in addresses))


def _kind(address: IPAddress) -> str:
    for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "not globally routable"


def client_for(settings: HooksSettings) -> httpx.AsyncClient:
    """The HTTP client deliveries go through: no redirects followed by httpx itself, no proxy
    from the environment (the guard must see the real destination), TLS verified."""
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    return httpx.AsyncClient(
        verify=context,
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
    )


async def _post_once(
    client: httpx.AsyncClient, target: Target, body: bytes, headers: Mapping[str, str]
) -> httpx.Response:
    url = target.url
    host_header = url.host if url.port is None else f"{url.host}:{url.port}"
    last: httpx.TransportError | None = None
    for address in target.addresses:
        pinned = url.copy_with(host=address)
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        request = client.build_request(
            "POST",
            pinned,
            content=body,
            headers={**headers, "Host": host_header},
            extensions=extensions,
        )
        try:
            # The body of the answer is never read: a subscriber cannot make us buffer it.
            response = await client.send(request, stream=True)
            await response.aclose()
            return response
        except httpx.ConnectError as exc:
            last = exc  # try the next checked address
    assert last is not None
    raise last


async def post(
    client: httpx.AsyncClient,
    target: Target,
    body: bytes,
    headers: Mapping[str, str],
    settings: HooksSettings,
) -> httpx.Response:
    """POST `body` to the checked target; follow 307/308 to the same origin only (re-checked).
    Any other redirect is returned as is (a failed delivery)."""
    response = await _post_once(client, target, body, headers)
    for _hop in range(settings.max_redirects):
        if response.status_code not in (307, 308) or "location" not in response.headers:
            return response
        try:
            following = target.url.join(response.headers["location"])
        except (httpx.InvalidURL, ValueError):
            return response
        same_origin = (following.scheme, following.host, following.port) == (
            target.url.scheme,
            target.url.host,
            target.url.port,
        )
        if not same_origin:
            return response
        target = await resolve_target(following, settings)
        response = await _post_once(client, target, body, headers)
    return response
