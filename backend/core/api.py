"""API-wide pieces: the exception handler that turns domain errors into clear HTTP answers, and the JSON
answers of /api/ itself and of paths under it that do not exist."""

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orders.errors import DomainError


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        return Response({"detail": str(exc), "code": exc.code}, status=exc.http_status)
    return drf_exception_handler(exc, context)


@csrf_exempt  # answers every method the same; without this a POST would get Django's HTML CSRF page
def index(request: HttpRequest) -> JsonResponse:
    """`/api/`: where to start, as JSON like every other answer under /api/."""
    return JsonResponse(
        {
            "schema": reverse("api-schema"),
            "docs": reverse("api-docs"),
            "token": reverse("token"),
            "orders": reverse("orders:order-list"),
            "restaurants": reverse("orders:restaurant-list"),
            "alerts": reverse("orders:alert-list"),
            "webhook_endpoints": reverse("webhooks:endpoint-list"),
            "realtime_ticket": reverse("realtime-ticket"),
        }
    )


@csrf_exempt
def not_found(request: HttpRequest, unknown: str) -> JsonResponse:
    """Any other path under /api/ (`/api/orders/abc/` too): a JSON 404 as elsewhere in the API, not HTML."""
    return JsonResponse({"detail": "Not found."}, status=404)
