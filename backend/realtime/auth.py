"""Who is on the other end of a WebSocket, and whether a browser may open it from where it is.

A socket authenticates with one of:
- a ticket, `?ticket=` (realtime.tickets): short-lived and single-use, for clients that hold an API token;
- an API token in the `Authorization: Token <token>` header (clients that can set headers);
- the browser's session cookie (the dashboard and the tracking page).
A token in the URL (`?token=`) is refused: URLs end up in logs and browser histories.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from rest_framework.exceptions import AuthenticationFailed

from core.authentication import TokenAuthentication

from . import tickets

logger = logging.getLogger(__name__)


def in_thread_pool(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`database_sync_to_async` on the thread pool rather than the one thread-sensitive thread.

    Every socket's connect makes a few short reads (token, authorization, snapshot, replay). In the single
    thread Channels uses by default they queue behind each other: in a reconnect storm of hundreds of
    sockets the queue outlasts daphne's handshake timeout and the sockets are dropped. The ORM is
    thread-safe (one connection per thread), so these reads run side by side on the pool.
    """
    return database_sync_to_async(func, thread_sensitive=False)


@in_thread_pool
def user_for_token(token: str) -> Any:
    try:
        user, _ = TokenAuthentication().authenticate_credentials(token.encode())
    except (AuthenticationFailed, UnicodeError):
        return AnonymousUser()
    return user


@in_thread_pool
def user_for_ticket(ticket: str) -> Any:
    user_id = tickets.redeem(ticket)
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first() if user_id else None
    return user or AnonymousUser()


def header_token(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, credentials = value.decode("latin1").partition(" ")
            if kind.lower() == "token" and credentials.strip():
                return credentials.strip()
    return None


class WebSocketAuthMiddleware:
    """A ticket or a token, when given, decides the user (an invalid one means anonymous, not the session's
    user); otherwise the session does (channels' AuthMiddlewareStack, only then: it reads the session on
    the one thread-sensitive thread, a hop per socket that a reconnect storm of token clients queued on)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.by_session = AuthMiddlewareStack(inner)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        query = parse_qs(scope.get("query_string", b"").decode("latin1"))
        if "token" in query:
            logger.info("WebSocket with a token in its URL refused (%s)", scope.get("path"))
            user = AnonymousUser()
        elif "ticket" in query:
            user = await user_for_ticket(query["ticket"][0])
        elif (token := header_token(scope)) is not None:
            user = await user_for_token(token)
        else:
            return await self.by_session(scope, receive, send)
        return await self.inner({**scope, "user": user}, receive, send)


class BrowserOriginValidator:
    """Browsers always send Origin on a WebSocket handshake: when present it must be this site (same scheme,
    host and port as the socket) or one of CSRF_TRUSTED_ORIGINS, as Django's CSRF check does for forms.

    Clients that are not browsers send none; they authenticate with a ticket or a header, never a cookie,
    so cross-site WebSocket hijacking does not apply to them.
    """

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = dict(scope.get("headers", [])).get(b"origin")
        if origin is not None and not origin_allowed(scope, origin.decode("latin1")):
            logger.info("WebSocket from origin %r refused", origin[:100])
            return await WebsocketDenier()(scope, receive, send)  # a 403 to the handshake
        return await self.application(scope, receive, send)


def origin_allowed(scope: dict[str, Any], origin: str) -> bool:
    origin = origin.strip().lower()
    parts = urlsplit(origin)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        return False
    if origin in _trusted_origins():
        return True
    if any(
        origin.startswith(f"{parts.scheme}://") and _wildcard_match(parts.netloc, pattern)
        for pattern in _trusted_wildcards(parts.scheme)
    ):
        return True
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin1").lower()
    domain, _ = split_domain_port(host)
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    allowed_hosts = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    return bool(domain) and validate_host(domain, allowed_hosts) and origin == f"{scheme}://{host}"


def _trusted_origins() -> set[str]:
    return {origin.lower() for origin in settings.CSRF_TRUSTED_ORIGINS if "*" not in origin}


def _trusted_wildcards(scheme: str) -> list[str]:
    """`https://*.example.com` entries, as the netloc patterns `.example.com` for that scheme."""
    prefix = f"{scheme}://*"
    return [
        origin.lower()[len(prefix) :]
        for origin in settings.CSRF_TRUSTED_ORIGINS
        if origin.lower().startswith(prefix)
    ]


def _wildcard_match(netloc: str, pattern: str) -> bool:
    return netloc.endswith(pattern) and len(netloc) > len(pattern)
