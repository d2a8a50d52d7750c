"""One POST to a partner's endpoint, and what came of it.

Runs on the provider HTTP loop (orders.providers.http.run) with a session of its own, because a partner
is not trusted like a provider:

- The address is checked where the connection is made: a host name goes through `GuardedResolver`, which
  refuses the whole answer when any address is loopback, private, link-local, metadata or otherwise not
  global (unless WEBHOOKS_ALLOW_PRIVATE), so a name cannot pass a check and then resolve elsewhere. An
  address literal in the URL is checked the same way before the request (aiohttp does not resolve those).
- Redirects are not followed (a 3xx is a failed delivery); no proxies, no cookies.
- At most MAX_RESPONSE_BYTES of the answer are read: enough for an error message in the delivery log.
- The whole request, body included, must finish within WEBHOOK_TIMEOUT_SECONDS.
"""

import asyncio
import ipaddress
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from django.conf import settings

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "liveops-webhooks/1"
# Answers worth trying again besides 5xx: the receiver timed out or asks us to slow down
RETRY_STATUSES = {408, 425, 429}

_tls: ssl.SSLContext | None = None


class AddressRefused(OSError):
    """The endpoint's host is (or resolves to) an address partners' webhooks may not reach."""


def refused_reason(address: str) -> str | None:
    """Why a webhook may not be sent to `address` (an IP literal), or None when it may."""
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return None
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Not global covers loopback, private, link-local (the cloud metadata address 169.254.169.254),
    # shared (100.64/10), reserved and documentation ranges
    if not ip.is_global or ip.is_multicast:
        return f"{ip} is a loopback, private, link-local or reserved address"
    return None


class GuardedResolver(AbstractResolver):
    """The default resolver, refusing any answer that holds an address webhooks may not reach."""

    def __init__(self) -> None:
        self._resolver = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            reason = refused_reason(result["host"])
            if reason is not None:
                raise AddressRefused(f"{host} resolves to {reason.split(' is ', 1)[0]}: refused ({reason})")
        return results

    async def close(self) -> None:
        await self._resolver.close()


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    duration_ms: float
    error: str  # empty on success
    retry: bool  # worth trying again later
    refused: bool = False  # never sent: the address is not allowed
    retry_after: float | None = None  # seconds the receiver asked for (429/503 Retry-After)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _tls_context() -> ssl.SSLContext:
    global _tls
    if _tls is None:
        _tls = ssl.create_default_context()
    return _tls


def new_session() -> aiohttp.ClientSession:
    """A session for one run of deliveries (on the running loop)."""
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(), ssl=_tls_context(), limit_per_host=4)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.WEBHOOK_TIMEOUT_SECONDS),
        headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
    )


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: our own backoff applies


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> Outcome:
    """POST `body` to `url` and say what happened; never raises for what the network or receiver does."""
    started = time.perf_counter()

    def took() -> float:
        return round((time.perf_counter() - started) * 1000, 1)

    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass  # a name: GuardedResolver checks what it resolves to
    else:
        if reason := refused_reason(host):
            return Outcome(None, 0.0, f"refused: {reason}", retry=False, refused=True)
    try:
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            answer = await response.content.read(MAX_RESPONSE_BYTES)
            status = response.status
            retry_after = _retry_after(response.headers.get("Retry-After"))
    except aiohttp.ClientConnectorError as error:
        if isinstance(error.os_error, AddressRefused):
            return Outcome(None, took(), f"refused: {error.os_error}", retry=False, refused=True)
        return Outcome(None, took(), f"cannot connect: {error.os_error or error}"[:500], retry=True)
    except TimeoutError:
        return Outcome(None, took(), f"no answer within {settings.WEBHOOK_TIMEOUT_SECONDS:g} s", retry=True)
    except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as error:
        return Outcome(None, took(), f"{type(error).__name__}: {error}"[:500], retry=True)
    if 200 <= status < 300:
        return Outcome(status, took(), "", retry=False)
    text = answer.decode("utf-8", errors="replace").strip()
    if 300 <= status < 400:
        error = f"HTTP {status}: redirects are not followed"
    else:
        error = f"HTTP {status}" + (f": {text}" if text else "")
    return Outcome(
        status, took(), error[:500], retry=status >= 500 or status in RETRY_STATUSES, retry_after=retry_after
    )
