"""The project's URLs plus test views (`pytest.mark.urls`): one that fails, one that says where it ran,
two that stream."""

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import include, path

FAILURE_MESSAGE = "boom for the tests"
STREAM_PARTS = [b"first,", b"second,", b"third"]


def fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(FAILURE_MESSAGE)


def where(request: HttpRequest) -> JsonResponse:
    """The thread that ran this view and its database connection's server process."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (backend_pid,) = cursor.fetchone()
    return JsonResponse({"thread": threading.current_thread().name, "backend_pid": backend_pid})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    async def parts() -> AsyncIterator[bytes]:
        for part in STREAM_PARTS:
            yield part

    return StreamingHttpResponse(parts())


def endless(request: HttpRequest) -> StreamingHttpResponse:
    """Streams until the client goes away (asynchronously: Django reads a sync iterator whole first)."""

    async def parts() -> AsyncIterator[bytes]:
        for _ in itertools.count():
            yield b"more,"
            await asyncio.sleep(0.01)

    return StreamingHttpResponse(parts())


urlpatterns = [
    path("fail/", fail),
    path("where/", where),
    path("stream/", stream),
    path("stream/endless/", endless),
    path("", include("core.urls")),
]
