"""Least disclosure: customers and couriers get the public order shape, operators the whole order.

Real requests: the REST API with tokens, WebSockets over the ASGI app and the real Redis channel layer
(events released by the relay, as in production), the served OpenAPI schema. The data comes through the
services: a provider sub-order id, a failed provider call with its error, an alert an operator took on,
an operator's override with a reason, a courier with a phone number, an order that failed.
"""

import json
from typing import Any

import pytest
import schemathesis
from channels.db import database_sync_to_async
from django.core.wsgi import get_wsgi_application
from django.db import transaction

from orders import alerts, services
from orders.disclosure import PUBLIC_EVENT_TYPES
from orders.models import Alert, Courier, Order
from orders.sync import leases
from orders.tests import factories
from realtime.payloads import CourierOrderPayload, PublicOrderPayload
from realtime.tests.test_consumers import frame, run, socket

SUB_ORDER_ID = "mel-7f3a9c-internal"
PROVIDER_ERROR = "HTTP 503 from 10.1.2.3: kitchen-gw upstream timed out"
OVERRIDE_REASON = "Phoned Melange: chef out sick, pushed it on by hand"
ACK_NOTE = "Watching this kitchen"
PHONE = "+380501112233"
OPERATOR = "olena"  # the operator fixture's username

# Keys that exist only in the full shape, at any depth.
INTERNAL_KEYS = {
    "legs",
    "external_id",
    "provider",
    "provider_status",
    "attempts",
    "last_error",
    "next_poll_at",
    "deadline_at",
    "cancel_status",
    "alerts",
    "alert",
    "acknowledged_by",
    "note",
    "actor",
    "source",
    "failure_reason",
    "customer",  # the customer's name and phone: operators', and the courier's of the orders it carries
}
CUSTOMER_PHONE = "+380679998877"
# The courier's PHONE is public now: the customer calls whoever brings the order.
SECRETS = [SUB_ORDER_ID, PROVIDER_ERROR, OVERRIDE_REASON, ACK_NOTE, CUSTOMER_PHONE, OPERATOR]


def keys_in(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data).union(*(keys_in(value) for value in data.values()))
    if isinstance(data, list):
        return set().union(*(keys_in(item) for item in data))
    return set()


def assert_public(data: Any, *, carrier: bool = False) -> None:
    """Nothing internal in `data`; `carrier`: the courier's shape, which adds whom to hand the order to."""
    internal = INTERNAL_KEYS - {"customer"} if carrier else INTERNAL_KEYS
    assert not keys_in(data) & internal, f"internal fields: {keys_in(data) & internal}"
    text = json.dumps(data)
    secrets = [secret for secret in SECRETS if not (carrier and secret == CUSTOMER_PHONE)]
    assert not [secret for secret in secrets if secret in text], text


@pytest.fixture
def shop(customer, operator, restaurants, settings) -> dict[str, Any]:
    """Order `live`: a provider id and status, a failing call with its alert (acknowledged), an operator's
    override, a courier with a phone. Order `failed`: failed by its provider's errors."""
    courier = factories.make_courier("courier1")
    Courier.objects.filter(pk=courier.pk).update(phone=PHONE)
    live = factories.make_order(customer, restaurants["melange"])
    Order.objects.filter(pk=live.pk).update(phone=CUSTOMER_PHONE)
    leg = live.legs.get()
    leases.leg_set_external_id(leg_id=leg.pk, external_id=SUB_ORDER_ID)
    services.leg_apply_status(leg_id=leg.pk, provider_status="cooking", source="poll")
    services.leg_record_failure(leg_id=leg.pk, error=PROVIDER_ERROR)
    alert = live.alerts.get(kind=Alert.Kind.PROVIDER_FAILING)
    alerts.alert_acknowledge(alert_id=alert.pk, actor=operator, note=ACK_NOTE)
    services.order_override_status(
        order_id=live.pk, actor=operator, to_status="ready", reason=OVERRIDE_REASON
    )
    Order.objects.filter(pk=live.pk).update(courier=courier)  # as the delivery provider's driver would

    failed = factories.make_order(customer, restaurants["bueno"])
    settings.PROVIDER_FAILURE_DEADLINE_SECONDS = 0  # the first failed call is past the deadline
    services.leg_record_failure(leg_id=failed.legs.get().pk, error=PROVIDER_ERROR)
    failed.refresh_from_db()
    assert failed.status == "failed" and PROVIDER_ERROR in failed.failure_reason
    return {"live": live, "failed": failed, "courier": courier, "leg": leg}


# --- REST ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestRest:
    def test_customer_list_and_details_are_public(self, client_for, customer, shop):
        api = client_for(customer)
        listing = api.get("/api/orders/").json()
        assert {order["id"] for order in listing["results"]} == {shop["live"].pk, shop["failed"].pk}
        assert_public(listing)
        for order in (shop["live"], shop["failed"]):
            detail = api.get(f"/api/orders/{order.pk}/").json()
            assert_public(detail)
            assert {event["type"] for event in detail["events"]} <= PUBLIC_EVENT_TYPES
        detail = api.get(f"/api/orders/{shop['live'].pk}/").json()
        assert detail["courier"]["name"] == "Courier1" and detail["items"][0]["restaurant"] == "Melange"
        [override] = [event for event in detail["events"] if event["type"] == "order.override"]
        assert (override["from"], override["to"], override["reason"]) == ("cooking", "ready", "")
        assert api.get(f"/api/orders/{shop['failed'].pk}/").json()["status"] == "failed"

    def test_customer_create_and_cancel_answers_are_public(self, client_for, customer, restaurants, shop):
        api = client_for(customer)
        body = {"items": [{"dish": factories.dish(restaurants["melange"]).pk, "quantity": 1}]}
        created = api.post("/api/orders/", {**body, "delivery_address": "Kyiv"}, format="json")
        assert created.status_code == 201, created.content
        assert_public(created.json())
        cancelled = api.post(
            f"/api/orders/{created.json()['id']}/cancel/", {"reason": "Ordered twice"}, format="json"
        )
        assert cancelled.status_code == 200, cancelled.content
        assert_public(cancelled.json())
        # The customer's own words come back to them; the providers' cancellation steps do not.
        assert [(event["type"], event["reason"]) for event in cancelled.json()["events"]] == [
            ("order.created", ""),
            ("order.status", "Ordered twice"),
        ]

    def test_courier_gets_the_public_shape(self, client_for, shop):
        api = client_for(shop["courier"].user)
        listing = api.get("/api/orders/").json()
        assert [order["id"] for order in listing["results"]] == [shop["live"].pk]
        assert_public(listing)
        assert_public(api.get(f"/api/orders/{shop['live'].pk}/").json())

    def test_operator_gets_the_whole_order(self, client_for, operator, shop):
        api = client_for(operator)
        detail = api.get(f"/api/orders/{shop['live'].pk}/").json()
        [leg] = detail["legs"]
        assert (leg["external_id"], leg["provider_status"], leg["attempts"]) == (SUB_ORDER_ID, "cooking", 1)
        assert leg["last_error"] == PROVIDER_ERROR
        [alert] = detail["alerts"]
        assert (alert["acknowledged_by"], alert["note"]) == (OPERATOR, ACK_NOTE)
        [override] = [event for event in detail["events"] if event["type"] == "order.override"]
        assert (override["actor"], override["reason"], override["source"]) == (
            OPERATOR,
            OVERRIDE_REASON,
            "operator",
        )
        assert {"alert.raised", "alert.acknowledged"} <= {event["type"] for event in detail["events"]}
        assert (detail["courier"]["phone"], detail["phone"]) == (PHONE, CUSTOMER_PHONE)
        listing = api.get("/api/orders/").json()
        failed = next(order for order in listing["results"] if order["id"] == shop["failed"].pk)
        assert PROVIDER_ERROR in failed["failure_reason"]

    def test_tracking_page_says_sorry_without_the_cause(self, client, customer, shop):
        client.force_login(customer)
        page = client.get(f"/orders/{shop['failed'].pk}/track/")
        assert page.status_code == 200
        assert PROVIDER_ERROR not in page.content.decode()


# --- the schema ------------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestSchema:
    def test_both_shapes_are_documented_and_told_apart(self, api):
        document = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
        components = document["components"]["schemas"]
        for name in ("PublicOrder", "PublicOrderDetail", "PublicOrderEvent", "PublicCourier"):
            assert components[name]["additionalProperties"] is False, name
            assert not set(components[name]["properties"]) & INTERNAL_KEYS, name
        for full, public in (("Order", "PublicOrder"), ("OrderDetail", "PublicOrderDetail")):
            # a public answer lacks what the full shape requires: it can only match its own
            assert {"legs", "alerts"} <= set(components[full]["required"]) - set(
                components[public]["properties"]
            )
        one_of = {
            name: [item["$ref"].rsplit("/", 1)[1] for item in components[name]["oneOf"]]
            for name in components
            if "oneOf" in components[name]
        }
        assert one_of["OrderForUser"] == ["Order", "PublicOrder"]
        assert one_of["OrderDetailForUser"] == ["OrderDetail", "PublicOrderDetail"]

        def answer(path: str, method: str, code: str) -> str:
            schema = document["paths"][path][method]["responses"][code]["content"]["application/json"][
                "schema"
            ]
            ref = schema["$ref"].rsplit("/", 1)[1]
            if ref.startswith("Paginated"):
                ref = components[ref]["properties"]["results"]["items"]["$ref"].rsplit("/", 1)[1]
            return ref

        assert answer("/api/orders/", "get", "200") == "OrderForUser"
        assert answer("/api/orders/", "post", "201") == "OrderForUser"
        assert answer("/api/orders/{id}/", "get", "200") == "OrderDetailForUser"
        assert answer("/api/orders/{id}/cancel/", "post", "200") == "OrderDetailForUser"


# In process over WSGI, as the fuzz test calls it: the request's end closes the database connection, so the
# data must be committed (transaction=True).
@pytest.mark.django_db(transaction=True)
class TestSchemaValidation:
    def test_each_answer_validates_against_the_schema(self, customer, operator, shop):
        schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
        tokens = [factories.token_for(user) for user in (customer, operator)]
        for path, parameters in [("/api/orders/", {}), ("/api/orders/{id}/", {"id": shop["live"].pk})]:
            for token in tokens:
                headers = {"Authorization": f"Token {token}"}
                case = schema[path]["GET"].Case(path_parameters=parameters, headers=headers)
                response = case.call()
                assert response.status_code == 200
                case.validate_response(response)  # oneOf: exactly one of the two shapes matches


# --- WebSockets ------------------------------------------------------------------------------------------


async def events_until(communicator, seq: int) -> list[dict]:
    """The events a socket receives up to (and including) `seq`."""
    events: list[dict] = []
    while not events or events[-1]["seq"] < seq:
        received = await frame(communicator)
        if received["type"] == "events":
            events += received["events"]
    return events


def raise_late_alert(order: Order) -> None:
    with transaction.atomic():
        alerts.raise_alert(order=order, kind=Alert.Kind.LATE, detail=PROVIDER_ERROR, source="system")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
class TestWebSockets:
    def test_snapshots_follow_the_stream(self, shop, customer, operator, relay):
        relay.caught_up()
        live = shop["live"]

        async def scenario():
            for path, user in [
                (f"/ws/orders/{live.pk}/", customer),
                ("/ws/couriers/", shop["courier"].user),
                (f"/ws/orders/{live.pk}/", operator),  # the shape follows the stream, not the user
            ]:
                communicator = await socket(path, user)
                await communicator.connect()
                [order] = (await frame(communicator))["orders"]
                carrier = path == "/ws/couriers/"
                shape = CourierOrderPayload if carrier else PublicOrderPayload
                assert list(order) == list(shape.__annotations__), path
                assert order["courier"]["name"] == "Courier1" and order["restaurants"][0]["name"] == "Melange"
                assert order["courier"]["phone"] == PHONE  # the customer may call the courier
                assert_public(order, carrier=carrier)
                if carrier:
                    assert order["customer"] == {"first_name": "", "phone": CUSTOMER_PHONE}
                await communicator.disconnect()

            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            board = {order["id"]: order for order in (await frame(communicator))["orders"]}
            [leg] = board[live.pk]["legs"]
            assert (leg["provider_status"], leg["last_error"]) == ("cooking", PROVIDER_ERROR)
            assert board[live.pk]["alerts"][0]["acknowledged_by"] == OPERATOR
            assert PROVIDER_ERROR in board[shop["failed"].pk]["failure_reason"]
            await communicator.disconnect()

        run(scenario)

    def test_live_events_and_replays_follow_the_stream(self, shop, customer, operator, relay):
        seen = relay.caught_up()
        live = shop["live"]

        async def scenario():
            operators = await socket("/ws/operators/", operator)
            mine = await socket(f"/ws/orders/{live.pk}/", customer)
            courier = await socket("/ws/couriers/", shop["courier"].user)
            for communicator in (operators, mine, courier):
                await communicator.connect()
                assert (await frame(communicator))["type"] == "snapshot"

            await database_sync_to_async(raise_late_alert)(live)  # operators only
            override = await database_sync_to_async(services.order_override_status)(
                order_id=live.pk, actor=operator, to_status="cooking", reason=OVERRIDE_REASON
            )

            full = await events_until(operators, override.seq)
            assert [event["type"] for event in full] == ["alert.raised", "order.override"]
            assert full[0]["alert"]["detail"] == PROVIDER_ERROR
            assert (full[1]["source"], full[1]["reason"]) == ("operator", OVERRIDE_REASON)
            assert full[1]["order"]["legs"][0]["last_error"] == PROVIDER_ERROR

            for communicator in (mine, courier):
                public = await events_until(communicator, override.seq)
                # the alert's seq is a gap here; the override comes in the public shape
                assert [(event["seq"], event["type"]) for event in public] == [
                    (override.seq, "order.override")
                ]
                # protocol v2: what changed, public fields only; the operator's reason is left out
                assert set(public[0]) == {"seq", "type", "at", "from", "to", "order"}
                assert (public[0]["from"], public[0]["to"]) == ("ready", "cooking")
                assert set(public[0]["order"]) == {"id", "updated_at"}
                assert_public(public, carrier=communicator is courier)
                assert await communicator.receive_nothing(timeout=0.3)

            await database_sync_to_async(relay.caught_up)()
            replay = await socket(f"/ws/orders/{live.pk}/?after={seen}", customer)
            await replay.connect()
            replayed = (await frame(replay))["events"]
            assert [event["seq"] for event in replayed] == [override.seq]
            assert_public(replayed)
            for communicator in (operators, mine, courier, replay):
                await communicator.disconnect()

        run(scenario)
