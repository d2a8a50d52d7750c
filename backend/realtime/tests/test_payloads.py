"""What an order, an event, an alert and a courier look like on the wire (realtime.payloads): each builder's
keys and value types, as its TypedDict declares them and as JSON carries them, and the size of a typical
event frame, which every live socket receives for every change: it must not grow unnoticed."""

import json
import types
import typing
from datetime import datetime
from typing import Any

import pytest
from django.utils import timezone

from orders import alerts, selectors, services
from orders.models import Alert, Courier, Leg, Order, OrderEvent
from orders.tests import factories
from realtime import hub, payloads

pytestmark = pytest.mark.django_db


def conforms(value: Any, hint: Any, where: str = "payload") -> None:
    """Assert that `value` is what the type hint says, TypedDicts (their keys exactly) included."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if typing.is_typeddict(hint):
        hints = typing.get_type_hints(hint)
        assert isinstance(value, dict) and list(value) == list(hints), f"{where}: {list(value)}"
        for key, sub in hints.items():
            conforms(value[key], sub, f"{where}.{key}")
    elif origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return conforms(value, option, where)
            except AssertionError:
                continue
        raise AssertionError(f"{where}: {value!r} is none of {args}")
    elif origin is list:
        assert isinstance(value, list), where
        for index, item in enumerate(value):
            conforms(item, args[0], f"{where}[{index}]")
    elif origin is tuple:
        assert isinstance(value, tuple) and len(value) == len(args), where
        for index, (item, sub) in enumerate(zip(value, args, strict=True)):
            conforms(item, sub, f"{where}[{index}]")
    elif origin is dict or hint is Any:
        assert hint is Any or isinstance(value, dict), where
    elif hint is type(None):
        assert value is None, where
    else:
        assert isinstance(value, hint) and not isinstance(value, bool), f"{where}: {value!r} is not {hint}"
    if hint is str and where.rsplit(".", 1)[-1] in TIMESTAMPS:
        datetime.fromisoformat(value)


TIMESTAMPS = {"at", "created_at", "updated_at", "eta", "promised_at", "raised_at", "cleared_at"}
TIMESTAMPS |= {"acknowledged_at"}
LEG_KEYS = ["id", "kind", "provider", "restaurant", "status", "provider_status", "attempts", "last_error"]
LEG_KEYS += ["cancel_status"]
EVENT_KEYS = ["seq", "type", "at", "from", "to", "source", "provider_status", "reason", "leg", "order"]


@pytest.fixture
def order(customer, restaurants) -> Order:
    """A typical order on the board: two kitchens and a delivery, a courier on the way, one leg moved."""
    courier = factories.make_courier("courier1")
    Courier.objects.filter(pk=courier.pk).update(lat=50.450001, lng=30.523333, location_at=timezone.now())
    made = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    Order.objects.filter(pk=made.pk).update(courier=courier)
    kitchen = made.legs.filter(kind=Leg.Kind.KITCHEN).order_by("id").first()
    services.leg_apply_status(leg_id=kitchen.pk, provider_status="not started", source="poll")
    return made


def loaded(order: Order) -> Order:
    return selectors.with_payload_details(Order.objects.filter(pk=order.pk)).get()


def last_event(order: Order, **filters: Any) -> OrderEvent:
    return OrderEvent.objects.select_related("alert").filter(order=order, **filters).latest("seq")


def test_order_payload(order):
    payload = payloads.order_payload(loaded(order), seq=41)
    conforms(payload, payloads.OrderPayload)
    assert payload["id"] == order.pk and payload["seq"] == 41
    assert [restaurant["name"] for restaurant in payload["restaurants"]] == ["Melange", "Bueno"]
    for restaurant in payload["restaurants"]:
        assert list(restaurant) == ["id", "name", "address", "location"]
        conforms(restaurant["location"], tuple[float, float], "restaurant.location")
    assert [list(leg) for leg in payload["legs"]] == [LEG_KEYS] * len(payload["legs"])
    assert payload["courier"]["name"] == "Courier1"
    assert (payload["destination"], payload["destination_status"]) == (None, "off")  # no geocoder in tests
    assert payload["customer"] == {"first_name": order.customer.first_name, "phone": order.phone}


def test_the_stored_point_is_the_destination(order):
    Order.objects.filter(pk=order.pk).update(lat=50.4501, lng=30.5234, geocode_status="found")
    payload = payloads.order_payload(loaded(Order.objects.get(pk=order.pk)), seq=41)
    assert (payload["destination"], payload["destination_status"]) == ((50.4501, 30.5234), "found")
    assert json.loads(payloads.dumps(payload))["destination"] == [50.4501, 30.5234]


def test_courier_order_payload_adds_the_customer_contact_to_the_public_part(order):
    whole = payloads.order_payload(loaded(order), seq=41)
    carried = payloads.courier_order_payload(whole)
    conforms(carried, payloads.CourierOrderPayload)
    assert list(carried) == [*payloads.public_order_payload(whole), "customer"]


def test_public_order_payload_is_the_public_part_of_the_whole(order):
    whole = payloads.order_payload(loaded(order), seq=41)
    public = payloads.public_order_payload(whole)
    conforms(public, payloads.PublicOrderPayload)
    assert public == {key: whole[key] for key in public}
    assert not {"legs", "alerts", "failure_reason"} & set(public)


def test_courier_payload(order):
    courier = Courier.objects.get(name="Courier1")
    conforms(payloads.courier_payload(courier), payloads.CourierPayload)
    Courier.objects.filter(pk=courier.pk).update(lat=None, lng=None, location_at=None)
    nowhere = payloads.courier_payload(Courier.objects.get(pk=courier.pk))
    conforms(nowhere, payloads.CourierPayload)
    assert (nowhere["lat"], nowhere["lng"], nowhere["at"]) == (None, None, None)


def test_alert_payload_open_and_acknowledged(order, operator):
    alert = alerts.raise_alert(order=order, kind=Alert.Kind.LATE, detail="late by 5 min", source="system")
    conforms(payloads.alert_payload(alert), payloads.AlertPayload)
    acknowledged = alerts.alert_acknowledge(alert_id=alert.pk, actor=operator, note="called the kitchen")
    payload = payloads.alert_payload(acknowledged)
    conforms(payload, payloads.AlertPayload)
    assert (payload["acknowledged_by"], payload["note"]) == ("olena", "called the kitchen")


def test_event_payload(order):
    event = last_event(order, type=OrderEvent.Type.LEG)
    payload = payloads.event_payload(event, payloads.order_payload(loaded(order), seq=event.seq))
    assert list(payload) == EVENT_KEYS
    types_ = {"seq": int, "type": str, "at": str, "from": str, "to": str, "source": str}
    types_ |= {"provider_status": str, "reason": str, "leg": int | None}
    for key, hint in types_.items():
        conforms(payload[key], hint, key)
    conforms(payload["order"], payloads.OrderPayload, "order")
    assert (payload["seq"], payload["order"]["seq"], payload["leg"]) == (event.seq, event.seq, event.leg_id)


def test_an_alert_event_carries_its_alert(order):
    alerts.raise_alert(order=order, kind=Alert.Kind.LATE, detail="late by 5 min", source="system")
    event = last_event(order, type=OrderEvent.Type.ALERT_RAISED)
    payload = payloads.event_payload(event, payloads.order_payload(loaded(order), seq=event.seq))
    assert list(payload) == [*EVENT_KEYS, "alert"]
    conforms(payload["alert"], payloads.AlertPayload, "alert")
    assert [alert["id"] for alert in payload["order"]["alerts"]] == [payload["alert"]["id"]]


def test_a_leg_cancel_event_carries_the_cancel_status(order):
    leg = order.legs.filter(kind=Leg.Kind.KITCHEN).order_by("id").first()
    event = OrderEvent.objects.create(
        order=order, leg=leg, type=OrderEvent.Type.LEG_CANCEL, source="system", cancel_status="requested"
    )
    payload = payloads.event_payload(event, payloads.order_payload(loaded(order), seq=event.seq))
    assert list(payload) == [*EVENT_KEYS, "cancel_status"]
    assert payload["cancel_status"] == "requested"


def test_public_event_payload(order):
    event = last_event(order, type=OrderEvent.Type.LEG)
    public_order = payloads.public_order_payload(payloads.order_payload(loaded(order), seq=event.seq))
    payload = payloads.public_event_payload(event, public_order)
    conforms(payload, payloads.PublicEventPayload)
    assert payload["order"] is public_order


def test_dumps_is_compact_and_keeps_non_ascii_text():
    assert payloads.dumps({"name": "Олена", "n": [1, 2]}) == '{"name":"Олена","n":[1,2]}'


# --- the size of a typical event frame -------------------------------------------------------------------

# Measured for the `order` fixture's leg.status event, with its ids, seqs and times set to the typical
# values below (a database's own ids and clock would make the count differ from run to run). A change
# that makes the frame larger than this plus the margin must say so here; one that makes it smaller
# should lower the count. Issue 14 (+114 full, +74 public): the destination's status, each restaurant's
# address, the courier's phone, and (full only) the customer's first name and phone.
FULL_EVENT_FRAME_BYTES = 1274
PUBLIC_EVENT_FRAME_BYTES = 795
MARGIN_BYTES = 16
TYPICAL_ID, TYPICAL_SEQ = 123_456, 12_345_678
TYPICAL_TIME = "2026-05-04T12:34:56.789012+00:00"


def typical(value: Any, key: str = "") -> Any:
    """`value` with every id, seq and timestamp set to a typical one of the same kind."""
    if isinstance(value, dict):
        return {k: typical(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [typical(item) for item in value]
    if isinstance(value, int) and key in ("id", "leg"):
        return TYPICAL_ID
    if isinstance(value, int) and key == "seq":
        return TYPICAL_SEQ
    if isinstance(value, str) and key in TIMESTAMPS:
        return TYPICAL_TIME
    return value


def event_frame(event: dict[str, Any]) -> bytes:
    """The `events` frame of that one event, as the hub builds it for every socket of a group."""
    [batch] = hub._batches([(TYPICAL_SEQ, TYPICAL_ID, payloads.dumps(event))])
    return batch.text.encode()


def test_a_typical_event_frame_does_not_grow(order):
    event = last_event(order, type=OrderEvent.Type.LEG)
    whole = payloads.order_payload(loaded(order), seq=event.seq)
    full = typical(payloads.event_payload(event, whole))
    public = typical(payloads.public_event_payload(event, payloads.public_order_payload(whole)))
    sizes = (len(event_frame(full)), len(event_frame(public)))
    assert sizes[0] <= FULL_EVENT_FRAME_BYTES + MARGIN_BYTES, f"full event frame: {sizes[0]} bytes"
    assert sizes[1] <= PUBLIC_EVENT_FRAME_BYTES + MARGIN_BYTES, f"public event frame: {sizes[1]} bytes"


# --- protocol v2: lean events ----------------------------------------------------------------------------


def lean(event: OrderEvent, order: Order) -> dict[str, Any]:
    return payloads.lean_event_payload(event, payloads.order_payload(loaded(order), seq=0))


def submitted(order: Order) -> OrderEvent:
    """The order's second kitchen accepts it too: the order moves scheduled → submitted."""
    bueno = order.legs.filter(kind=Leg.Kind.KITCHEN).order_by("id").last()
    services.leg_apply_status(leg_id=bueno.pk, provider_status="accepted", source="poll")
    return last_event(order, type=OrderEvent.Type.STATUS)


def test_a_v2_status_change_carries_what_changed(order):
    event = submitted(order)
    payload = lean(event, order)
    assert list(payload)[:3] == ["seq", "type", "at"], "load tools read these first (bench/ws_clients.py)"
    assert (payload["from"], payload["to"], payload["source"]) == ("scheduled", "submitted", "poll")
    assert payload["leg"] == event.leg_id and payload["provider_status"] == "accepted"
    assert payload["order"] == {
        "id": order.pk,
        "updated_at": Order.objects.get(pk=order.pk).updated_at.isoformat(),
        "legs": [{"id": event.leg_id, "status": "submitted", "provider_status": "accepted"}],
    }
    assert "reason" not in payload and "cancel_status" not in payload, "empty fields are left out"


def test_a_v2_order_created_event_carries_the_order_whole(order):
    event = last_event(order, type=OrderEvent.Type.CREATED)
    whole = payloads.order_payload(loaded(order), seq=0)
    payload = payloads.lean_event_payload(event, whole)
    conforms(payload["order"], payloads.OrderPayload, "order")
    assert payload["order"] == {**whole, "seq": event.seq} and "from" not in payload


def test_a_v2_event_without_a_status_change_has_no_from(order):
    event = last_event(order, type=OrderEvent.Type.LEG)  # one kitchen of two accepted: the order waits
    payload = lean(event, order)
    assert "from" not in payload and payload["to"] == "scheduled"
    assert list(payload["order"]) == ["id", "legs"], "a leg's progress changes the leg only"


def test_v2_alert_events_carry_the_alert_and_courier_events_the_courier(order, operator):
    alert = alerts.raise_alert(order=order, kind=Alert.Kind.LATE, detail="late by 5 min", source="system")
    raised = lean(last_event(order, type=OrderEvent.Type.ALERT_RAISED), order)
    assert raised["alert"]["id"] == alert.pk and raised["order"] == {"id": order.pk}
    alerts.alert_acknowledge(alert_id=alert.pk, actor=operator, note="rang")
    acknowledged = lean(last_event(order, type=OrderEvent.Type.ALERT_ACKNOWLEDGED), order)
    assert acknowledged["alert"]["acknowledged_by"] == "olena" and acknowledged["reason"] == "rang"
    courier = factories.make_courier("courier2")
    services.order_reassign_courier(order_id=order.pk, courier_id=courier.pk, actor=operator, reason="closer")
    moved = lean(last_event(order, type=OrderEvent.Type.COURIER), order)
    assert (
        set(moved["order"]) == {"id", "courier", "updated_at"}
        and moved["order"]["courier"]["id"] == courier.pk
    )


def test_a_v2_public_event_carries_only_public_fields(order):
    event = submitted(order)
    whole = payloads.order_payload(loaded(order), seq=0)
    public = payloads.lean_public_event_payload(event, payloads.public_order_payload(whole))
    assert set(public) == {"seq", "type", "at", "from", "to", "order"}, "no source, leg or provider status"
    assert set(public["order"]) == {"id", "updated_at"}, "legs are not public"


# The size of a v2 event frame carrying one typical status change, as the hub sends it: counted with the
# `typical` ids, seqs and times (a kitchen's report: the order moves and names its leg).
V2_STATUS_EVENT_FRAME_BYTES = {"full": 341, "public": 213}


def test_a_v2_status_change_frame_is_small(order):
    event = submitted(order)
    whole = payloads.order_payload(loaded(order), seq=0)
    full = typical(payloads.lean_event_payload(event, whole))
    public = typical(payloads.lean_public_event_payload(event, payloads.public_order_payload(whole)))
    sizes = {"full": len(event_frame(full)), "public": len(event_frame(public))}
    for shape, size in sizes.items():
        assert size <= V2_STATUS_EVENT_FRAME_BYTES[shape] + MARGIN_BYTES, f"{shape} v2 event frame: {sizes}"


# bench/fanout.py's load: its writers move each order along these statuses with order.status events and
# no leg, as a poll tick's bulk write does; a 60 s run at 300 changes/s numbers seqs in the hundreds of
# thousands and orders in the tens of thousands. Protocol v2's target: under 200 bytes per event.
BENCH_STATUSES = ["submitted", "cooking", "ready", "courier_search", "delivering", "delivered"]
BENCH_SEQ, BENCH_ORDER_ID = 123_456, 12_345
V2_BENCH_EVENT_BYTES = {"full": 199, "public": 183}


def test_a_v2_frame_of_the_benchmarks_status_changes_is_under_200_bytes_per_event(order):
    events = [
        OrderEvent.objects.create(
            order=order, type=OrderEvent.Type.STATUS, from_status=before, to_status=after, source="poll"
        )
        for before, after in zip(BENCH_STATUSES, BENCH_STATUSES[1:], strict=False)
    ] * 6  # a 100 ms flush at 300 changes/s: 30 events
    whole = payloads.order_payload(loaded(order), seq=0)
    shapes = {
        "full": lambda event: payloads.lean_event_payload(event, whole),
        "public": lambda event: payloads.lean_public_event_payload(
            event, payloads.public_order_payload(whole)
        ),
    }
    for shape, render in shapes.items():
        items = []
        for n, event in enumerate(events):
            payload = {**typical(render(event)), "seq": BENCH_SEQ + n}
            payload["order"] = {**payload["order"], "id": BENCH_ORDER_ID}
            items.append((BENCH_SEQ + n, BENCH_ORDER_ID, payloads.dumps(payload)))
        [frame] = hub._batches(items)
        per_event = len(frame.text.encode()) / len(events)
        assert per_event <= V2_BENCH_EVENT_BYTES[shape] + 2, f"{shape}: {per_event:.1f} bytes per event"
        assert per_event < 200
