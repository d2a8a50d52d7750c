"""GET /healthz: is this deployment alive and doing its work? 200 when it is, else 503.

Two scopes, for two callers:

- `GET /healthz?scope=process` answers for this web process only: are PostgreSQL, Redis and the broker
  reachable from it? The container health check (docker/healthcheck.py) asks this, so nginx, which
  waits for a healthy web, and Docker judge web by web alone: a beat or worker outage must not take
  the site off.
- `GET /healthz` (what monitoring watches) adds the deployment's liveness, and answers 503 when
  - an engine is unreachable;
  - beat has sent no poll tick for 3 tick intervals (`beat`);
  - ticks were sent for 3 intervals after the last one a worker took (`workers`): workers down, stuck,
    or too busy to take a tick before it expired. While beat itself is silent, that is beat's problem,
    not the workers'.
  The tick interval is POLL_INTERVAL_SECONDS in whole seconds, at least 1, as orders.schedules
  installs it. A heartbeat not recorded yet counts from this process's start: a deployment that just
  started is healthy until 3 intervals have passed without one. The body says why (`problems`).

It also reports, for information: the ages of the heartbeats (core.liveness), how many legs are due for
a poll and how long the most overdue has waited (`polling`), and how far the event relay (orders.relay)
is behind: seqs committed above its mark and how long the mark has not moved.
"""

import logging
import time
from collections.abc import Callable

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection

from . import liveness

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2
STALE_AFTER_TICKS = 3


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_redis() -> None:
    client = redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=CHECK_TIMEOUT_SECONDS, socket_connect_timeout=CHECK_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    finally:
        client.close()


def _check_broker() -> None:
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=CHECK_TIMEOUT_SECONDS) as broker:
        broker.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_SECONDS)


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
}


def _run(check: Callable[[], None]) -> dict[str, object]:
    started = time.perf_counter()
    try:
        check()
    except Exception as error:  # any failure of the engine is reported, not raised
        logger.warning("Health check %s failed: %s", check.__name__, error)
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results = {name: _run(check) for name, check in CHECKS.items()}
    problems = [f"{name} unreachable" for name, result in results.items() if not result["ok"]]
    body: dict[str, object] = {"checks": results}
    if request.GET.get("scope") != "process":
        if results["redis"]["ok"]:
            beat, workers = _liveness(problems)
            body |= {"beat": beat, "workers": workers}
        if results["database"]["ok"]:
            body |= {"polling": polling_state(), "relay": relay_state()}
    body = {"status": "unavailable" if problems else "ok", "problems": problems, **body}
    return JsonResponse(body, status=503 if problems else 200)


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else round(max(now - at, 0.0), 1)


def _liveness(problems: list[str]) -> tuple[dict[str, object], dict[str, object]]:
    """The beat and workers entries; appends to `problems` what makes this deployment unhealthy."""
    try:
        seen = liveness.last_seen()
    except redis.RedisError as error:
        problems.append("heartbeats unreadable")
        failed = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        return failed, failed
    now = time.time()
    window = STALE_AFTER_TICKS * liveness.tick_interval_seconds()
    sent, taken = seen[liveness.BEAT], seen[liveness.WORKERS]
    beat_silent = now - (sent or liveness.PROCESS_STARTED_AT)
    beat_ok = beat_silent <= window
    if not beat_ok:
        problems.append(
            f"beat has sent no poll tick for {beat_silent:.0f}s"
            if sent
            else f"beat has sent no poll tick since this process started {beat_silent:.0f}s ago"
        )
    # Ticks sent after the last one taken; none sent (beat silent): nothing for the workers to take.
    untaken = (sent or 0) - (taken or liveness.PROCESS_STARTED_AT)
    workers_ok = sent is None or untaken <= window
    if not workers_ok:
        problems.append(f"no worker has taken the poll ticks beat sent over the last {untaken:.0f}s")
    return (
        {"ok": beat_ok, "last_tick_age_seconds": _age(sent, now), "stale_after_seconds": window},
        {"ok": workers_ok, "last_tick_taken_age_seconds": _age(taken, now), "stale_after_seconds": window},
    )


def polling_state() -> dict[str, object]:
    """Legs due for a poll now (orders.sync.leases claims `next_poll_at <= now`; a claimed leg's is its
    lease end, in the future) and how long the most overdue has waited. One query on the `leg_due` index:
    now(), stable, can bound an index scan; the volatile clock_timestamp() could not.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                """SELECT COUNT(*), EXTRACT(EPOCH FROM now() - MIN(next_poll_at))
                   FROM orders_leg WHERE next_poll_at <= now()"""
            )
            due, oldest = cursor.fetchone()
    except Exception as error:  # an unmigrated database: reported, not raised
        return {"error": f"{type(error).__name__}: {error}"}
    return {"due_legs": due, "oldest_due_age_seconds": round(float(oldest), 1) if due else None}


def relay_state() -> dict[str, object]:
    """The released mark, how many seqs lie above it, and the mark's age while any do (measured on the
    wall clock: now() is the transaction's start, older than a mark moved within it)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                """SELECT mark.seq, mark.updated_at, (SELECT MAX(seq) FROM orders_orderevent),
                          clock_timestamp()
                   FROM orders_eventmark AS mark WHERE mark.name = 'release'"""
            )
            row = cursor.fetchone()
    except Exception as error:  # an unmigrated database: reported, not raised
        return {"error": f"{type(error).__name__}: {error}"}
    if row is None:
        return {"mark": 0, "behind": 0, "stalled_seconds": 0}
    mark, moved_at, latest, now = row
    behind = max((latest or 0) - mark, 0)
    stalled = round((now - moved_at).total_seconds(), 1) if behind else 0
    return {"mark": mark, "behind": behind, "stalled_seconds": stalled}
