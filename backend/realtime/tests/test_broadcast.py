"""publish_released (realtime.broadcast) on the real Redis channel layer: one message per group that may
see a released batch, the whole events for operators, the public ones in the public shape for the order
and courier groups, and an exception when Redis cannot be reached, so that the relay tries again.

A listener subscribes to the groups in a thread with its own event loop, as a web process would; the test
thread publishes, reading the events inside the test's transaction."""

import asyncio
import json
import threading
import time
from collections import Counter
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.conf import settings as django_settings

from orders import alerts, services
from orders.disclosure import is_public_event
from orders.models import Alert, Order, OrderEvent
from orders.tests import factories
from realtime import broadcast, payloads
from realtime.tests.conftest import free_port

pytestmark = pytest.mark.django_db
TIMEOUT = 5
QUIET_SECONDS = 0.3  # after the expected messages: long enough for a stray one to show


class Listener:
    """A channel of its own in `groups`, receiving in a thread with its own event loop."""

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups
        self.messages: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        self.loop, self.stopping = asyncio.get_running_loop(), asyncio.Event()
        layer = get_channel_layer()
        channel = await layer.new_channel()
        for group in self.groups:
            await layer.group_add(group, channel)

        async def receive() -> None:
            while True:
                self.messages.append(await layer.receive(channel))

        receiver = asyncio.create_task(receive())
        self.ready.set()
        await self.stopping.wait()
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)

    def __enter__(self) -> "Listener":
        self.thread.start()
        assert self.ready.wait(TIMEOUT), "the listener did not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self.thread.join(TIMEOUT)

    def until(self, count: int) -> dict[str, dict[str, Any]]:
        """The messages once `count` have arrived and nothing more came, by group (one each)."""
        deadline = time.monotonic() + TIMEOUT
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} messages: {self.messages}"
            time.sleep(0.01)
        time.sleep(QUIET_SECONDS)
        per_group = Counter(message["group"] for message in self.messages)
        assert set(per_group.values()) == {1}, f"one message per group: {per_group}"
        return {message["group"]: message for message in self.messages}


@pytest.fixture
def world(customer, operator, restaurants):
    """Two orders: `carried` (a courier, progress, an operator's override, an alert) and `plain`
    (cancelled by its customer, with a reason of their own)."""
    courier, idle = factories.make_courier("courier1"), factories.make_courier("courier2")
    carried = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    plain = factories.make_order(customer, restaurants["melange"])
    Order.objects.filter(pk=carried.pk).update(courier=courier)
    services.leg_apply_status(leg_id=carried.legs.first().pk, provider_status="not started", source="poll")
    services.order_override_status(
        order_id=carried.pk, actor=operator, to_status="cooking", reason="kitchen phoned: internal note"
    )
    alerts.raise_alert(
        order=Order.objects.get(pk=carried.pk), kind=Alert.Kind.LATE, detail="late by 5 min", source="system"
    )
    services.order_cancel(order_id=plain.pk, actor=customer, reason="ordered twice")
    return {"carried": carried, "plain": plain, "courier": courier, "idle": idle}


def released(*orders: Order) -> list[OrderEvent]:
    return list(OrderEvent.objects.filter(order__in=orders).order_by("seq"))


def parsed(message: dict[str, Any]) -> list[tuple[int, int, dict[str, Any]]]:
    assert message["type"] == "order.events"
    return [(seq, order_id, json.loads(text)) for seq, order_id, text in message["events"]]


FULL_ORDER_KEYS = list(payloads.OrderPayload.__annotations__)
PUBLIC_EVENT_KEYS = {"seq", "type", "at", "from", "to", "reason", "order"}
PUBLIC_ORDER_KEYS = list(payloads.PublicOrderPayload.__annotations__)
# What only operators see, anywhere in a public event.
INTERNAL_KEYS = {"legs", "alerts", "failure_reason", "provider_status", "source", "leg", "alert"}
INTERNAL_KEYS |= {"cancel_status"}


def keys_within(value: Any) -> set[str]:
    """Every key of every object inside `value`."""
    if isinstance(value, dict):
        return set(value).union(*(keys_within(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_within(item) for item in value))
    return set()


def test_one_message_per_group_each_with_what_that_group_may_see(world):
    carried, plain = world["carried"], world["plain"]
    events = released(carried, plain)
    types = {event.type for event in events}
    assert {"alert.raised", "order.override", "order.created"} <= types, "public and operators-only events"
    groups = {
        "operators": broadcast.OPERATORS,
        "carried": broadcast.order_group(carried.pk),
        "plain": broadcast.order_group(plain.pk),
        "courier": broadcast.courier_group(world["courier"].pk),
        "idle courier": broadcast.courier_group(world["idle"].pk),
        "another order": broadcast.order_group(plain.pk + 1000),
    }
    with Listener(list(groups.values())) as listener:
        broadcast.publish_released(events)
        messages = listener.until(4)
    assert set(messages) == {groups[name] for name in ("operators", "carried", "plain", "courier")}

    # Operators: every event in seq order (v2: seq, type and at first), what changed of its order.
    operators = parsed(messages[groups["operators"]])
    assert [(seq, order_id) for seq, order_id, _ in operators] == [(e.seq, e.order_id) for e in events]
    for seq, order_id, event in operators:
        assert list(event)[:4] == ["seq", "type", "at", "source"] and event["seq"] == seq
        assert event["order"]["id"] == order_id
        if event["type"] == "order.created":
            assert list(event["order"]) == FULL_ORDER_KEYS and event["order"]["seq"] == seq, "whole"
        else:
            assert not {"customer", "restaurants", "total", "seq"} & set(event["order"]), "only what changed"
    [alert] = [event for _, _, event in operators if event["type"] == "alert.raised"]
    assert alert["alert"]["kind"] == "late"
    [override] = [event for _, _, event in operators if event["type"] == "order.override"]
    assert override["to"] == "cooking" and override["reason"] == "kitchen phoned: internal note"
    assert {"updated_at", "failure_reason", "legs"} <= set(override["order"]), "an override re-arms the legs"

    # An order's group and its courier's: the public events of that order only, in the public shape.
    for group, order in [("carried", carried), ("plain", plain), ("courier", carried)]:
        public = parsed(messages[groups[group]])
        expected = [(e.seq, e.order_id) for e in events if e.order_id == order.pk and is_public_event(e)]
        assert [(seq, order_id) for seq, order_id, _ in public] == expected, group
        extra = ["customer"] if group == "courier" else []  # whom the courier hands the order to
        for _, _, event in public:
            assert set(event) <= PUBLIC_EVENT_KEYS, group
            assert not INTERNAL_KEYS & keys_within(event), f"{group}: {event}"
            if event["type"] == "order.created":
                assert list(event["order"]) == PUBLIC_ORDER_KEYS + extra, group
            else:
                assert set(event["order"]) <= set(PUBLIC_ORDER_KEYS), group
    carried_events = [event for _, _, event in parsed(messages[groups["carried"]])]
    for event, for_courier in zip(carried_events, parsed(messages[groups["courier"]]), strict=True):
        if event["type"] == "order.created":
            carried = for_courier[2]["order"]
            assert {**event["order"], "customer": carried["customer"]} == carried
        else:
            assert event == for_courier[2]

    reasons = {event["type"]: event.get("reason") for _, _, event in parsed(messages[groups["carried"]])}
    assert reasons["order.override"] is None, "an operator's note is not public"
    plain_events = [event for _, _, event in parsed(messages[groups["plain"]])]
    [cancelled] = [event for event in plain_events if event.get("to") == "cancelled"]
    assert cancelled["reason"] == "ordered twice", "the customer's own words are"


def test_operators_only_events_reach_operators_only(world):
    carried = world["carried"]
    events = list(OrderEvent.objects.filter(order=carried, type="alert.raised"))
    groups = [
        broadcast.OPERATORS,
        broadcast.order_group(carried.pk),
        broadcast.courier_group(world["courier"].pk),
    ]
    with Listener(groups) as listener:
        broadcast.publish_released(events)
        messages = listener.until(1)
    assert list(messages) == [broadcast.OPERATORS]


def test_nothing_is_published_for_no_events(world):
    with Listener([broadcast.OPERATORS]) as listener:
        broadcast.publish_released([])
        time.sleep(QUIET_SECONDS)
    assert listener.messages == []


def test_a_channel_layer_that_cannot_be_reached_raises_so_that_the_relay_retries(
    world, settings, monkeypatch
):
    layer = django_settings.CHANNEL_LAYERS["default"]
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": [nowhere]}}}
    monkeypatch.setattr(broadcast, "_publisher_instance", None)  # a publisher on that layer
    with pytest.raises(RuntimeError):
        broadcast.publish_released(released(world["carried"]))
