"""Fixtures that run the simulators as real processes and talk to them over real HTTP."""

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from simulators.testing import (  # noqa: F401  (re-exported for the test modules)
    FAST_STEP_SECONDS,
    ROOT,
    WEBHOOK_SECRET,
    Simulator,
    free_port,
    running,
    simulator_env,
    start_simulator,
    stop_process,
    stop_simulator,
    wait_until,
)

Launch = Callable[..., Simulator]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Starts simulators with their own environment for one test: ``launch("melange", SIM_DOWN="1")``."""
    started: list[Simulator] = []

    def _launch(
        provider: str, args: list[str] | None = None, port: int | None = None, **env: str
    ) -> Simulator:
        simulator = start_simulator(provider, simulator_env(**env), tmp_path, args=args, port=port)
        started.append(simulator)
        return simulator

    yield _launch
    for simulator in started:
        stop_simulator(simulator)


# One long-lived process per provider per test module, restored to a clean slate before each test.


@pytest.fixture(scope="module")
def melange_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running("melange", simulator_env(), tmp_path_factory.mktemp("melange")) as simulator:
        yield simulator


@pytest.fixture
def melange(melange_process: Simulator) -> Simulator:
    melange_process.restore()
    return melange_process


@pytest.fixture(scope="module")
def uklon_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with running("uklon", simulator_env(), tmp_path_factory.mktemp("uklon")) as simulator:
        yield simulator


@pytest.fixture
def uklon(uklon_process: Simulator) -> Simulator:
    uklon_process.restore()
    return uklon_process


@dataclass
class Delivery:
    """A webhook as the receiver saw it, and what it answered."""

    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


class WebhookReceiver:
    """A small HTTP server standing in for the backend's webhook endpoint of one provider, whose bodies
    name the order in ``id_key``."""

    def __init__(self, provider: str = "bueno", id_key: str = "id") -> None:
        self.id_key = id_key
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._failures_left = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver._record(dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/{provider}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            status = 500 if self._failures_left > 0 else 200
            self._failures_left = max(self._failures_left - 1, 0)
            self._deliveries.append(Delivery(headers, body, status))
            return status

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()
            self._failures_left = 0

    def deliveries_for(self, order_id: str) -> list[Delivery]:
        with self._lock:
            return [delivery for delivery in self._deliveries if delivery.payload[self.id_key] == order_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def bueno_process(
    tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver
) -> Iterator[Simulator]:
    env = simulator_env(BUENO_WEBHOOK_URL=webhook_receiver.url, BUENO_WEBHOOK_SECRET=WEBHOOK_SECRET)
    with running("bueno", env, tmp_path_factory.mktemp("bueno")) as simulator:
        yield simulator


@pytest.fixture
def bueno(bueno_process: Simulator, webhook_receiver: WebhookReceiver) -> Simulator:
    bueno_process.restore()
    webhook_receiver.clear()
    return bueno_process


@pytest.fixture(scope="module")
def raketa_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver("raketa", id_key="delivery_id")
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def raketa_process(
    tmp_path_factory: pytest.TempPathFactory, raketa_receiver: WebhookReceiver
) -> Iterator[Simulator]:
    env = simulator_env(RAKETA_WEBHOOK_URL=raketa_receiver.url, RAKETA_WEBHOOK_SECRET=WEBHOOK_SECRET)
    with running("raketa", env, tmp_path_factory.mktemp("raketa")) as simulator:
        yield simulator


@pytest.fixture
def raketa(raketa_process: Simulator, raketa_receiver: WebhookReceiver) -> Simulator:
    raketa_process.restore()
    raketa_receiver.clear()
    return raketa_process
