"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
# Django's advice for ASGI: no persistent connections. Each HTTP request runs its sync code in a thread
# of its own, so a kept connection is never reused; it lingers until PostgreSQL refuses new clients
# ("too many clients already", measured with bench.rest_create). Worker and beat keep DB_CONN_MAX_AGE.
os.environ["DB_CONN_MAX_AGE"] = "0"
django_asgi_app = get_asgi_application()

# Imported after Django is set up: these modules use models and settings.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from realtime.auth import BrowserOriginValidator, TokenAuthMiddleware  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402

http_app = ASGIStaticFilesHandler(django_asgi_app) if settings.SERVE_STATIC else django_asgi_app

application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": BrowserOriginValidator(
            AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)
