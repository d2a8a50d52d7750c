"""ASGI entry point: HTTP through Django (core.http: on a pool of HTTP threads), WebSockets through Channels.

Around both, core.proxies applies (from trusted proxies only) and removes the forwarding headers; HTTP
bodies over MAX_REQUEST_BYTES get 413 from core.asgi_limits before Django reads them.
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
django.setup(set_prefix=False)

# Imported after Django is set up: these modules use models and settings.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.signals import request_finished  # noqa: E402
from django.db import connections  # noqa: E402

from core.asgi_limits import BodySizeLimitMiddleware  # noqa: E402
from core.http import HttpHandler, on_http_thread  # noqa: E402
from core.proxies import ProxyHeadersMiddleware  # noqa: E402
from realtime.auth import BrowserOriginValidator, WebSocketAuthMiddleware  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402


def close_request_connections(**kwargs: object) -> None:
    """Closes the database connections of a thread, other than an HTTP thread, that ends an HTTP request.

    core.http closes whole responses on the HTTP thread that ran the view, which keeps its connection
    (checked by Django's own request_finished receiver). A streamed response is closed in a thread of
    that request's own: a connection opened there (a stream reading the database, say) would never be
    used again; kept open, such connections lingered until PostgreSQL refused new clients ("too many
    clients already").
    """
    if on_http_thread():
        return
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


request_finished.connect(close_request_connections)

django_http = HttpHandler(threads=settings.WEB_HTTP_THREADS)
http_app = ASGIStaticFilesHandler(django_http) if settings.SERVE_STATIC else django_http

application = ProxyHeadersMiddleware(
    ProtocolTypeRouter(
        {
            "http": BodySizeLimitMiddleware(http_app, settings.MAX_REQUEST_BYTES),
            "websocket": BrowserOriginValidator(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))),
        }
    ),
    trusted=settings.TRUSTED_PROXIES,
)
