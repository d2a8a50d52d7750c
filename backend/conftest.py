"""Shared fixtures: real PostgreSQL (pytest-django's test database) and the real Redis of REDIS_URL."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connection
from django.db.models import Max
from rest_framework.test import APIClient

from core.celery import app as celery_app
from orders.models import OrderEvent
from orders.relay import Relay, released_seq
from orders.schedules import install_schedules
from orders.tests import factories
from simulators.testing import Simulator, simulator_env, start_simulator, stop_simulator


@pytest.fixture(autouse=True, scope="session")
def isolated_redis() -> None:
    """Cache keys and channel-layer groups of this test session never meet another session's."""
    from django.test import override_settings

    settings = django_settings

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    # Celery tasks too: the workers a test starts (they inherit this environment) take only this session's,
    # so two sessions (pytest-xdist workers) never run each other's tasks.
    os.environ["CELERY_TASK_DEFAULT_QUEUE"] = f"{prefix}-tasks"
    celery_app.conf.task_default_queue = f"{prefix}-tasks"
    layer = settings.CHANNEL_LAYERS["default"]
    override_settings(
        CACHES={"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}},
        # Redis pub/sub channels ignore the database number: the prefix keeps parallel runs apart.
        CHANNEL_LAYERS={"default": {**layer, "CONFIG": {**layer["CONFIG"], "prefix": prefix}}},
        # Tests flush the database between them: a snapshot shared across tests would be stale.
        REALTIME_SNAPSHOT_SHARE_SECONDS=0,
    ).enable()


@pytest.fixture(autouse=True)
def isolated_limits(settings) -> None:
    """Rate-limit counters, tickets and socket places (core.limits) of one test never meet another's."""
    settings.LIMITS_KEY_PREFIX = f"test-limits-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def geocoding_off(settings) -> None:
    """No map lookups unless a test asks for the `geocoder` fixture: orders are created `off` the map."""
    settings.GEOCODER_URL = ""


@pytest.fixture(scope="session")
def geocoder_process(tmp_path_factory) -> Iterator[Simulator]:
    """The geocoding simulator (simulators.nominatim) as a real process."""
    simulator = start_simulator("nominatim", simulator_env(), tmp_path_factory.mktemp("geocoder"))
    yield simulator
    stop_simulator(simulator)


@pytest.fixture
def geocoder(geocoder_process, settings) -> Simulator:
    """Settings pointed at a fresh geocoding simulator, with room for every lookup a test makes."""
    geocoder_process.restore()
    settings.GEOCODER_URL = geocoder_process.url
    settings.GEOCODER_RATE = "10000/second"
    settings.GEOCODER_TIMEOUT_SECONDS = 2
    settings.GEOCODER_RETRIES = 2
    return geocoder_process


class RunningRelay:
    """The event relay (orders.relay) in a thread of this process, as `manage.py relay_events` runs it."""

    def __init__(self) -> None:
        self.relay = Relay()
        self.thread = threading.Thread(target=self.relay.run, name="relay", daemon=True)
        self.thread.start()

    def caught_up(self, timeout: float = 10) -> int:
        """Wait until every event committed so far is released; returns the mark."""
        latest = OrderEvent.objects.aggregate(latest=Max("seq"))["latest"] or 0
        deadline = time.monotonic() + timeout
        while (mark := released_seq()) < latest:
            assert time.monotonic() < deadline, f"the relay is at #{mark}, not #{latest}"
            time.sleep(0.01)
        return mark

    def stop(self) -> None:
        self.relay.stop()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the relay did not stop"


@pytest.fixture
def relay(transactional_db) -> Iterator[RunningRelay]:
    running = RunningRelay()
    yield running
    running.stop()


@pytest.fixture
def demo(db: None) -> None:
    """The demo catalogue and users, exactly as `make run` seeds them."""
    call_command("seed_demo", verbosity=0)


@pytest.fixture
def customer(db: None):
    return factories.make_user("alice")


@pytest.fixture
def other_customer(db: None):
    return factories.make_user("bob")


@pytest.fixture
def operator(db: None):
    return factories.make_user("olena", is_staff=True)


@pytest.fixture
def admin_client(client, operator):
    """The test client signed in as the operator, made a superuser: every admin page is open to it."""
    operator.is_superuser = True
    operator.save(update_fields=["is_superuser"])
    client.force_login(operator)
    return client


@pytest.fixture
def restaurants(db: None):
    return factories.make_catalogue()


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for():
    """An API client authenticated with the user's token, as a real client would be."""

    def build(user) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
        return client

    return build


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unused_tcp_port() -> int:
    return _free_port()


# --- the provider pipeline: real simulators, Celery worker and beat ------------------------------

REPO = Path(__file__).resolve().parents[1]
PROVIDER_NAMES = ("melange", "bueno", "uklon", "raketa")
FAST_STEP_SECONDS = "0.2"


@pytest.fixture(scope="session")
def simulator_processes(live_server, tmp_path_factory) -> Iterator[dict[str, Simulator]]:
    """Every provider's simulator as a real process; those that push webhooks post them to the live test
    server."""
    log_dir = tmp_path_factory.mktemp("simulators")
    started: dict[str, Simulator] = {}
    try:
        for name in PROVIDER_NAMES:
            env = simulator_env(
                SIM_STEP_SECONDS=FAST_STEP_SECONDS, SIM_API_KEY=django_settings.PROVIDERS[name]["api_key"]
            )
            secret = django_settings.PROVIDERS[name]["webhook_secret"]
            if secret:  # a provider that pushes webhooks
                env[f"{name.upper()}_WEBHOOK_URL"] = f"{live_server.url}/webhooks/{name}/"
                env[f"{name.upper()}_WEBHOOK_SECRET"] = secret
            started[name] = start_simulator(name, env, log_dir)
        yield started
    finally:
        for simulator in started.values():
            stop_simulator(simulator)


@pytest.fixture
def providers(simulator_processes, settings, transactional_db) -> dict[str, Simulator]:
    """Settings pointed at fresh simulators; fast polling; Celery tasks run inline at commit."""
    settings.PROVIDERS = {
        name: {**config, "url": simulator_processes[name].url} for name, config in settings.PROVIDERS.items()
    }
    settings.POLL_INTERVAL_SECONDS = 0.2
    settings.PROVIDER_TIMEOUT_SECONDS = 1
    settings.PROVIDER_MAX_BACKOFF_SECONDS = 0.5
    settings.PROVIDER_FAILURE_DEADLINE_SECONDS = 30
    for simulator in simulator_processes.values():
        simulator.restore()
    celery_app.conf.task_always_eager = True
    yield simulator_processes
    celery_app.conf.task_always_eager = False


def test_database_url() -> str:
    """DATABASE_URL pointed at the test database pytest-django created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


test_database_url.__test__ = False  # a helper, not a test


@pytest.fixture
def metrics_ports() -> dict[str, int]:
    """Free exporter ports for the worker, beat and relay `worker_and_beat` starts (core.metrics)."""
    return {kind: _free_port() for kind in ("worker", "beat", "relay")}


@pytest.fixture
def worker_and_beat(providers, tmp_path, metrics_ports):
    celery_app.conf.task_always_eager = False
    install_schedules()
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        "POLL_INTERVAL_SECONDS": str(django_settings.POLL_INTERVAL_SECONDS),
        "PROVIDER_TIMEOUT_SECONDS": "2",
        "EMAIL_URL": "console://",
        "CHANNEL_LAYER_PREFIX": django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "METRICS_HOST": "127.0.0.1",
        **{f"METRICS_{kind.upper()}_PORT": str(port) for kind, port in metrics_ports.items()},
        **{f"{name.upper()}_URL": simulator.url for name, simulator in providers.items()},
    }
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("celery")
    celery = [sys.executable, "-m", "celery", "--app", "core"]
    commands = {
        "relay": [sys.executable, "backend/manage.py", "relay_events"],
        "worker": [
            *celery,
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
        ],
        "beat": [
            *celery,
            "beat",
            "--loglevel",
            "INFO",
            "--scheduler",
            "django_celery_beat.schedulers:DatabaseScheduler",
            "--pidfile=",
            "--schedule",
            str(tmp_path / "beat-schedule"),
        ],
    }
    processes, logs = {}, {}
    for name, args in commands.items():
        logs[name] = tmp_path / f"{name}.log"
        with open(logs[name], "wb") as log:
            processes[name] = subprocess.Popen(
                args,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
    yield logs
    for process in processes.values():
        process.send_signal(signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
