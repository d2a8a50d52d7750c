"""A partner's webhook receiver for tests: a real HTTP server (aiohttp) on 127.0.0.1 in a thread.

Each path behaves one way:
  /ok        200
  /flaky     500 the first time it sees a delivery id, 200 after
  /down      503 always
  /gone      410 always
  /redirect  302 to /ok (which must never be reached through it)
  /slow      answers after `slow_seconds`
  /big       200 with a 1 MiB body
Every request is recorded with its path, headers and body.
"""

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from webhooks import signing


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        return signing.verify(secret, self.body, self.headers.get(signing.HEADER, ""))


@dataclass
class Receiver:
    slow_seconds: float = 2.0
    received: list[Received] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [request for request in list(self.received) if request.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(Received(request.path, dict(request.headers), body))
        path = request.path
        if path == "/flaky":
            delivery = request.headers.get("Liveops-Delivery", "")
            if delivery not in self.seen_ids:
                self.seen_ids.add(delivery)
                return web.Response(status=500, text="not now")
        if path == "/down":
            return web.Response(status=503, text="down for maintenance")
        if path == "/gone":
            return web.Response(status=410, text="this endpoint is gone")
        if path == "/redirect":
            raise web.HTTPFound("/ok")
        if path == "/slow":
            await asyncio.sleep(self.slow_seconds)
        if path == "/big":
            return web.Response(status=200, body=b"x" * (1024 * 1024))
        return web.Response(status=200, text="ok")

    def start(self) -> "Receiver":
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            await web.SockSite(self._runner, sock).start()
            ready.set()

        def run() -> None:
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="webhook-receiver", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the receiver did not start"
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
