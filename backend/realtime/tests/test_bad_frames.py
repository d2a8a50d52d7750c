"""Bad clients on a real web process (daphne), real Redis and real PostgreSQL: bad frames, and a burst
of connects and disconnects.

Every kind of socket (operators, couriers, one order) is sent garbage, binary, oversized and wrongly
typed frames. Each gets the protocol's error frame and stays usable, or, for what never reaches the
consumer (a message over daphne's 1 MiB limit, invalid UTF-8, an unknown opcode), a clean close with
the RFC 6455 code. Meanwhile status changes are published through the real pipeline (a service call
in this process → the relay → `realtime.broadcast` → Redis → daphne) and every socket, the abused ones
and a well-behaved witness, receives every event it may see: exactly the database's events, in seq
order, none missing, none twice.

The burst: 1,000 clients of every kind connect in waves and leave, half of them abruptly (the TCP
connection reset, no close handshake, some before reading their snapshot), while events keep coming.
The server stays up, gives its sockets and memory back, and clients connected throughout get every
event with no gap in seq.
"""

import asyncio
import base64
import json
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
import websockets
from django.db import connection

from orders import services
from orders.models import Order, OrderEvent
from orders.tests import factories
from realtime.tests.conftest import daphne_env, start_daphne, stop

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
logger = logging.getLogger(__name__)

TIMEOUT = 10
# Daphne's default limit on one WebSocket message (autobahn's maxMessagePayloadSize): larger messages
# never reach the consumer, the connection is failed with 1009 "message too big".
DAPHNE_MAX_MESSAGE_BYTES = 1024 * 1024
ONE_MB = 1_000_000  # under daphne's limit: reaches the consumer, which refuses it with frame_too_large


# --- the web process --------------------------------------------------------------------------------------


@dataclass
class Web:
    port: int
    log: Path
    pid: int

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz?scope=process", timeout=5).status_code == 200


@pytest.fixture
def web(tmp_path, unused_tcp_port):
    # REALTIME_SNAPSHOT_SHARE_SECONDS as deployed (1 s): a fresh daphne per test shares nothing stale
    # A client may send a location every time: the rate limit is tested in test_consumers.py.
    env = daphne_env(
        REALTIME_LOCATION_MIN_INTERVAL_SECONDS="0",
        # The bad-frames tests send dozens of frames back to back on one socket, to see each answered:
        # no frame rate here. The burst holds ~70 sockets of each of three users at once: no socket cap.
        REALTIME_FRAMES_PER_SECOND="1000",
        REALTIME_FRAME_BURST="1000",
        REALTIME_SOCKETS_PER_USER="0",
    )
    log = tmp_path / "web.log"
    process = start_daphne(env, unused_tcp_port, log)
    yield Web(unused_tcp_port, log, process.pid)
    stop(process)


# --- a client that keeps every event apart from the answers to what it sent ------------------------------


@dataclass
class Client:
    """A socket read by a background task: `events` collects seqs, other frames go to `answers`."""

    name: str
    ws: websockets.ClientConnection
    snapshot_seq: int = 0
    seqs: list[int] = field(default_factory=list)
    answers: asyncio.Queue = field(default_factory=asyncio.Queue)
    reader: asyncio.Task | None = None

    @classmethod
    async def connect(cls, name: str, endpoint: "Endpoint") -> "Client":
        ws = await endpoint.connect(max_size=None)
        snapshot = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert snapshot["type"] == "snapshot", snapshot
        client = cls(name, ws, snapshot_seq=snapshot["seq"])
        client.reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                frame = json.loads(text)
                if frame["type"] == "events":
                    self.seqs.extend(event["seq"] for event in frame["events"])
                elif frame["type"] != "locations":
                    await self.answers.put(frame)
        except websockets.ConnectionClosed:
            pass

    async def answer(self) -> dict:
        return await asyncio.wait_for(self.answers.get(), TIMEOUT)

    async def send(self, data: str | bytes) -> dict:
        await self.ws.send(data)
        return await self.answer()

    async def ping(self) -> None:
        assert await self.send('{"type": "ping"}') == {"type": "pong"}, f"{self.name} is not usable"

    async def wait_for_seq(self, seq: int) -> None:
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not self.seqs or self.seqs[-1] < seq:
            assert asyncio.get_running_loop().time() < deadline, f"{self.name} stopped at {self.seqs[-1:]}"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


# --- frames the consumer must answer with an error, socket open ------------------------------------------

# (what, frame, error code); str frames go as text, bytes as binary.
BAD_FRAMES: list[tuple[str, str | bytes, str]] = [
    ("not JSON", "{not json", "bad_json"),
    ("garbage text", "\x00\x01\x7f\ufffd garbage", "bad_json"),
    ("empty text", "", "bad_json"),
    ("JSON nested past the parser's recursion limit", "[" * 2000 + "]" * 2000, "bad_json"),
    ("a list", "[1, 2]", "bad_frame"),
    ("a number", "5", "bad_frame"),
    ("null", "null", "bad_frame"),
    ("a string", '"ping"', "bad_frame"),
    ("an object without type", '{"after": 1}', "bad_frame"),
    ("type is a number", '{"type": 5}', "bad_frame"),
    ("type is null", '{"type": null}', "bad_frame"),
    ("type is a list", '{"type": ["ping"]}', "bad_frame"),
    ("unknown type", '{"type": "dance"}', "unknown_type"),
    ("long unknown type", '{"type": "' + "x" * 3000 + '"}', "unknown_type"),
    ("resume with a string seq", '{"type": "resume", "after": "12"}', "bad_frame"),
    ("resume with a negative seq", '{"type": "resume", "after": -1}', "bad_frame"),
    ("resume with a fractional seq", '{"type": "resume", "after": 1.5}', "bad_frame"),
    ("resume with true", '{"type": "resume", "after": true}', "bad_frame"),
    ("resume with null", '{"type": "resume", "after": null}', "bad_frame"),
    ("resume without a seq", '{"type": "resume"}', "bad_frame"),
    ("resume with an infinite seq", '{"type": "resume", "after": 1e999}', "bad_frame"),
    ("resume with NaN", '{"type": "resume", "after": NaN}', "bad_frame"),
    ("resume past any bigint", '{"type": "resume", "after": ' + "9" * 40 + "}", "bad_frame"),
    ("resume with a 5000-digit seq", '{"type": "resume", "after": ' + "9" * 5000 + "}", "frame_too_large"),
    ("1 MB of text", '{"type": "ping", "pad": "' + "x" * ONE_MB + '"}', "frame_too_large"),
    # 3,000 characters but 6,000 bytes: the limit is in bytes
    (
        "multi-byte text over the byte limit",
        '{"type": "ping", "pad": "' + "é" * 3000 + '"}',
        "frame_too_large",
    ),
    ("binary", b"\x00\x01\xff\xfe", "binary_frame"),
    ("JSON as binary", b'{"type": "ping"}', "binary_frame"),
    ("1 MB binary", b"\x00" * ONE_MB, "binary_frame"),
]
LOCATION_FRAMES: list[tuple[str, str]] = [
    ("location with a string lat", '{"type": "location", "lat": "50.45", "lng": 30.52}'),
    ("location without lng", '{"type": "location", "lat": 50.45}'),
    ("location off the globe", '{"type": "location", "lat": 91, "lng": 30.52}'),
    ("location with NaN", '{"type": "location", "lat": NaN, "lng": 30.52}'),
    ("location with Infinity", '{"type": "location", "lat": 50.45, "lng": Infinity}'),
    ("location with true", '{"type": "location", "lat": true, "lng": 30.52}'),
    ("location as a list", '{"type": "location", "lat": [50.45], "lng": 30.52}'),
]


def cases_for(kind: str) -> list[tuple[str, str | bytes, str]]:
    """Location frames are a courier's: the others don't know the type."""
    location_code = "bad_location" if kind == "couriers" else "unknown_type"
    return BAD_FRAMES + [(what, text, location_code) for what, text in LOCATION_FRAMES]


@dataclass(frozen=True)
class Endpoint:
    """A socket's URL and the token it signs in with (the Authorization header: never in the URL)."""

    url: str
    token: str

    @property
    def authorization(self) -> str:
        return f"Token {self.token}"

    async def connect(self, **options) -> websockets.ClientConnection:
        return await websockets.connect(
            self.url, additional_headers={"Authorization": self.authorization}, ping_interval=None, **options
        )


@dataclass
class World:
    order_id: int
    operator_token: str
    customer_token: str
    courier_token: str
    operator: object

    def urls(self, base: str) -> dict[str, Endpoint]:
        return {
            "operators": Endpoint(f"{base}/ws/operators/", self.operator_token),
            "couriers": Endpoint(f"{base}/ws/couriers/", self.courier_token),
            "order": Endpoint(f"{base}/ws/orders/{self.order_id}/", self.customer_token),
        }


@pytest.fixture
def world(operator, customer, restaurants, relay) -> World:
    """One order every kind of socket sees: the customer's, carried by the courier."""
    courier = factories.make_courier("courier1")
    order = factories.make_order(customer, restaurants["melange"])
    Order.objects.filter(pk=order.pk).update(courier=courier)
    relay.caught_up()  # snapshots start after the order's creation
    return World(
        order_id=order.pk,
        operator_token=factories.token_for(operator),
        customer_token=factories.token_for(customer),
        courier_token=factories.token_for(courier.user),
        operator=operator,
    )


async def in_thread(function, /, *args, **kwargs):
    """ORM work off the event loop; the worker thread's connection is closed after (else it outlives the
    test and the test database cannot be dropped)."""

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


class Publisher:
    """Status changes of the order through the real service (released by the relay)."""

    STATUSES = ("cooking", "submitted")

    def __init__(self, world: World) -> None:
        self.world = world
        self.count = 0

    async def publish(self) -> int:
        status = self.STATUSES[self.count % 2]
        self.count += 1
        event = await in_thread(
            services.order_override_status,
            order_id=self.world.order_id,
            actor=self.world.operator,
            to_status=status,
            reason=f"bad-frames test {self.count}",
        )
        return event.seq


async def assert_received_every_event(clients: list[Client], last_seq: int) -> None:
    """Each client has exactly the database's events after its snapshot, in order, none twice."""
    for client in clients:
        await client.wait_for_seq(last_seq)
    for client in clients:
        expected = await in_thread(
            lambda after=client.snapshot_seq: list(
                OrderEvent.objects.filter(seq__gt=after, seq__lte=last_seq)
                .order_by("seq")
                .values_list("seq", flat=True)
            )
        )
        assert client.seqs == expected, f"{client.name}: got {client.seqs}, the database has {expected}"


def assert_clean_log(web: Web) -> None:
    text = web.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-5000:]


# --- raw frames the websockets client will not send -------------------------------------------------------


async def raw_socket(web: Web, endpoint: Endpoint) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A WebSocket opened by hand (RFC 6455 handshake), to send frames no client library would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", web.port)
    key = base64.b64encode(os.urandom(16)).decode()
    path = endpoint.url.removeprefix(web.ws)
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{web.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: {endpoint.authorization}\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


DROPPED = "dropped"


async def how_it_ended(reader: asyncio.StreamReader) -> int | str:
    """Read server frames until a close frame (its code) or the end of the connection (DROPPED)."""
    try:
        while True:
            first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if first & 0x0F == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return DROPPED


# --- the tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["operators", "couriers", "order"])
def test_bad_frames_get_an_error_and_nobody_misses_an_event(web, world, kind):
    async def scenario() -> None:
        urls = world.urls(web.ws)
        witness = await Client.connect("witness", urls["operators"])
        abused = await Client.connect(kind, urls[kind])
        publisher = Publisher(world)
        last_seq = 0
        for what, data, code in cases_for(kind):
            answer = await abused.send(data)
            assert (answer["type"], answer.get("code")) == ("error", code), f"{what}: {answer}"
            assert isinstance(answer["error"], str) and answer["error"], what
            last_seq = await publisher.publish()  # one event published after each bad frame
            await abused.ping()  # still usable
        await assert_received_every_event([witness, abused], last_seq)
        assert publisher.count == len(cases_for(kind))
        await abused.close()
        await witness.close()

    asyncio.run(scenario())
    assert web.healthy()
    assert_clean_log(web)


# (what, opcode, payload, RFC 6455 close code). These never reach a consumer: autobahn, daphne's WebSocket
# layer, fails the connection. Daphne keeps autobahn's default `failByDrop=True`, so it does so by
# dropping the TCP connection rather than sending the close frame (clients see 1006 and reconnect with
# their last seq). Either is accepted; a connection left open, or a server that suffers, is not.
CLOSING_FRAMES = [
    ("a text message over daphne's 1 MiB limit", 0x1, b"x" * (DAPHNE_MAX_MESSAGE_BYTES + 1), 1009),
    ("a text frame of invalid UTF-8", 0x1, b'{"type": "\xff\xfe"}', 1007),
    ("a reserved opcode", 0x3, b"{}", 1002),
]


@pytest.mark.parametrize(
    ("what", "opcode", "payload", "code"), CLOSING_FRAMES, ids=[case[0] for case in CLOSING_FRAMES]
)
def test_frames_the_server_cannot_take_end_the_connection_and_others_go_on(
    web, world, what, opcode, payload, code
):
    async def scenario() -> None:
        urls = world.urls(web.ws)
        witnesses = [await Client.connect(kind, url) for kind, url in urls.items()]
        publisher = Publisher(world)
        await publisher.publish()
        for kind, url in urls.items():
            reader, writer = await raw_socket(web, url)
            try:
                writer.write(client_frame(opcode, payload))
                await writer.drain()
            except ConnectionError:
                pass  # dropped while the frame was still going out (the header announced its size)
            assert await how_it_ended(reader) in (code, DROPPED), f"{what} on the {kind} socket"
            writer.close()
            last_seq = await publisher.publish()
        for witness in witnesses:
            await witness.ping()
        await assert_received_every_event(witnesses, last_seq)
        for witness in witnesses:
            await witness.close()

    asyncio.run(scenario())
    assert web.healthy()
    assert_clean_log(web)


# --- a burst of connects and disconnects --------------------------------------------------------------------

WAVES = 5
WAVE_SIZE = 200  # 1,000 clients in all
# Daphne fails a handshake not done within 5 s of the TCP accept (its --websocket_connect_timeout), and
# a connect costs the web process 20-100 ms on this 2-core machine (token, permissions, snapshot, replay:
# database calls on its one thread for them; the most when other work loads the machine). 50 at a
# time lost handshakes; 5 at a time keep each under a second. The total is bound by the server anyway.
HANDSHAKES_IN_FLIGHT = 5
EVENTS_PER_WAVE = 10
# How much the web process may grow from the end of the first wave (its caches and pools warm) to the
# end of the last: 800 consumers kept alive (a leak) would be far more.
MAX_GROWTH_BYTES = 20 * 1024 * 1024


async def arrive(endpoint: Endpoint, gate: asyncio.Semaphore) -> websockets.ClientConnection:
    async with gate:
        return await endpoint.connect(open_timeout=30)


async def leave(ws: websockets.ClientConnection, index: int) -> None:
    """One of four ways out; all but a quarter read their snapshot first."""
    manner = index % 4
    if manner != 0:
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "snapshot"
    if manner in (0, 1):
        ws.transport.abort()  # gone: a reset, no close frame (a phone losing its network)
    elif manner == 2:
        await ws.close()  # the closing handshake
    else:
        ws.transport.close()  # TCP closed without a WebSocket close frame


def open_connections(web: Web) -> int:
    return sum(
        1
        for conn in psutil.Process(web.pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == web.port
    )


async def settled(measure, target: int, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while (value := await asyncio.to_thread(measure)) != target:
        assert asyncio.get_running_loop().time() < deadline, f"{what}: {value}, expected {target}"
        await asyncio.sleep(0.1)


def test_a_thousand_clients_come_and_go_while_those_who_stay_miss_nothing(web, world):
    process = psutil.Process(web.pid)
    rss: list[int] = []

    async def scenario() -> None:
        urls = list(world.urls(web.ws).items())
        stayers = [await Client.connect(f"{kind} (connected throughout)", url) for kind, url in urls]
        publisher = Publisher(world)
        gate = asyncio.Semaphore(HANDSHAKES_IN_FLIGHT)
        for wave in range(WAVES):

            async def publish_during_the_wave() -> None:
                for _ in range(EVENTS_PER_WAVE):
                    await publisher.publish()
                    await asyncio.sleep(0.05)

            publishing = asyncio.create_task(publish_during_the_wave())
            started = time.monotonic()
            wave_urls = [urls[index % len(urls)][1] for index in range(WAVE_SIZE)]
            sockets = await asyncio.gather(*(arrive(url, gate) for url in wave_urls))
            connected = time.monotonic() - started
            await asyncio.gather(*(leave(ws, index) for index, ws in enumerate(sockets)), publishing)
            await settled(lambda: open_connections(web), len(stayers), f"wave {wave}: sockets open")
            rss.append(process.memory_info().rss)
            logger.info(
                "Wave %d: %d connected in %.1f s, RSS %.1f MiB", wave, WAVE_SIZE, connected, rss[-1] / 2**20
            )
        last_seq = await publisher.publish()  # and after the burst
        for stayer in stayers:
            await stayer.ping()
        await assert_received_every_event(stayers, last_seq)
        assert publisher.count == WAVES * EVENTS_PER_WAVE + 1
        for stayer in stayers:
            await stayer.close()

    asyncio.run(scenario())
    assert web.healthy()
    assert_clean_log(web)
    growth = rss[-1] - rss[0]
    assert growth < MAX_GROWTH_BYTES, f"the web process grew {growth / 2**20:.1f} MiB: {rss}"
