"""Egress guard for subscriber URLs (SSRF protection) and the pinned POST that uses it.

Consumes a target URL and `HooksSettings` (`allow_networks`, `allow_http`, `ca_file`,
`max_redirects`). Produces a `Target`: the URL checked (https, no user info, no fragment; an IP
literal only in its one canonical form, no IPv6 zone), its host resolved ONCE and every address
checked (public, or inside an allowed network; an IPv4 address embedded in IPv6, mapped,
compatible, NAT64, 6to4 or Teredo, is unwrapped and checked too), and `post(...)`, which
connects to that checked address (the Host header and TLS server name stay the URL's host, so
certificates are verified as usual) and follows only 307/308 redirects to the same scheme, host
and port. A URL that fails raises `EgressRefusedError`; no connection is made to it.

    target = await resolve_target("https://hooks.zapier.com/hooks/standard/1/abc/", settings)
    response = await post(client, target, body, headers, settings)
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import httpx

from bus.hooks.settings import HooksSettings

__all__ = [
    "EgressRefusedError",
    "Resolver",
    "Target",
    "address_allowed",
    "check_url",
    "client_for",
    "embedded_ipv4",
    "post",
    "resolve_target",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Resolves (host, port) to address strings; the system resolver unless a test injects one.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_RESOLVE_TIMEOUT_S = 5.0

# Prefixes whose last 32 bits are an IPv4 address the packet ends up at (RFC 6052 NAT64, its
# local-use range of RFC 8215): the IPv4 address is checked as well as the IPv6 one.
# Also SIIT's IPv4-translated addresses (RFC 2765, ::ffff:0:a.b.c.d).
_NAT64 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Never public, whatever the running Python's `is_global` table says (it changed in 3.11.x
# and 3.12.x): NAT64 local-use, Teredo, documentation, deprecated site-local, SRv6 SIDs,
# 6to4's relay anycast.
_NEVER_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "64:ff9b:1::/48",
        "2001::/32",
        "2001:db8::/32",
        "3fff::/20",
        "fec0::/10",
        "5f00::/16",
        "192.88.99.0/24",
    )
)
# A host name: letters, digits, '-' and '_' in dot-separated labels (httpx has already
# lower-cased it and turned IDN into punycode). Anything else (%-escapes, spaces) is refused.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
# The WHATWG URL standard reads a host whose last label is a number (decimal, 0x-hex, or
# octal with a leading 0) as an IPv4 address: 2130706433, 0x7f.1, 0177.0.0.1, 127.1.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
_CANONICAL_IPV4 = re.compile(r"(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}")


class EgressRefusedError(ValueError):
    """The URL may not be called: wrong scheme, unresolvable, or a non-public address."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the addresses it resolved to (all allowed), IPv4 first."""

    url: httpx.URL
    addresses: tuple[str, ...]


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries, if any: IPv4-mapped (::ffff:0:0/96),
    IPv4-compatible (::/96), NAT64 (64:ff9b::/96, 64:ff9b:1::/48), SIIT's IPv4-translated
    (::ffff:0:0:0/96), 6to4 (2002::/16, the relay's IPv4) or Teredo (2001::/32, the client's
    de-obfuscated IPv4).

        embedded_ipv4(ipaddress.IPv6Address("64:ff9b::a9fe:a9fe"))  # 169.254.169.254
    """
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _IPV4_COMPATIBLE or any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_allowed(address: IPAddress, settings: HooksSettings) -> bool:
    """A public (globally routable) address, or one inside `HOOKS_ALLOW_NETWORKS`; for an IPv6
    address carrying an IPv4 one, that IPv4 address must be allowed too."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            if address.ipv4_mapped is not None or address in _IPV4_COMPATIBLE:
                # Only another spelling of the IPv4 address: that address is what counts.
                return _allowed(inner, settings)
            return _allowed(inner, settings) and _allowed(address, settings)
    return _allowed(address, settings)


def _allowed(address: IPAddress, settings: HooksSettings) -> bool:
    if any(address in network for network in settings.allow_networks):
        return True
    if any(address in network for network in _NEVER_PUBLIC):
        return False
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
    if not parsed.raw_host:
        raise EgressRefusedError("the URL has no host")
    if parsed.userinfo:
        raise EgressRefusedError("the URL may not carry a user name or password")
    if parsed.fragment:
        raise EgressRefusedError("the URL may not have a fragment")
    _host_literal(_ascii_host(parsed))  # refuses the odd forms
    return parsed


def _ascii_host(url: httpx.URL) -> str:
    """The host as sent on the wire (IDN as punycode, lower case)."""
    return url.raw_host.decode("ascii").lower()


def _host_literal(host: str) -> IPAddress | None:
    """The IP address `host` is written as, or None for a name. Refuses every spelling of an
    address but the canonical one (other layers would read it differently), and zones."""
    if ":" in host:
        if "%" in host:
            raise EgressRefusedError("an IPv6 address may not carry a zone (scope id)")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise EgressRefusedError("the host is not a valid IPv6 address") from None
    if not _HOST_NAME.fullmatch(host):
        raise EgressRefusedError("the host has characters not allowed in a host name")
    labels = host.rstrip(".").split(".")
    if not _NUMERIC_LABEL.fullmatch(labels[-1]):
        return None
    if host.endswith(".") or not _CANONICAL_IPV4.fullmatch(host):
        raise EgressRefusedError(
            "an IPv4 address must be written as four decimal numbers (a.b.c.d)"
        )
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        raise EgressRefusedError("the host is not a valid IPv4 address") from None


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), as address strings."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in infos]


async def resolve_target(
    url: str | httpx.URL, settings: HooksSettings, *, resolver: Resolver | None = None
) -> Target:
    """Check `url`, resolve its host once and check every address it resolves to. The
    returned addresses are the only ones `post` connects to (no second lookup)."""
    parsed = check_url(str(url), settings)
    host = _ascii_host(parsed)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = _host_literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
                answers = await (resolver or system_resolver)(host, port)
        except (OSError, TimeoutError, UnicodeError) as exc:
            raise EgressRefusedError(f"the host does not resolve ({type(exc).__name__})") from None
        addresses = []
        for answer in answers:
            try:
                # A zone on a resolved address is kept: address_allowed refuses it.
                address = ipaddress.ip_address(answer)
            except ValueError:
                raise EgressRefusedError("the host resolves to an invalid address") from None
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
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id is not None:
            return "an address with a zone"
        inner = embedded_ipv4(address)
        if inner is not None and not inner.is_global:
            return f"carries the IPv4 address {inner}, {_kind(inner)}"
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
    host = _ascii_host(url)
    authority = f"[{host}]" if ":" in host else host
    host_header = authority if url.port is None else f"{authority}:{url.port}"
    last: httpx.TransportError | None = None
    for address in target.addresses:
        pinned = url.copy_with(host=address)
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
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
    *,
    resolver: Resolver | None = None,
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
        target = await resolve_target(following, settings, resolver=resolver)
        response = await _post_once(client, target, body, headers)
    return response
