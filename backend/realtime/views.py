"""The operator dashboard, the tracking page (signed in, or through a shared link) and the courier page:
server-rendered shells; the JS does the rest.

A shared link (`/t/<token>/`) needs no sign-in: the token decides the order, and nothing else of its
customer is reachable from it. Unknown, revoked and expired links get the same friendly 404 page, so a
link's page tells nothing of why it stopped working.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache

from orders import selectors
from orders.models import Alert, Order
from orders.serializers import PublicOrderDetailSerializer
from orders.services import CUSTOMER_CANCELLABLE
from orders.status import PIPELINE, OrderStatus

# What a customer reads for each status: where their food is, not the back office's step names.
# track.js says the same with names filled in ("Your order is being cooked at Sushi Nord").
CUSTOMER_STATUS_WORDS = {
    OrderStatus.SCHEDULED: _("We received your order"),
    OrderStatus.SUBMITTED: _("We received your order"),
    OrderStatus.COOKING: _("Your order is being cooked"),
    OrderStatus.READY: _("Looking for a courier"),
    OrderStatus.COURIER_SEARCH: _("Looking for a courier"),
    OrderStatus.DELIVERING: _("Your courier is bringing your order"),
    OrderStatus.DELIVERED: _("Delivered — enjoy your meal"),
    OrderStatus.FAILED: _("Sorry, we could not complete this order"),
    OrderStatus.CANCELLED: _("Cancelled"),
}
# The customer's steps, each covering one or more statuses of the pipeline (orders.status.PIPELINE).
CUSTOMER_STEPS = {
    "received": (OrderStatus.SCHEDULED, OrderStatus.SUBMITTED),
    "cooking": (OrderStatus.COOKING,),
    "courier": (OrderStatus.READY, OrderStatus.COURIER_SEARCH),
    "delivering": (OrderStatus.DELIVERING,),
    "delivered": (OrderStatus.DELIVERED,),
}
RECENT_ORDERS = 20  # in the signed-in customer's list beside the tracked order


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
    order = selectors.orders_visible_to(request.user).filter(pk=order_id).first()
    if order is None:
        # Someone else's order reads the same as one that does not exist; their own list is a tap away.
        latest = selectors.orders_shareable_by(request.user).order_by("-created_at").first()
        context = {"unknown_order": True, "latest": None if request.user.is_staff else latest}
        return render(request, "track_link_gone.html", context, status=404)
    own = order.customer_id == request.user.pk
    # The customer's own orders, newest first: operators and couriers follow orders elsewhere.
    recent = []
    if own:
        recent = selectors.orders_shareable_by(request.user).order_by("-created_at")[:RECENT_ORDERS]
    return _track_page(
        request,
        order,
        ws_path=f"/ws/orders/{order.pk}/",
        customer={
            "cancelUrl": reverse("orders:order-cancel", args=[order.pk]) if own else "",
            "shareUrl": reverse("orders:order-share", args=[order.pk]) if own else "",
        },
        recent=[(item, CUSTOMER_STATUS_WORDS[item.status]) for item in recent],
    )


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


def _track_page(
    request: HttpRequest,
    order: Order,
    *,
    ws_path: str,
    order_url: str = "",
    customer: dict[str, str] | None = None,
    recent: list[tuple[Order, str]] | None = None,
) -> HttpResponse:
    """The tracking page; `customer` holds the signed-in customer's action URLs (cancel, share), which a
    shared link never offers."""
    config = {
        "wsPath": ws_path,
        "orderId": order.pk,
        "pipeline": [status.value for status in PIPELINE],
        "steps": {name: [status.value for status in statuses] for name, statuses in CUSTOMER_STEPS.items()},
        "cancellable": sorted(status.value for status in CUSTOMER_CANCELLABLE),
        **(customer or {}),
    }
    if order_url:
        config["orderUrl"] = order_url
    step = next((name for name, statuses in CUSTOMER_STEPS.items() if order.status in statuses), "end")
    context = {
        "order": order,
        "status_words": CUSTOMER_STATUS_WORDS[order.status],
        "current_step": step,
        "steps": [(name, CUSTOMER_STATUS_WORDS[statuses[0]]) for name, statuses in CUSTOMER_STEPS.items()],
        "status_labels": dict(OrderStatus.choices),
        "recent_orders": recent,
        "config": config,
    }
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
