"""The edge of the web process: request-body limits and forwarding headers.

Bodies: the web process as the Procfile starts it (core.serve: daphne, counting bodies as they arrive)
answers 413 to a declared or a chunked body over MAX_REQUEST_BYTES without buffering it; core.asgi_limits
gives the same answer under any ASGI server (plain daphne here), and webhooks still pass.

Forwarding headers (core.proxies): believed from TRUSTED_PROXIES only, removed from every request. Over
real HTTP they decide what depends on the client: the per-source webhook limit (its address), Django's
CSRF origin check and the WebSocket origin check (its scheme).
"""

import asyncio
import ipaddress
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psutil
import pytest
import websockets
from asgiref.testing import ApplicationCommunicator
from conftest import REPO  # backend/conftest.py
from django.conf import settings

from core.asgi_limits import BodySizeLimitMiddleware
from core.proxies import ProxyHeadersMiddleware
from orders.tests import factories
from orders.tests.factories import signature_of
from realtime.tests.conftest import daphne_env, free_port, start_daphne, stop

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LIMIT = 1024 * 1024  # MAX_REQUEST_BYTES of .env.default
RSS_GROWTH_BOUND = 50 * 1024 * 1024
WEBHOOK = "/webhooks/bueno/"


def web_env(**extra: str) -> dict[str, str]:
    """A web process with limit counters of its own."""
    return daphne_env(
        MAX_REQUEST_BYTES=str(LIMIT), LIMITS_KEY_PREFIX=f"test-proxy-{uuid.uuid4().hex[:8]}", **extra
    )


@dataclass
class Web:
    process: subprocess.Popen
    url: str


def serve(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[Web]:
    """The web process as the Procfile starts it (core.serve), for the tests of this module."""
    port = free_port()
    process = start_daphne(web_env(**env), port, tmp_path_factory.mktemp("web") / "web.log")
    yield Web(process, f"http://127.0.0.1:{port}")
    stop(process)


# Module-scoped: a web process takes seconds to start, and these tests only read what it answers.
@pytest.fixture(scope="module")
def web(django_db_setup, tmp_path_factory) -> Iterator[Web]:
    """On a laptop: TRUSTED_PROXIES empty."""
    yield from serve(tmp_path_factory, TRUSTED_PROXIES="")


@pytest.fixture(scope="module")
def web_direct(django_db_setup, tmp_path_factory) -> Iterator[Web]:
    """TRUSTED_PROXIES empty, and at most 3 webhook calls from one address a minute."""
    yield from serve(tmp_path_factory, TRUSTED_PROXIES="", THROTTLE_WEBHOOK_PER_SOURCE="3/minute")


@pytest.fixture(scope="module")
def web_behind_proxy(django_db_setup, tmp_path_factory) -> Iterator[Web]:
    """Behind a proxy at 127.0.0.1 (the tests' client stands in for nginx); 3 webhook calls a minute."""
    yield from serve(tmp_path_factory, TRUSTED_PROXIES="127.0.0.1", THROTTLE_WEBHOOK_PER_SOURCE="3/minute")


def signed_webhook(payload: dict) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    signature = signature_of(body, settings.PROVIDERS["bueno"]["webhook_secret"])
    return body, {"X-Bueno-Signature": signature, "Content-Type": "application/json"}


def too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text[:300]
    assert response.json() == {"detail": f"Request body over {LIMIT} bytes."}


# --- request bodies ---------------------------------------------------------------------------------


def test_a_declared_oversized_body_gets_413_before_it_is_sent(web):
    base = web.url
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as connection:
        connection.sendall(
            f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {400 * LIMIT}\r\n\r\n".encode()
        )
        answer = b""
        while chunk := connection.recv(65536):  # no body byte sent: the answer comes from the headers
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    too_large(httpx.post(base + WEBHOOK, content=b"x" * (LIMIT + 1), timeout=30))


def test_an_oversized_chunked_body_gets_413_and_is_never_buffered(web):
    base, process = web.url, psutil.Process(web.process.pid)
    body, headers = signed_webhook({"id": "warm-up", "status": "preparing"})
    httpx.post(base + WEBHOOK, content=body, headers=headers, timeout=30)  # imports done, pools warm
    rss = process.memory_info().rss
    peak = rss
    uploading = threading.Event()
    uploading.set()

    def watch() -> None:
        nonlocal peak
        while uploading.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.005)

    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked
        chunk = b"x" * 65536
        for _ in range(400 * 16):  # 400 MiB
            yield chunk

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        response = httpx.post(base + WEBHOOK, content=chunks(), timeout=120)
    finally:
        uploading.clear()
        watcher.join()
    too_large(response)
    assert peak - rss < RSS_GROWTH_BOUND, f"the web process grew by {(peak - rss) >> 20} MiB"
    assert httpx.get(base + "/healthz?scope=process", timeout=10).status_code == 200


def test_webhooks_pass_and_keep_their_own_smaller_limit(web, customer, restaurants):
    base = web.url
    order = factories.make_order(customer, restaurants["bueno"])
    leg = order.legs.get()
    leg.external_id = f"bno_test_{uuid.uuid4().hex}"
    leg.save()
    body, headers = signed_webhook({"id": leg.external_id, "status": "preparing"})
    response = httpx.post(base + WEBHOOK, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "changed": True}
    # A body at MAX_REQUEST_BYTES passes the web process and reaches the view, whose limit is smaller.
    at_limit = httpx.post(base + WEBHOOK, content=b"x" * LIMIT, timeout=30)
    assert at_limit.status_code == 413 and "detail" not in at_limit.json()


def test_form_bodies_reach_django_unparsed_by_twisted(web):
    """Twisted would parse a POSTed form into request.args, which daphne never reads (a tenth of the CPU
    of creating an order went to parsing its Content-Type), and answer a multipart body it cannot parse
    with its own bare 400. The web process leaves bodies to Django, which answers in the API's terms."""
    response = httpx.post(
        web.url + "/api/orders/",
        content=b"--x\r\nno headers, no end",
        headers={"Content-Type": "multipart/form-data", "Authorization": "Token nope"},  # no boundary
        timeout=10,
    )
    assert response.status_code == 401, response.text[:300]
    assert response.headers["content-type"] == "application/json"


def test_plain_daphne_is_held_by_the_asgi_middleware_alone(tmp_path, unused_tcp_port):
    """Any ASGI server: plain daphne hands the whole body over, and core.asgi_limits still says 413."""
    process = start_daphne(web_env(), unused_tcp_port, tmp_path / "daphne.log", module="daphne")
    try:
        chunks = (b"x" * 65536 for _ in range(48))  # 3 MiB, chunked
        too_large(httpx.post(f"http://127.0.0.1:{unused_tcp_port}{WEBHOOK}", content=chunks, timeout=30))
    finally:
        stop(process)


class Downstream:
    """The application behind a middleware: keeps the scope it got and what it read; answers 200 with the
    length of the body."""

    def __init__(self) -> None:
        self.scope: dict | None = None
        self.read: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        self.scope = scope
        if scope["type"] != "http":
            return
        while True:
            self.read.append(await receive())
            if self.read[-1]["type"] != "http.request" or not self.read[-1].get("more_body"):
                break
        body = b"".join(message.get("body", b"") for message in self.read)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})


def scope_of(kind: str = "http", headers: list[tuple[bytes, bytes]] = (), client: str = "127.0.0.1") -> dict:
    return {
        "type": kind,
        "method": "POST",
        "path": WEBHOOK,
        "scheme": "http" if kind == "http" else "ws",
        "headers": list(headers),
        "client": (client, 50000),
    }


def answer(app, scope: dict, messages: list[dict]) -> tuple[int, bytes]:
    """The status and body `app` answers with when the client sends `messages`."""

    async def run() -> tuple[int, bytes]:
        communicator = ApplicationCommunicator(app, scope)
        for message in messages:
            await communicator.send_input(message)
        start = await communicator.receive_output(timeout=5)
        body = await communicator.receive_output(timeout=5)
        await communicator.wait(timeout=5)
        return start["status"], body["body"]

    return asyncio.run(run())


def chunk(size: int, more: bool = True) -> dict:
    return {"type": "http.request", "body": b"x" * size, "more_body": more}


def test_the_asgi_limit_answers_a_declared_length_before_the_application_reads():
    downstream = Downstream()
    app = BodySizeLimitMiddleware(downstream, LIMIT)
    status, body = answer(app, scope_of(headers=[(b"content-length", b"%d" % (LIMIT + 1))]), [])
    assert status == 413 and json.loads(body) == {"detail": f"Request body over {LIMIT} bytes."}
    assert downstream.scope is None


def test_the_asgi_limit_counts_a_chunked_body_and_never_passes_more_than_the_limit():
    downstream = Downstream()
    app = BodySizeLimitMiddleware(downstream, LIMIT)
    status, _ = answer(app, scope_of(), [chunk(600_000), chunk(600_000), chunk(10, more=False)])
    assert status == 413
    assert downstream.scope is None, "the application never started, so it holds none of the body"


def test_the_asgi_limit_hands_a_body_within_the_limit_over_unchanged():
    downstream = Downstream()
    app = BodySizeLimitMiddleware(downstream, LIMIT)
    status, body = answer(app, scope_of(), [chunk(LIMIT // 2), chunk(LIMIT // 2, more=False)])
    assert (status, body) == (200, b"%d" % LIMIT)
    assert [len(message["body"]) for message in downstream.read] == [LIMIT // 2, LIMIT // 2]


def test_the_launcher_refuses_daphnes_own_proxy_headers(unused_tcp_port):
    """daphne --proxy-headers would believe any client's X-Forwarded-For."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.serve",
            "--proxy-headers",
            "-p",
            str(unused_tcp_port),
            "core.asgi:application",
        ],
        cwd=REPO,
        env=web_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "TRUSTED_PROXIES" in result.stderr


# --- forwarding headers -----------------------------------------------------------------------------

FORWARDING = [
    (b"x-forwarded-for", b"6.6.6.6"),
    (b"X-Forwarded-Proto", b"https"),
    (b"x-forwarded-host", b"evil.example"),
    (b"x-forwarded-port", b"443"),
    (b"x-real-ip", b"6.6.6.7"),
    (b"forwarded", b"for=6.6.6.8;proto=https"),
]
PROXIES = [ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("10.0.0.0/8")]


def resolve(headers: list[tuple[bytes, bytes]], *, kind: str = "http", client: str = "127.0.0.1") -> dict:
    return ProxyHeadersMiddleware(Downstream(), trusted=PROXIES).resolve(scope_of(kind, headers, client))


@pytest.mark.parametrize("kind", ["http", "websocket"])
def test_forwarding_headers_of_an_untrusted_peer_are_dropped_and_change_nothing(kind):
    scope = resolve([(b"host", b"x"), *FORWARDING], kind=kind, client="192.0.2.10")
    assert scope["headers"] == [(b"host", b"x")]
    assert scope["client"] == ("192.0.2.10", 50000)
    assert scope["scheme"] == ("http" if kind == "http" else "ws")


@pytest.mark.parametrize(("kind", "scheme"), [("http", "https"), ("websocket", "wss")])
def test_a_trusted_proxy_names_the_client_and_the_scheme_and_the_headers_go(kind, scheme):
    scope = resolve([(b"host", b"x"), *FORWARDING], kind=kind)
    assert scope["headers"] == [(b"host", b"x")]
    assert scope["client"] == ("6.6.6.6", 0)
    assert scope["scheme"] == scheme


@pytest.mark.parametrize(
    ("forwarded_for", "client"),
    [
        # The right-most entry that is not a proxy of ours; what the client wrote to its left is ignored.
        ([b"1.1.1.1, 203.0.113.9"], "203.0.113.9"),
        ([b"1.1.1.1, 203.0.113.9, 10.0.0.2"], "203.0.113.9"),
        ([b"1.1.1.1", b"203.0.113.9"], "203.0.113.9"),  # the header sent twice reads as one list
        ([b"10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # only proxies: the furthest one
        ([b"1.1.1.1, unknown"], "127.0.0.1"),  # not an address: the peer stays the client
        ([b"2001:db8::1"], "2001:db8::1"),
        ([], "127.0.0.1"),
    ],
)
def test_the_client_behind_trusted_proxies(forwarded_for, client):
    scope = resolve([(b"x-forwarded-for", value) for value in forwarded_for])
    assert scope["client"][0] == client


def test_an_ipv4_mapped_peer_is_matched_as_ipv4():
    scope = resolve([(b"x-forwarded-for", b"203.0.113.9")], client="::ffff:127.0.0.1")
    assert scope["client"][0] == "203.0.113.9"


def test_an_unknown_forwarded_proto_leaves_the_scheme_alone():
    assert resolve([(b"x-forwarded-proto", b"gopher")])["scheme"] == "http"
    assert resolve([(b"x-forwarded-proto", b"http, https")])["scheme"] == "https"  # the nearest hop's


def test_the_middleware_hands_the_resolved_scope_on():
    downstream = Downstream()
    app = ProxyHeadersMiddleware(downstream, trusted=PROXIES)
    asyncio.run(ApplicationCommunicator(app, scope_of("websocket", FORWARDING)).wait(timeout=5))
    assert (downstream.scope["client"], downstream.scope["scheme"]) == (("6.6.6.6", 0), "wss")
    assert downstream.scope["headers"] == []


def webhook_statuses(base: str, forwarded_for: list[str]) -> list[int]:
    """Unsigned webhook calls (401), each with its X-Forwarded-For; the 4th from one source is 429."""
    return [
        httpx.post(base + WEBHOOK, content=b"{}", headers={"X-Forwarded-For": value}, timeout=10).status_code
        for value in forwarded_for
    ]


def test_an_untrusted_client_cannot_pose_as_others_with_forwarded_for(web_direct):
    posing = ["6.6.6.1", "6.6.6.2", "6.6.6.3", "6.6.6.4"]
    assert webhook_statuses(web_direct.url, posing) == [401, 401, 401, 429]


def test_behind_a_trusted_proxy_each_client_is_counted_by_its_own_address(web_behind_proxy):
    base = web_behind_proxy.url
    others = [f"1.1.1.1, 203.0.113.{n}" for n in range(1, 5)]
    assert webhook_statuses(base, others) == [401, 401, 401, 401]
    # The client's own entries (left of the proxy's) change nothing: one client, one count.
    one = [f"1.1.1.{n}, 203.0.113.77" for n in range(1, 5)]
    assert webhook_statuses(base, one) == [401, 401, 401, 429]


def login_status(base: str, origin_scheme: str) -> int:
    """A CSRF-checked form POST (a wrong password: 200) from Origin `origin_scheme`://this host, with
    X-Forwarded-Proto: https. Django accepts the origin only with the scheme it believes the request has."""
    with httpx.Client(base_url=base, timeout=10) as client:
        client.get("/login/").raise_for_status()
        headers = {
            "Origin": f"{origin_scheme}://{base.split('://')[1]}",
            "X-CSRFToken": client.cookies["csrftoken"],
            "X-Forwarded-Proto": "https",
        }
        return client.post(
            "/login/", data={"username": "nobody", "password": "x"}, headers=headers
        ).status_code


def test_forwarded_proto_from_an_untrusted_client_does_not_make_a_request_secure(web_direct):
    assert (login_status(web_direct.url, "http"), login_status(web_direct.url, "https")) == (200, 403)


def test_forwarded_proto_https_from_a_trusted_proxy_makes_the_request_secure(web_behind_proxy):
    base = web_behind_proxy.url
    assert (login_status(base, "http"), login_status(base, "https")) == (403, 200)


def websocket_answer(base: str, token: str) -> int | str:
    """Opens /ws/operators/ as a browser on https://this host would, through a proxy saying https."""
    host = base.split("://")[1]

    async def run() -> int | str:
        try:
            async with websockets.connect(
                f"ws://{host}/ws/operators/",
                origin=f"https://{host}",
                additional_headers={"Authorization": f"Token {token}", "X-Forwarded-Proto": "https"},
                proxy=None,
                open_timeout=15,
            ):
                return "open"
        except websockets.InvalidStatus as error:
            return error.response.status_code

    return asyncio.run(run())


def test_a_websocket_is_wss_only_when_a_trusted_proxy_says_https(web_direct, web_behind_proxy, operator):
    token = factories.token_for(operator)
    # Untrusted: the socket is ws://, so an https:// page may not open it (403); trusted: wss://, it may.
    assert websocket_answer(web_direct.url, token) == 403
    assert websocket_answer(web_behind_proxy.url, token) == "open"


# --- the listening socket ---------------------------------------------------------------------------------


def test_the_web_process_listens_with_the_configured_backlog(web):
    """Twisted's default backlog (50) overflowed when 1,000 sockets reconnected at once (bench.reconnect):
    the web process listens with WEB_LISTEN_BACKLOG (.env.default: 1024), read back from the kernel."""
    port = web.url.rsplit(":", 1)[1]
    listening = subprocess.run(
        ["ss", "--listening", "--tcp", "--numeric", f"sport = :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[1:]
    assert len(listening) == 1, listening
    assert listening[0].split()[2] == str(settings.WEB_LISTEN_BACKLOG) == "1024", listening


def test_an_endpoint_naming_its_own_backlog_keeps_it():
    from core.serve import with_backlog

    assert (
        with_backlog("tcp:port=8000:interface=127.0.0.1", 1024)
        == "tcp:port=8000:interface=127.0.0.1:backlog=1024"
    )
    assert with_backlog("unix:/run/web.sock", 64) == "unix:/run/web.sock:backlog=64"
    assert with_backlog("tcp:port=8000:backlog=10", 1024) == "tcp:port=8000:backlog=10"
    assert with_backlog("fd:fileno=3", 1024) == "fd:fileno=3"


def test_a_websocket_may_take_the_configured_time_to_open(settings):
    """daphne's command line refuses a WebSocket still opening after 5 s (403): in a reconnect storm on a
    slow machine (bench.reconnect) that refused handshakes already under way and their clients retried on
    top of the rest. The web process waits WEB_WEBSOCKET_CONNECT_TIMEOUT_SECONDS (.env.default: 20)."""
    from core.serve import LimitedServer

    settings.WEB_WEBSOCKET_CONNECT_TIMEOUT_SECONDS = 17
    server = LimitedServer(application=None, endpoints=["tcp:port=8000:interface=127.0.0.1"])
    assert server.websocket_connect_timeout == server.websocket_handshake_timeout == 17
