"""The operator dashboard and the customer tracking page: server-rendered shells; the JS does the rest."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from orders import selectors
from orders.models import Alert
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
