"""Typed payload builders: what an order, an event and a courier position look like on the wire.

The same shapes serve the snapshot, the live events and the replay, so a client needs one parser.
Two shapes of each (orders.disclosure): the full one for the `operators` stream, and the public one,
a subset without provider legs, failure text, alerts and who did what, for order and courier streams.
"""

import json
from datetime import datetime
from typing import Any, TypedDict

from orders.alerts import order_promised_at
from orders.disclosure import public_reason
from orders.models import Alert, Courier, Order, OrderEvent


class CourierPayload(TypedDict):
    id: int
    name: str
    phone: str
    lat: float | None
    lng: float | None
    at: str | None


class AlertPayload(TypedDict):
    id: int
    kind: str
    leg: int | None
    detail: str
    raised_at: str
    cleared_at: str | None
    acknowledged_by: str | None
    acknowledged_at: str | None
    note: str


class PublicOrderPayload(TypedDict):
    """What customers and couriers get of an order (a subset of OrderPayload, in its order)."""

    id: int
    seq: int
    status: str
    total: int
    created_at: str
    updated_at: str
    eta: str | None
    promised_at: str  # the ETA, or placed + the kitchens' (or the global) SLA: what "late" counts from
    delivery_address: str
    destination: tuple[float, float] | None  # the geocoded point; None while looked up, or not found
    destination_status: str  # Order.GeocodeStatus: pending, found, not_found, failed, off
    restaurants: list[dict[str, Any]]  # {id, name, address, location: [lat, lng] | None}
    courier: CourierPayload | None


class CustomerContact(TypedDict):
    first_name: str
    phone: str


class CourierOrderPayload(PublicOrderPayload):
    """What the courier carrying an order gets: the public shape and whom to hand it to."""

    customer: CustomerContact


class OrderPayload(PublicOrderPayload):
    """An order whole, for operators."""

    customer: CustomerContact
    failure_reason: str
    legs: list[dict[str, Any]]
    alerts: list[AlertPayload]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def courier_payload(courier: Courier) -> CourierPayload:
    return {
        "id": courier.pk,
        "name": courier.name,
        "phone": courier.phone,
        "lat": courier.lat,
        "lng": courier.lng,
        "at": _iso(courier.location_at),
    }


def alert_payload(alert: Alert) -> AlertPayload:
    return {
        "id": alert.pk,
        "kind": alert.kind,
        "leg": alert.leg_id,
        "detail": alert.detail,
        "raised_at": alert.raised_at.isoformat(),
        "cleared_at": _iso(alert.cleared_at),
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by_id else None,
        "acknowledged_at": _iso(alert.acknowledged_at),
        "note": alert.note,
    }


def order_payload(order: Order, seq: int) -> OrderPayload:
    """An order as clients see it; `seq` is its last event they hold. Expects the customer, legs, couriers
    and open alerts loaded (orders.selectors.with_payload_details)."""
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
        "promised_at": order_promised_at(order).isoformat(),
        "delivery_address": order.delivery_address,
        "destination": order.point,
        "destination_status": order.geocode_status,
        "restaurants": [
            {
                "id": restaurant.pk,
                "name": restaurant.name,
                "address": restaurant.address,
                "location": restaurant.point,
            }
            for restaurant in restaurants
        ],
        "courier": courier_payload(order.courier) if order.courier_id else None,
        "customer": {"first_name": order.customer.first_name, "phone": order.phone},
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
                "cancel_status": leg.cancel_status,
            }
            for leg in legs
        ],
        "alerts": [alert_payload(alert) for alert in order.open_alerts],
    }


def public_order_payload(order: OrderPayload) -> PublicOrderPayload:
    """The public part of a built order payload: PublicOrderPayload's keys, nothing else."""
    return {key: order[key] for key in PublicOrderPayload.__annotations__}


def courier_order_payload(order: OrderPayload) -> CourierOrderPayload:
    """The courier's part of a built order payload: the public keys and the customer's contact."""
    return {key: order[key] for key in CourierOrderPayload.__annotations__}


# The functional form: `from` is a Python keyword. `from` and `to` are the order's statuses around it.
PublicEventPayload = TypedDict(
    "PublicEventPayload",
    {"seq": int, "type": str, "at": str, "from": str, "to": str, "reason": str, "order": PublicOrderPayload},
)


def public_event_payload(event: OrderEvent, order: PublicOrderPayload) -> PublicEventPayload:
    """An event as customers and couriers see it: what changed and when, with the public order; the
    reason only when it is the customer's own (orders.disclosure.public_reason). Callers send only
    orders.disclosure.PUBLIC_EVENT_TYPES."""
    return {
        "seq": event.seq,
        "type": event.type,
        "at": event.at.isoformat(),
        "from": event.from_status,
        "to": event.to_status,
        "reason": public_reason(event),
        "order": order,
    }


def event_payload(event: OrderEvent, order: OrderPayload) -> dict[str, Any]:
    """An event with its order. Alert events also carry their alert (expects `event.alert` loaded);
    `leg.cancel` events their leg's `cancel_status`."""
    # seq, type and at come first: load tools read them without parsing the whole frame.
    payload = {
        "seq": event.seq,
        "type": event.type,
        "at": event.at.isoformat(),
        "from": event.from_status,
        "to": event.to_status,
        "source": event.source,
        "provider_status": event.provider_status,
        "reason": event.reason,
        "leg": event.leg_id,
        "order": order,
    }
    if event.type == OrderEvent.Type.LEG_CANCEL:
        payload["cancel_status"] = event.cancel_status  # requested, confirmed or refused
    if event.alert_id is not None:
        payload["alert"] = alert_payload(event.alert)
    return payload


# The largest frame we send. daphne refuses messages over 1 MiB (autobahn's default); a snapshot or a
# coalesced batch that would be larger goes out as several frames.
MAX_FRAME_BYTES = 512 * 1024


def snapshot_frames(seq: int, orders: list[str]) -> list[str]:
    """A snapshot of orders (each JSON already) as frames under MAX_FRAME_BYTES: `part` of `parts`;
    a client applies the snapshot once it holds every part (frontend/static/liveops/live.js)."""
    chunks = chunked(orders)
    return [
        f'{{"type":"snapshot","seq":{seq},"part":{index},"parts":{len(chunks)},"orders":[{",".join(chunk)}]}}'
        for index, chunk in enumerate(chunks, start=1)
    ]


def chunked(texts: list[str], limit: int | None = None) -> list[list[str]]:
    """`texts` in runs whose joined size stays under `limit` (an item alone over it gets a run of its own)."""
    limit = limit or MAX_FRAME_BYTES
    chunks: list[list[str]] = [[]]
    size = 0
    for text in texts:
        length = len(text.encode()) + 1
        if chunks[-1] and size + length > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(text)
        size += length
    return chunks


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
