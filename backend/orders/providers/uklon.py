"""Uklon, a courier company that is polled: POST /drivers/orders {addresses, points, comments};
GET /drivers/orders/{id} (with the driver and their [lat, lng] once on the way);
POST /drivers/orders/{id}/cancel."""

from typing import Any

from ..status import OrderStatus
from .base import PROVIDER_CANCELLED, DeliveryRequest, Provider, ProviderOrder, driver_field, location_field


class Uklon(Provider):
    name = "uklon"
    kind = "delivery"
    statuses = {
        "not started": OrderStatus.COURIER_SEARCH,
        "delivery": OrderStatus.DELIVERING,
        "delivered": OrderStatus.DELIVERED,
        PROVIDER_CANCELLED: OrderStatus.CANCELLED,
    }

    def create_request(self, request: DeliveryRequest) -> tuple[str, dict[str, Any]]:
        return "/drivers/orders", {
            "addresses": request.addresses,
            "points": [list(point) if point else None for _, point in request.stops()],
            "comments": request.comments,
        }

    def fetch_path(self, external_id: str) -> str:
        return f"/drivers/orders/{external_id}"

    def cancel_path(self, external_id: str) -> str:
        return f"/drivers/orders/{external_id}/cancel"

    def parse_order(self, payload: dict[str, Any]) -> ProviderOrder:
        order = super().parse_order(payload)
        return ProviderOrder(
            external_id=order.external_id,
            status=order.status,
            location=location_field(payload.get("location"), self.name),
            driver=driver_field(payload.get("driver"), self.name),
        )
