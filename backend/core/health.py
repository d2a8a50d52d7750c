"""GET /healthz: is each engine this process depends on reachable? 200 when all are, else 503.

It also says how far the event relay (orders.relay) is behind: seqs committed above its mark and how long
the mark has not moved. That is information for monitoring, not a reason to take this process out.
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

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 2


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
    healthy = all(result["ok"] for result in results.values())
    body: dict[str, object] = {"status": "ok" if healthy else "unavailable", "checks": results}
    if results["database"]["ok"]:
        body["relay"] = _relay_state()
    return JsonResponse(body, status=200 if healthy else 503)


def _relay_state() -> dict[str, object]:
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
