"""Prometheus metrics (prometheus-client): every metric of the service, defined once here.

Each process kind exposes what it counts:

- web: `GET /metrics` (core.metrics_web), this process's registry plus the gauges read from PostgreSQL at
  scrape time (`DatabaseCollector`), behind METRICS_TOKEN;
- Celery worker: an exporter on METRICS_WORKER_PORT, the sum over its pool children, which write their
  values to files (prometheus-client's multiprocess mode, set up by core.celery_metrics);
- Celery beat and the relay: an exporter on METRICS_BEAT_PORT / METRICS_RELAY_PORT (`start_exporter`).

The code that counts imports this module and calls the objects below (`metrics.ORDERS_CREATED.inc()`).
Nothing here imports the orders or realtime apps: the lowest layers (orders.providers) count too.
"""

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

PREFIX = "liveops"
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LEGS_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# --- web: orders and alerts (counted when the service's transaction commits) ---------------------------

# Orders created (orders.services.order_create), counted on commit
ORDERS_CREATED = Counter(f"{PREFIX}_orders_created", "Orders created (committed).")
# Order status changes by the new status (orders.services._transition), counted on commit
ORDER_STATUS_CHANGES = Counter(
    f"{PREFIX}_order_status_changes", "Order status changes (committed), by new status.", ["status"]
)
# Alerts raised by kind (orders.alerts.raise_alert), counted on commit
ALERTS_RAISED = Counter(f"{PREFIX}_alerts_raised", "Alerts raised (committed), by kind.", ["kind"])

# --- worker: provider calls and poll ticks -----------------------------------------------------------

# Calls to providers and the geocoder (orders.providers.base, orders.geocoding), by outcome
PROVIDER_REQUESTS = Counter(
    f"{PREFIX}_provider_requests",
    "HTTP calls to providers and the geocoder, by provider, operation and outcome.",
    ["provider", "operation", "outcome"],
)
# How long those calls took, whatever their outcome
PROVIDER_REQUEST_SECONDS = Histogram(
    f"{PREFIX}_provider_request_seconds",
    "Duration of HTTP calls to providers and the geocoder.",
    ["provider", "operation"],
    buckets=SECONDS_BUCKETS,
)
# One beat poll tick's duration (orders.sync.tick.poll_due_legs), empty ticks included
POLL_TICK_SECONDS = Histogram(
    f"{PREFIX}_poll_tick_seconds", "Duration of poll ticks.", buckets=SECONDS_BUCKETS
)
# Legs one poll tick claimed and polled
POLL_TICK_LEGS = Histogram(f"{PREFIX}_poll_tick_legs", "Legs polled per poll tick.", buckets=LEGS_BUCKETS)

# --- worker: Celery tasks (signals connected by core.celery_metrics) ---------------------------------

# Task run time, from task_prerun to task_postrun, by task name
CELERY_TASK_SECONDS = Histogram(
    f"{PREFIX}_celery_task_seconds",
    "Duration of Celery task runs, by task.",
    ["task"],
    buckets=SECONDS_BUCKETS,
)
# Task runs ended, by task and state (success, failure, retry)
CELERY_TASKS = Counter(
    f"{PREFIX}_celery_tasks", "Celery task runs ended, by task and state.", ["task", "state"]
)

# --- worker: outgoing webhooks (webhooks.services) ---------------------------------------------------

# Deliveries to partners' endpoints, by outcome (delivered, retry, failed, refused, disabled)
WEBHOOK_DELIVERIES = Counter(
    f"{PREFIX}_webhook_deliveries", "Outgoing webhook deliveries, by outcome.", ["outcome"]
)
# How long a delivery's HTTP call took
WEBHOOK_DELIVERY_SECONDS = Histogram(
    f"{PREFIX}_webhook_delivery_seconds", "Duration of outgoing webhook deliveries.", buckets=SECONDS_BUCKETS
)

# --- relay and web: realtime --------------------------------------------------------------------------

# Events the relay handed to the channel layer (realtime.broadcast.publish_released)
EVENTS_PUBLISHED = Counter(
    f"{PREFIX}_realtime_events_published", "Order events handed to the channel layer by the relay."
)
# Frames written to WebSockets, by stream (operators, order, courier, tracking)
FRAMES_SENT = Counter(
    f"{PREFIX}_realtime_frames_sent", "Frames written to WebSockets, by stream.", ["stream"]
)
# WebSockets open now, by stream; summed over live processes should the web process ever be several
SOCKETS_OPEN = Gauge(
    f"{PREFIX}_realtime_sockets_open", "WebSockets open, by stream.", ["stream"], multiprocess_mode="livesum"
)

# --- web: read from PostgreSQL at scrape time (DatabaseCollector) --------------------------------------

DUE_LEGS = f"{PREFIX}_due_legs"
OLDEST_DUE_LEG_AGE = f"{PREFIX}_oldest_due_leg_age_seconds"
ALERTS_OPEN = f"{PREFIX}_alerts_open"
RELAY_BEHIND = f"{PREFIX}_relay_behind_events"
RELAY_STALLED = f"{PREFIX}_relay_stalled_seconds"


# --- counting helpers ---------------------------------------------------------------------------------


def observe_provider_request(*, provider: str, operation: str, outcome: str, seconds: float) -> None:
    """One HTTP call to a provider or the geocoder: counted by outcome, timed whatever the outcome."""
    PROVIDER_REQUESTS.labels(provider=provider, operation=operation, outcome=outcome).inc()
    PROVIDER_REQUEST_SECONDS.labels(provider=provider, operation=operation).observe(seconds)


def http_outcome(status: int) -> str:
    """The outcome label of an answered call that was not usable: its status class."""
    return "http_5xx" if status >= 500 else "http_4xx" if status >= 400 else "bad_answer"


# --- Celery task signals (connected in worker processes by core.celery_metrics) ------------------------

_task_started: dict[str, float] = {}  # task id -> perf_counter at task_prerun, in this (child) process


def task_started(*, task_id: str, **kwargs: Any) -> None:
    """task_prerun receiver."""
    _task_started[task_id] = time.perf_counter()


def task_ended(*, task_id: str, task: Any, state: str | None = None, **kwargs: Any) -> None:
    """task_postrun receiver: the run's duration, whatever its end; a success is counted here, failures
    and retries by their own signals (a task killed by its hard time limit ends without task_postrun)."""
    started = _task_started.pop(task_id, None)
    if started is not None:
        CELERY_TASK_SECONDS.labels(task=task.name).observe(time.perf_counter() - started)
    if state == "SUCCESS":
        CELERY_TASKS.labels(task=task.name, state="success").inc()


def task_failed(*, sender: Any, **kwargs: Any) -> None:
    """task_failure receiver (in the pool child, or in the worker's main process for a time limit)."""
    CELERY_TASKS.labels(task=getattr(sender, "name", "unknown"), state="failure").inc()


def task_retried(*, sender: Any, **kwargs: Any) -> None:
    """task_retry receiver."""
    CELERY_TASKS.labels(task=getattr(sender, "name", "unknown"), state="retry").inc()


# --- the database gauges of the web's /metrics ---------------------------------------------------------


@dataclass(frozen=True)
class DatabaseGauges:
    """What the web process reads from PostgreSQL at each scrape (core.metrics_web.database_gauges)."""

    due_legs: int
    oldest_due_leg_age_seconds: float  # 0 while no leg is due
    alerts_open: dict[str, int] = field(default_factory=dict)  # every alert kind, zeros included
    relay_behind_events: int = 0
    relay_stalled_seconds: float = 0.0


class DatabaseCollector:
    """Gauges read at scrape time rather than kept in memory: any web process tells the same numbers,
    and they stay right across restarts. A database that cannot be read leaves them out of the scrape
    (logged): their absence is what an alert on them notices."""

    def __init__(self, read: Callable[[], DatabaseGauges]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        try:
            gauges = self.read()
        except Exception as error:  # the rest of the scrape is still worth having
            logger.warning("Metrics: database gauges unavailable: %s", error)
            return []
        alerts = GaugeMetricFamily(ALERTS_OPEN, "Open (not cleared) alerts, by kind.", labels=["kind"])
        for kind, count in sorted(gauges.alerts_open.items()):
            alerts.add_metric([kind], count)
        return [
            GaugeMetricFamily(DUE_LEGS, "Legs whose next poll is due now.", value=gauges.due_legs),
            GaugeMetricFamily(
                OLDEST_DUE_LEG_AGE,
                "How long the most overdue leg has been due (0: none due).",
                value=gauges.oldest_due_leg_age_seconds,
            ),
            alerts,
            GaugeMetricFamily(
                RELAY_BEHIND,
                "Committed events above the relay's released mark.",
                value=gauges.relay_behind_events,
            ),
            GaugeMetricFamily(
                RELAY_STALLED,
                "How long the relay's mark has not moved while events wait (0: caught up).",
                value=gauges.relay_stalled_seconds,
            ),
        ]


# --- exporters of worker, beat and relay -------------------------------------------------------------


def start_exporter(kind: str, port: int, registry: CollectorRegistry = REGISTRY) -> bool:
    """Serve `registry` over HTTP on METRICS_HOST:`port` from a daemon thread; port 0: no exporter.

    A port that cannot be bound (taken by another process on this host) is logged, never raised: the
    process's work matters more than its metrics. True when the exporter runs.
    """
    if not port:
        logger.info("Metrics exporter of the %s is off (port 0)", kind)
        return False
    try:
        start_http_server(port, addr=settings.METRICS_HOST, registry=registry)
    except OSError as error:
        host = settings.METRICS_HOST
        logger.error("Metrics exporter of the %s not started on %s:%s: %s", kind, host, port, error)
        return False
    logger.info("Metrics exporter of the %s on %s:%s", kind, settings.METRICS_HOST, port)
    return True


def serve_worker(**kwargs: Any) -> None:
    """worker_ready (the main process, pool children started): serve the sum of every process's values
    (multiprocess mode, core.celery_metrics), or this process's own where that mode is off."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_exporter("worker", settings.METRICS_WORKER_PORT, registry)


def serve_beat(**kwargs: Any) -> None:
    """beat_init."""
    start_exporter("beat", settings.METRICS_BEAT_PORT)


def worker_child_exited(*, pid: int, **kwargs: Any) -> None:
    """worker_process_shutdown: a pool child is gone; its live gauges stop counting (its counters do not)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
