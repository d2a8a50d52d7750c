"""Bueno (kitchen, pull + webhooks): POST / {items: [{name, qty}], reference}; GET /{id};
POST /{id}/cancel."""

from typing import Any

from .base import KitchenRequest, ProviderClient


class BuenoClient(ProviderClient):
    name = "bueno"

    def create_request(self, request: KitchenRequest) -> tuple[str, dict[str, Any]]:
        items = [{"name": dish, "qty": quantity} for dish, quantity in request.items]
        return "/", {"items": items, "reference": request.reference}

    def fetch_path(self, external_id: str) -> str:
        return f"/{external_id}"

    def cancel_path(self, external_id: str) -> str:
        return f"/{external_id}/cancel"
