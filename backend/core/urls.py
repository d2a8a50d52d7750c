from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from orders.webhooks import provider_webhook
from realtime import api as realtime_api
from realtime import views as realtime_views

from . import api, auth
from .health import healthz

urlpatterns = [
    path("", realtime_views.dashboard, name="dashboard"),
    path("orders/<int:order_id>/track/", realtime_views.track_order, name="track-order"),
    path("t/<str:token>/", realtime_views.shared_track, name="track-shared"),
    path("t/<str:token>/order.json", realtime_views.shared_order, name="track-shared-order"),
    path("courier/", realtime_views.courier_page, name="courier"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script as a file (?script): the Content-Security-Policy runs no
    # inline script. api_docs.html drops the package page's inline <style> for the same reason.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api-schema", template_name="api_docs.html"),
        name="api-docs",
    ),
    path("api/", api.index, name="api-index"),
    path("api/auth/token/", auth.TokenView.as_view(), name="token"),
    path("api/auth/logout/", auth.LogoutView.as_view(), name="logout-token"),
    path("api/auth/logout-all/", auth.LogoutAllView.as_view(), name="logout-all-tokens"),
    path("api/realtime/ticket/", realtime_api.TicketView.as_view(), name="realtime-ticket"),
    path("api/", include("orders.urls")),
    path("api/", include("webhooks.urls")),
    # Last: any other path under /api/. Only with a trailing slash, so APPEND_SLASH still redirects
    # `/api/orders` to `/api/orders/`.
    path("api/<path:unknown>/", api.not_found),
    path("webhooks/<str:provider_name>/", provider_webhook, name="provider-webhook"),
]
