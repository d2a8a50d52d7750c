"""Fault suite: the pipeline's real processes under the failures a deployment meets.

Each test runs the parts it breaks as real processes (Celery worker and beat, daphne, the provider
simulators over HTTP, a private PostgreSQL) and checks the outcome in the database: every order
completes, no OrderEvent is written twice, no status moves backwards.

- a worker SIGKILLed in the middle of a poll: the leases run out and a second worker polls again;
- PostgreSQL restarted under web, worker, relay and beat: they recover by themselves, no order is lost;
- a provider down for 30 s: the poller backs off, then the orders complete;
- Bueno's webhooks replayed three times, out of order: one event each, nothing backwards;
- two beat processes: each leg is still polled once per due time.
(Redis restarted under WebSocket clients: realtime/tests/test_redis_restart.py.)
"""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import REPO, test_database_url  # backend/conftest.py
from django.conf import settings as django_settings
from django.utils import timezone

from core.celery import app as celery_app
from orders.models import Leg, Order
from orders.schedules import install_schedules
from orders.status import PIPELINE
from orders.tests import factories
from orders.tests.factories import signature_of
from orders.tests.pipeline import assert_history_is_clean
from simulators.testing import free_port

pytestmark = pytest.mark.slow

FINISHED = ("delivered", "failed", "cancelled")


# --- helpers ---------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float, describe: Callable[[], str]) -> None:
    """Poll `condition` until it holds; fail with `describe()` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s:\n{describe()}")
        time.sleep(0.2)


def assert_one_event_each(order: Order) -> None:
    """A clean history (forward only, no repeated status) and no event recorded twice."""
    assert_history_is_clean(order)
    keys = [(e.type, e.leg_id, e.provider_status, e.to_status) for e in order.events.order_by("seq")]
    assert len(keys) == len(set(keys)), keys


def order_with_every_kitchen(customer, restaurants) -> Order:
    return factories.make_order(customer, *restaurants.values())


def celery_env(providers, **overrides: str) -> dict[str, str]:
    """The environment of backend/conftest.py's worker_and_beat, plus `overrides`."""
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        "POLL_INTERVAL_SECONDS": str(django_settings.POLL_INTERVAL_SECONDS),
        "PROVIDER_TIMEOUT_SECONDS": "2",
        "EMAIL_URL": "console://",
        "PYTHONUNBUFFERED": "1",
        "CHANNEL_LAYER_PREFIX": django_settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        # This test's own rate-limit counters (backend/conftest.py), so that sign-ins and orders over HTTP
        # count against nobody else's: the limits stay as deployed, one sign-in and four orders are far under
        "LIMITS_KEY_PREFIX": django_settings.LIMITS_KEY_PREFIX,
        **{f"{name.upper()}_URL": simulator.url for name, simulator in providers.items()},
        **overrides,
    }


CELERY_ARGS = {
    "worker": ["worker", "--loglevel", "INFO", "--concurrency", "2", "--without-mingle", "--without-gossip"],
    "beat": ["beat", "--loglevel", "INFO", "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"],
}


@dataclass
class Processes:
    """Celery workers and beats (and the event relay) started by one test, each in its own process group."""

    directory: Path
    started: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, kind: str, name: str, env: dict[str, str]) -> subprocess.Popen:
        command = [sys.executable, "-m", "celery", "--app", "core", *CELERY_ARGS.get(kind, [])]
        if kind == "beat":
            command += ["--pidfile=", "--schedule", str(self.directory / f"{name}-schedule")]
        elif kind == "relay":
            command = [sys.executable, "backend/manage.py", "relay_events"]
        with open(self.log(name), "wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # SIGKILL reaches the worker's pool processes too
            )
        self.started[name] = process
        return process

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def text(self, name: str) -> str:
        path = self.log(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.text(name)[-3000:]}" for name in self.started)

    def kill(self, name: str) -> None:
        """SIGKILL the process and its children at once, as the OOM killer or a lost node would."""
        process = self.started[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for process in self.started.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.started.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def celery_processes(providers, tmp_path) -> Iterator[Processes]:
    """Start workers and beats yourself (after setting POLL_INTERVAL_SECONDS); stopped at the end."""
    celery_app.conf.task_always_eager = False
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge("celery")
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


def poll_every(settings, seconds: int) -> None:
    """Beat ticks and legs fall due every `seconds` (the schedule installed at flush keeps its interval)."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    settings.POLL_INTERVAL_SECONDS = seconds
    install_schedules()
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(task="orders.poll_due_legs").update(
        interval=interval, expire_seconds=2 * seconds
    )


def configure_all(providers, **config) -> None:
    for simulator in providers.values():
        simulator.configure(**config)


# --- 2. a worker killed in the middle of a poll ----------------------------------------------------


def test_worker_sigkilled_mid_poll_legs_are_polled_again_after_the_lease_without_duplicates(
    celery_processes, providers, settings, customer, restaurants
):
    poll_every(settings, 1)
    latency = 1.5
    env = celery_env(providers, PROVIDER_TIMEOUT_SECONDS="2.5")  # lease: 2 x 2.5 + 1 = 6 s
    configure_all(providers, step_seconds=1.5)
    celery_processes.start("beat", "beat", env)
    celery_processes.start("worker", "worker-1", env)
    orders = [order_with_every_kitchen(customer, restaurants) for _ in range(3)]
    kitchen = Leg.objects.filter(order__in=orders, kind="kitchen")
    wait_until(lambda: not kitchen.filter(external_id="").exists(), 30, celery_processes.tails)

    # Every kitchen answers slowly from now on: a tick that sent its GETs waits 1.5 s for the answers.
    kitchens = [providers["melange"], providers["bueno"]]
    sent_before = [simulator.stats()["requests"] for simulator in kitchens]
    for simulator in kitchens:
        simulator.configure(latency_ms=latency * 1000)
    wait_until(
        lambda: all(s.stats()["requests"] >= n + 3 for s, n in zip(kitchens, sent_before, strict=True)),
        15,
        celery_processes.tails,
    )
    celery_processes.kill("worker-1")  # the GETs of every kitchen leg are in flight now
    killed_at = timezone.now()
    leases = dict(kitchen.values_list("id", "next_poll_at"))
    assert all(lease > killed_at for lease in leases.values()), "the legs were leased to the killed tick"

    for simulator in kitchens:
        simulator.configure(latency_ms=0)
    time.sleep(latency + 0.2)  # the abandoned GETs are answered (to nobody) and counted
    external = dict(kitchen.values_list("id", "external_id"))

    def gets() -> dict[int, int]:
        counts = {**providers["melange"].stats()["gets_by_id"], **providers["bueno"].stats()["gets_by_id"]}
        return {leg_id: counts.get(external_id, 0) for leg_id, external_id in external.items()}

    polled_by_the_dead = gets()
    celery_processes.start("worker", "worker-2", env)
    # Nobody polls a leased leg before its lease ends, whoever is alive.
    wait_until(lambda: timezone.now() > min(leases.values()) - timedelta(seconds=0.3), 15, str)
    assert gets() == polled_by_the_dead

    for order in orders:
        wait_until(
            lambda order=order: Order.objects.filter(pk=order.pk, status__in=FINISHED).exists(),
            45,
            celery_processes.tails,
        )
    assert all(gets()[leg] > polled_by_the_dead[leg] for leg in leases), "every leg was polled again"
    for order in orders:
        order.refresh_from_db()
        assert order.status == "delivered", order.failure_reason
        assert_one_event_each(order)
    assert sum(s.stats()["creates"] for s in kitchens) == len(leases), "no sub-order was created twice"
    assert "Poll tick" in celery_processes.text("worker-2")


# --- 4. a provider down for 30 s -------------------------------------------------------------------

OUTAGE_SECONDS = 30  # the requirement's figure


def test_provider_down_for_30s_poller_backs_off_then_orders_complete(
    celery_processes, providers, settings, customer, restaurants
):
    poll_every(settings, 1)
    env = celery_env(
        providers, PROVIDER_MAX_BACKOFF_SECONDS="4", PROVIDER_FAILURE_DEADLINE_SECONDS="120"
    )  # backoff 1, 2, 4, 4, ... s; the deadline is far past the outage
    melange = providers["melange"]
    melange.configure(step_seconds=3)  # the kitchen is still cooking when Melange goes down
    celery_processes.start("beat", "beat", env)
    celery_processes.start("worker", "worker", env)
    orders = [factories.make_order(customer, restaurants["melange"]) for _ in range(2)]
    legs = Leg.objects.filter(order__in=orders, kind="kitchen")
    wait_until(lambda: not legs.filter(external_id="").exists(), 30, celery_processes.tails)

    melange.configure(down=True)
    requests_before = melange.stats()["requests"]
    # When each failed attempt was recorded (a claim rewrites next_poll_at to its lease, not updated_at).
    failed_at: dict[int, dict[int, datetime]] = {leg.pk: {} for leg in legs}
    ends = time.monotonic() + OUTAGE_SECONDS
    while time.monotonic() < ends:
        for leg in legs.all():  # a fresh read each round
            if leg.attempts:
                assert leg.attempts >= max(failed_at[leg.pk], default=0), "attempts only grow"
                failed_at[leg.pk].setdefault(leg.attempts, leg.updated_at)
                assert "503" in leg.last_error, leg.last_error
        time.sleep(0.5)
    outage_requests = melange.stats()["requests"] - requests_before
    assert not Order.objects.filter(pk__in=[o.pk for o in orders], status__in=FINISHED).exists()
    melange.configure(down=False)

    for leg_id, times in failed_at.items():
        assert max(times) >= 5, (leg_id, times)
        gaps = {n: (times[n + 1] - times[n]).total_seconds() for n in times if n + 1 in times}
        # After failure n the leg waits min(2^(n-1), 4) s ± 20 %, then for the next 1 s tick.
        backoff = {n: min(2 ** (n - 1), 4) for n in gaps}
        assert len(gaps) >= 3 and max(gaps.values()) >= 3, (leg_id, gaps)
        assert all(0.8 * backoff[n] - 0.1 <= gap <= 1.2 * backoff[n] + 2.5 for n, gap in gaps.items()), gaps
    # Without backoff every leg would be asked at every 1 s tick: 2 legs x 30 s.
    assert outage_requests <= 2 * OUTAGE_SECONDS / 2, outage_requests

    for order in orders:
        wait_until(
            lambda order=order: Order.objects.filter(pk=order.pk, status__in=FINISHED).exists(),
            30,
            celery_processes.tails,
        )
        order.refresh_from_db()
        assert order.status == "delivered", order.failure_reason
        assert_one_event_each(order)
    assert not Leg.objects.filter(order__in=orders).exclude(attempts=0, last_error="").exists()


# --- 5. Bueno's webhooks replayed three times, out of order -----------------------------------------


def test_bueno_webhooks_replayed_three_times_out_of_order_one_event_each_never_backwards(
    providers, live_server, customer, restaurants
):
    providers["bueno"].configure(step_seconds=3600)  # Bueno stays "accepted": only our pushes move it
    order = factories.release(factories.make_order(customer, restaurants["bueno"]))  # submitted (eager)
    leg = order.legs.get()
    assert leg.external_id.startswith("bno_"), leg.last_error
    payloads = [
        {
            "id": leg.external_id,
            "status": status,
            "at": f"2026-11-26T10:0{minute}:00.000Z",
            "event_id": uuid.uuid4().hex,
        }
        for minute, status in enumerate(["preparing", "ready", "handed_over"])
    ]
    preparing, ready, handed_over = (json.dumps(payload).encode() for payload in payloads)
    # Each payload three times, scrambled: "ready" overtakes "preparing", replays arrive late.
    deliveries = [ready, preparing, ready, handed_over, preparing, handed_over, ready, preparing, handed_over]

    answers = []
    with httpx.Client(base_url=live_server.url, timeout=10) as client:
        for body in deliveries:
            response = client.post(
                "/webhooks/bueno/",
                content=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Bueno-Signature": signature_of(
                        body, django_settings.PROVIDERS["bueno"]["webhook_secret"]
                    ),
                },
            )
            assert response.status_code == 200, response.text
            answers.append((json.loads(body)["status"], response.json()["changed"]))

    leg.refresh_from_db()
    order.refresh_from_db()
    reported = list(
        order.events.filter(source="webhook").order_by("seq").values_list("provider_status", flat=True)
    )
    # One event per status that moved the leg forward; "preparing" came after "ready" and is refused.
    assert reported == ["ready", "handed_over"], answers
    assert [status for status, changed in answers if changed] == ["ready", "handed_over"], answers
    assert leg.provider_status == "handed_over" and leg.status == "ready"
    moves = [e.to_status for e in order.events.filter(type="order.status").order_by("seq")]
    assert moves == sorted(moves, key=PIPELINE.index), moves
    assert order.status in ("ready", "courier_search", "delivering", "delivered")
    assert_one_event_each(order)


# --- 6. two beat processes at once -----------------------------------------------------------------


def test_two_beats_each_leg_polled_once_per_due_time_and_no_duplicate_events(
    celery_processes, providers, settings, customer, restaurants
):
    poll_every(settings, 1)  # ticks of each beat and due times of each leg: both 1 s apart
    env = celery_env(providers)
    configure_all(providers, step_seconds=1.5)
    celery_processes.start("beat", "beat-1", env)
    celery_processes.start("beat", "beat-2", env)
    celery_processes.start("worker", "worker", env)
    started = time.monotonic()
    orders = [order_with_every_kitchen(customer, restaurants) for _ in range(3)]
    for order in orders:
        wait_until(
            lambda order=order: Order.objects.filter(pk=order.pk, status__in=FINISHED).exists(),
            60,
            celery_processes.tails,
        )
    elapsed = time.monotonic() - started

    ticks = {
        name: celery_processes.text(name).count("Sending due task Poll providers")
        for name in ("beat-1", "beat-2")
    }
    assert all(count >= elapsed / 3 for count in ticks.values()), ("both beats ticked", ticks, elapsed)
    external_ids = set(Leg.objects.filter(order__in=orders).values_list("external_id", flat=True))
    gets = {
        external_id: count
        for simulator in providers.values()
        for external_id, count in simulator.stats()["gets_by_id"].items()
        if external_id in external_ids
    }
    assert len(gets) == len(external_ids) == 9, gets
    # A leg is due POLL_INTERVAL after it was polled: at most one GET per second of its life. Both
    # beats' ticks together came twice as often; had each polled, a leg would see about twice this.
    assert max(gets.values()) <= elapsed + 1, (gets, elapsed, ticks)
    assert sum(ticks.values()) > 1.5 * max(gets.values()), (gets, ticks)
    for order in orders:
        order.refresh_from_db()
        assert order.status == "delivered", order.failure_reason
        assert_one_event_each(order)


# --- 3. PostgreSQL restarted under web, worker, relay and beat -------------------------------------


class PrivatePostgres:
    """A PostgreSQL of this test's own on a free TCP port (pgserver's binaries), never the shared one.

    Started and stopped with pg_ctl so that it comes back on the same port and data directory, as a
    restarted database server does. As root, PostgreSQL runs as pgserver's `pgserver` system user.
    """

    def __init__(self) -> None:
        from pgserver import _commands

        self.commands = _commands
        self.root = Path(tempfile.mkdtemp(prefix="liveops-pg-"))  # under /tmp: reachable by that user
        self.data = self.root / "data"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "pgserver"
            entry = ensure_user_exists(self.user)
            ensure_prefix_permissions(self.commands.POSTGRES_BIN_PATH)
            readable = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(self.commands.POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(self.commands.POSTGRES_BIN_PATH.parent / "lib", readable)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(self.commands.initdb, ["-U", "postgres", "--auth=trust", "-E", "UTF8"])

    def _run(self, command: Callable, args: list[str]) -> None:
        command(args, pgdata=self.data, user=self.user, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root}"
        self._run(self.commands.pg_ctl, ["-w", "-l", str(self.root / "server.log"), "-o", options, "start"])

    def stop(self) -> None:
        self._run(self.commands.pg_ctl, ["-w", "-m", "fast", "stop"])

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        connection = psycopg.connect(self.url("postgres"), autocommit=True)
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        connection.close()

    def destroy(self) -> None:
        try:
            self.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


def events_are_clean(body: dict) -> bool:
    """The order's history over REST: statuses only forward, each once, no event twice."""
    moves = [event["to"] for event in body["events"] if event["type"] == "order.status"]
    keys = [
        json.dumps({k: v for k, v in event.items() if k not in ("seq", "at")}) for event in body["events"]
    ]
    return (
        moves == sorted(moves, key=PIPELINE.index)
        and len(moves) == len(set(moves))
        and len(keys) == len(set(keys))
    )


def test_postgres_restart_web_worker_relay_and_beat_recover_and_no_order_is_lost(
    private_postgres, celery_processes, providers, tmp_path
):
    from realtime.tests.conftest import start_daphne, stop

    private_postgres.create_database("liveops")
    env = celery_env(
        providers,
        DATABASE_URL=private_postgres.url("liveops"),
        POLL_INTERVAL_SECONDS="1",
        CHANNEL_LAYER_PREFIX=f"pgrestart-{uuid.uuid4().hex[:8]}",
    )
    for command in (["migrate", "--noinput"], ["seed_demo"]):
        subprocess.run(
            [sys.executable, "backend/manage.py", *command],
            cwd=REPO,
            env=env,
            check=True,
            capture_output=True,
        )
    configure_all(providers, step_seconds=0.5)
    port = free_port()
    web = start_daphne({**env, "ALLOWED_HOSTS": "127.0.0.1"}, port, tmp_path / "daphne.log")
    try:
        celery_processes.start("beat", "beat", env)
        celery_processes.start("worker", "worker", env)
        celery_processes.start("relay", "relay", env)
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        login = {"username": "customer", "password": env.get("DEMO_PASSWORD", "demo-pass-2026")}
        token = client.post("/api/auth/token/", json=login).json()["token"]
        client.headers["Authorization"] = f"Token {token}"
        dishes = [restaurant["dishes"][0]["id"] for restaurant in client.get("/api/restaurants/").json()]

        def create_order() -> int:
            items = [{"dish": dish, "quantity": 1} for dish in dishes]
            response = client.post(
                "/api/orders/", json={"items": items, "delivery_address": "Khreshchatyk St, 1"}
            )
            assert response.status_code == 201, response.text
            return response.json()["id"]

        def describe() -> str:
            return (
                celery_processes.tails()
                + "\n--- daphne ---\n"
                + (tmp_path / "daphne.log").read_text()[-3000:]
            )

        before = [create_order() for _ in range(2)]
        wait_until(
            lambda: client.get(f"/api/orders/{before[0]}/").json()["status"] != "scheduled", 20, describe
        )
        # Every process is up before the restart (on a busy machine beat may still be starting, and a
        # beat that cannot reach PostgreSQL at start-up exits: compose restarts it, this test would not)
        wait_until(lambda: "Sending due task" in celery_processes.text("beat"), 30, describe)
        wait_until(lambda: "Relay releasing events" in celery_processes.text("relay"), 30, describe)

        private_postgres.stop()  # web, worker and beat lose every connection; ticks fail meanwhile
        time.sleep(3)
        private_postgres.start()
        after = [create_order() for _ in range(2)]  # the first request after the restart succeeds

        def finished() -> bool:
            return all(client.get(f"/api/orders/{pk}/").json()["status"] in FINISHED for pk in before + after)

        wait_until(finished, 60, describe)
        # The whole history (each leg's events carry their leg) is the operators' view of the order.
        login = {"username": "operator", "password": login["password"]}
        operator = {"Authorization": f"Token {client.post('/api/auth/token/', json=login).json()['token']}"}
        for pk in before + after:
            body = client.get(f"/api/orders/{pk}/", headers=operator).json()
            assert body["status"] == "delivered", body
            assert events_are_clean(body), body["events"]
        # Nobody was restarted: each process reconnected by itself, the relay released everything.
        assert web.poll() is None and all(p.poll() is None for p in celery_processes.started.values())
        wait_until(lambda: client.get("/healthz").json()["relay"]["behind"] == 0, 10, describe)
    finally:
        stop(web)
