"""orders.providers.http against real peers: an aiohttp.web app plays a well-behaved provider, a raw TCP
server writes the exact (often broken) bytes a misbehaving one would, a small forward proxy records what
reaches it, a TLS server presents a certificate of a test CA, and a forked child calls on its own.

The servers run on their own event loop in a thread of the test process, apart from the provider loop
under test.
"""

import asyncio
import gzip
import ipaddress
import os
import resource
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orders.providers.http import Answer, TransportError, TransportTimeout, call, close, run

ORDER = {"id": "mel_1", "status": "cooking"}
ORDER_BYTES = b'{"id":"mel_1","status":"cooking"}'
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")


class ServerLoop:
    """An event loop in a daemon thread for the test's servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-servers", daemon=True)
        self.thread.start()
        self.cleanups: list[Callable[[], Coroutine[Any, Any, None]]] = []

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def clean_up(self) -> None:
        while self.cleanups:
            self.run(self.cleanups.pop()())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class WebProvider:
    """A well-behaved provider: aiohttp.web, counting the TCP connections its requests arrive on."""

    def __init__(self, servers: ServerLoop, *, tls: ssl.SSLContext | None = None, bomb: bytes = b"") -> None:
        self.connections: set[tuple[str, int]] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.bomb = bomb
        app = web.Application()
        app.add_routes(
            [
                web.route("*", "/echo", self.echo),
                web.get("/slow", self.slow),
                web.get("/encoded/{coding}", self.encoded),
                web.get("/bomb", self.gzip_bomb),
                web.get("/big/{size}", self.big),
                web.get("/status/{status}", self.status),
            ]
        )
        self.runner = web.AppRunner(app, access_log=None)
        self.base = servers.run(self._start(tls))
        servers.cleanups.append(self.runner.cleanup)

    async def _start(self, tls: ssl.SSLContext | None) -> str:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=tls).start()
        port = self.runner.addresses[0][1]
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def _arrived(self, request: web.Request) -> None:
        assert request.transport is not None
        self.connections.add(request.transport.get_extra_info("peername"))

    async def echo(self, request: web.Request) -> web.Response:
        self._arrived(request)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": body.decode(),
            }
        )

    async def slow(self, request: web.Request) -> web.Response:
        self._arrived(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05)
        finally:
            self.in_flight -= 1
        return web.json_response(ORDER)

    async def encoded(self, request: web.Request) -> web.Response:
        compress = {"gzip": gzip.compress, "deflate": zlib.compress}[request.match_info["coding"]]
        headers = {"Content-Encoding": request.match_info["coding"], "Content-Type": "application/json"}
        return web.Response(body=compress(ORDER_BYTES), headers=headers)

    async def gzip_bomb(self, request: web.Request) -> web.Response:
        return web.Response(body=self.bomb, headers={"Content-Encoding": "gzip"})

    async def big(self, request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.match_info["size"]))

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "busy"}, status=int(request.match_info["status"]))


Script = Callable[["RawProvider", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawProvider:
    """A TCP server that answers each connection with `script`: exactly the bytes a test chooses."""

    def __init__(self, servers: ServerLoop, script: Script, *, host: str = "127.0.0.1") -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server = servers.run(asyncio.start_server(self._handle, host, 0))
        port = self.server.sockets[0].getsockname()[1]
        self.base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        servers.cleanups.append(self._close)

    async def _close(self) -> None:
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(self, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        request = head
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                request += await reader.readexactly(int(line.split(b":")[1]))
        self.requests.append(request)
        return request


def answering(answer: bytes, *, then_close: bool = False) -> Script:
    """A script answering every request on a connection with `answer` (and closing after it, if asked)."""

    async def script(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await raw.read_request(reader)
            writer.write(answer)
            await writer.drain()
            if then_close:
                return

    return script


def ok(body: bytes = ORDER_BYTES, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


@pytest.fixture(scope="module")
def server_loop() -> Iterator[ServerLoop]:
    servers = ServerLoop()
    yield servers
    servers.stop()


@pytest.fixture
def servers(server_loop: ServerLoop) -> Iterator[ServerLoop]:
    yield server_loop
    server_loop.clean_up()


@pytest.fixture(autouse=True)
def fresh_client(servers: ServerLoop, settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts its own provider loop and session, with no proxy from the machine's environment,
    and closes them before its servers stop."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    settings.PROVIDER_TIMEOUT_SECONDS = 5
    settings.PROVIDER_CONCURRENCY = 20
    settings.PROVIDER_MAX_ANSWER_BYTES = 1_048_576
    close()
    yield
    close()


@pytest.fixture
def provider(servers: ServerLoop) -> WebProvider:
    return WebProvider(servers)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# -- well-behaved providers -----------------------------------------------------------------------


def test_json_round_trip_with_the_callers_headers(provider: WebProvider) -> None:
    headers = {"Idempotency-Key": "liveops-leg-1", "Authorization": "Bearer k", "Accept": "application/json"}
    answer = run(call("POST", provider.url("/echo"), json={"items": ["Борщ"], "n": 1}, headers=headers))

    assert answer.status == 200 and answer.content_type == "application/json"
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["body"] == '{"items":["Борщ"],"n":1}'
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["Idempotency-Key"] == "liveops-leg-1"
    assert seen["headers"]["Authorization"] == "Bearer k"
    assert seen["headers"]["Accept-Encoding"] == "gzip, deflate"


def test_an_error_status_is_an_answer_not_an_exception(provider: WebProvider) -> None:
    answer = run(call("GET", provider.url("/status/503")))
    assert answer.status == 503
    assert answer.json() == {"error": "busy"}


def test_sequential_calls_reuse_one_connection_across_runs(provider: WebProvider) -> None:
    for _ in range(3):
        assert run(call("GET", provider.url("/echo"))).status == 200
    assert len(provider.connections) == 1


def concurrently(url: str, count: int) -> list[Answer]:
    async def calls() -> list[Answer]:
        return await asyncio.gather(*(call("GET", url) for _ in range(count)))

    return run(calls())


def test_at_most_provider_concurrency_calls_are_in_flight_per_host(provider: WebProvider, settings) -> None:
    settings.PROVIDER_CONCURRENCY = 3
    answers = concurrently(provider.url("/slow"), 10)
    assert [answer.status for answer in answers] == [200] * 10
    assert provider.max_in_flight == 3


def test_changed_settings_build_a_new_session(provider: WebProvider, settings) -> None:
    settings.PROVIDER_CONCURRENCY = 3
    concurrently(provider.url("/slow"), 6)
    assert provider.max_in_flight == 3

    settings.PROVIDER_CONCURRENCY = 1
    provider.max_in_flight = 0
    concurrently(provider.url("/slow"), 4)
    assert provider.max_in_flight == 1

    settings.PROVIDER_MAX_ANSWER_BYTES = 100
    with pytest.raises(TransportError, match="larger than 100 bytes"):
        run(call("GET", provider.url("/big/200")))
    settings.PROVIDER_MAX_ANSWER_BYTES = 1000
    assert run(call("GET", provider.url("/big/200"))).body == b"x" * 200


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_answers_are_decoded(provider: WebProvider, coding: str) -> None:
    answer = run(call("GET", provider.url(f"/encoded/{coding}")))
    assert answer.body == ORDER_BYTES
    assert answer.json() == ORDER


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """50 MiB of zeros, gzipped to about 50 KB; built a MiB at a time so the test itself stays small."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    zeros = bytes(1 << 20)
    return b"".join([compressor.compress(zeros) for _ in range(50)] + [compressor.flush()])


def test_a_gzip_bomb_is_refused_without_inflating_it(servers: ServerLoop, gzip_bomb: bytes) -> None:
    bomber = WebProvider(servers, bomb=gzip_bomb)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()

    with pytest.raises(TransportError, match="larger than 1048576 bytes"):
        run(call("GET", bomber.url("/bomb")))

    assert time.monotonic() - started < 2
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert grown_mib < 20, f"peak memory grew by {grown_mib:.0f} MiB: the bomb was inflated"
    assert run(call("GET", bomber.url("/echo"))).status == 200, "the next call works"


def test_answer_json_raises_value_error_for_a_body_that_is_not_json() -> None:
    assert Answer(200, "ünï".encode(), "text/plain").text == "ünï"
    with pytest.raises(ValueError):
        Answer(200, b"<html>", "text/html").json()
    with pytest.raises(ValueError):
        Answer(200, b'{"a": "\xff"}', "application/json").json()


# -- failures ---------------------------------------------------------------------------------------


def test_no_answer_in_time_is_a_timeout(servers: ServerLoop, settings) -> None:
    async def silent(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        await reader.read()  # until the client gives up and closes

    settings.PROVIDER_TIMEOUT_SECONDS = 0.2
    raw = RawProvider(servers, silent)
    started = time.monotonic()
    with pytest.raises(TransportTimeout, match="0.2s"):
        run(call("GET", raw.base + "/x"))
    assert time.monotonic() - started < 2


def test_a_refused_connection_names_the_address() -> None:
    port = unused_port()
    with pytest.raises(TransportError, match=f"refused.*127.0.0.1:{port}"):
        run(call("GET", f"http://127.0.0.1:{port}/x"))


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 34\r\nContent-Length: 35\r\n\r\n" + ORDER_BYTES,
            "Content-Length",
            id="two Content-Length headers",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", "body", id="body cut short"),
        pytest.param(ok(b"not gzip at all", b"Content-Encoding: gzip\r\n"), "gzip", id="bad gzip body"),
        pytest.param(ok(b"{}", b"Content-Encoding: br\r\n"), "br", id="unadvertised encoding"),
        pytest.param(b"SMTP ready\r\n\r\n", "status line", id="not HTTP"),
        pytest.param(b"", "closed", id="closed without answering"),
    ],
)
def test_a_broken_answer_is_a_transport_error(servers: ServerLoop, answer: bytes, reason: str) -> None:
    raw = RawProvider(servers, answering(answer, then_close=True))
    with pytest.raises(TransportError, match=reason) as caught:
        run(call("GET", raw.base + "/x"))
    assert type(caught.value) is TransportError


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "127.0.0.1:8101/x", "http://[::1/x"])
def test_a_url_that_is_not_http_is_a_transport_error(url: str) -> None:
    with pytest.raises(TransportError, match="not an absolute http"):
        run(call("GET", url))


def test_a_header_with_a_line_break_is_not_sent(provider: WebProvider) -> None:
    with pytest.raises(TransportError, match="header"):
        run(call("GET", provider.url("/echo"), headers={"X-Evil": "1\r\nX-Injected: 2"}))
    assert run(call("GET", provider.url("/echo"))).status == 200


def test_a_reset_connection_is_a_transport_error(servers: ServerLoop) -> None:
    async def reset(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
        await writer.drain()
        linger_zero = struct.pack("ii", 1, 0)  # the close sends RST instead of FIN
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)

    raw = RawProvider(servers, reset)
    with pytest.raises(TransportError) as caught:
        run(call("GET", raw.base + "/x"))
    assert type(caught.value) is TransportError


# -- HTTP details -----------------------------------------------------------------------------------


def test_connection_close_with_another_token_does_not_break_the_next_call(servers: ServerLoop) -> None:
    async def script(raw: RawProvider, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = raw.connections == 1
        while True:
            await raw.read_request(reader)
            writer.write(ok(extra=b"Connection: close, x\r\n") if first else ok())
            await writer.drain()
            if first:
                return  # closes, as the answer announced

    raw = RawProvider(servers, script)
    # POST: aiohttp resends no POST on a dropped connection, so a reused dead connection would fail here
    answers = [run(call("POST", raw.base + "/x", json={})) for _ in range(2)]
    assert [answer.json() for answer in answers] == [ORDER, ORDER]
    assert raw.connections == 2


def test_the_url_fragment_is_not_sent(servers: ServerLoop) -> None:
    raw = RawProvider(servers, answering(ok()))
    run(call("GET", raw.base + "/api/orders/mel_1?full=1#status"))
    assert raw.requests[0].startswith(b"GET /api/orders/mel_1?full=1 HTTP/1.1\r\n")


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_literal_url_sends_a_bracketed_host(servers: ServerLoop) -> None:
    raw = RawProvider(servers, answering(ok()), host="::1")
    port = raw.base.rsplit(":", 1)[1]
    assert run(call("GET", raw.base + "/x")).json() == ORDER
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in raw.requests[0]


def test_the_proxy_of_the_environment_is_used_and_no_proxy_honoured(
    servers: ServerLoop, provider: WebProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = RawProvider(servers, answering(ok()))
    monkeypatch.setenv("HTTP_PROXY", proxy.base)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    close()  # the environment is read when the loop starts

    answer = run(call("GET", "http://provider.invalid:8101/api/orders/mel_1?full=1"))
    assert answer.json() == ORDER
    assert proxy.requests[0].startswith(
        b"GET http://provider.invalid:8101/api/orders/mel_1?full=1 HTTP/1.1\r\n"
    )

    assert run(call("GET", provider.url("/echo"))).status == 200  # 127.0.0.1: direct
    assert len(proxy.requests) == 1 and len(provider.connections) == 1


# -- TLS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A test CA (its certificate file) and a certificate it signed for 127.0.0.1 (certificate + key)."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "liveops test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_file = folder / "server.pem"
    server_file.write_bytes(
        certificate.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_file, server_file


@pytest.fixture
def tls_provider(servers: ServerLoop, tls_files: tuple[Path, Path]) -> WebProvider:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files[1])
    return WebProvider(servers, tls=context)


def test_an_untrusted_certificate_is_a_transport_error(tls_provider: WebProvider) -> None:
    with pytest.raises(TransportError, match="certificate verify failed"):
        run(call("GET", tls_provider.url("/echo")))
    assert not tls_provider.connections


def test_a_certificate_of_a_ca_trusted_through_ssl_cert_file_is_accepted(
    tls_provider: WebProvider, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    close()  # the CA bundle is read when the loop starts
    for _ in range(2):
        assert run(call("GET", tls_provider.url("/echo"))).json()["path"] == "/echo"
    assert len(tls_provider.connections) == 1, "the TLS connection is kept for the next call"


# -- the loop, its thread, and forks ---------------------------------------------------------------


def test_run_works_from_a_thread_that_runs_its_own_event_loop(provider: WebProvider) -> None:
    async def django_async_view() -> int:
        return run(call("GET", provider.url("/echo"))).status

    assert asyncio.run(django_async_view()) == 200


def test_run_on_the_provider_loop_itself_is_refused_not_a_deadlock(provider: WebProvider) -> None:
    async def nested() -> Answer:
        return run(call("GET", provider.url("/echo")))

    with pytest.raises(RuntimeError, match="provider loop"):
        run(nested())
    assert run(call("GET", provider.url("/echo"))).status == 200


def test_call_outside_the_provider_loop_is_refused(provider: WebProvider) -> None:
    with pytest.raises(RuntimeError, match="provider loop"):
        asyncio.run(call("GET", provider.url("/echo")))


def test_a_forked_child_gets_its_own_loop_and_leaves_the_parents_alone(provider: WebProvider) -> None:
    assert run(call("GET", provider.url("/echo"))).status == 200  # the parent's loop and connection

    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        status = 1
        try:
            status = 0 if run(call("GET", provider.url("/echo"))).status == 200 else 2
        finally:
            os._exit(status)

    deadline = time.monotonic() + 10
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.02)
    if waited == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child did not finish its call")
    assert os.waitstatus_to_exitcode(waited[1]) == 0

    assert run(call("GET", provider.url("/echo"))).status == 200
    assert len(provider.connections) == 2, "the parent kept its connection; the child opened its own"
