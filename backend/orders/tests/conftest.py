"""Fixtures for the provider pipeline: the real simulators over HTTP, pointed at by settings."""

import time
from collections.abc import Callable, Iterator

import pytest
from django.conf import settings as django_settings

from core.celery import app as celery_app
from orders import polling
from orders.models import Order
from orders.status import PIPELINE, OrderStatus
from simulators.testing import Simulator, simulator_env, start_simulator, stop_simulator

PROVIDER_NAMES = ("melange", "bueno", "uklon")
FAST_STEP_SECONDS = "0.2"


@pytest.fixture(scope="session")
def simulator_processes(live_server, tmp_path_factory) -> Iterator[dict[str, Simulator]]:
    """Melange, Bueno and Uklon as real processes; Bueno posts its webhooks to the live test server."""
    log_dir = tmp_path_factory.mktemp("simulators")
    started: dict[str, Simulator] = {}
    try:
        for name in PROVIDER_NAMES:
            env = simulator_env(
                SIM_STEP_SECONDS=FAST_STEP_SECONDS, SIM_API_KEY=django_settings.PROVIDERS[name]["api_key"]
            )
            if name == "bueno":
                env.update(
                    BUENO_WEBHOOK_URL=f"{live_server.url}/webhooks/bueno/",
                    BUENO_WEBHOOK_SECRET=django_settings.BUENO_WEBHOOK_SECRET,
                )
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


def drive(until: Callable[[], bool], *, timeout: float = 30, pause: float = 0.05) -> None:
    """Run poll ticks as beat would, until `until()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"pipeline did not get there within {timeout}s")
        polling.poll_due_legs()
        time.sleep(pause)


def order_reaches(order_id: int, *statuses: str) -> Callable[[], bool]:
    return lambda: Order.objects.filter(pk=order_id, status__in=statuses).exists()


def assert_history_is_clean(order: Order) -> None:
    """Order statuses only move forward, each at most once; no leg repeats a provider status."""
    ranks = {status: index for index, status in enumerate(PIPELINE)}
    order_moves = [e.to_status for e in order.events.filter(type="order.status").order_by("seq")]
    forward = [status for status in order_moves if status in ranks]
    assert forward == sorted(forward, key=ranks.__getitem__), order_moves
    assert len(order_moves) == len(set(order_moves)), order_moves
    for leg in order.legs.all():
        reported = list(leg.events.exclude(provider_status="").values_list("provider_status", flat=True))
        assert len(reported) == len(set(reported)), (leg, reported)
    assert order_moves[-1:] != [OrderStatus.SCHEDULED]
