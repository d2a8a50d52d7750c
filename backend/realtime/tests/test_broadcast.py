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


FULL_EVENT_KEYS = {"seq", "type", "at", "from", "to", "source", "provider_status", "reason", "leg", "order"}
PUBLIC_EVENT_KEYS = set(payloads.PublicEventPayload.__annotations__)
PUBLIC_ORDER_KEYS = list(payloads.PublicOrderPayload.__annotations__)


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

    # Operators: every event, whole, in seq order.
    operators = parsed(messages[groups["operators"]])
    assert [(seq, order_id) for seq, order_id, _ in operators] == [(e.seq, e.order_id) for e in events]
    for seq, order_id, event in operators:
        assert FULL_EVENT_KEYS <= set(event) and event["seq"] == seq and event["order"]["id"] == order_id
        assert {"legs", "alerts", "failure_reason"} <= set(event["order"])
    [alert] = [event for _, _, event in operators if event["type"] == "alert.raised"]
    assert alert["alert"]["kind"] == "late"

    # An order's group and its courier's: the public events of that order only, in the public shape.
    for group, order in [("carried", carried), ("plain", plain), ("courier", carried)]:
        public = parsed(messages[groups[group]])
        expected = [(e.seq, e.order_id) for e in events if e.order_id == order.pk and is_public_event(e)]
        assert [(seq, order_id) for seq, order_id, _ in public] == expected, group
        for _, _, event in public:
            assert set(event) == PUBLIC_EVENT_KEYS
            # The courier carrying the order gets whom to hand it to as well.
            extra = ["customer"] if group == "courier" else []
            assert list(event["order"]) == PUBLIC_ORDER_KEYS + extra, group
    carried_events = [event for _, _, event in parsed(messages[groups["carried"]])]
    for event, for_courier in zip(carried_events, parsed(messages[groups["courier"]]), strict=True):
        assert {**event["order"], "customer": for_courier[2]["order"]["customer"]} == for_courier[2]["order"]

    reasons = {event["type"]: event["reason"] for _, _, event in parsed(messages[groups["carried"]])}
    assert reasons["order.override"] == "", "an operator's note is not public"
    [cancelled] = [event for _, _, event in parsed(messages[groups["plain"]]) if event["to"] == "cancelled"]
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
