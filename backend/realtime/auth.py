"""Who is on the other end of a WebSocket: a browser session, or a token (`?token=` or Authorization)."""

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework.authtoken.models import Token


def token_from_scope(scope: dict[str, Any]) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode("latin1"))
    if query.get("token"):
        return query["token"][0]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            kind, _, credentials = value.decode("latin1").partition(" ")
            if kind.lower() in {"token", "bearer"} and credentials:
                return credentials.strip()
    return None


def in_thread_pool(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """`database_sync_to_async` on the thread pool rather than the one thread-sensitive thread.

    Every socket's connect makes a few short reads (token, authorization, snapshot, replay). In the single
    thread Channels uses by default they queue behind each other: in a reconnect storm of hundreds of
    sockets the queue outlasts daphne's handshake timeout and the sockets are dropped. The ORM is
    thread-safe (one connection per thread), so these reads run side by side on the pool.
    """
    return database_sync_to_async(func, thread_sensitive=False)


@in_thread_pool
def user_for_token(key: str) -> Any:
    token = Token.objects.select_related("user").filter(key=key[:40]).first()
    if token is None or not token.user.is_active:
        return AnonymousUser()
    return token.user


class TokenAuthMiddleware(BaseMiddleware):
    """A token, when given, decides the user (an invalid one means anonymous, not the session's user)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        key = token_from_scope(scope)
        if key is not None:
            scope = {**scope, "user": await user_for_token(key)}
        return await super().__call__(scope, receive, send)


class BrowserOriginValidator(OriginValidator):
    """Browsers always send Origin on a WebSocket handshake: when present it must be one of ours.

    Courier apps are not browsers and send none; they authenticate with a token instead of a cookie,
    so cross-site WebSocket hijacking does not apply to them.
    """

    def __init__(self, application: Any) -> None:
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = [".localhost", "127.0.0.1", "[::1]"]
        super().__init__(application, hosts)

    def valid_origin(self, parsed_origin: Any) -> bool:
        return parsed_origin is None or self.validate_origin(parsed_origin)
