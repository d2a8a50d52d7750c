"""The poller's HTTP transport over real sockets: framing, keep-alive, stale connections and errors.

The simulators cannot send chunked, gzip or broken answers, so a small scripted asyncio server plays
the provider here; the provider clients' error mapping is checked against the real simulators.
"""

import asyncio
import gzip
from collections.abc import Awaitable, Callable

import httpx
import pytest

from orders.providers import KitchenRequest, ProviderUnavailable, get_client
from orders.providers.transport import ProviderTransport

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ANSWER = b'{"id": "mel_1", "status": "cooking"}'


def ok(body: bytes = ANSWER, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra) + body


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return head + await reader.readexactly(int(line.split(b":")[1]))
    return head


def serve(script: Script, calls: Callable[[ProviderTransport, str], Awaitable[object]]) -> tuple[object, int]:
    """Runs `calls` against a local server answering each connection with `script`; (result, connections)."""

    async def main() -> tuple[object, int]:
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                await script(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            async with ProviderTransport() as http:
                return await calls(http, url), connections
        finally:
            server.close()

    return asyncio.run(main())


def test_keep_alive_reuses_one_connection_for_sequential_calls() -> None:
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(ok())

    async def calls(http: ProviderTransport, url: str) -> list[object]:
        return [(await http.request("GET", f"{url}/api/orders/mel_{n}", timeout=5)).json() for n in range(3)]

    answers, connections = serve(script, calls)
    assert answers == [{"id": "mel_1", "status": "cooking"}] * 3
    assert connections == 1
    assert seen[2].startswith(b"GET /api/orders/mel_2 HTTP/1.1\r\n")


def test_posts_json_with_the_callers_headers() -> None:
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(ok())

    async def calls(http: ProviderTransport, url: str) -> object:
        headers = {"Idempotency-Key": "liveops-leg-1", "Authorization": "Bearer k"}
        return await http.request("POST", f"{url}/", json={"items": ["Борщ"]}, headers=headers, timeout=5)

    serve(script, calls)
    head, _, body = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST / HTTP/1.1\r\n")
    assert b"\r\nIdempotency-Key: liveops-leg-1" in head and b"\r\nContent-Type: application/json" in head
    assert body.decode() == '{"items":["Борщ"]}'


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"a;ext=1\r\n"
            + ANSWER[:10]
            + b"\r\n%x\r\n" % (len(ANSWER) - 10)
            + ANSWER[10:]
            + b"\r\n0\r\nX-Trailer: 1\r\n\r\n",
            id="chunked",
        ),
        pytest.param(ok(gzip.compress(ANSWER), b"Content-Encoding: gzip\r\n"), id="gzip"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(), id="interim 100"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n" + ANSWER, id="close-delimited"),
    ],
)
def test_reads_every_body_framing(answer: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        if answer.startswith(b"HTTP/1.0"):
            await writer.drain()
            writer.close()

    async def calls(http: ProviderTransport, url: str) -> object:
        return (await http.request("GET", f"{url}/x", timeout=5)).json()

    assert serve(script, calls)[0] == {"id": "mel_1", "status": "cooking"}


def test_a_connection_the_server_dropped_while_idle_is_replaced() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok())  # promises keep-alive, then closes anyway, as servers do after an idle timeout
        await writer.drain()
        await read_request(reader)  # the next request arrives, and the connection is closed unanswered

    async def calls(http: ProviderTransport, url: str) -> list[int]:
        return [(await http.request("GET", f"{url}/x", timeout=5)).status_code for _ in range(3)]

    statuses, connections = serve(script, calls)
    assert statuses == [200, 200, 200]
    assert connections >= 3, "each dropped connection was replaced by a new one"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}", httpx.RemoteProtocolError),
        (b"SMTP ready\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", httpx.RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}", httpx.DecodingError),
        (b"", httpx.RemoteProtocolError),
    ],
)
def test_broken_answers_raise_httpx_errors(answer: bytes, error: type[Exception]) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def calls(http: ProviderTransport, url: str) -> object:
        return await http.request("GET", f"{url}/x", timeout=5)

    with pytest.raises(error):
        serve(script, calls)


def test_no_answer_in_time_is_a_timeout() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def calls(http: ProviderTransport, url: str) -> object:
        return await http.request("GET", f"{url}/x", timeout=0.2)

    with pytest.raises(httpx.TimeoutException):
        serve(script, calls)


def test_header_injection_is_refused() -> None:
    async def calls(http: ProviderTransport, url: str) -> object:
        return await http.request("GET", f"{url}/x", headers={"X-A": "1\r\nX-B: 2"}, timeout=5)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    with pytest.raises(httpx.LocalProtocolError):
        serve(script, calls)


KITCHEN = KitchenRequest(idempotency_key="liveops-leg-9", items=[("Borscht", 1)], reference="order-9")


def provider_call(make: Callable[[ProviderTransport], Awaitable[object]]) -> object:
    async def run() -> object:
        async with ProviderTransport() as http:
            return await make(http)

    return asyncio.run(run())


@pytest.mark.slow
def test_provider_clients_work_through_it_against_the_simulators(providers) -> None:
    client = get_client("bueno")
    created = provider_call(lambda http: client.create(http, KITCHEN))
    again = provider_call(lambda http: client.create(http, KITCHEN))
    fetched = provider_call(lambda http: client.fetch(http, created.external_id))
    assert again.external_id == created.external_id == fetched.external_id


@pytest.mark.slow
def test_provider_errors_map_as_with_httpx(providers, settings, unused_tcp_port) -> None:
    providers["melange"].configure(timeout_rate=1.0, timeout_seconds=2)
    settings.PROVIDER_TIMEOUT_SECONDS = 0.3
    with pytest.raises(ProviderUnavailable, match="timed out after 0.3s"):
        provider_call(lambda http: get_client("melange").create(http, KITCHEN))
    url = f"http://127.0.0.1:{unused_tcp_port}"
    settings.PROVIDERS = {**settings.PROVIDERS, "melange": {**settings.PROVIDERS["melange"], "url": url}}
    with pytest.raises(ProviderUnavailable, match="unreachable: ConnectError"):
        provider_call(lambda http: get_client("melange").create(http, KITCHEN))
