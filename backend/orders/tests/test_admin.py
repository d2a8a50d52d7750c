"""The admin changes orders only through the services: no form writes a status, a courier or a leg, and
each operator action appends the events its service appends (and reaches the sockets through the relay)."""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.messages import constants

from orders import services
from orders.models import Alert, Courier, Leg, Order, OrderEvent
from orders.tests import factories
from realtime import broadcast

pytestmark = pytest.mark.django_db

PAGES = ["restaurant", "dish", "courier", "order", "leg", "orderevent", "alert"]
CHANGELIST = "/admin/orders/order/"
TIMEOUT = 3


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    """Nobody here signs in with a password (force_login, tokens): a cheap hasher saves a second per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def submitted(customer, restaurants) -> Order:
    """An order both its kitchens have accepted."""
    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    for provider, status in (("melange", "not started"), ("bueno", "accepted")):
        services.leg_apply_status(leg_id=kitchen(order, provider).pk, provider_status=status, source="poll")
    order.refresh_from_db()
    return order


@pytest.fixture
def couriers() -> tuple[Courier, Courier]:
    return factories.make_courier("courier1"), factories.make_courier("courier2")


def kitchen(order: Order, provider: str) -> Leg:
    return order.legs.get(provider=provider)


def events_after(order: Order, seq: int) -> list[OrderEvent]:
    return list(order.events.filter(seq__gt=seq).order_by("seq"))


def last_seq(order: Order) -> int:
    return order.events.order_by("-seq").values_list("seq", flat=True).first() or 0


def shown(response) -> list[tuple[int, str]]:
    """The messages a (followed) response shows: level and text."""
    return [(message.level, str(message)) for message in response.context["messages"]]


def change_form_data(response) -> dict[str, object]:
    """What a browser posts back from a change page: its form's fields as loaded and each inline's
    management form."""
    form = response.context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        data.update({management.add_prefix(name): management[name].value() for name in management.fields})
    return data


def act(client, action: str, orders: list[Order], **form) -> object:
    """An action from the changelist: pick it for the selected orders, then submit its form (if any)."""
    selected = {"action": action, "_selected_action": [order.pk for order in orders]}
    first = client.post(CHANGELIST, {**selected, "index": 0})
    if first.status_code != 200:
        return first
    return client.post(CHANGELIST, {**selected, **form, "_confirm": "go"}, follow=True)


# --- pages ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", PAGES)
def test_changelists_with_search_and_filters_load(admin_client, submitted, couriers, model):
    assert admin_client.get(f"/admin/orders/{model}/").status_code == 200
    assert admin_client.get(f"/admin/orders/{model}/?q=1").status_code == 200


def test_order_page_shows_legs_history_and_the_actions(admin_client, submitted):
    content = admin_client.get(f"/admin/orders/order/{submitted.pk}/change/").content
    assert b"order.created" in content and b"not started" in content
    for action in ("cancel", "retry", "override", "reassign"):
        assert f"/admin/orders/order/{submitted.pk}/operate/{action}/".encode() in content


def test_customers_are_kept_out(client, customer, submitted):
    client.force_login(customer)
    assert client.get(CHANGELIST).status_code == 302
    assert client.get(f"/admin/orders/order/{submitted.pk}/operate/cancel/").status_code == 302
    assert Order.objects.get().status == "submitted"


# --- nothing status-critical is written by a form -------------------------------------------------------


def test_orders_and_legs_are_neither_added_nor_deleted_here(admin_client, submitted):
    leg = submitted.legs.first()
    assert admin_client.get("/admin/orders/order/add/").status_code == 403
    assert admin_client.get("/admin/orders/leg/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/orders/order/{submitted.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert admin_client.post(f"/admin/orders/leg/{leg.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Order.objects.filter(pk=submitted.pk).exists() and Leg.objects.filter(pk=leg.pk).exists()


def test_posting_a_submitted_order_changes_nothing(admin_client, submitted, couriers):
    page = f"/admin/orders/order/{submitted.pk}/change/"
    loaded = admin_client.get(page)
    assert set(loaded.context["adminform"].form.fields) == set(), "no field of a submitted order is editable"
    leg = kitchen(submitted, "melange")
    before = last_seq(submitted)
    forged = {
        **change_form_data(loaded),
        "status": "delivered",
        "courier": couriers[0].pk,
        "eta": "2030-01-01 12:00:00",
        "delivery_address": "Elsewhere 1",
        "notified_status": "delivered",
        "failure_reason": "forged",
        "total": 1,
        "legs-0-id": leg.pk,
        "legs-0-status": "delivered",
        "legs-0-attempts": 7,
        "legs-0-next_poll_at": "2030-01-01 12:00:00",
        "legs-0-last_error": "forged",
        "legs-0-cancel_status": "requested",
    }
    assert admin_client.post(page, forged).status_code == 302
    order = Order.objects.get(pk=submitted.pk)
    stored = Leg.objects.get(pk=leg.pk)
    assert (order.status, order.courier, order.eta, order.delivery_address, order.total) == (
        submitted.status,
        None,
        None,
        submitted.delivery_address,
        submitted.total,
    )
    assert (order.notified_status, order.failure_reason) == ("", "")
    assert (stored.status, stored.attempts, stored.next_poll_at, stored.last_error, stored.cancel_status) == (
        leg.status,
        leg.attempts,
        leg.next_poll_at,
        leg.last_error,
        leg.cancel_status,
    )
    assert last_seq(order) == before


def test_a_scheduled_order_takes_a_new_address_and_nothing_else(
    admin_client, customer, restaurants, couriers
):
    order = factories.make_order(customer, restaurants["melange"])
    page = f"/admin/orders/order/{order.pk}/change/"
    loaded = admin_client.get(page)
    assert set(loaded.context["adminform"].form.fields) == {"delivery_address"}
    posted = {**change_form_data(loaded), "delivery_address": "Khreshchatyk 1"}
    posted |= {"status": "cancelled", "courier": couriers[0].pk, "total": 1}
    assert admin_client.post(page, posted).status_code == 302
    order.refresh_from_db()
    assert (order.delivery_address, order.status, order.courier, order.total) == (
        "Khreshchatyk 1",
        "scheduled",
        None,
        10000,
    )


def test_an_address_posted_after_submission_is_refused(admin_client, customer, restaurants):
    """The form was loaded while scheduled; a provider took the order before it was posted."""
    order = factories.make_order(customer, restaurants["melange"])
    page = f"/admin/orders/order/{order.pk}/change/"
    posted = {**change_form_data(admin_client.get(page)), "delivery_address": "Khreshchatyk 1"}
    services.leg_apply_status(leg_id=order.legs.get().pk, provider_status="not started", source="poll")
    admin_client.post(page, posted)
    order.refresh_from_db()
    assert (order.status, order.delivery_address) == ("submitted", "Sahaidachnoho St, 10, Kyiv")


def test_legs_are_view_only(admin_client, submitted):
    leg = kitchen(submitted, "melange")
    page = f"/admin/orders/leg/{leg.pk}/change/"
    assert admin_client.get(page).status_code == 200
    forged = {"status": "delivered", "attempts": 7, "last_error": "forged", "next_poll_at": ""}
    assert admin_client.post(page, forged).status_code == 403
    stored = Leg.objects.get(pk=leg.pk)
    assert (stored.status, stored.attempts, stored.last_error, stored.next_poll_at) == (
        leg.status,
        0,
        "",
        leg.next_poll_at,
    )


def test_a_couriers_profile_is_editable_but_not_its_position(admin_client, couriers):
    courier = couriers[0]
    Courier.objects.filter(pk=courier.pk).update(lat=50.45, lng=30.52)
    page = f"/admin/orders/courier/{courier.pk}/change/"
    loaded = admin_client.get(page)
    assert {"name", "phone", "is_active"} <= set(loaded.context["adminform"].form.fields)
    posted = {**change_form_data(loaded), "name": "Renamed", "phone": "+380", "lat": 1, "lng": 2}
    assert admin_client.post(page, posted).status_code == 302
    courier.refresh_from_db()
    assert (courier.name, courier.phone, courier.lat, courier.lng) == ("Renamed", "+380", 50.45, 30.52)


def test_history_and_alerts_are_view_only(admin_client, submitted):
    from orders import alerts

    event = submitted.events.first()
    alert = alerts.raise_alert(order=submitted, kind=Alert.Kind.LATE, detail="Late 5 min", source="system")
    assert b"Late 5 min" in admin_client.get("/admin/orders/alert/").content
    for model, pk in (("orderevent", event.pk), ("alert", alert.pk)):
        assert admin_client.get(f"/admin/orders/{model}/add/").status_code == 403
        assert admin_client.get(f"/admin/orders/{model}/{pk}/change/").status_code == 200  # view only
        assert admin_client.post(f"/admin/orders/{model}/{pk}/change/", {"reason": "x"}).status_code == 403
        assert admin_client.post(f"/admin/orders/{model}/{pk}/delete/", {"post": "yes"}).status_code == 403
    alert.refresh_from_db()
    assert (alert.kind, alert.detail) == ("late", "Late 5 min")


# --- actions, through the services ----------------------------------------------------------------------


def test_cancel_goes_through_the_service(admin_client, operator, submitted):
    before = last_seq(submitted)
    form = admin_client.post(
        CHANGELIST, {"action": "cancel_orders", "_selected_action": [submitted.pk], "index": 0}
    )
    assert form.status_code == 200 and "reason" in form.context["form"].fields
    assert last_seq(submitted) == before, "asking for the reason changes nothing"
    response = act(admin_client, "cancel_orders", [submitted], reason="customer called")
    submitted.refresh_from_db()
    assert submitted.status == "cancelled"
    status, *legs = events_after(submitted, before)
    assert (status.type, status.from_status, status.to_status, status.source) == (
        "order.status",
        "submitted",
        "cancelled",
        "operator",
    )
    assert (status.actor, status.reason) == (operator, "customer called")
    assert [event.type for event in legs] == ["leg.cancel", "leg.cancel"], "one per leg, as the service does"
    assert [level for level, _ in shown(response)] == [constants.SUCCESS]
    assert f"#{submitted.pk}" in shown(response)[0][1]


def test_retry_goes_through_the_service(admin_client, operator, submitted):
    leg = kitchen(submitted, "melange")
    services.leg_record_failure(leg_id=leg.pk, error="timeout")
    before = last_seq(submitted)
    response = admin_client.post(
        CHANGELIST, {"action": "retry_orders", "_selected_action": [submitted.pk], "index": 0}, follow=True
    )
    leg.refresh_from_db()
    assert (leg.attempts, leg.last_error) == (0, "")
    retry, cleared = events_after(submitted, before)
    assert (retry.type, retry.actor, retry.reason, retry.from_status, retry.to_status) == (
        "order.retry",
        operator,
        "retry",
        "submitted",
        "submitted",
    )
    assert (cleared.type, cleared.alert.kind) == ("alert.cleared", "provider_failing")
    assert [level for level, _ in shown(response)] == [constants.SUCCESS]


def test_override_asks_for_a_status_and_a_reason(admin_client, operator, submitted):
    before = last_seq(submitted)
    refused = act(admin_client, "override_orders", [submitted], to_status="cooking", reason="")
    assert refused.status_code == 200 and refused.context["form"].errors["reason"]
    assert last_seq(submitted) == before
    act(admin_client, "override_orders", [submitted], to_status="cooking", reason="kitchen phoned")
    submitted.refresh_from_db()
    [event] = events_after(submitted, before)
    assert submitted.status == "cooking"
    assert (event.type, event.from_status, event.to_status, event.actor, event.reason) == (
        "order.override",
        "submitted",
        "cooking",
        operator,
        "kitchen phoned",
    )


def test_reassign_hands_the_order_to_another_courier(admin_client, operator, submitted, couriers):
    first, second = couriers
    Order.objects.filter(pk=submitted.pk).update(courier=first)
    before = last_seq(submitted)
    response = act(admin_client, "reassign_orders", [submitted], courier=second.pk, reason="bike broke")
    submitted.refresh_from_db()
    assert (submitted.courier, submitted.status) == (second, "submitted")
    [event] = events_after(submitted, before)
    assert (event.type, event.source, event.actor, event.from_status, event.to_status) == (
        "order.courier",
        "operator",
        operator,
        "submitted",
        "submitted",
    )
    assert "bike broke" in event.reason and first.name in event.reason and second.name in event.reason
    assert [level for level, _ in shown(response)] == [constants.SUCCESS]


def test_each_order_is_reported_and_a_refusal_changes_nothing(admin_client, customer, restaurants, submitted):
    finished = factories.make_order(customer, restaurants["melange"])
    services.order_cancel(order_id=finished.pk, actor=customer)
    before = {order.pk: last_seq(order) for order in (submitted, finished)}
    response = act(admin_client, "cancel_orders", [submitted, finished], reason="closing early")
    assert Order.objects.get(pk=submitted.pk).status == "cancelled"
    assert last_seq(finished) == before[finished.pk]
    levels = dict((text.split(":")[0], level) for level, text in shown(response) if text.startswith("#"))
    assert levels == {f"#{finished.pk}": constants.ERROR}
    assert any(level == constants.SUCCESS and f"#{submitted.pk}" in text for level, text in shown(response))


def test_a_refused_action_is_an_error_message_not_a_500(admin_client, submitted, couriers):
    before = last_seq(submitted)
    nothing_failing = admin_client.post(
        CHANGELIST, {"action": "retry_orders", "_selected_action": [submitted.pk], "index": 0}, follow=True
    )
    same_status = act(admin_client, "override_orders", [submitted], to_status="submitted", reason="again")
    for response in (nothing_failing, same_status):
        assert response.status_code == 200
        assert [level for level, _ in shown(response)] == [constants.ERROR]
    Order.objects.filter(pk=submitted.pk).update(courier=couriers[0])
    same_courier = act(admin_client, "reassign_orders", [submitted], courier=couriers[0].pk, reason="x")
    assert [level for level, _ in shown(same_courier)] == [constants.ERROR]
    assert last_seq(submitted) == before
    assert Order.objects.get(pk=submitted.pk).status == "submitted"


def test_a_finished_order_keeps_its_courier(admin_client, customer, submitted, couriers):
    services.order_cancel(order_id=submitted.pk, actor=customer)
    before = last_seq(submitted)
    refused = act(admin_client, "reassign_orders", [submitted], courier=couriers[1].pk, reason="late pickup")
    assert [level for level, _ in shown(refused)] == [constants.ERROR]
    assert (Order.objects.get(pk=submitted.pk).courier, last_seq(submitted)) == (None, before)
    Courier.objects.filter(pk=couriers[0].pk).update(is_active=False)
    offered = act(admin_client, "reassign_orders", [submitted], courier=couriers[0].pk, reason="x")
    assert offered.context["form"].errors["courier"], "an inactive courier is not offered"


def test_an_orders_page_acts_through_a_form_and_never_on_get(admin_client, operator, submitted):
    base = f"/admin/orders/order/{submitted.pk}/operate"
    before = last_seq(submitted)
    for action in ("cancel", "retry", "override", "reassign"):
        assert admin_client.get(f"{base}/{action}/").status_code == 200
    assert admin_client.get(f"{base}/delete/").status_code == 404
    assert last_seq(submitted) == before, "showing a form changes nothing"
    response = admin_client.post(
        f"{base}/override/", {"to_status": "failed", "reason": "kitchen closed"}, follow=True
    )
    assert response.redirect_chain == [(f"/admin/orders/order/{submitted.pk}/change/", 302)]
    assert [level for level, _ in shown(response)] == [constants.SUCCESS]
    submitted.refresh_from_db()
    override, raised = events_after(submitted, before)
    assert submitted.status == "failed"
    assert (override.type, override.actor, override.reason) == ("order.override", operator, "kitchen closed")
    assert (raised.type, raised.alert.kind) == ("alert.raised", "failed")
    response = admin_client.post(f"{base}/cancel/", {"reason": "too late"}, follow=True)
    assert [level for level, _ in shown(response)] == [constants.ERROR], "a failed order is finished"


def test_the_action_page_holds_no_inline_code(admin_client, submitted):
    from core.tests.test_security_settings import InlineCode

    parser = InlineCode()
    parser.feed(admin_client.get(f"/admin/orders/order/{submitted.pk}/operate/reassign/").content.decode())
    assert parser.found == []


# --- a reassigned order reaches its new courier ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_relay_brings_a_reassigned_order_to_its_new_courier(admin_client, relay, submitted, couriers):
    """From the admin's form through the service, the relay and Redis to the group the new courier's
    sockets listen on (realtime/tests/test_consumers.py follows a group's messages on to the sockets)."""
    first, second = couriers
    Order.objects.filter(pk=submitted.pk).update(courier=first)
    relay.caught_up()
    layer = get_channel_layer()

    async def scenario() -> None:
        channel = await layer.new_channel()
        await layer.group_add(broadcast.courier_group(second.pk), channel)
        page = f"/admin/orders/order/{submitted.pk}/operate/reassign/"
        form = {"courier": second.pk, "reason": "closer"}
        posted = await database_sync_to_async(admin_client.post)(page, form)
        assert posted.status_code == 302
        message = await asyncio.wait_for(layer.receive(channel), TIMEOUT)
        await layer.group_discard(broadcast.courier_group(second.pk), channel)
        [(seq, order_id, text)] = message["events"]
        event = json.loads(text)
        assert (message["group"], order_id, event["seq"]) == (f"courier.{second.pk}", submitted.pk, seq)
        assert (event["type"], event["order"]["courier"]["id"]) == ("order.courier", second.pk)
        assert "reason" not in event, "couriers get the public shape: no operator's note"

    async_to_sync(scenario)()


def test_a_courier_carrying_an_active_order_cannot_be_deleted(admin_client, submitted, couriers):
    busy, idle = couriers
    Order.objects.filter(pk=submitted.pk).update(courier=busy)
    assert admin_client.post(f"/admin/orders/courier/{busy.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Courier.objects.filter(pk=busy.pk).exists()
    admin_client.post(f"/admin/orders/courier/{idle.pk}/delete/", {"post": "yes"})
    assert not Courier.objects.filter(pk=idle.pk).exists()
