"""Raketa, a second courier company, polled and pushing webhooks; the worked example of the README's
"Adding a provider".

API: POST /v1/deliveries {pickups: [{address, note, lat?, lng?}], dropoff: {address, lat?, lng?}};
GET /v1/deliveries/{id}; POST /v1/deliveries/{id}/cancel (refused once the courier has picked the food
up). A delivery is {delivery_id, state, courier: {id, name, phone} | null, position: {lat, lng} | null}.

Webhooks carry the same delivery plus `event_id` and `at`, signed Stripe-style:
`X-Raketa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`. The timestamp is signed
too, so a captured webhook cannot be replayed after WEBHOOK_TOLERANCE_SECONDS.
"""

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

from ..status import OrderStatus
from .base import (
    PROVIDER_CANCELLED,
    DeliveryRequest,
    Provider,
    ProviderBadResponse,
    ProviderOrder,
    driver_field,
    location_field,
    text_field,
)

WEBHOOK_TOLERANCE_SECONDS = 300


class Raketa(Provider):
    name = "raketa"
    kind = "delivery"
    statuses = {
        "searching": OrderStatus.COURIER_SEARCH,
        "courier_assigned": OrderStatus.COURIER_SEARCH,
        "picked_up": OrderStatus.DELIVERING,
        "delivered": OrderStatus.DELIVERED,
        PROVIDER_CANCELLED: OrderStatus.CANCELLED,
    }
    signature_header = "X-Raketa-Signature"

    def create_request(self, request: DeliveryRequest) -> tuple[str, dict[str, Any]]:
        *pickups, dropoff = request.stops()
        notes = list(request.comments) + [""] * len(pickups)
        return "/v1/deliveries", {
            "pickups": [
                {"address": address, "note": note, **_coordinates(point)}
                for (address, point), note in zip(pickups, notes, strict=False)
            ],
            "dropoff": {"address": dropoff[0], **_coordinates(dropoff[1])},
        }

    def fetch_path(self, external_id: str) -> str:
        return f"/v1/deliveries/{external_id}"

    def cancel_path(self, external_id: str) -> str:
        return f"/v1/deliveries/{external_id}/cancel"

    def parse_order(self, payload: dict[str, Any]) -> ProviderOrder:
        position = payload.get("position")
        if position is not None:
            if not isinstance(position, dict):
                raise ProviderBadResponse(f"raketa position is not {{lat, lng}}: {str(position)[:80]}")
            position = [position.get("lat"), position.get("lng")]
        return ProviderOrder(
            external_id=text_field(payload, "delivery_id"),
            status=text_field(payload, "state"),
            location=location_field(position, self.name),
            driver=driver_field(payload.get("courier"), self.name),
        )

    def verify_signature(self, body: bytes, headers: Mapping[str, str]) -> bool:
        parts = dict(
            part.strip().split("=", 1)
            for part in headers.get(self.signature_header, "").split(",")
            if "=" in part
        )
        timestamp, signature = parts.get("t", ""), parts.get("v1", "")
        if (
            not self.webhook_secret
            or not timestamp.isdigit()
            or abs(time.time() - int(timestamp)) > WEBHOOK_TOLERANCE_SECONDS
        ):
            return False
        signed = timestamp.encode() + b"." + body
        expected = hmac.new(self.webhook_secret.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.encode(), expected.encode())


def _coordinates(point: tuple[float, float] | None) -> dict[str, float]:
    return {"lat": point[0], "lng": point[1]} if point else {}
