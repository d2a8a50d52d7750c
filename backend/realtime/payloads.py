"""Typed payload builders: what an order, an event and a courier position look like on the wire.

The same order shapes serve the snapshot, the `order` answer and the replay, so a client needs one parser.
Two shapes of each (orders.disclosure): the full one for the `operators` stream, and the public one,
a subset without provider legs, failure text, alerts and who did what, for order and courier streams.

Events come in two protocol versions. v2 (the default): an event carries what changed, its `order` only
the order's id and the fields that event type changes (`order_changes`), at their values when the event
is released, so that a client holding the order merges it and ends exactly where a fresh snapshot
would; `order.created` carries the new order whole. v1 (`?v=1`, kept for one release): every event
carries its whole order (`event_payload`, `public_event_payload`).
"""

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypedDict

from orders.alerts import order_promised_at
from orders.disclosure import public_reason
from orders.models import Alert, Courier, Leg, Order, OrderEvent
from orders.status import OrderStatus


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


# --- protocol v2: lean events ---------------------------------------------------------------------------

# The order fields (besides its status, which the event's `to` carries) that each event type changes,
# read from the order as it stands when the event is released. A leg-touching type also carries its legs
# (`_changed_legs`), an alert event its alert. Fields absent from a stream's shape are left out.
_CHANGED_FIELDS: dict[str, tuple[str, ...]] = {
    OrderEvent.Type.STATUS: ("updated_at",),
    OrderEvent.Type.OVERRIDE: ("updated_at", "failure_reason"),
    OrderEvent.Type.RETRY: ("updated_at", "failure_reason"),
    OrderEvent.Type.COURIER: ("courier", "updated_at"),
    OrderEvent.Type.LOCATED: ("destination", "destination_status", "updated_at"),
}
# What a provider's status report changes of a leg (orders.services.leg_apply_status).
LEG_STATUS_KEYS = ("id", "status", "provider_status")


def _changed_legs(event: OrderEvent, legs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The legs an event changed: a reported status changes one leg's status (`LEG_STATUS_KEYS`), and
    reaching `ready` may add the delivery leg (whole); an override or a retry re-arms every leg (all
    whole); a cancellation step or an alert on a leg carries that leg whole (its attempts and error)."""
    kind = event.type
    if kind in (OrderEvent.Type.OVERRIDE, OrderEvent.Type.RETRY):
        return list(legs)
    changed = []
    leg = next((leg for leg in legs if leg["id"] == event.leg_id), None) if event.leg_id else None
    if leg is not None and kind in (OrderEvent.Type.STATUS, OrderEvent.Type.LEG):
        changed.append({key: leg[key] for key in LEG_STATUS_KEYS})
    elif leg is not None and (kind == OrderEvent.Type.LEG_CANCEL or event.alert_id is not None):
        changed.append(leg)
    if kind == OrderEvent.Type.STATUS and event.to_status == OrderStatus.READY:
        changed += [other for other in legs if other["kind"] == Leg.Kind.DELIVERY and other is not leg]
    return changed


def order_changes(event: OrderEvent, order: Mapping[str, Any]) -> dict[str, Any]:
    """What an event changed of `order` (a built payload in the stream's shape, as it stands when the event
    is released): its id and the changed fields, or for `order.created` the order whole, its seq the
    event's. The order's status is the event's `to`. `legs` items merge into the held legs by id (an
    unknown id comes whole)."""
    if event.type == OrderEvent.Type.CREATED:
        return {**order, "seq": event.seq}
    changes: dict[str, Any] = {"id": order["id"]}
    fields = _CHANGED_FIELDS.get(event.type, ())
    if event.type == OrderEvent.Type.STATUS and event.to_status == OrderStatus.FAILED:
        fields = (*fields, "failure_reason")
    for key in fields:
        if key in order:
            changes[key] = order[key]
    if "legs" in order:
        legs = _changed_legs(event, order["legs"])
        if legs:
            changes["legs"] = legs
    return changes


def _statuses(payload: dict[str, Any], event: OrderEvent) -> None:
    """`from` only when the status changed; `to`, the order's status once the event applies, when set."""
    if event.from_status and event.from_status != event.to_status:
        payload["from"] = event.from_status
    if event.to_status:
        payload["to"] = event.to_status


def lean_event_payload(event: OrderEvent, order: Mapping[str, Any]) -> dict[str, Any]:
    """A v2 event for operators: what changed, with `order_changes` of the whole order (`order` is an
    OrderPayload). Empty fields are left out. Alert events carry their alert (expects `event.alert`
    loaded); a client keeps it among the order's open alerts until its `cleared_at` is set."""
    # seq, type and at come first: load tools read them without parsing the whole frame.
    payload: dict[str, Any] = {"seq": event.seq, "type": event.type, "at": event.at.isoformat()}
    payload["source"] = event.source
    _statuses(payload, event)
    if event.provider_status:
        payload["provider_status"] = event.provider_status
    if event.reason:
        payload["reason"] = event.reason
    if event.leg_id is not None:
        payload["leg"] = event.leg_id
    if event.type == OrderEvent.Type.LEG_CANCEL:
        payload["cancel_status"] = event.cancel_status
    if event.alert_id is not None:
        payload["alert"] = alert_payload(event.alert)
    payload["order"] = order_changes(event, order)
    return payload


def lean_public_event_payload(event: OrderEvent, order: Mapping[str, Any]) -> dict[str, Any]:
    """A v2 event for customers and couriers: `order` is their shape of the order (public, or the
    courier's), the reason only when it is the customer's own. Callers send only PUBLIC_EVENT_TYPES."""
    payload: dict[str, Any] = {"seq": event.seq, "type": event.type, "at": event.at.isoformat()}
    _statuses(payload, event)
    reason = public_reason(event)
    if reason:
        payload["reason"] = reason
    payload["order"] = order_changes(event, order)
    return payload


def order_frame(order: Mapping[str, Any]) -> str:
    """The answer to a client's `{"type": "order", "id": ...}`: that order whole, in the stream's shape."""
    return dumps({"type": "order", "order": order})


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
