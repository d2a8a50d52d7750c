"""Prometheus metrics (core.metrics): the web's /metrics, and the exporters of worker, beat and relay
after a real pipeline run (simulators, Celery worker and beat, the relay, all as processes)."""

import glob
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from conftest import REPO, test_database_url  # backend/conftest.py
from django.db import transaction
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from core.asgi import application
from orders import alerts, services
from orders.models import Alert, Leg, Order, OrderEvent
from orders.tests import factories

TOKEN = "metrics-token-for-the-tests-0123456789"
ALERT_KINDS = {kind.value for kind in Alert.Kind}


def series(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition: (sample name, its labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(value for (sample, have), value in series(text).items() if sample == name and wanted <= have)


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def scrape(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def scraped(port: int, timeout: float = 30) -> str:
    """The exporter's page, waiting for it to come up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(port)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"no exporter on port {port}"
            time.sleep(0.2)


# --- GET /metrics: who may read it ---------------------------------------------------------------------


@pytest.fixture
def token(settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


@pytest.mark.django_db
class TestAccess:
    def test_the_bearer_token_opens_metrics(self, client, token):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        assert {"liveops_orders_created", "liveops_due_legs", "liveops_alerts_open"} <= families(
            response.content.decode()
        )

    @pytest.mark.parametrize(
        "authorization", [None, "Bearer wrong-token-of-the-same-sort-000000", f"Token {TOKEN}", "Bearer "]
    )
    def test_a_missing_or_wrong_token_is_401(self, client, token, authorization):
        headers = {"Authorization": authorization} if authorization else {}
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert b"liveops_" not in response.content

    def test_without_a_token_metrics_are_open_only_in_debug(self, client, settings):
        settings.METRICS_TOKEN = ""
        settings.DEBUG = True
        assert client.get("/metrics").status_code == 200
        settings.DEBUG = False
        assert client.get("/metrics").status_code == 404

    def test_only_get(self, client, token):
        assert client.post("/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 405


@pytest.mark.django_db
def test_each_replica_is_scraped_by_its_address_which_allowed_hosts_does_not_name(client, token):
    """Prometheus finds the web replicas by DNS and asks each by its IP address."""
    replica = {"HTTP_HOST": "172.30.0.7:8000"}
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"}, **replica)
    assert response.status_code == 200 and b"liveops_orders_created_total" in response.content
    assert client.get("/metrics", **replica).status_code == 401
    assert client.get("/api/", **replica).status_code == 400, "every other path still checks the host"


def test_nginx_never_passes_metrics():
    conf = (REPO / "docker" / "nginx" / "default.conf").read_text()
    block = conf.split("location = /metrics", 1)[1].split("}", 1)[0]
    assert "return 404" in block and "proxy_pass" not in block


# --- what the web process counts and reads --------------------------------------------------------------


def web_metrics(client) -> str:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db
def test_the_database_gauges_follow_due_legs_open_alerts_and_the_relay(
    client, token, customer, restaurants, django_capture_on_commit_callbacks
):
    before = web_metrics(client)
    assert total(before, "liveops_due_legs") == 0
    assert {dict(labels)["kind"] for (name, labels) in series(before) if name == "liveops_alerts_open"} == (
        ALERT_KINDS
    )

    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    Leg.objects.filter(order=order).update(next_poll_at=order.created_at.replace(year=2020))
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=order.pk)
        alerts.raise_alert(order=locked, kind=Alert.Kind.LATE, detail="late", source="system")
    text = web_metrics(client)

    assert total(text, "liveops_due_legs") == 2
    assert total(text, "liveops_oldest_due_leg_age_seconds") > 365 * 24 * 3600  # due since 2020
    assert total(text, "liveops_alerts_open", kind="late") == 1
    assert total(text, "liveops_alerts_open") == 1
    relay = client.get("/healthz").json()["relay"]  # the same reading as /healthz
    assert total(text, "liveops_relay_behind_events") == relay["behind"]


@pytest.mark.django_db
def test_orders_status_changes_and_alerts_count_when_they_commit(
    customer, restaurants, django_capture_on_commit_callbacks
):
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    created, cancelled = (
        value("liveops_orders_created_total"),
        value("liveops_order_status_changes_total", status="cancelled"),
    )
    raised = value("liveops_alerts_raised_total", kind="stuck")
    with django_capture_on_commit_callbacks() as callbacks:
        order = services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(restaurants["melange"]), quantity=1)],
            delivery_address="Khreshchatyk 1",
        )
        services.order_cancel(order_id=order.pk, actor=customer, reason="changed my mind")
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            alerts.raise_alert(order=locked, kind=Alert.Kind.STUCK, detail="stuck", source="system")
        assert value("liveops_orders_created_total") == created  # not before the commit
        assert value("liveops_order_status_changes_total", status="cancelled") == cancelled
    for callback in callbacks:
        callback()
    assert value("liveops_orders_created_total") == created + 1
    assert value("liveops_order_status_changes_total", status="cancelled") == cancelled + 1
    assert value("liveops_alerts_raised_total", kind="stuck") == raised + 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("relay")
def test_sockets_and_frames_are_counted_by_stream(operator):
    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"stream": "operators"}) or 0.0

    async def scenario() -> None:
        token = await database_sync_to_async(factories.token_for)(operator)
        socket = WebsocketCommunicator(
            application, "/ws/operators/", headers=[(b"authorization", f"Token {token}".encode())]
        )
        opened, sent = value("liveops_realtime_sockets_open"), value("liveops_realtime_frames_sent_total")
        connected, _ = await socket.connect(timeout=3)
        assert connected
        await socket.receive_from(timeout=3)  # the snapshot
        assert value("liveops_realtime_sockets_open") == opened + 1
        await socket.send_json_to({"type": "ping"})
        await socket.receive_from(timeout=3)  # the pong
        assert value("liveops_realtime_frames_sent_total") >= sent + 2
        await socket.disconnect()
        assert value("liveops_realtime_sockets_open") == opened

    async_to_sync(scenario)()


# --- the whole pipeline: web, worker, beat and relay -------------------------------------------------------


@pytest.mark.slow
def test_every_process_kind_exports_what_the_pipeline_did(
    worker_and_beat, metrics_ports, live_server, restaurants, token
):
    def scrape_web() -> httpx.Response:
        authorization = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{live_server.url}/metrics", headers=authorization, timeout=10)

    assert httpx.get(f"{live_server.url}/metrics", timeout=10).status_code == 401
    web_before = scrape_web().text
    customer = factories.make_user("alice")
    client = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {factories.token_for(customer)}"}
    )
    items = [{"dish": factories.dish(restaurant).pk, "quantity": 1} for restaurant in restaurants.values()]
    response = client.post("/api/orders/", json={"items": items, "delivery_address": "Sahaidachnoho St, 10"})
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]
    wait_for(
        lambda: Order.objects.filter(pk=order_id, status="delivered").exists(),
        90,
        worker_and_beat["worker"].read_text()[-4000:],
    )

    web = scrape_web().text
    assert total(web, "liveops_orders_created_total") >= total(web_before, "liveops_orders_created_total") + 1

    worker = scraped(metrics_ports["worker"])
    providers = {leg.provider for leg in Leg.objects.filter(order_id=order_id)}
    for provider in providers:
        assert total(worker, "liveops_provider_requests_total", provider=provider, outcome="ok") > 0, provider
        assert total(worker, "liveops_provider_request_seconds_count", provider=provider) > 0, provider
    created = total(worker, "liveops_provider_requests_total", operation="create", outcome="ok")
    assert created >= len(providers)
    assert total(worker, "liveops_poll_tick_seconds_count") > 0
    assert total(worker, "liveops_poll_tick_legs_count") == total(worker, "liveops_poll_tick_seconds_count")
    assert total(worker, "liveops_poll_tick_legs_sum") > 0
    poll = "orders.poll_due_legs"
    assert total(worker, "liveops_celery_tasks_total", task=poll, state="success") > 0
    assert total(worker, "liveops_celery_task_seconds_count", task=poll) >= total(
        worker, "liveops_celery_tasks_total", task=poll, state="success"
    )

    # Status changes are counted where they commit: the worker (polls) or web (providers' webhooks)
    passed = set(
        OrderEvent.objects.filter(order_id=order_id, type="order.status").values_list("to_status", flat=True)
    )
    assert "delivered" in passed
    for status in passed:
        changes = total(worker, "liveops_order_status_changes_total", status=status) + (
            total(web, "liveops_order_status_changes_total", status=status)
            - total(web_before, "liveops_order_status_changes_total", status=status)
        )
        assert changes >= 1, status

    events = OrderEvent.objects.filter(order_id=order_id).count()
    wait_for(
        lambda: total(scraped(metrics_ports["relay"]), "liveops_realtime_events_published_total") >= events,
        20,
        "the relay's exporter counts the order's events",
    )
    beat = scraped(metrics_ports["beat"])
    assert "liveops_poll_tick_seconds" in families(beat)  # beat's own registry, served


# --- the worker's multiprocess directory -------------------------------------------------------------------


def start_worker(port: int, tmpdir: Path, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        "TMPDIR": str(tmpdir),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_WORKER_PORT": str(port),
        "EMAIL_URL": "console://",
    }
    command = [sys.executable, "-m", "celery", "--app", "core", "worker", "--loglevel", "INFO"]
    command += ["--concurrency", "2", "--without-mingle", "--without-gossip"]
    with open(log, "ab") as output:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)


def stop_worker(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def checks_done(port: int) -> float:
    return total(scrape(port), "liveops_celery_tasks_total", task="orders.check_alerts", state="success")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_each_worker_start_counts_afresh_from_its_own_directory(tmp_path, unused_tcp_port):
    """Two runs of a worker on one TMPDIR: each writes to a new directory, removed when it stops, and the
    second run's exporter counts its own tasks only, summed over its pool children."""
    from orders.tasks import check_alerts

    log = tmp_path / "worker.log"
    directories = []
    for run, tasks in enumerate((3, 2)):
        process = start_worker(unused_tcp_port, tmp_path, log)
        try:
            scraped(unused_tcp_port)
            for _ in range(tasks):
                check_alerts.delay()
            wait_for(lambda n=tasks: checks_done(unused_tcp_port) >= n, 30, log.read_text()[-3000:])
            time.sleep(0.5)  # a stale count would have shown by now
            assert checks_done(unused_tcp_port) == tasks, f"run {run} counts only its own tasks"
            [directory] = glob.glob(str(tmp_path / "liveops-worker-metrics-*"))
            pids = {int(Path(name).stem.rsplit("_", 1)[1]) for name in glob.glob(f"{directory}/*.db")}
            assert pids - {process.pid}, "the pool children write files of their own"
            directories.append(directory)
        finally:
            stop_worker(process)
        assert not os.path.exists(directory), "the directory goes with the worker"
    assert directories[0] != directories[1]
