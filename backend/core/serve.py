"""The web process: daphne, refusing oversized request bodies while they arrive.

    python -m core.serve --bind 127.0.0.1 --port 8000 core.asgi:application   (daphne's own arguments)

daphne lets Twisted collect a request's whole body (a temporary file once it is large) and only then
puts all of it in the application's queue at once, so no ASGI middleware can keep a 400 MB upload out of
the process's memory. Here the request counts its body as it arrives: a declared Content-Length over
MAX_REQUEST_BYTES, or a chunked body that grows past it, is answered with 413 at once and the connection
closed; nothing past the limit is kept. core.asgi_limits gives the same answer under any ASGI server.

This leans on daphne's internals: Server.run() builds its HTTPFactory and keeps it as `http_factory`
before listening, and the factory picks daphne's WebRequest (itself Twisted's Request, whose gotLength
and handleContentChunk receive the body). pyproject.toml pins daphne to that minor release, and
backend/core/tests/test_security_proxy.py fails when an oversized body is buffered again.

`--proxy-headers` is refused: daphne would believe any client's X-Forwarded-For. core.proxies believes it
from TRUSTED_PROXIES only.
"""

import io
import logging
from typing import Any

from daphne.cli import CommandLineInterface  # first: daphne.server installs Twisted's asyncio reactor
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import heap
from core.asgi_limits import too_large_body

logger = logging.getLogger("core.serve")  # not __name__: run as __main__


class LimitedWebRequest(WebRequest):
    """daphne's request, which keeps at most `server.max_request_bytes` of a body, and leaves forms to
    Django.

    Twisted parses a POST's Content-Type (with the `email` package: about a tenth of the web process's
    CPU per order created, py-spy) and a form body into `request.args`, which daphne never reads: it
    hands the body as it came to the application. `parsePOSTFormSubmission=False`, Twisted's own switch,
    turns both off."""

    body_bytes = 0
    refused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)

    def gotLength(self, length: int | None) -> None:  # noqa: N802 (Twisted's name)
        """Twisted calls this once the headers are in: `length` is the Content-Length, None if chunked."""
        if length is not None and length > self.server.max_request_bytes:
            self.refuse(f"Content-Length {length}")
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        if self.refused:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.server.max_request_bytes:
            self.refuse(f"over {self.server.max_request_bytes} bytes received")
            return
        super().handleContentChunk(data)

    def process(self) -> Any:
        # The end of a refused body can arrive in the same read as the data that went over the limit.
        if self.refused:
            return None
        return super().process()

    def refuse(self, why: str) -> None:
        """Answers 413 and closes the connection; what was kept of the body is dropped."""
        self.refused = True
        self.content = io.BytesIO()
        # A client waiting for `100 Continue` gets the 413 instead, and need not send the body at all.
        self.requestHeaders.removeHeader(b"Expect")
        peer = self.channel.transport.getPeer()
        logger.warning("413 for a request from %s: %s", getattr(peer, "host", peer), why)
        body = too_large_body(self.server.max_request_bytes)
        head = (
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: %d\r\n"
            b"Connection: close\r\n\r\n"
        ) % len(body)
        self.channel.transport.write(head + body)
        self.channel.loseConnection()


class LimitedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (Twisted's name)
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = LimitedWebRequest
        return protocol


class LimitedServer(Server):
    """daphne's Server, listening with LimitedHTTPFactory.

    Server.run() builds `HTTPFactory(self)` and stores it as `self.http_factory`, then listens with
    that attribute: the setter below stores ours instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.proxy_forwarded_address_header or self.proxy_forwarded_proto_header:
            raise ImproperlyConfigured(
                "--proxy-headers would believe any client's X-Forwarded-For: name the proxies in "
                "TRUSTED_PROXIES instead (core.proxies)"
            )
        self.max_request_bytes = settings.MAX_REQUEST_BYTES
        self.endpoints = [with_backlog(endpoint, settings.WEB_LISTEN_BACKLOG) for endpoint in self.endpoints]
        # daphne's command line refuses a WebSocket still opening after 5 s (403): in a reconnect storm
        # that threw away handshakes already queued, and their clients came back on top of the rest
        self.websocket_connect_timeout = settings.WEB_WEBSOCKET_CONNECT_TIMEOUT_SECONDS
        self.websocket_handshake_timeout = settings.WEB_WEBSOCKET_CONNECT_TIMEOUT_SECONDS

    def run(self) -> None:
        heap.settle()  # the application is loaded: daphne's command line imported it to build this server
        super().run()

    @property
    def http_factory(self) -> LimitedHTTPFactory:
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory: HTTPFactory) -> None:
        self._http_factory = factory if isinstance(factory, LimitedHTTPFactory) else LimitedHTTPFactory(self)


def with_backlog(endpoint: str, backlog: int) -> str:
    """A Twisted `tcp:`/`unix:` endpoint description listening with that backlog unless it names one.

    daphne's `--bind`/`--port` give `tcp:port=8000:interface=127.0.0.1`, which listens with Twisted's
    backlog of 50: a thousand sockets reconnecting at once overflowed it (bench.reconnect), the kernel
    dropped their SYNs, and clients, health checks included, waited 1-3 s to send again.
    """
    kind = endpoint.split(":", 1)[0]
    if kind not in {"tcp", "tcp6", "unix"} or ":backlog=" in endpoint:
        return endpoint
    return f"{endpoint}:backlog={backlog}"


class LimitedCommandLineInterface(CommandLineInterface):
    server_class = LimitedServer


if __name__ == "__main__":
    LimitedCommandLineInterface.entrypoint()
