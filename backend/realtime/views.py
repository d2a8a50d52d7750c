"""The operator dashboard, the tracking page (signed in, or through a shared link) and the courier page:
server-rendered shells; the JS does the rest.

A shared link (`/t/<token>/`) needs no sign-in: the token decides the order, and nothing else of its
customer is reachable from it. Unknown, revoked and expired links get the same friendly 404 page, so a
link's page tells nothing of why it stopped working.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.cache import never_cache

from orders import selectors
from orders.models import Alert, Order
from orders.serializers import PublicOrderDetailSerializer
from orders.status import PIPELINE, OrderStatus


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        latest = selectors.orders_visible_to(request.user).order_by("-created_at").first()
        return render(request, "operators_only.html", {"latest": latest}, status=403)
    columns = [*PIPELINE, OrderStatus.FAILED, OrderStatus.CANCELLED]
    context = {
        "columns": columns,
        # Finished columns fold into their counters on a narrow screen.
        "terminal_columns": [OrderStatus.DELIVERED, OrderStatus.FAILED, OrderStatus.CANCELLED],
        "status_labels": dict(OrderStatus.choices),
        "alert_labels": dict(Alert.Kind.choices),
        "providers": sorted(settings.PROVIDERS),
        "couriers": selectors.courier_list().values("id", "name"),
        "config": {
            "wsPath": "/ws/operators/",
            "recentHours": settings.DASHBOARD_RECENT_HOURS,
            "statuses": [status.value for status in columns],
        },
    }
    return render(request, "dashboard.html", context)


@login_required
def track_order(request: HttpRequest, order_id: int) -> HttpResponse:
    order = get_object_or_404(selectors.orders_visible_to(request.user), pk=order_id)
    return _track_page(request, order, ws_path=f"/ws/orders/{order.pk}/")


@never_cache
def shared_track(request: HttpRequest, token: str) -> HttpResponse:
    order = selectors.tracking_link_order(token)
    if order is None:
        return link_gone(request)
    return _track_page(request, order, ws_path=f"/ws/track/{token}/", order_url=f"/t/{token}/order.json")


@never_cache
def shared_order(request: HttpRequest, token: str) -> JsonResponse:
    """The order and its public history, as `GET /api/orders/{id}/` gives them to its customer."""
    order = selectors.tracking_link_order(token)
    if order is None:
        return JsonResponse({"detail": "No such tracking link, or it expired or was revoked."}, status=404)
    return JsonResponse(PublicOrderDetailSerializer(selectors.public_order_detail(order.pk)).data)


def link_gone(request: HttpRequest) -> HttpResponse:
    return render(request, "track_link_gone.html", status=404)


def _track_page(request: HttpRequest, order: Order, *, ws_path: str, order_url: str = "") -> HttpResponse:
    config = {"wsPath": ws_path, "orderId": order.pk, "pipeline": [status.value for status in PIPELINE]}
    if order_url:
        config["orderUrl"] = order_url
    context = {"order": order, "status_labels": dict(OrderStatus.choices), "config": config}
    return render(request, "track.html", context)


@login_required
def courier_page(request: HttpRequest) -> HttpResponse:
    """The couriers' reference client of /ws/couriers/: their orders live, and their position shared."""
    courier = selectors.active_courier_of(request.user)
    if courier is None:
        return render(request, "couriers_only.html", status=403)
    context = {
        "courier": courier,
        "status_labels": dict(OrderStatus.choices),
        "config": {
            "wsPath": "/ws/couriers/",
            "courier": {"id": courier.pk, "name": courier.name},
            "locationMinIntervalSeconds": settings.REALTIME_LOCATION_MIN_INTERVAL_SECONDS,
        },
    }
    return render(request, "courier.html", context)
