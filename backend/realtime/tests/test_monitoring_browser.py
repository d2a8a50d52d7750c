"""The Grafana dashboard's queries against a real Prometheus scraping the real processes.

Debian's Prometheus scrapes, every second, daphne's /metrics with the web job of
docker/prometheus/prometheus.yml (its bearer token from a file) and the exporters of the Celery worker,
beat and the relay with their jobs, only the targets (static, on this test's free ports, in place of
Docker's DNS) and the token file moved. An operator watches the dashboard in Chromium (sockets open,
frames flow) while a customer places three orders over REST and the worker moves them through the
simulators to `delivered`. Then every expression of docs/grafana/liveops.json goes to Prometheus' query
API: all must parse, and those whose metrics this pipeline produces must return series. Last,
Prometheus' own graph page draws two of them for the README screenshot (Grafana is packaged neither by
Debian nor by any registry this project installs from).
"""

import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from playwright.sync_api import expect

from orders.models import Dish
from orders.tests import factories

from .conftest import STARTUP_SECONDS, free_port, in_thread, stop

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "docs" / "grafana" / "liveops.json"
PROMETHEUS_CONFIG = REPO / "docker" / "prometheus" / "prometheus.yml"
PROMETHEUS = Path("/usr/bin/prometheus")
SCREENSHOT = REPO / "docs" / "screenshots" / "monitoring.png"
# Grafana's interval variable, replaced as Grafana would for a 1 s scrape interval and a short range.
RATE_INTERVAL = "1m"
# Panels one delivered order, watched by one operator, must feed. Left out: alerts raised, task failures
# and webhooks, which get series only once an alert is raised, a task fails or a partner endpoint exists.
PANELS_WITH_DATA = {
    "Orders created",
    "Status changes by status",
    "Open alerts",
    "Requests by provider and outcome",
    "Error ratio by provider",
    "Provider latency p50 / p95",
    "Poll tick duration p95",
    "Legs per tick",
    "Due legs",
    "Oldest due leg",
    "Events published",
    "Frames sent by stream",
    "Open sockets by stream",
    "Relay behind / stalled",
    "Task runtime p95 by task",
}
ORDER_ADDRESSES = ["Khreshchatyk St, 1", "Volodymyrska St, 40", "Peremohy Ave, 37"]
# The two queries of the README screenshot.
SCREENSHOT_PANELS = ("Status changes by status", "Requests by provider and outcome")


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, PromQL as Grafana sends it) for every query of the dashboard."""
    board = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in board["panels"]:
        panels.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", RATE_INTERVAL))
        for panel in panels
        for target in panel["targets"]
    ]


class Prometheus:
    """Debian's prometheus binary on a free port, scraping `targets` (job -> host:port) with the jobs of
    docker/prometheus/prometheus.yml."""

    def __init__(self, workdir: Path, targets: dict[str, str], token: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "prometheus.log"
        token_file = workdir / "metrics_token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        for job in config["scrape_configs"]:
            job.pop("dns_sd_configs", None)
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
            if "authorization" in job:
                job["authorization"]["credentials_file"] = str(token_file)
        config["global"] |= {"scrape_interval": "1s", "scrape_timeout": "1s"}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        if not PROMETHEUS.exists():
            pytest.fail(
                "prometheus is not installed: run tools/ensure-debian-tools (Debian package prometheus)"
            )
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.http = httpx.Client(base_url=self.url, timeout=10)
        self.wait("Prometheus ready", lambda: self.http.get("/-/ready").status_code == 200, STARTUP_SECONDS)

    def query(self, expr: str) -> list[dict]:
        """The instant vector Prometheus answers for `expr`; fails on a query it refuses."""
        response = self.http.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]["result"]

    def targets_down(self) -> list[str]:
        targets = self.http.get("/api/v1/targets").json()["data"]["activeTargets"]
        return [
            f"{target['labels']['job']}: {target['lastError']}"
            for target in targets
            if target["health"] != "up"
        ]

    def wait(self, what: str, probe: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if probe():
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()[-3000:]}"
            if time.monotonic() > deadline:
                down = self.targets_down() if what != "Prometheus ready" else []
                raise AssertionError(f"{what}: not within {timeout} s; targets down: {down}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.http.close()
        stop(self.process)


@pytest.fixture
def metrics_token(monkeypatch) -> str:
    """The web process's METRICS_TOKEN, set before live_stack copies this environment into daphne's."""
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv("METRICS_TOKEN", token)
    return token


@pytest.fixture
def prometheus(metrics_token, metrics_ports, live_stack, tmp_path) -> Iterator[Prometheus]:
    """Scraping daphne and the exporters of the worker, beat and relay (backend/conftest.py's
    metrics_ports, on which worker_and_beat starts them)."""
    targets = {job: f"127.0.0.1:{port}" for job, port in metrics_ports.items()}
    targets["web"] = live_stack.url.removeprefix("http://")
    server = Prometheus(tmp_path, targets, metrics_token)
    yield server
    server.stop()


def test_every_dashboard_query_runs_on_prometheus_scraping_the_stack(
    metrics_token, world, live_stack, rest, prometheus, page
):
    dishes = in_thread(
        lambda: list(Dish.objects.filter(restaurant=world.kitchens[0]).values_list("id", flat=True)[:2])
    )
    # The bearer token is what opens /metrics: without it the web process refuses.
    assert httpx.get(f"{live_stack.url}/metrics", timeout=5).status_code == 401

    # An operator's dashboard: a socket on the operators' stream, which the order's frames then reach.
    page.goto("/login/?next=/")
    page.fill("#id_username", world.operator.username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    # Every target scraped before the order: the counters' rise falls inside the graphs' window.
    prometheus.wait("every target up", lambda: not prometheus.targets_down(), timeout=60)
    customer = rest(world.customer_token)
    items = [{"dish": dish, "quantity": 1} for dish in dishes]
    for address in ORDER_ADDRESSES:  # a few seconds apart, so that the graphs show each one
        response = customer.post("/api/orders/", json={"items": items, "delivery_address": address})
        assert response.status_code == 201, response.text
        expect(page.locator(f'[data-testid="card-{response.json()["id"]}"]')).to_be_visible(timeout=20_000)
        page.wait_for_timeout(3_000)

    def scraped(expr: str) -> float:
        result = prometheus.query(expr)
        return float(result[0]["value"][1]) if result else 0.0

    # Everything the pipeline counts has reached Prometheus once it has seen the orders delivered.
    orders = len(ORDER_ADDRESSES)
    prometheus.wait(
        "Prometheus sees the orders delivered, frames sent and events published, every target up",
        lambda: (
            not prometheus.targets_down()
            and scraped("sum(liveops_orders_created_total)") == orders
            and scraped('sum(liveops_order_status_changes_total{status="delivered"})') == orders
            and scraped("sum(liveops_realtime_frames_sent_total)") > 0
            and scraped("sum(liveops_realtime_events_published_total)") > 0
        ),
        timeout=90,
    )
    time.sleep(3)  # a few more scrapes, so that every rate() has samples on both sides of the changes

    empty = []
    for title, expr in dashboard_targets():
        if not prometheus.query(expr) and title in PANELS_WITH_DATA:  # every expression evaluates
            empty.append(f"{title}: {expr}")
    assert not empty, "no series for:\n" + "\n".join(empty)

    # The README's screenshot: Prometheus' own graph page (the classic UI Debian ships) drawing two panels.
    queries = dict(dashboard_targets())
    params = {}
    for index, title in enumerate(SCREENSHOT_PANELS):
        params |= {f"g{index}.expr": queries[title], f"g{index}.tab": "0", f"g{index}.range_input": "30s"}
    page.set_viewport_size({"width": 1440, "height": 1100})
    page.goto(f"{prometheus.url}/graph?{urlencode(params)}")
    graphs = page.locator(".graph_area")
    expect(graphs).to_have_count(len(SCREENSHOT_PANELS), timeout=20_000)
    for index in range(len(SCREENSHOT_PANELS)):  # each draws a line: a series came back
        expect(graphs.nth(index).locator("svg path").first).to_be_attached(timeout=20_000)
    page.wait_for_timeout(500)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
