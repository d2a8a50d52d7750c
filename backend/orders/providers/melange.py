"""Melange, a kitchen that is polled: POST /api/orders {order: [{dish, quantity}]}; GET /api/orders/{id};
POST /api/orders/{id}/cancel."""

from typing import Any

from ..status import OrderStatus
from .base import PROVIDER_CANCELLED, KitchenRequest, Provider


class Melange(Provider):
    name = "melange"
    kind = "kitchen"
    statuses = {
        "not started": OrderStatus.SUBMITTED,
        "cooking": OrderStatus.COOKING,
        "cooked": OrderStatus.READY,
        "finished": OrderStatus.READY,
        PROVIDER_CANCELLED: OrderStatus.CANCELLED,
    }

    def create_request(self, request: KitchenRequest) -> tuple[str, dict[str, Any]]:
        return "/api/orders", {
            "order": [{"dish": dish, "quantity": quantity} for dish, quantity in request.items]
        }

    def fetch_path(self, external_id: str) -> str:
        return f"/api/orders/{external_id}"

    def cancel_path(self, external_id: str) -> str:
        return f"/api/orders/{external_id}/cancel"
