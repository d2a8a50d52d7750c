"""Request bodies over MAX_REQUEST_BYTES get 413, under any ASGI server and without nginx in front.

A declared Content-Length over the limit is answered before the application reads a byte. A body without
one (chunked) is read here first, counted as it arrives, and answered with 413 as soon as it goes over,
so the application never holds more than the limit. Django reads a whole body before it calls a view,
so reading it here first costs nothing.

Under daphne this is the second line, not the first: daphne buffers the whole body before it hands any
of it to the application, so core.serve refuses oversized bodies inside daphne, while they arrive.
"""

import json
import logging
from collections import deque
from collections.abc import Iterable

from asgiref.typing import ASGI3Application, ASGIReceiveCallable, ASGIReceiveEvent, ASGISendCallable, Scope

logger = logging.getLogger(__name__)


def too_large_body(max_bytes: int) -> bytes:
    """The JSON body of every 413 for an oversized request, here and in core.serve."""
    return json.dumps({"detail": f"Request body over {max_bytes} bytes."}).encode()


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The largest Content-Length the request declares; None without one or with an unreadable one."""
    lengths = [value.strip() for name, value in headers if name.lower() == b"content-length"]
    if not lengths or not all(length.isdigit() for length in lengths):
        return None
    return max(int(length) for length in lengths)


class BodySizeLimitMiddleware:
    """Wraps an HTTP ASGI application; other scopes pass through untouched."""

    def __init__(self, app: ASGI3Application, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope["headers"])
        if declared is not None and declared > self.max_bytes:
            await self.refuse(scope, send, f"Content-Length {declared}")
            return
        received: deque[ASGIReceiveEvent] = deque()
        size = 0
        while True:
            message = await receive()
            received.append(message)
            if message["type"] != "http.request":  # http.disconnect: the application hears it next
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self.refuse(scope, send, f"over {self.max_bytes} bytes received")
                return
            if not message.get("more_body", False):
                break

        async def replay() -> ASGIReceiveEvent:
            return received.popleft() if received else await receive()

        await self.app(scope, replay, send)

    async def refuse(self, scope: Scope, send: ASGISendCallable, why: str) -> None:
        client = scope.get("client") or ("?", 0)
        logger.warning("413 for %s %s from %s: %s", scope["method"], scope["path"], client[0], why)
        body = too_large_body(self.max_bytes)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    # The rest of the body may still be on its way: this connection is done.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
