"""Structured logs (core.logs) and request ids (core.request_ids): what the lines carry, in the web
process, in eager tasks and in a real Celery worker and beat."""

import io
import json
import logging
import logging.config
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from conftest import test_database_url
from django.test import AsyncClient, Client

from core.celery import app as celery_app
from core.logs import ContextFilter, current_ids, formatter_config, log_context
from core.tests.error_urls import FAILURE_MESSAGE
from core.tests.test_settings import load_settings
from orders import tasks
from orders.models import Order
from orders.tests import factories
from realtime.tests.conftest import stop

BACKEND = Path(__file__).resolve().parents[2]
REPO = BACKEND.parent
GENERATED_ID = re.compile(r"[0-9a-f]{32}")

LogLines = Callable[[], list[dict]]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """Every record reaching the root logger, formatted as LOG_FORMAT=json formats it, parsed back."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.config.DictConfigurator({}).configure_formatter(formatter_config("json")))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def run_with_settings(code: str, **environment: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter whose logging is configured from settings.LOGGING, as Django does."""
    prelude = (
        "import logging\n"
        "from django.conf import settings\n"
        "from django.utils.log import configure_logging\n"
        "configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=BACKEND,
        env={**os.environ, **environment, "DJANGO_SETTINGS_MODULE": "core.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


ORDER_CODE = """
from core.logs import log_context
logger = logging.getLogger("orders.example")
with log_context(request_id="req-1", order_id=7, leg_id=3):
    logger.info("Leg %s moved", 3, extra={"provider": "melange"})
    try:
        1 / 0
    except ZeroDivisionError:
        logger.exception("Could not apply")
logger.warning("Outside any order")
"""


def test_json_format_writes_one_object_per_line_with_the_bound_ids():
    result = run_with_settings(ORDER_CODE, LOG_FORMAT="json")
    assert result.returncode == 0, result.stderr
    moved, failed, outside = [json.loads(line) for line in result.stderr.splitlines()]

    assert datetime.fromisoformat(moved["time"]).utcoffset() is not None
    assert moved["level"] == "INFO" and moved["logger"] == "orders.example"
    assert moved["message"] == "Leg 3 moved"
    assert (moved["request_id"], moved["order_id"], moved["leg_id"]) == ("req-1", 7, 3)
    assert moved["provider"] == "melange"  # an extra= field
    assert "exc_info" not in moved

    assert failed["level"] == "ERROR" and failed["order_id"] == 7
    assert "ZeroDivisionError: division by zero" in failed["exc_info"]

    assert outside["message"] == "Outside any order"
    assert not {"request_id", "order_id", "leg_id"} & set(outside), "ids are unbound after the block"


def test_text_format_stays_plain_with_the_ids_appended():
    result = run_with_settings(ORDER_CODE, LOG_FORMAT="text")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert re.search(r" INFO orders\.example: Leg 3 moved \[req=req-1 order=7 leg=3\]$", lines[0])
    assert lines[1].endswith("ERROR orders.example: Could not apply [req=req-1 order=7 leg=3]")
    assert "ZeroDivisionError: division by zero" in result.stderr  # the traceback follows, as ever
    assert lines[-1].endswith("WARNING orders.example: Outside any order")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_unknown_log_format_is_refused_at_start_up():
    result = load_settings(LOG_FORMAT="xml")
    assert result.returncode != 0
    assert "LOG_FORMAT" in result.stderr.splitlines()[-1]


def test_log_context_refuses_an_unknown_id():
    with pytest.raises(TypeError, match="customer_email"), log_context(customer_email="a@example.com"):
        pass


# --- request ids -------------------------------------------------------------------------------------


def test_response_and_log_lines_share_a_generated_request_id(db, log_lines, client_for, customer):
    response = client_for(customer).get("/api/orders/987654/")
    assert response.status_code == 404
    request_id = response["X-Request-ID"]
    assert GENERATED_ID.fullmatch(request_id)

    (not_found,) = [line for line in log_lines() if line["logger"] == "django.request"]
    assert not_found["request_id"] == request_id
    assert not_found["order_id"] == 987654, "the order view bound the order it was asked for"
    assert "987654" in not_found["message"]


@pytest.mark.parametrize(
    "given",
    ["7f1c2e9a-4b1d-4c8e-9a57-0e3d0c1b2a44", "edge.lb:trace_17-a", "x" * 128],
)
def test_a_sane_request_id_is_kept(log_lines, given):
    response = Client().get("/no-such-page/", headers={"X-Request-ID": given})
    assert response.status_code == 404
    assert response["X-Request-ID"] == given
    assert [line["request_id"] for line in log_lines() if line["logger"] == "django.request"] == [given]


@pytest.mark.parametrize("given", ["x" * 129, "two words", "a;b", "<script>", ""])
def test_an_insane_request_id_is_replaced(log_lines, given):
    response = Client().get("/no-such-page/", headers={"X-Request-ID": given})
    assert GENERATED_ID.fullmatch(response["X-Request-ID"])
    assert [line["request_id"] for line in log_lines() if line["logger"] == "django.request"] == [
        response["X-Request-ID"]
    ]


def test_each_request_gets_its_own_id_which_ends_with_it():
    client = Client()
    ids = {client.get("/no-such-page/")["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3
    assert current_ids() == {}, "the thread that served them logs on without their ids"
    async_to_sync(AsyncClient().get)("/no-such-page/")
    assert current_ids() == {}


@pytest.mark.urls("core.tests.error_urls")
def test_a_server_error_carries_the_request_id_in_its_header_and_its_log_line(log_lines):
    response = Client(raise_request_exception=False).get("/fail/", headers={"X-Request-ID": "fail-1"})
    assert response.status_code == 500
    assert response["X-Request-ID"] == "fail-1"
    (error,) = [line for line in log_lines() if line["logger"] == "django.request"]
    assert error["level"] == "ERROR" and error["request_id"] == "fail-1"
    assert f"RuntimeError: {FAILURE_MESSAGE}" in error["exc_info"]


def test_the_async_path_binds_and_echoes_the_request_id(log_lines):
    """Under ASGI (daphne) the middleware runs on the event loop; AsyncClient takes that path."""
    response = async_to_sync(AsyncClient().get)("/no-such-page/", headers={"X-Request-ID": "async-1"})
    assert response.status_code == 404
    assert response["X-Request-ID"] == "async-1"
    assert [line["request_id"] for line in log_lines() if line["logger"] == "django.request"] == ["async-1"]


# --- tasks -------------------------------------------------------------------------------------------


def test_an_eager_task_logs_its_ids_and_gives_the_callers_back(log_lines):
    with log_context(request_id="req-eager", order_id=1):
        result = tasks.locate_order.apply(args=(42,))
        assert current_ids() == {"request_id": "req-eager", "order_id": 1}, "the caller's ids are back"
    assert result.successful()
    (done,) = [line for line in log_lines() if line.get("task") == "orders.locate_order"]
    assert done["request_id"] == "req-eager"
    assert done["order_id"] == 42, "the task's order_id argument"
    assert done["task_id"] == result.id
    assert current_ids() == {}


def read_json_lines(path: Path) -> list[dict]:
    """Every line of a process's stderr, each of which must be a JSON object."""
    lines = path.read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON log line: {line!r}\n--- whole log ---\n{path.read_text()[-4000:]}")
    return parsed


def wait_for_line(path: Path, process: subprocess.Popen, found: Callable[[dict], bool]) -> dict:
    deadline = time.monotonic() + 60
    while True:
        matching = [line for line in read_json_lines(path) if found(line)]
        if matching:
            return matching[0]
        assert process.poll() is None, f"exited with {process.returncode}:\n{path.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no such line yet:\n{path.read_text()[-4000:]}"
        time.sleep(0.1)


def start_celery(arguments: list[str], tmp_path: Path, name: str, **environment: str) -> subprocess.Popen:
    """A Celery process of this project with LOG_FORMAT=json: stdout (the banner) and stderr (the log)
    in separate files."""
    env = {
        **os.environ,
        "LOG_FORMAT": "json",
        "SENTRY_DSN": "",
        "PYTHONPATH": os.pathsep.join([str(BACKEND), str(REPO), os.environ.get("PYTHONPATH", "")]),
        # Celery warns about root before logging is set up; the containers run as an unprivileged user
        "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges",
        **environment,
    }
    with open(tmp_path / f"{name}.out", "wb") as out, open(tmp_path / f"{name}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "--app", "core", *arguments],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
        )


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path  # its stderr

    def wait_for_line(self, found: Callable[[dict], bool]) -> dict:
        return wait_for_line(self.log, self.process, found)


@pytest.fixture
def json_worker(transactional_db, tmp_path, settings) -> Iterator[Worker]:
    """A real worker (solo pool: tasks run in the process that logs) on this session's queue, LOG_FORMAT
    json."""
    queue = celery_app.conf.task_default_queue
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_purge(queue)
    nowhere = "http://127.0.0.1:9"  # providers refuse at once: no task waits on one
    process = start_celery(
        ["worker", "-P", "solo", "-Q", queue, "--loglevel", "INFO", "--without-mingle", "--without-gossip"],
        tmp_path,
        "worker",
        DATABASE_URL=test_database_url(),
        CELERY_TASK_DEFAULT_QUEUE=queue,
        GEOCODER_URL="",
        EMAIL_URL="console://",
        PROVIDER_TIMEOUT_SECONDS="1",
        CHANNEL_LAYER_PREFIX=settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
        **{f"{name.upper()}_URL": nowhere for name in settings.PROVIDERS},
    )
    worker = Worker(process, tmp_path / "worker.err")
    try:
        worker.wait_for_line(lambda line: line["message"].endswith(" ready."))
        yield worker
    finally:
        stop(process)
    read_json_lines(worker.log)  # to the last line, shutdown included


@pytest.mark.slow
def test_tasks_log_their_ids_and_those_a_request_enqueued_its_request_id(json_worker, client_for, customer):
    process_lines = read_json_lines(json_worker.log)
    assert any(line["logger"].startswith("celery") for line in process_lines), "Celery's own lines: JSON"
    catalogue = factories.make_catalogue()
    body = {
        "items": [{"dish": factories.dish(catalogue["melange"]).pk, "quantity": 1}],
        "delivery_address": "Sahaidachnoho St, 10, Kyiv",
    }
    response = client_for(customer).post("/api/orders/", body, format="json", HTTP_X_REQUEST_ID="order-req-1")
    assert response.status_code == 201, response.content
    assert response["X-Request-ID"] == "order-req-1"
    order = Order.objects.get()

    # Its follow-ups, sent as the relay sends them: the order is due at once, so the task polls the
    # (refusing) provider, and says so.
    factories.release(order)
    done = json_worker.wait_for_line(
        lambda line: line.get("task") == "orders.orders_created" and "succeeded" in line["message"]
    )
    assert done["logger"] == "celery.app.trace"
    assert done["task_id"] and done["task_id"] in done["message"]
    assert datetime.fromisoformat(done["time"]).utcoffset() is not None
    # Order code inside the task: the task's id, and the leg where a provider's answer was applied
    order_lines = [
        line
        for line in read_json_lines(json_worker.log)
        if line["logger"].startswith("orders.") and line.get("task_id") == done["task_id"]
    ]
    assert order_lines, "order code logged inside the task"
    leg_ids = set(order.legs.values_list("pk", flat=True))
    assert any(line.get("leg_id") in leg_ids for line in order_lines)

    # A task a request enqueues carries the request's id: the customer cancels, the email follows.
    def email_sent(line: dict) -> bool:
        return line.get("task") == "orders.send_order_email" and "succeeded" in line["message"]

    received = json_worker.wait_for_line(email_sent)  # the follow-ups' own: no request behind it
    assert "request_id" not in received
    response = client_for(customer).post(f"/api/orders/{order.pk}/cancel/", HTTP_X_REQUEST_ID="cancel-req-1")
    assert response.status_code == 200, response.content
    emailed = json_worker.wait_for_line(
        lambda line: email_sent(line) and line["task_id"] != received["task_id"]
    )
    assert emailed["request_id"] == "cancel-req-1"
    assert emailed["order_id"] == order.pk, "the task's order_id argument"


@pytest.mark.slow
def test_beat_logs_json_too(tmp_path):
    process = start_celery(
        [
            "beat",
            "--loglevel",
            "INFO",
            "--scheduler",
            "celery.beat:PersistentScheduler",
            "--schedule",
            str(tmp_path / "beat-schedule"),
            "--pidfile=",
        ],
        tmp_path,
        "beat",
    )
    try:
        started = wait_for_line(tmp_path / "beat.err", process, lambda line: line["logger"] == "celery.beat")
    finally:
        stop(process)
    assert started["level"] == "INFO"
    read_json_lines(tmp_path / "beat.err")
