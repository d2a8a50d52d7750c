"""core.http runs each HTTP request's middleware and view in one call on a pool of reused threads.

It subclasses Django's ASGIHandler, which Django does not make public: the methods it relies on are
pinned here by their source, so a Django upgrade that changes them fails this module. Then re-read them
against core.http and record the new hashes.
"""

import hashlib
import inspect
import json
import threading
from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import connection

from core.http import HttpHandler

# (class, method, its parameters, sha256 of its source): ASGIHandler's __init__ is replaced (it loads the
# chain async); __call__, handle and run_get_response call get_response_async, which core.http
# overrides; load_middleware(is_async=False) and get_response are what Django's WSGIHandler uses.
UPSTREAM = [
    (ASGIHandler, "__init__", ["self"], "41379d4f4b69f900b62a201a442d0721c965e26906a6a64f11c8b846bf3b3a38"),
    (
        ASGIHandler,
        "__call__",
        ["self", "scope", "receive", "send"],
        "f756809e9c9308dcccb78a301fccf09196e80cdc4745690f80384d09b69dd102",
    ),
    (
        ASGIHandler,
        "handle",
        ["self", "scope", "receive", "send"],
        "98faeb5bef800331e6a8002fbc96b30e4122a23438ae45a047190a531ea11323",
    ),
    (
        ASGIHandler,
        "run_get_response",
        ["self", "request"],
        "0234ea5fe09a577785a5f895752910cbb439f5e28ebb53bdd27247251c00e6ef",
    ),
    (
        BaseHandler,
        "load_middleware",
        ["self", "is_async"],
        "a1fb7ee5f8586195da2174d1bbc2bbfc7ca19b9d26ea66412cb434f45bf6d467",
    ),
    (
        BaseHandler,
        "get_response",
        ["self", "request"],
        "3d6a79b124c2cccb709071aa82e68030f0a172c3c4662b68351e6b8161b9a848",
    ),
]


@pytest.mark.parametrize(
    ("owner", "name", "parameters", "digest"),
    UPSTREAM,
    ids=[f"{owner.__name__}.{name}" for owner, name, _, _ in UPSTREAM],
)
def test_upstream_method_is_unchanged(owner: type, name: str, parameters: list[str], digest: str):
    method: Callable = owner.__dict__[name]
    assert list(inspect.signature(method).parameters) == parameters
    digest_now = hashlib.sha256(inspect.getsource(method).encode()).hexdigest()
    assert digest_now == digest, f"{owner.__name__}.{name} changed: re-read it against core.http"


def get(handler: HttpHandler, path: str, headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, dict, bytes]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def exchange() -> tuple[int, dict, bytes]:
        communicator = ApplicationCommunicator(handler, scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(10)
        body = await communicator.receive_output(10)
        await communicator.wait(10)
        return start["status"], dict(start["headers"]), body["body"]

    return async_to_sync(exchange)()


@pytest.fixture
def handler() -> HttpHandler:
    handler = HttpHandler(threads=1)
    yield handler
    # The pool thread's connection belongs to that thread: close it there
    handler.executor.submit(lambda: connection.close()).result()
    handler.executor.shutdown()


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("core.tests.error_urls")
def test_requests_run_on_a_reused_thread_that_keeps_its_connection(handler, settings):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    answers = [get(handler, "/where/") for _ in range(3)]
    seen = [json.loads(body) for status, _, body in answers if status == 200]
    assert len(seen) == 3
    assert {answer["thread"] for answer in seen} == {"http_0"}, "one pool thread, never the event loop's"
    assert seen[0]["thread"] != threading.current_thread().name
    assert len({answer["backend_pid"] for answer in seen}) == 1, "the thread kept its connection"


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("core.tests.error_urls")
def test_a_connection_past_its_age_is_replaced_between_requests(handler, settings):
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    pids = [json.loads(get(handler, "/where/")[2])["backend_pid"] for _ in range(2)]
    assert pids[0] != pids[1], "CONN_MAX_AGE 0: a new connection for each request"


@pytest.mark.urls("core.tests.error_urls")
def test_the_whole_middleware_chain_runs_sync_around_the_view(handler):
    """The chain is loaded as WSGI loads it: no middleware is adapted to async, so no hop between them."""
    assert not iscoroutinefunction(handler._middleware_chain)  # Django's ASGIHandler: a coroutine function
    status, headers, _ = get(handler, "/no-such-page/", [(b"x-request-id", b"hop-1")])
    assert status == 404
    assert headers[b"X-Request-ID"] == b"hop-1"
