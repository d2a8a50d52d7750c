"""The whole pipeline with a real Celery worker and beat: an order is delivered by itself."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings
from django.db import connection

from core.celery import app as celery_app
from orders.models import Order
from orders.schedules import install_schedules
from orders.tests import factories
from orders.tests.conftest import assert_history_is_clean

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


def test_database_url() -> str:
    """DATABASE_URL pointed at the test database pytest-django created."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    return urlunsplit(parts._replace(path="/" + connection.settings_dict["NAME"]))


test_database_url.__test__ = False  # a helper, not a test


@pytest.fixture
def worker_and_beat(providers, tmp_path):
    celery_app.conf.task_always_eager = False
    install_schedules()
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        "POLL_INTERVAL_SECONDS": str(settings.POLL_INTERVAL_SECONDS),
        "PROVIDER_TIMEOUT_SECONDS": "2",
        "EMAIL_URL": "console://",
        **{f"{name.upper()}_URL": simulator.url for name, simulator in providers.items()},
    }
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("celery")
    commands = {
        "worker": [
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            "2",
            "--without-mingle",
            "--without-gossip",
        ],
        "beat": [
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
                [sys.executable, "-m", "celery", "--app", "core", *args],
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


def test_order_created_over_rest_is_delivered_by_worker_and_beat(worker_and_beat, live_server, restaurants):
    customer = factories.make_user("alice")
    customer.email = "alice@example.com"
    customer.save()
    client = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {factories.token_for(customer)}"}
    )
    items = [{"dish": factories.dish(restaurant).pk, "quantity": 1} for restaurant in restaurants.values()]
    started = time.monotonic()
    response = client.post("/api/orders/", json={"items": items, "delivery_address": "Sahaidachnoho St, 10"})
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]

    deadline = time.monotonic() + 90
    while not Order.objects.filter(pk=order_id, status__in=["delivered", "failed", "cancelled"]).exists():
        assert time.monotonic() < deadline, worker_and_beat["worker"].read_text()[-4000:]
        time.sleep(0.2)
    elapsed = time.monotonic() - started

    order = Order.objects.get(pk=order_id)
    assert order.status == "delivered", order.failure_reason
    assert_history_is_clean(order)
    assert order.courier is not None
    body = client.get(f"/api/orders/{order_id}/").json()
    assert [event["to"] for event in body["events"] if event["type"] == "order.status"][-1] == "delivered"
    worker_log = worker_and_beat["worker"].read_text()
    assert "orders.poll_due_legs" in worker_log, "beat ticks reached the worker"
    assert "Emailed alice@example.com" in worker_log
    print(f"order delivered end to end in {elapsed:.1f}s")  # noqa: T201 (a figure for the report)
