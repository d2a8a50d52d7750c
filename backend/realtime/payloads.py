"""Typed payload builders: what an order, an event and a courier position look like on the wire.

The same shapes serve the snapshot, the live events and the replay, so a client needs one parser.
"""

import json
from datetime import datetime
from typing import Any, TypedDict

from orders.geo import geocode
from orders.models import Courier, Order, OrderEvent


class CourierPayload(TypedDict):
    id: int
    name: str
    lat: float | None
    lng: float | None
    at: str | None


class OrderPayload(TypedDict):
    id: int
    seq: int
    status: str
    total: int
    created_at: str
    updated_at: str
    eta: str | None
    delivery_address: str
    destination: tuple[float, float]
    restaurants: list[dict[str, Any]]
    courier: CourierPayload | None
    failure_reason: str
    legs: list[dict[str, Any]]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def courier_payload(courier: Courier) -> CourierPayload:
    return {
        "id": courier.pk,
        "name": courier.name,
        "lat": courier.lat,
        "lng": courier.lng,
        "at": _iso(courier.location_at),
    }


def order_payload(order: Order, seq: int) -> OrderPayload:
    """An order as clients see it; `seq` is its last event they hold. Expects legs and couriers loaded."""
    legs = list(order.legs.all())
    restaurants = [leg.restaurant for leg in legs if leg.restaurant_id]
    return {
        "id": order.pk,
        "seq": seq,
        "status": order.status,
        "total": order.total,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
        "eta": _iso(order.eta),
        "delivery_address": order.delivery_address,
        "destination": geocode(order.delivery_address),
        "restaurants": [
            {"id": restaurant.pk, "name": restaurant.name, "location": geocode(restaurant.address)}
            for restaurant in restaurants
        ],
        "courier": courier_payload(order.courier) if order.courier_id else None,
        "failure_reason": order.failure_reason,
        "legs": [
            {
                "id": leg.pk,
                "kind": leg.kind,
                "provider": leg.provider,
                "restaurant": leg.restaurant.name if leg.restaurant_id else None,
                "status": leg.status,
                "provider_status": leg.provider_status,
                "attempts": leg.attempts,
                "last_error": leg.last_error,
            }
            for leg in legs
        ],
    }


def event_payload(event: OrderEvent, order: OrderPayload) -> dict[str, Any]:
    # seq, type and at come first: load tools read them without parsing the whole frame.
    return {
        "seq": event.seq,
        "type": event.type,
        "at": event.at.isoformat(),
        "from": event.from_status,
        "to": event.to_status,
        "source": event.source,
        "provider_status": event.provider_status,
        "reason": event.reason,
        "order": order,
    }


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
