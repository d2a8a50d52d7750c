"""Melange (kitchen, pull): POST /api/orders {order: [{dish, quantity}]}; GET /api/orders/{id};
POST /api/orders/{id}/cancel."""

from typing import Any

from .base import KitchenRequest, ProviderClient


class MelangeClient(ProviderClient):
    name = "melange"

    def create_request(self, request: KitchenRequest) -> tuple[str, dict[str, Any]]:
        return "/api/orders", {
            "order": [{"dish": dish, "quantity": quantity} for dish, quantity in request.items]
        }

    def fetch_path(self, external_id: str) -> str:
        return f"/api/orders/{external_id}"

    def cancel_path(self, external_id: str) -> str:
        return f"/api/orders/{external_id}/cancel"
