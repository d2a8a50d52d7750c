"""The web process does not leak PostgreSQL connections under ASGI, and a burst of sockets all connect.

Under Django's ASGI handler every HTTP request ran its sync code in a thread of its own: with
DB_CONN_MAX_AGE > 0 each request's connection stayed open after its thread was gone, and 320 requests
left 78 connections behind, until PostgreSQL refused new clients. core.http runs requests on
WEB_HTTP_THREADS reused threads, each keeping one connection.
"""

import asyncio
import os
from urllib.parse import urlsplit

import httpx
import psutil
import pytest
import websockets

from orders.tests import factories
from realtime.tests.conftest import daphne_env, start_daphne, stop

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CONCURRENT = 16
ROUNDS = 20
SOCKETS = 100
HTTP_THREADS = 4


@pytest.fixture
def web(tmp_path, unused_tcp_port):
    env = daphne_env(
        DB_CONN_MAX_AGE="60",
        WEB_HTTP_THREADS=str(HTTP_THREADS),
        # The burst opens SOCKETS sockets of one operator at once: no per-user socket cap
        REALTIME_SOCKETS_PER_USER="0",
    )
    process = start_daphne(env, unused_tcp_port, tmp_path / "web.log")
    yield process, unused_tcp_port
    stop(process)


def database_connections(pid: int) -> int:
    port = urlsplit(os.environ.get("DATABASE_URL", "")).port or 5432
    return sum(1 for c in psutil.Process(pid).net_connections("tcp") if c.raddr and c.raddr.port == port)


def test_requests_and_a_socket_burst_leave_no_connections_behind(web, operator):
    process, port = web
    token = factories.token_for(operator)
    authorization = {"Authorization": f"Token {token}"}

    async def hammer() -> None:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers=authorization, timeout=30) as client:
            for _ in range(ROUNDS):
                answers = await asyncio.gather(*(client.get("/api/orders/") for _ in range(CONCURRENT)))
                assert [answer.status_code for answer in answers] == [200] * CONCURRENT

    async def burst() -> list[str]:
        async def one() -> str:
            url = f"ws://127.0.0.1:{port}/ws/operators/"
            async with websockets.connect(url, additional_headers=authorization) as socket:
                return (await asyncio.wait_for(socket.recv(), 30))[:20]

        return await asyncio.gather(*(one() for _ in range(SOCKETS)))

    asyncio.run(hammer())
    assert database_connections(process.pid) <= HTTP_THREADS, "one connection per HTTP thread, no more"
    firsts = asyncio.run(burst())
    assert all(first.startswith('{"type":"snapshot"') for first in firsts), firsts[:3]
    # The consumers' pool threads keep a connection each, for reuse.
    assert database_connections(process.pid) <= HTTP_THREADS + 12
