"""The operator dashboard, the customer tracking page and the courier page: server-rendered shells; the JS
does the rest."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from orders import selectors
from orders.models import Alert, Courier
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
    context = {
        "order": order,
        "status_labels": dict(OrderStatus.choices),
        "config": {
            "wsPath": f"/ws/orders/{order.pk}/",
            "orderId": order.pk,
            "pipeline": [s.value for s in PIPELINE],
        },
    }
    return render(request, "track.html", context)


@login_required
def courier_page(request: HttpRequest) -> HttpResponse:
    """The couriers' reference client of /ws/couriers/: their orders live, and their position shared."""
    # The same check as realtime.consumers.CourierConsumer: an active Courier profile.
    courier = Courier.objects.filter(user=request.user, is_active=True).first()
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
