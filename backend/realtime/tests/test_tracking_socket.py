"""/ws/track/<token>/: a shared tracking link's socket, anonymous, over the full ASGI stack and real Redis."""

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone
from rest_framework.test import APIClient

from core.asgi import application
from orders import services
from orders.models import Leg, Order, TrackingLink
from orders.tests import factories
from realtime.tests.test_consumers import TIMEOUT, advance, closed_with, frame, run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.usefixtures("relay")]
SECRETS = ("MEL-SECRET-42", "boom 500", "internal failure text", "olena", "staff note")


@pytest.fixture
def world(customer, other_customer, operator, restaurants, relay):
    courier = factories.make_courier("vasyl")
    mine = factories.make_order(customer, restaurants["melange"])
    other = factories.make_order(customer, restaurants["bueno"])
    Leg.objects.filter(order=mine).update(external_id="MEL-SECRET-42", last_error="Melange said: boom 500")
    Order.objects.filter(pk=mine.pk).update(courier=courier, failure_reason="internal failure text")
    token, _ = services.tracking_link_create(order_id=mine.pk, actor=customer)
    relay.caught_up()
    return {"mine": mine, "other": other, "other_leg": other.legs.get(), "token": token}


def anonymous(path: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path)


def revoke_through_the_api(order_id: int, user) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
    return client.delete(f"/api/orders/{order_id}/share/").status_code


class TestConnect:
    def test_anonymous_follows_the_links_order_in_the_public_shape(self, world, operator):
        async def scenario():
            communicator = anonymous(f"/ws/track/{world['token']}/")
            connected, _ = await communicator.connect(timeout=TIMEOUT)
            assert connected
            text = await communicator.receive_from(timeout=TIMEOUT)
            snapshot = json.loads(text)
            assert snapshot["type"] == "snapshot"
            [order] = snapshot["orders"]
            assert order["id"] == world["mine"].pk and "legs" not in order and "alerts" not in order
            assert not any(secret in text for secret in SECRETS)
            await database_sync_to_async(services.order_override_status)(
                order_id=world["mine"].pk, actor=operator, to_status="cooking", reason="staff note: rang"
            )
            await advance(world["other_leg"].pk, "accepted")  # the customer's other order: never sent here
            events_text = await communicator.receive_from(timeout=TIMEOUT)
            events = json.loads(events_text)["events"]
            assert [event["order"]["id"] for event in events] == [world["mine"].pk]
            assert events[0]["to"] == "cooking"
            assert "reason" not in events[0], "an operator's note is not public"
            assert "actor" not in events[0] and "source" not in events[0]
            assert not any(secret in events_text for secret in SECRETS)
            assert await communicator.receive_nothing(timeout=0.3)
            await communicator.disconnect()

        run(scenario)

    def test_unknown_expired_or_revoked_links_are_4403(self, world, customer):
        async def scenario():
            assert await closed_with(anonymous("/ws/track/not-a-token/")) == 4403
            await database_sync_to_async(TrackingLink.objects.update)(
                expires_at=timezone.now() - timedelta(seconds=1)
            )
            assert await closed_with(anonymous(f"/ws/track/{world['token']}/")) == 4403
            token, _ = await database_sync_to_async(services.tracking_link_create)(
                order_id=world["mine"].pk, actor=customer
            )
            await database_sync_to_async(services.tracking_links_revoke)(
                order_id=world["mine"].pk, actor=customer
            )
            assert await closed_with(anonymous(f"/ws/track/{token}/")) == 4403

        run(scenario)

    def test_the_order_socket_stays_closed_to_anonymous_link_holders(self, world):
        async def scenario():
            for order in ("mine", "other"):
                assert await closed_with(anonymous(f"/ws/orders/{world[order].pk}/")) == 4401

        run(scenario)


class TestClosing:
    def test_revoking_through_the_api_closes_a_connected_socket_with_4403(self, world, customer):
        async def scenario():
            communicator = anonymous(f"/ws/track/{world['token']}/")
            await communicator.connect(timeout=TIMEOUT)
            assert (await frame(communicator))["type"] == "snapshot"
            status = await database_sync_to_async(revoke_through_the_api)(world["mine"].pk, customer)
            assert status == 204
            message = await communicator.receive_output(timeout=TIMEOUT)
            assert (message["type"], message["code"]) == ("websocket.close", 4403)

        run(scenario)

    def test_a_connected_socket_is_closed_with_4403_when_its_link_expires(self, world):
        async def scenario():
            await database_sync_to_async(TrackingLink.objects.update)(
                expires_at=timezone.now() + timedelta(seconds=1)
            )
            communicator = anonymous(f"/ws/track/{world['token']}/")
            await communicator.connect(timeout=TIMEOUT)
            assert (await frame(communicator))["type"] == "snapshot"
            message = await communicator.receive_output(timeout=TIMEOUT)
            assert (message["type"], message["code"]) == ("websocket.close", 4403)

        run(scenario)

    def test_revoking_another_orders_links_leaves_this_socket_open(self, world, customer):
        async def scenario():
            await database_sync_to_async(services.tracking_link_create)(
                order_id=world["other"].pk, actor=customer
            )
            communicator = anonymous(f"/ws/track/{world['token']}/")
            await communicator.connect(timeout=TIMEOUT)
            await frame(communicator)
            assert await database_sync_to_async(revoke_through_the_api)(world["other"].pk, customer) == 204
            assert await communicator.receive_nothing(timeout=0.5)
            await communicator.disconnect()

        run(scenario)
