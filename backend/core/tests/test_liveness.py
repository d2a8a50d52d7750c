"""Liveness: the poll-tick heartbeats /healthz judges, and the heartbeat files the container checks read.

The process tests start real Celery beat (database scheduler, as the Procfile runs it) and a real worker
on this test session's queue, with a 1 s tick, then stop one of them and watch /healthz turn 503.
"""

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import REPO, test_database_url
from django.db import connection
from django_celery_beat.models import PeriodicTask

from core import liveness
from core.celery import app as celery_app
from orders.models import Leg
from orders.schedules import install_schedules
from orders.tests import factories
from realtime.tests.conftest import stop

HEALTHCHECK = REPO / "docker" / "healthcheck.py"


def load_healthcheck():
    spec = importlib.util.spec_from_file_location("healthcheck", HEALTHCHECK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_until(condition: Callable[[], object], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.1)


# --- /healthz's judgement of the heartbeats ------------------------------------------------------


@pytest.fixture
def one_second_ticks(settings) -> int:
    """POLL_INTERVAL_SECONDS 1: heartbeats older than 3 s are stale. Returns that window."""
    settings.POLL_INTERVAL_SECONDS = 1
    return 3


@pytest.fixture
def started_long_ago(monkeypatch, one_second_ticks) -> None:
    """This web process started well before the window: a missing heartbeat is now overdue."""
    monkeypatch.setattr(liveness, "PROCESS_STARTED_AT", time.time() - 10 * one_second_ticks)


@pytest.fixture
def just_started(monkeypatch, one_second_ticks) -> None:
    monkeypatch.setattr(liveness, "PROCESS_STARTED_AT", time.time())


@pytest.mark.django_db
def test_a_deployment_that_just_started_is_healthy_before_any_tick(client, just_started):
    response = client.get("/healthz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["beat"]["last_tick_age_seconds"] is None
    assert body["workers"]["last_tick_taken_age_seconds"] is None


@pytest.mark.django_db
def test_beat_that_never_ticked_is_a_problem_once_the_window_has_passed(client, started_long_ago):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert (body["beat"]["ok"], body["workers"]["ok"]) == (False, True)
    assert len(body["problems"]) == 1
    # The container's probe asks for this process's own checks: beat's outage leaves web healthy.
    process_only = client.get("/healthz?scope=process")
    assert process_only.status_code == 200
    assert "beat" not in process_only.json()


@pytest.mark.django_db
def test_ticks_sent_but_never_taken_are_the_workers_problem(client, started_long_ago):
    liveness.record(liveness.BEAT)
    body = client.get("/healthz").json()
    assert (body["beat"]["ok"], body["workers"]["ok"]) == (True, False)
    assert body["workers"]["last_tick_taken_age_seconds"] is None


@pytest.mark.django_db
def test_a_silent_beat_is_not_blamed_on_the_workers(client, started_long_ago, one_second_ticks):
    long_ago = time.time() - 5 * one_second_ticks
    liveness.record(liveness.BEAT, at=long_ago)
    liveness.record(liveness.WORKERS, at=long_ago + 0.1)  # took the last tick beat sent
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert (body["beat"]["ok"], body["workers"]["ok"]) == (False, True)
    assert body["beat"]["last_tick_age_seconds"] >= 5 * one_second_ticks - 1


@pytest.mark.django_db
def test_workers_falling_behind_the_ticks_is_a_problem(client, started_long_ago, one_second_ticks):
    liveness.record(liveness.WORKERS, at=time.time() - 2 * one_second_ticks)
    liveness.record(liveness.BEAT)
    assert client.get("/healthz").json()["workers"]["ok"] is False
    liveness.record(liveness.WORKERS)
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_reports_the_legs_due_for_a_poll_and_the_longest_wait(client, customer, restaurants):
    assert client.get("/healthz").json()["polling"] == {"due_legs": 0, "oldest_due_age_seconds": None}
    factories.make_order(customer, restaurants["melange"])
    factories.make_order(customer, restaurants["bueno"])
    with connection.cursor() as cursor:  # the query's clock: now(), the (test's) transaction's start
        cursor.execute("SELECT now()")
        now = cursor.fetchone()[0]
    legs = list(Leg.objects.order_by("id"))
    Leg.objects.filter(pk=legs[0].pk).update(next_poll_at=now - timedelta(seconds=90))
    Leg.objects.filter(pk=legs[1].pk).update(next_poll_at=now - timedelta(seconds=5))
    Leg.objects.filter(pk__in=[leg.pk for leg in legs[2:]]).update(next_poll_at=now + timedelta(hours=1))
    polling = client.get("/healthz").json()["polling"]
    assert polling["due_legs"] == 2
    assert 90 <= polling["oldest_due_age_seconds"] < 120


# --- docker/healthcheck.py: the heartbeat files --------------------------------------------------


def run_healthcheck(role: str, heartbeat_dir: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "HEARTBEAT_DIR": str(heartbeat_dir), "HEARTBEAT_SECONDS": "10", **env}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), role], env=environ, capture_output=True, text=True, timeout=30
    )


def test_heartbeat_check_passes_a_fresh_file_and_fails_a_stale_or_missing_one(tmp_path):
    assert run_healthcheck("worker", tmp_path).returncode == 1  # missing
    (tmp_path / "worker").touch()
    assert run_healthcheck("worker", tmp_path).returncode == 0
    stale = time.time() - 61  # 6 × HEARTBEAT_SECONDS is 60
    os.utime(tmp_path / "worker", (stale, stale))
    result = run_healthcheck("worker", tmp_path)
    assert result.returncode == 1, result.stdout
    assert run_healthcheck("nonsense", tmp_path).returncode == 2


def test_beats_heartbeat_may_wait_three_poll_ticks(tmp_path):
    (tmp_path / "beat").touch()
    stale = time.time() - 90
    os.utime(tmp_path / "beat", (stale, stale))
    assert run_healthcheck("beat", tmp_path, POLL_INTERVAL_SECONDS="2").returncode == 1
    assert run_healthcheck("beat", tmp_path, POLL_INTERVAL_SECONDS="40").returncode == 0


def test_heartbeat_roles_are_read_from_the_procfile_commands_as_pid_1_runs_them():
    healthcheck = load_healthcheck()
    procfile = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line)
    # The entrypoint execs the line through env; a console script runs as `python /path/to/celery ...`.
    argv = {name: ["/usr/local/bin/python", *command.split()] for name, command in procfile.items()}
    roles = {name: healthcheck.heartbeat_role(args) for name, args in argv.items()}
    assert {name: role for name, role in roles.items() if role} == {
        "worker": "worker",
        "beat": "beat",
        "relay": "relay",
    }
    probe = healthcheck.probe_for(["python", "-m", "core.serve", "--port", "8000"], {})
    assert probe.url.endswith("/healthz?scope=process")


# --- real processes ------------------------------------------------------------------------------


class Processes:
    """Celery beat, a worker and the relay as the Procfile runs them, on this session's queue."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        celery = [sys.executable, "-m", "celery", "--app", "core"]
        args = {
            "worker": [*celery, "worker", "--loglevel", "INFO", "--concurrency", "1"]
            + ["--without-mingle", "--without-gossip"],
            "beat": [*celery, "beat", "--loglevel", "INFO", "--pidfile="]
            + ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler"]
            + ["--schedule", str(self.tmp_path / "beat-schedule")],
            "relay": [sys.executable, "backend/manage.py", "relay_events"],
        }[name]
        with open(self.log(name), "ab") as log:
            self.running[name] = subprocess.Popen(
                args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self, name: str) -> None:
        stop(self.running.pop(name))

    def healthcheck(self, role: str) -> int:
        """docker/healthcheck.py's verdict on `role`'s heartbeat file, with the processes' settings."""
        timing = {name: self.env[name] for name in ("POLL_INTERVAL_SECONDS", "HEARTBEAT_SECONDS")}
        return run_healthcheck(role, Path(self.env["HEARTBEAT_DIR"]), **timing).returncode

    def log(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def logs(self) -> str:
        return "\n".join(
            f"--- {name}\n{self.log(name).read_text()[-3000:]}"
            for name in ("beat", "worker", "relay")
            if self.log(name).exists()
        )


@pytest.fixture
def processes(transactional_db, settings, tmp_path) -> Iterator[Processes]:
    # 0.5 s as the processes see it; beat counts whole seconds, so ticks come every 1 s (window 3 s).
    settings.POLL_INTERVAL_SECONDS = 0.5
    PeriodicTask.objects.all().delete()  # a flush's post_migrate installed them with the default interval
    install_schedules()
    assert PeriodicTask.objects.get(task=liveness.POLL_TICK_TASK).interval.every == 1
    queue = celery_app.conf.task_default_queue
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(queue)
    env = {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
        "POLL_INTERVAL_SECONDS": "0.5",
        "LIMITS_KEY_PREFIX": settings.LIMITS_KEY_PREFIX,  # where this test's /healthz reads heartbeats
        "HEARTBEAT_DIR": str(tmp_path / "heartbeats"),
        "HEARTBEAT_SECONDS": "0.2",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "EMAIL_URL": "console://",
        "GEOCODER_URL": "",
    }
    running = Processes(tmp_path, env)
    yield running
    for name in list(running.running):
        running.stop(name)
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(queue)


def healthz_body(client) -> tuple[int, dict]:
    response = client.get("/healthz")
    return response.status_code, response.json()


def wait_healthy(client, processes: Processes) -> dict:
    def healthy() -> bool:
        status, body = healthz_body(client)
        return (
            status == 200
            and body["beat"]["last_tick_age_seconds"] is not None
            and body["workers"]["last_tick_taken_age_seconds"] is not None
        )

    wait_until(healthy, 60, lambda: f"{healthz_body(client)}\n{processes.logs()}")
    return healthz_body(client)[1]


def file_age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


@pytest.mark.slow
def test_healthz_turns_503_when_beat_stops(client, processes, started_long_ago):
    processes.start("worker")
    processes.start("beat")
    body = wait_healthy(client, processes)
    assert body["beat"]["last_tick_age_seconds"] <= 3
    # The container checks see both processes refresh their heartbeat files.
    assert (processes.healthcheck("worker"), processes.healthcheck("beat")) == (0, 0), processes.logs()

    processes.stop("beat")
    wait_until(lambda: healthz_body(client)[0] == 503, 15, lambda: str(healthz_body(client)))
    body = healthz_body(client)[1]
    assert (body["beat"]["ok"], body["workers"]["ok"]) == (False, True), body
    assert body["beat"]["last_tick_age_seconds"] >= 3  # rounded to 0.1 s
    assert len(body["problems"]) == 1
    wait_until(lambda: processes.healthcheck("beat") == 1, 10, processes.logs)  # 3 ticks, as /healthz
    assert processes.healthcheck("worker") == 0


@pytest.mark.slow
def test_healthz_turns_503_when_ticks_are_sent_but_no_worker_takes_them(client, processes, started_long_ago):
    processes.start("worker")
    processes.start("beat")
    wait_healthy(client, processes)
    processes.stop("worker")  # beat goes on sending ticks to a queue nobody consumes
    wait_until(lambda: healthz_body(client)[0] == 503, 15, lambda: str(healthz_body(client)))
    body = healthz_body(client)[1]
    assert (body["beat"]["ok"], body["workers"]["ok"]) == (True, False), body
    assert body["workers"]["last_tick_taken_age_seconds"] >= 3  # rounded to 0.1 s
    assert len(body["problems"]) == 1


@pytest.mark.slow
def test_a_running_relay_refreshes_its_heartbeat_file(processes):
    heartbeat = Path(processes.env["HEARTBEAT_DIR"]) / "relay"
    processes.start("relay")
    wait_until(heartbeat.exists, 30, processes.logs)
    first = heartbeat.stat().st_mtime
    wait_until(lambda: heartbeat.stat().st_mtime > first, 10, processes.logs)
    assert processes.healthcheck("relay") == 0
    processes.stop("relay")
    wait_until(lambda: file_age(heartbeat) > 1.5, 5, processes.logs)  # 6 × 0.2 s without a refresh
    assert processes.healthcheck("relay") == 1
