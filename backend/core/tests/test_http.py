"""core.http runs each HTTP request's sync work (request_started, middleware and view, closing the
response) in one call on a pool of reused threads.

It subclasses Django's ASGIHandler, which Django does not make public: the methods it relies on are
pinned here by their source, so a Django upgrade that changes them fails this module. Then re-read them
against core.http and record the new hashes.
"""

import hashlib
import inspect
import json
import threading
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import async_to_sync, iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.core.signals import request_finished, request_started
from django.db import connection

from core.http import HttpHandler
from core.tests.error_urls import STREAM_PARTS

# (class, method, its parameters, sha256 of its source): ASGIHandler's __init__ is replaced (it loads the
# chain async); handle and run_get_response are what core.http's handle and _respond do in one hop;
# __call__ calls handle; read_body, create_request, send_response and listen_for_disconnect are called
# as handle calls them; load_middleware(is_async=False) and get_response are what WSGIHandler uses.
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
        ASGIHandler,
        "read_body",
        ["self", "receive"],
        "cf4aa904631d5410206f1a6b12ef0c74e99e4bd7313232c8e61f7a09a66a95e1",
    ),
    (
        ASGIHandler,
        "create_request",
        ["self", "scope", "body_file"],
        "5eae59c6696013ffad47c3c05da5820dc7e17b2a3c8a09f59e12fd9bede5dc4f",
    ),
    (
        ASGIHandler,
        "send_response",
        ["self", "response", "send"],
        "77eda2b08689b44ee277c936092bde02e50f84727f7398480a127e7e9e1dad06",
    ),
    (
        ASGIHandler,
        "listen_for_disconnect",
        ["self", "receive"],
        "c729aa315c734f98cc8a6460d75adcae548e97549b6600388666fbbf6fcba2a9",
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


def scope_of(path: str, headers: list[tuple[bytes, bytes]] = ()) -> dict:
    return {
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


def get(handler: HttpHandler, path: str, headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, dict, bytes]:
    """The status, headers and whole body of a GET, however many body messages carry it."""
    return get_scope(handler, scope_of(path, headers))


def get_scope(handler: HttpHandler, scope: dict) -> tuple[int, dict, bytes]:
    async def exchange() -> tuple[int, dict, bytes]:
        communicator = ApplicationCommunicator(handler, scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(10)
        body = b""
        while True:
            message = await communicator.receive_output(10)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await communicator.wait(10)
        return start["status"], dict(start["headers"]), body

    return async_to_sync(exchange)()


@pytest.fixture
def signals_seen() -> Iterator[list[tuple[str, str]]]:
    """(signal, thread name) for every request_started and request_finished sent meanwhile."""
    seen: list[tuple[str, str]] = []

    def started(**kwargs: object) -> None:
        seen.append(("started", threading.current_thread().name))

    def finished(**kwargs: object) -> None:
        seen.append(("finished", threading.current_thread().name))

    request_started.connect(started)
    request_finished.connect(finished)
    yield seen
    request_started.disconnect(started)
    request_finished.disconnect(finished)


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


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("core.tests.error_urls")
def test_request_started_and_finished_fire_on_the_thread_that_runs_the_view(handler, signals_seen, settings):
    """As under WSGI: Django's receivers (reset_queries, close_old_connections) look after the connection
    of the thread that used it, and a request costs no hop to another thread."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    status, _, body = get(handler, "/where/")
    assert status == 200
    assert signals_seen == [("started", "http_0"), ("finished", "http_0")]
    assert json.loads(body)["thread"] == "http_0"
    assert handler.executor.submit(lambda: connection.connection is not None).result(), "kept open"


@pytest.mark.urls("core.tests.error_urls")
def test_a_streamed_response_is_sent_whole_then_closed_off_the_http_threads(handler, signals_seen):
    status, _, body = get(handler, "/stream/")
    assert status == 200
    assert body == b"".join(STREAM_PARTS)
    assert [name for name, _ in signals_seen] == ["started", "finished"]
    (started, finished) = [thread for _, thread in signals_seen]
    assert started == "http_0"
    assert finished != "http_0", "closed as Django closes streams: on the request's own thread"


@pytest.mark.urls("core.tests.error_urls")
def test_a_streamed_response_stops_when_the_client_goes_away(handler, signals_seen):
    async def exchange() -> list[dict]:
        communicator = ApplicationCommunicator(handler, scope_of("/stream/endless/"))
        await communicator.send_input({"type": "http.request", "body": b""})
        received = [await communicator.receive_output(10) for _ in range(3)]
        await communicator.send_input({"type": "http.disconnect"})
        await communicator.wait(10)
        return received

    received = async_to_sync(exchange)()
    assert received[0]["status"] == 200
    assert [name for name, _ in signals_seen] == ["started", "finished"], "stopped and closed"


def test_a_request_django_cannot_build_gets_its_error_answer(handler, signals_seen):
    """create_request's own answers (400 for a query string that is not UTF-8) come back through the same
    hop, and the request is finished."""
    status, _, _ = get_scope(handler, {**scope_of("/healthz"), "query_string": b"q=\xff"})
    assert status == 400
    assert signals_seen == [("started", "http_0"), ("finished", "http_0")]
