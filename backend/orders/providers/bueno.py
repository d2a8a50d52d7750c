"""Bueno, a kitchen that is polled and pushes webhooks: POST / {items: [{name, qty}], reference};
GET /{id}; POST /{id}/cancel. Webhooks: {id, status, at, event_id} signed in X-Bueno-Signature
(`sha256=<hex HMAC-SHA256 of the body>`, the default scheme)."""

from typing import Any

from ..status import OrderStatus
from .base import PROVIDER_CANCELLED, KitchenRequest, Provider


class Bueno(Provider):
    name = "bueno"
    kind = "kitchen"
    statuses = {
        "accepted": OrderStatus.SUBMITTED,
        "preparing": OrderStatus.COOKING,
        "ready": OrderStatus.READY,
        "handed_over": OrderStatus.READY,
        PROVIDER_CANCELLED: OrderStatus.CANCELLED,
    }
    signature_header = "X-Bueno-Signature"

    def create_request(self, request: KitchenRequest) -> tuple[str, dict[str, Any]]:
        items = [{"name": dish, "qty": quantity} for dish, quantity in request.items]
        return "/", {"items": items, "reference": request.reference}

    def fetch_path(self, external_id: str) -> str:
        return f"/{external_id}"

    def cancel_path(self, external_id: str) -> str:
        return f"/{external_id}/cancel"
