"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Around both, core.proxies applies (from trusted proxies only) and removes the forwarding headers; HTTP
bodies over MAX_REQUEST_BYTES get 413 from core.asgi_limits before Django reads them.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
django_asgi_app = get_asgi_application()

# Imported after Django is set up: these modules use models and settings.
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.signals import request_finished  # noqa: E402
from django.db import connections  # noqa: E402

from core.asgi_limits import BodySizeLimitMiddleware  # noqa: E402
from core.proxies import ProxyHeadersMiddleware  # noqa: E402
from realtime.auth import BrowserOriginValidator, WebSocketAuthMiddleware  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402


def close_request_connections(**kwargs: object) -> None:
    """Closes an HTTP request's database connection when it ends, whatever DB_CONN_MAX_AGE says.

    Under ASGI each HTTP request runs its sync code in a thread of its own, so its connection is never
    reused; kept open, it lingers until PostgreSQL refuses new clients ("too many clients already",
    measured with bench.rest_create) - hence Django's advice to disable persistent connections with
    ASGI. WebSocket consumers do not send request_finished: their few pool threads keep theirs.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


request_finished.connect(close_request_connections)

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProxyHeadersMiddleware(
    ProtocolTypeRouter(
        {
            "http": BodySizeLimitMiddleware(http_app, settings.MAX_REQUEST_BYTES),
            "websocket": BrowserOriginValidator(WebSocketAuthMiddleware(URLRouter(websocket_urlpatterns))),
        }
    ),
    trusted=settings.TRUSTED_PROXIES,
)
