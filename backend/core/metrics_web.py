"""GET /metrics: the web process's metrics in Prometheus' text format, for Prometheus only.

The body is this process's registry (core.metrics, plus prometheus-client's process and Python
collectors) followed by the gauges read from PostgreSQL at scrape time: due legs and the oldest one's
wait, open alerts by kind, and the relay's lag, the same numbers /healthz reports.

Access: `Authorization: Bearer <METRICS_TOKEN>`, compared in constant time; a missing or wrong token is
answered 401. With METRICS_TOKEN empty, /metrics is open while DEBUG is true (a laptop) and answers 404
otherwise: a production site never shows its metrics to whoever asks. nginx answers /metrics with 404
itself (docker/nginx/default.conf); Prometheus scrapes each web container directly, inside the network.

`metrics_middleware` answers /metrics before CommonMiddleware checks the Host header against
ALLOWED_HOSTS: Prometheus finds every web replica by DNS and scrapes it by its address, which no
ALLOWED_HOSTS entry names (each replica keeps its own counters, so every one must be scraped). The
answer does not depend on the Host header; the bearer token is what guards it.
"""

import hmac
from collections.abc import Awaitable, Callable

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from orders import selectors

from . import metrics
from .health import polling_state, relay_state

BEARER = "Bearer "


def database_gauges() -> metrics.DatabaseGauges:
    """The scrape-time gauges; raises when the database cannot say (the scrape then leaves them out)."""
    polling, relay = polling_state(), relay_state()
    for state in (polling, relay):
        if "error" in state:
            raise RuntimeError(state["error"])
    return metrics.DatabaseGauges(
        due_legs=polling["due_legs"],
        oldest_due_leg_age_seconds=polling["oldest_due_age_seconds"] or 0.0,
        alerts_open=selectors.open_alert_counts(),
        relay_behind_events=relay["behind"],
        relay_stalled_seconds=relay["stalled_seconds"],
    )


# A registry of its own: only this view reads the database, never an exporter sharing REGISTRY
database_registry = CollectorRegistry(auto_describe=False)
database_registry.register(metrics.DatabaseCollector(database_gauges))


def _authorized(request: HttpRequest) -> bool:
    """Whether the request may read the metrics; Http404 when /metrics is closed (no token, no DEBUG)."""
    token = settings.METRICS_TOKEN
    if not token:
        if settings.DEBUG:
            return True
        raise Http404("Metrics are off: set METRICS_TOKEN.")
    header = request.headers.get("Authorization", "")
    given = header[len(BEARER) :].strip() if header[: len(BEARER)].lower() == BEARER.lower() else ""
    return hmac.compare_digest(given.encode(), token.encode())


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        response = HttpResponse("A valid bearer token is required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    body = generate_latest(REGISTRY) + generate_latest(database_registry)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


PATH = "/metrics"


@sync_and_async_middleware
def metrics_middleware(get_response: Callable) -> Callable:
    """/metrics, answered here (see the module's docstring); every other request goes on."""
    if iscoroutinefunction(get_response):
        view = sync_to_async(metrics_view)  # the database gauges: in the request's thread

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            if request.path == PATH:
                return await view(request)
            response: Awaitable[HttpResponseBase] = get_response(request)
            return await response

        return middleware

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        return metrics_view(request) if request.path == PATH else get_response(request)

    return sync_middleware
