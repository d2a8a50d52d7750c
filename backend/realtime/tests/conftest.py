"""Browser-test fixtures: the whole stack as real processes, watched through a real Chromium.

daphne serves HTTP and WebSockets on the test database; the Celery worker and beat of
backend/conftest.py move orders through the provider simulators. daphne, the worker and this process
(which receives Bueno's webhooks on pytest's live_server) share the session's channel-layer prefix, so
every publish reaches the dashboards and nothing of a parallel run does.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import REPO, test_database_url  # backend/conftest.py
from django.conf import settings as django_settings
from django.db import connections

from orders.models import Dish, Restaurant
from orders.tests import factories

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEWPORT = {"width": 1440, "height": 900}
STARTUP_SECONDS = 60  # a busy 2-core machine running several browser suites may need it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        # `make test` installs it (tools/ensure-debian-tools): a missing browser is a failure, not a skip.
        pytest.fail("Chromium is not installed: run tools/ensure-debian-tools (or apt-get install chromium)")
    return path


@pytest.fixture
def browser(chromium_path, world, live_stack):
    """Chromium for one test, started once the database fixtures are done.

    Playwright's sync API leaves an asyncio loop marked as running in this thread, so Django refuses
    ORM calls here until it stops: tests read the database through `in_thread`.
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="the `test` extra installs playwright")
    with sync_api.sync_playwright() as playwright:
        # Debian's Chromium, never a downloaded one (`playwright install` needs the internet).
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_stack):
    context = browser.new_context(viewport=VIEWPORT, base_url=live_stack.url, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


def in_thread(function, *args):
    """Runs ORM code outside the thread Playwright's loop lives in (and closes its connection)."""

    def run():
        try:
            return function(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=30)


# --- the servers -----------------------------------------------------------------------------------


@dataclass
class LiveStack:
    url: str
    providers: dict
    daphne_log: Path
    worker_log: Path

    def logs(self) -> str:
        tail = []
        for path in (self.daphne_log, self.worker_log):
            if path.exists():
                tail.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(tail)


def daphne_env(**extra: str) -> dict[str, str]:
    """The environment of a daphne process on this test session's database and channel-layer prefix."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        "CHANNEL_LAYER_PREFIX": django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        "LIMITS_KEY_PREFIX": django_settings.LIMITS_KEY_PREFIX,  # this test's (backend/conftest.py)
        # No tile server and no geocoder: maps draw their plain background, orders stay `off` the map
        # unless a test gives them a point.
        "MAP_TILE_URL": "",
        "GEOCODER_URL": "",
        **extra,
    }


def start_daphne(
    env: dict[str, str], port: int, log_path: Path, describe=None, module: str = "core.serve"
) -> subprocess.Popen:
    """The web process as the Procfile starts it (core.serve: daphne with its body limit; `module="daphne"`
    for daphne itself) on 127.0.0.1:`port`, returned once /healthz answers 200 (fails with its log
    otherwise)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "-b", "127.0.0.1", "-p", str(port), "core.asgi:application"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz?scope=process", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            stop(process)
            details = describe() if describe else log_path.read_text(errors="replace")
            raise AssertionError(f"daphne did not start:\n{details}")
        time.sleep(0.1)


@pytest.fixture
def live_stack(request, tmp_path) -> Iterator[LiveStack]:
    """daphne + Celery worker + beat + simulators on the test database."""
    providers = request.getfixturevalue("providers")
    worker_logs = request.getfixturevalue("worker_and_beat")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = daphne_env(
        # Each test gets a fresh daphne, but the database is flushed between tests: share nothing.
        REALTIME_SNAPSHOT_SHARE_SECONDS="0",
        SERVE_STATIC="true",
        DEBUG="true",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        CSRF_TRUSTED_ORIGINS=url,
        EMAIL_URL="console://",
        PYTHONUNBUFFERED="1",
        **{f"{name.upper()}_URL": simulator.url for name, simulator in providers.items()},
    )
    log_path = tmp_path / "daphne.log"
    stack = LiveStack(url=url, providers=providers, daphne_log=log_path, worker_log=worker_logs["worker"])
    process = start_daphne(env, port, log_path, describe=stack.logs)
    yield stack
    stop(process)


# --- data ---------------------------------------------------------------------------------------------

# Two more kitchens next to the `restaurants` catalogue (Melange, Bueno), so the map and the filter have
# something to show; one on each kitchen provider.
MORE_KITCHENS = [
    ("Pasta Fabbrica", "melange", "Velyka Vasylkivska 5"),
    ("Sushi Nord", "bueno", "Obolonskyi Ave 19"),
]


@pytest.fixture
def kitchens(restaurants) -> list[Restaurant]:
    extra = []
    for name, provider, address in MORE_KITCHENS:
        restaurant = Restaurant.objects.create(name=name, provider=provider, address=address)
        for index, price in enumerate([12500, 18900, 24000]):
            Dish.objects.create(restaurant=restaurant, name=f"{name} dish {index + 1}", price=price)
        extra.append(restaurant)
    return [restaurants["melange"], restaurants["bueno"], *extra]


@dataclass
class World:
    """Users and kitchens, made before the browser starts (see `browser`)."""

    kitchens: list[Restaurant]
    operator: object
    customer: object
    operator_token: str
    customer_token: str


@pytest.fixture
def world(transactional_db, kitchens) -> World:
    operator = factories.make_user("olena", is_staff=True)
    customer = factories.make_user("alice")
    return World(
        kitchens=kitchens,
        operator=operator,
        customer=customer,
        operator_token=factories.token_for(operator),
        customer_token=factories.token_for(customer),
    )


@pytest.fixture
def rest(live_stack):
    """httpx clients for daphne's REST API: `rest(token)`."""
    clients = []

    def build(token: str) -> httpx.Client:
        headers = {"Authorization": f"Token {token}"}
        client = httpx.Client(base_url=live_stack.url, headers=headers, timeout=10)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()
