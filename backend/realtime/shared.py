"""The tracking page opened through a shared link (`/t/<token>/`): no sign-in, one order, its public shape.

The token decides the order; nothing else of its customer is reachable from here. Unknown, revoked and
expired links get the same friendly 404 page, so a link's page tells nothing of why it stopped working.
"""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from orders import selectors
from orders.serializers import PublicOrderDetailSerializer
from orders.status import PIPELINE, OrderStatus


def link_gone(request: HttpRequest) -> HttpResponse:
    return render(request, "track_link_gone.html", status=404)


@never_cache
def shared_track(request: HttpRequest, token: str) -> HttpResponse:
    order = selectors.tracking_link_order(token)
    if order is None:
        return link_gone(request)
    context = {
        "order": order,
        "status_labels": dict(OrderStatus.choices),
        "config": {
            "wsPath": f"/ws/track/{token}/",
            "orderUrl": f"/t/{token}/order.json",
            "orderId": order.pk,
            "pipeline": [s.value for s in PIPELINE],
        },
    }
    return render(request, "track.html", context)


@never_cache
def shared_order(request: HttpRequest, token: str) -> JsonResponse:
    """The order and its public history, as `GET /api/orders/{id}/` gives them to its customer."""
    order = selectors.tracking_link_order(token)
    if order is None:
        return JsonResponse({"detail": "No such tracking link, or it expired or was revoked."}, status=404)
    detail = selectors.public_order_detail(order.pk)
    return JsonResponse(PublicOrderDetailSerializer(detail).data)
