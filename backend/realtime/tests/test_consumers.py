"""WebSocket consumers over the full ASGI stack and the real Redis channel layer."""

import json
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from django.utils import timezone
from knox.models import AuthToken

from core.asgi import application
from orders import alerts, services
from orders.models import Courier, Leg, Order, OrderEvent
from orders.tests import factories
from realtime import consumers, payloads, tickets

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.usefixtures("relay")]
TIMEOUT = 3


def run(scenario):
    """Run an async scenario; ORM calls inside go through database_sync_to_async."""
    async_to_sync(scenario)()


async def socket(
    path: str, user=None, token: str | None = None, origin: bytes | None = None
) -> WebsocketCommunicator:
    """A socket signed in as `user` (a new token of theirs) or with `token`, both in the Authorization
    header: a token in the URL is refused (TestWhoMayConnect)."""
    headers = []
    if user is not None:
        token = await database_sync_to_async(factories.token_for)(user)
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    if origin is not None:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(application, path, headers=headers)


async def frame(communicator: WebsocketCommunicator) -> dict:
    return json.loads(await communicator.receive_from(timeout=TIMEOUT))


async def closed_with(communicator: WebsocketCommunicator) -> int:
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    message = await communicator.receive_output(timeout=TIMEOUT)
    assert message["type"] == "websocket.close", f"something was sent before closing: {message}"
    return message["code"]


def advance(leg_id: int, provider_status: str):
    return database_sync_to_async(services.leg_apply_status)(
        leg_id=leg_id, provider_status=provider_status, source="poll"
    )


async def released(relay) -> None:
    """Until the relay has released every committed event (it runs in a thread, like in production)."""
    await database_sync_to_async(relay.caught_up)()


@pytest.fixture
def world(customer, other_customer, operator, restaurants, relay):
    courier_one, courier_two = factories.make_courier("courier1"), factories.make_courier("courier2")
    mine = factories.make_order(customer, restaurants["melange"])
    theirs = factories.make_order(other_customer, restaurants["bueno"])
    delivered = factories.make_order(customer, restaurants["melange"])
    Order.objects.filter(pk=mine.pk).update(courier=courier_one)
    Order.objects.filter(pk=theirs.pk).update(courier=courier_two)
    Order.objects.filter(pk=delivered.pk).update(status="delivered")
    relay.caught_up()  # the clients below start from here
    return {
        "mine": mine,
        "theirs": theirs,
        "delivered": delivered,
        "courier1": courier_one,
        "courier2": courier_two,
        "leg": mine.legs.get(),
        "their_leg": theirs.legs.get(),
    }


class TestWhoMayConnect:
    @pytest.mark.parametrize("path", ["/ws/operators/", "/ws/couriers/", "/ws/orders/1/"])
    def test_anonymous_is_closed_with_4401(self, path):
        run(lambda: self._expect(4401, path))

    def test_bad_token_is_4401(self, world):
        run(lambda: self._expect(4401, "/ws/operators/", token="not-a-token"))

    def test_customer_on_operators_is_4403(self, world, customer):
        run(lambda: self._expect(4403, "/ws/operators/", customer))

    def test_customer_without_courier_profile_is_4403(self, world, customer):
        run(lambda: self._expect(4403, "/ws/couriers/", customer))

    def test_someone_elses_order_is_4403(self, world, other_customer):
        run(lambda: self._expect(4403, f"/ws/orders/{world['mine'].pk}/", other_customer))

    def test_foreign_origin_is_refused(self, world, operator):
        async def scenario():
            communicator = await socket("/ws/operators/", operator, origin=b"https://evil.example")
            connected, _ = await communicator.connect()
            assert not connected

        run(scenario)

    def test_own_origin_and_header_token_are_accepted(self, world, operator):
        async def scenario():
            key = await database_sync_to_async(factories.token_for)(operator)
            communicator = await socket("/ws/operators/", token=key, origin=b"http://localhost:8000")
            connected, _ = await communicator.connect()
            assert connected
            assert (await frame(communicator))["type"] == "snapshot"
            await communicator.disconnect()

        run(scenario)

    def test_token_in_the_url_is_refused_even_when_valid(self, world, operator):
        async def scenario():
            key = await database_sync_to_async(factories.token_for)(operator)
            communicator = WebsocketCommunicator(application, f"/ws/operators/?token={key}")
            assert await closed_with(communicator) == 4401

        run(scenario)

    def test_expired_token_is_4401(self, world, operator):
        async def scenario():
            key = await database_sync_to_async(factories.token_for)(operator)
            await database_sync_to_async(AuthToken.objects.filter(user=operator).update)(
                expiry=timezone.now() - timedelta(seconds=1)
            )
            assert await closed_with(await socket("/ws/operators/", token=key)) == 4401

        run(scenario)

    def test_a_ticket_opens_one_socket_once(self, world, operator):
        async def scenario():
            ticket = await database_sync_to_async(tickets.issue)(operator.pk)
            first = WebsocketCommunicator(application, f"/ws/operators/?ticket={ticket}")
            connected, _ = await first.connect(timeout=TIMEOUT)
            assert connected
            assert (await frame(first))["type"] == "snapshot"
            again = WebsocketCommunicator(application, f"/ws/operators/?ticket={ticket}")
            assert await closed_with(again) == 4401
            await first.disconnect()

        run(scenario)

    async def _expect(self, code, path, user=None, **options):
        assert await closed_with(await socket(path, user, **options)) == code


class TestSnapshot:
    def test_operators_get_the_board_active_recent_and_alerting_orders(self, world, operator, relay):
        old_delivered, old_failed = (
            factories.make_order(world["mine"].customer, world["leg"].restaurant) for _ in range(2)
        )
        long_ago = timezone.now() - timedelta(days=3)
        Order.objects.filter(pk__in=[old_delivered.pk, old_failed.pk]).update(updated_at=long_ago)
        Order.objects.filter(pk=old_delivered.pk).update(status="delivered")
        Order.objects.filter(pk=old_failed.pk).update(status="failed")
        alerts.raise_alert(order=old_failed, kind="failed", detail="Melange down", source="system")
        latest = relay.caught_up()

        async def scenario():
            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            snapshot = await frame(communicator)
            assert snapshot["type"] == "snapshot"
            on_board = {order["id"] for order in snapshot["orders"]}
            # active ones, one that ended within DASHBOARD_RECENT_HOURS, an old one with an open alert
            assert on_board == {world["mine"].pk, world["theirs"].pk, world["delivered"].pk, old_failed.pk}
            assert snapshot["seq"] == latest >= max(order["seq"] for order in snapshot["orders"])
            order = next(order for order in snapshot["orders"] if order["id"] == world["mine"].pk)
            assert order["courier"]["name"] == "Courier1"
            assert (
                order["restaurants"][0]["name"] == "Melange" and len(order["restaurants"][0]["location"]) == 2
            )
            assert order["legs"][0]["provider"] == "melange"
            await communicator.disconnect()

        run(scenario)

    def test_operators_connecting_together_share_a_snapshot_and_miss_nothing(self, world, operator):
        consumers._shared_snapshots.clear()

        async def scenario():
            with override_settings(REALTIME_SNAPSHOT_SHARE_SECONDS=30):
                first = await socket("/ws/operators/", operator)
                await first.connect()
                shared = await first.receive_from(timeout=TIMEOUT)
                change = await advance(world["leg"].pk, "cooking")  # after the shared snapshot was read
                second = await socket("/ws/operators/", operator)
                await second.connect()
                assert await second.receive_from(timeout=TIMEOUT) == shared, "the same rendered snapshot"
                assert [event["seq"] for event in (await frame(second))["events"]] == [change.seq]
                assert [event["seq"] for event in (await frame(first))["events"]] == [change.seq]
                for communicator in (first, second):
                    await communicator.disconnect()

        run(scenario)

    def test_operators_resuming_together_share_one_rendered_replay(self, world, operator, relay, monkeypatch):
        """A reconnect storm: sockets resuming from the same seq to the same mark get one replay, rendered
        once (each rendering re-reads the orders it touched), and each still gets every event."""
        consumers._shared_replays.clear()
        rendered = []
        render = consumers.Stream._replay

        def counting(stream, *args):
            rendered.append(args)
            return render(stream, *args)

        monkeypatch.setattr(consumers.Stream, "_replay", counting)

        async def scenario():
            with override_settings(REALTIME_SNAPSHOT_SHARE_SECONDS=30):
                change = await advance(world["leg"].pk, "cooking")
                await released(relay)
                replays = []
                for _ in range(3):
                    communicator = await socket(f"/ws/operators/?after={change.seq - 1}", operator)
                    await communicator.connect()
                    replays.append(await frame(communicator))
                    await communicator.disconnect()
                for replay in replays:
                    assert [event["seq"] for event in replay["events"]] == [change.seq]
                assert replays[0] == replays[1] == replays[2]

                # Released after the shared replay's mark and before this socket joined: a replay that
                # stops at that mark would miss it, so the socket gets one rendered afresh.
                later = await advance(world["leg"].pk, "cooked")
                await released(relay)
                communicator = await socket(f"/ws/operators/?after={change.seq - 1}", operator)
                await communicator.connect()
                assert [event["seq"] for event in (await frame(communicator))["events"]] == [
                    change.seq,
                    later.seq,
                ]
                await communicator.disconnect()

        run(scenario)
        assert len(rendered) == 2, rendered

    def test_courier_sees_only_their_orders(self, world):
        async def scenario():
            communicator = await socket("/ws/couriers/", world["courier1"].user)
            await communicator.connect()
            assert [order["id"] for order in (await frame(communicator))["orders"]] == [world["mine"].pk]
            await communicator.disconnect()

        run(scenario)

    def test_customer_follows_even_a_finished_order(self, world, customer):
        async def scenario():
            communicator = await socket(f"/ws/orders/{world['delivered'].pk}/", customer)
            await communicator.connect()
            [order] = (await frame(communicator))["orders"]
            assert (order["id"], order["status"]) == (world["delivered"].pk, "delivered")
            await communicator.disconnect()

        run(scenario)


class TestLargeFrames:
    def test_a_large_snapshot_and_a_large_batch_come_in_frames_under_the_limit(
        self, world, operator, relay, monkeypatch
    ):
        monkeypatch.setattr(payloads, "MAX_FRAME_BYTES", 1200)  # about an order per frame

        async def scenario():
            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            parts = [await frame(communicator)]
            while parts[-1]["part"] < parts[-1]["parts"]:
                parts.append(await frame(communicator))
            assert len(parts) > 1 and {part["seq"] for part in parts} == {parts[0]["seq"]}
            ids = [order["id"] for part in parts for order in part["orders"]]
            assert sorted(ids) == sorted({world["mine"].pk, world["theirs"].pk, world["delivered"].pk})
            changes = [await advance(world["leg"].pk, s) for s in ["not started", "cooking", "cooked"]]
            changes += [await advance(world["their_leg"].pk, s) for s in ["accepted", "preparing"]]
            seqs = []
            while len(seqs) < len(changes):
                seqs += [event["seq"] for event in (await frame(communicator))["events"]]
            assert seqs == [change.seq for change in changes]
            await communicator.disconnect()

        run(scenario)


class TestLiveEvents:
    def test_changes_arrive_seq_ascending_each_once(self, world, operator):
        async def scenario():
            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            await frame(communicator)
            for status in ["not started", "cooking", "cooked"]:
                await advance(world["leg"].pk, status)
            events, frames = [], 0
            while len(events) < 3:
                events += (await frame(communicator))["events"]
                frames += 1
            assert frames <= 2, "changes close together share frames"
            assert [event["to"] for event in events] == ["submitted", "cooking", "ready"]
            seqs = [event["seq"] for event in events]
            assert seqs == sorted(seqs) and len(set(seqs)) == 3
            # Each event carries what changed of its order as it stands when the event is released: the
            # kitchen's leg, and on reaching `ready` the delivery leg just ordered, whole.
            assert events[-1]["type"] == "order.status" and events[-1]["order"]["id"] == world["mine"].pk
            kitchen, delivery = events[-1]["order"]["legs"]
            assert kitchen == {"id": world["leg"].pk, "status": "ready", "provider_status": "cooked"}
            assert delivery["kind"] == "delivery" and "total" not in events[-1]["order"]
            assert await communicator.receive_nothing(timeout=0.3)
            await communicator.disconnect()

        run(scenario)

    def test_a_courier_never_receives_another_couriers_order(self, world):
        async def scenario():
            one = await socket("/ws/couriers/", world["courier1"].user)
            two = await socket("/ws/couriers/", world["courier2"].user)
            for communicator in (one, two):
                await communicator.connect()
                await frame(communicator)
            await advance(world["their_leg"].pk, "accepted")
            await advance(world["leg"].pk, "cooking")
            assert [e["order"]["id"] for e in (await frame(one))["events"]] == [world["mine"].pk]
            assert [e["order"]["id"] for e in (await frame(two))["events"]] == [world["theirs"].pk]
            assert await one.receive_nothing(timeout=0.3)
            for communicator in (one, two):
                await communicator.disconnect()

        run(scenario)

    def test_customer_receives_only_their_order(self, world, customer):
        async def scenario():
            communicator = await socket(f"/ws/orders/{world['mine'].pk}/", customer)
            await communicator.connect()
            await frame(communicator)
            await advance(world["their_leg"].pk, "accepted")
            await advance(world["leg"].pk, "cooking")
            assert [e["order"]["id"] for e in (await frame(communicator))["events"]] == [world["mine"].pk]
            await communicator.disconnect()

        run(scenario)


class TestResume:
    def test_reconnect_with_after_replays_the_gap_then_goes_live(self, world, operator, relay):
        async def scenario():
            first = await socket("/ws/operators/", operator)
            await first.connect()
            seen = (await frame(first))["seq"]
            await first.disconnect()
            missed = [await advance(world["leg"].pk, s) for s in ["not started", "cooking"]]
            missed.append(await advance(world["their_leg"].pk, "accepted"))
            await released(relay)

            second = await socket(f"/ws/operators/?after={seen}", operator)
            await second.connect()
            replayed = (await frame(second))["events"]
            assert [event["seq"] for event in replayed] == [event.seq for event in missed]
            live = await advance(world["leg"].pk, "cooked")
            assert [event["seq"] for event in (await frame(second))["events"]] == [live.seq]

            # Asking again replays nothing twice: every seq reaches a client once.
            await second.send_json_to({"type": "resume", "after": seen})
            assert (await frame(second))["events"] == []
            await second.disconnect()

        run(scenario)

    def test_too_far_behind_gets_a_fresh_snapshot(self, world, operator, relay):
        async def scenario():
            with override_settings(REALTIME_RESUME_LIMIT=2):
                for status in ["not started", "cooking", "cooked"]:
                    await advance(world["leg"].pk, status)
                await released(relay)
                communicator = await socket("/ws/operators/?after=0", operator)
                await communicator.connect()
                assert (await frame(communicator))["type"] == "snapshot"
                await communicator.disconnect()

        run(scenario)

    def test_courier_replay_is_scoped(self, world, relay):
        async def scenario():
            await advance(world["their_leg"].pk, "accepted")
            mine = await advance(world["leg"].pk, "not started")
            await released(relay)
            communicator = await socket("/ws/couriers/?after=0", world["courier1"].user)
            await communicator.connect()
            replayed = (await frame(communicator))["events"]
            assert {event["order"]["id"] for event in replayed} == {world["mine"].pk}
            assert mine.seq in [event["seq"] for event in replayed]
            await communicator.disconnect()

        run(scenario)


class TestBadFrames:
    @pytest.mark.parametrize(
        ("payload", "code"),
        [
            ("{not json", "bad_json"),
            ("[1, 2]", "bad_frame"),
            ('{"no": "type"}', "bad_frame"),
            ('{"type": 5}', "bad_frame"),
            ('{"type": "dance"}', "unknown_type"),
            ('{"type": "resume", "after": -1}', "bad_frame"),
            ('{"type": "resume", "after": "7"}', "bad_frame"),
            ('{"type": "resume", "after": true}', "bad_frame"),
            ('{"type": "location", "lat": 1, "lng": 2}', "unknown_type"),
            ('{"type": "ping", "pad": "' + "x" * 5000 + '"}', "frame_too_large"),
        ],
    )
    def test_bad_frame_gets_an_error_and_the_socket_stays_usable(self, world, operator, payload, code):
        async def scenario():
            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            await frame(communicator)
            await communicator.send_to(text_data=payload)
            error = await frame(communicator)
            assert (error["type"], error["code"]) == ("error", code)
            await communicator.send_to(text_data='{"type": "ping"}')
            assert await frame(communicator) == {"type": "pong"}
            await advance(world["leg"].pk, "cooking")
            assert (await frame(communicator))["type"] == "events"
            await communicator.disconnect()

        run(scenario)

    def test_binary_frame_is_refused_politely(self, world, operator):
        async def scenario():
            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            await frame(communicator)
            await communicator.send_to(bytes_data=b"\x00\x01")
            assert (await frame(communicator))["code"] == "binary_frame"
            await communicator.disconnect()

        run(scenario)


class TestCourierLocation:
    def test_location_is_stored_and_pushed_to_operators(self, world, operator):
        async def scenario():
            courier = await socket("/ws/couriers/", world["courier1"].user)
            operators = await socket("/ws/operators/", operator)
            for communicator in (courier, operators):
                await communicator.connect()
                await frame(communicator)
            await courier.send_json_to({"type": "location", "lat": 50.45, "lng": 30.52})
            pushed = await frame(operators)
            assert pushed["type"] == "locations"
            assert pushed["couriers"][0]["id"] == world["courier1"].pk
            assert (pushed["couriers"][0]["lat"], pushed["couriers"][0]["lng"]) == (50.45, 30.52)
            stored = await database_sync_to_async(Courier.objects.get)(pk=world["courier1"].pk)
            assert (stored.lat, stored.lng) == (50.45, 30.52)

            await courier.send_json_to({"type": "location", "lat": 50.46, "lng": 30.53})
            assert (await frame(courier))["code"] == "rate_limited"
            for communicator in (courier, operators):
                await communicator.disconnect()

        run(scenario)

    @pytest.mark.parametrize(
        "body",
        [
            {"lat": 91, "lng": 0},
            {"lat": 0, "lng": -181},
            {"lat": "50", "lng": 30},
            {"lat": None, "lng": 1},
            {"lat": True, "lng": 1},
            {"lng": 30},
        ],
    )
    def test_bad_location_is_refused(self, world, body):
        async def scenario():
            courier = await socket("/ws/couriers/", world["courier1"].user)
            await courier.connect()
            await frame(courier)
            await courier.send_json_to({"type": "location", **body})
            assert (await frame(courier))["code"] == "bad_location"
            await courier.disconnect()

        run(scenario)


def test_no_leg_is_left_behind(world):
    assert Leg.objects.count() == 3


class TestOrderRequest:
    """`{"type": "order", "id": ...}`: one order whole in the stream's shape, or `not_found` for any order
    the stream does not show (someone else's answers as an unknown one does)."""

    async def ask(self, communicator: WebsocketCommunicator, order_id: object) -> dict:
        await communicator.send_json_to({"type": "order", "id": order_id})
        return await frame(communicator)

    def test_each_stream_answers_in_its_shape(self, world, operator, customer):
        async def scenario():
            operators = await socket("/ws/operators/", operator)
            follower = await socket(f"/ws/orders/{world['mine'].pk}/", customer)
            courier = await socket("/ws/couriers/", world["courier1"].user)
            for communicator in (operators, follower, courier):
                await communicator.connect()
                await frame(communicator)
            whole = await self.ask(operators, world["delivered"].pk)  # not on any board: ended long ago?
            assert whole["type"] == "order" and list(whole["order"]) == list(
                payloads.OrderPayload.__annotations__
            )
            public = (await self.ask(follower, world["mine"].pk))["order"]
            assert list(public) == list(payloads.PublicOrderPayload.__annotations__)
            carried = (await self.ask(courier, world["mine"].pk))["order"]
            assert list(carried) == list(payloads.CourierOrderPayload.__annotations__)
            assert carried["seq"] == public["seq"] > 0, "the order's last seq, as in a snapshot"
            for communicator in (operators, follower, courier):
                await communicator.disconnect()

        run(scenario)

    def test_someone_elses_and_unknown_orders_are_not_found(self, world, customer):
        async def scenario():
            follower = await socket(f"/ws/orders/{world['mine'].pk}/", customer)
            courier = await socket("/ws/couriers/", world["courier1"].user)
            for communicator in (follower, courier):
                await communicator.connect()
                await frame(communicator)
            for communicator, order_id in [
                (follower, world["delivered"].pk),  # the same customer's other order: not this stream's
                (follower, world["theirs"].pk),
                (courier, world["theirs"].pk),  # another courier's
                (courier, 10**12),  # none
            ]:
                answer = await self.ask(communicator, order_id)
                assert (answer["type"], answer["code"], answer["id"]) == ("error", "not_found", order_id)
            for communicator in (follower, courier):
                await communicator.disconnect()

        run(scenario)

    @pytest.mark.parametrize("order_id", ["1", -1, 0, True, None, 1.5, 2**63])
    def test_a_bad_id_is_a_bad_frame(self, world, operator, order_id):
        async def scenario():
            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            await frame(communicator)
            assert (await self.ask(communicator, order_id))["code"] == "bad_frame"
            await communicator.disconnect()

        run(scenario)

    def test_requests_count_against_the_frame_rate(self, world, operator, settings):
        settings.REALTIME_FRAMES_PER_SECOND = 0.1
        settings.REALTIME_FRAME_BURST = 3

        async def scenario():
            communicator = await socket("/ws/operators/", operator)
            await communicator.connect()
            await frame(communicator)
            for _ in range(4):
                await communicator.send_json_to({"type": "order", "id": world["mine"].pk})
            answers = [await frame(communicator) for _ in range(4)]
            assert [answer["type"] for answer in answers] == ["order", "order", "order", "error"]
            assert answers[-1]["code"] == "rate_limited"
            await communicator.disconnect()

        run(scenario)


class TestProtocolV1:
    """`?v=1` keeps today's frames for one release: every event with its whole order, numbered by it."""

    def test_v1_operators_get_every_event_with_its_whole_order(self, world, operator):
        async def scenario():
            v1 = await socket("/ws/operators/?v=1", operator)
            v2 = await socket("/ws/operators/", operator)
            for communicator in (v1, v2):
                await communicator.connect()
                await frame(communicator)
            changes = [await advance(world["leg"].pk, status) for status in ["not started", "cooking"]]
            old, lean = [], []
            while len(old) < 2:
                old += (await frame(v1))["events"]
            while len(lean) < 2:
                lean += (await frame(v2))["events"]
            assert (
                [event["seq"] for event in old]
                == [event["seq"] for event in lean]
                == [c.seq for c in changes]
            )
            for event in old:
                assert list(event) == [
                    "seq",
                    "type",
                    "at",
                    "from",
                    "to",
                    "source",
                    "provider_status",
                    "reason",
                ] + [
                    "leg",
                    "order",
                ]
                assert list(event["order"]) == list(payloads.OrderPayload.__annotations__)
                assert event["order"]["seq"] == event["seq"]
            assert old[-1]["order"]["status"] == "cooking"
            assert all("total" not in event["order"] for event in lean)
            for communicator in (v1, v2):
                await communicator.disconnect()

        run(scenario)

    def test_v1_followers_get_public_events_with_the_public_order(self, world, customer, relay):
        async def scenario():
            await advance(world["leg"].pk, "not started")
            await released(relay)
            communicator = await socket(f"/ws/orders/{world['mine'].pk}/?v=1&after=0", customer)
            await communicator.connect()
            replayed = await frame(communicator)
            assert "orders" not in replayed, "v1 replays carry each event's order instead"
            for event in replayed["events"]:
                assert list(event) == list(payloads.PublicEventPayload.__annotations__)
                assert list(event["order"]) == list(payloads.PublicOrderPayload.__annotations__)
            await advance(world["leg"].pk, "cooking")
            [live] = (await frame(communicator))["events"]
            assert live["to"] == "cooking" and live["order"]["status"] == "cooking" and live["reason"] == ""
            await communicator.disconnect()

        run(scenario)


def test_a_v2_replay_carries_the_orders_it_touched_whole(world, operator, relay):
    async def scenario():
        after = await database_sync_to_async(lambda: OrderEvent.objects.latest("seq").seq)()
        await advance(world["leg"].pk, "not started")
        await advance(world["their_leg"].pk, "accepted")
        await released(relay)
        communicator = await socket(f"/ws/operators/?after={after}", operator)
        await communicator.connect()
        replayed = await frame(communicator)
        touched = {event["order"]["id"] for event in replayed["events"]}
        assert (
            {order["id"] for order in replayed["orders"]} == touched == {world["mine"].pk, world["theirs"].pk}
        )
        for order in replayed["orders"]:
            assert list(order) == list(payloads.OrderPayload.__annotations__)
            assert order["seq"] == max(
                e["seq"] for e in replayed["events"] if e["order"]["id"] == order["id"]
            )
        await communicator.disconnect()

    run(scenario)


def test_a_replay_over_several_frames_carries_each_order_once_in_the_first_frame_touching_it(
    world, operator, relay, monkeypatch
):
    """Each order whole once per replay (its seq its last event's): the bytes of a storm's replays."""
    monkeypatch.setattr(consumers, "REPLAY_FRAME_EVENTS", 1)

    async def scenario():
        after = await database_sync_to_async(lambda: OrderEvent.objects.latest("seq").seq)()
        await advance(world["leg"].pk, "not started")
        await advance(world["their_leg"].pk, "accepted")
        await advance(world["leg"].pk, "cooking")
        await released(relay)
        communicator = await socket(f"/ws/operators/?after={after}", operator)
        await communicator.connect()
        frames = [await frame(communicator) for _ in range(3)]
        assert [[event["order"]["id"] for event in f["events"]] for f in frames] == [
            [world["mine"].pk],
            [world["theirs"].pk],
            [world["mine"].pk],
        ]
        assert [[order["id"] for order in f.get("orders", [])] for f in frames] == [
            [world["mine"].pk],
            [world["theirs"].pk],
            [],
        ]
        assert frames[0]["orders"][0]["seq"] == frames[2]["events"][0]["seq"], "as it stands after all three"
        await communicator.disconnect()

    run(scenario)
