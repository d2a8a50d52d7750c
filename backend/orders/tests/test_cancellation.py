"""Cancelling reaches the providers, and operator overrides and retries keep the machine honest.

Services only, on real PostgreSQL: what a cancel, an override or a retry writes, and what the poller's
answers (confirmed, refused, failed) do. The same paths over real HTTP, with the simulators and the
worker, are in test_cancel_pipeline.py.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders import selectors, services, signals
from orders.errors import ActionNotAllowed, InvalidTransition
from orders.models import Alert, Leg, Order, OrderEvent
from orders.serializers import OrderDetailSerializer
from orders.status import OrderStatus
from orders.sync import leases, tick
from orders.tests import factories
from realtime import payloads

pytestmark = pytest.mark.django_db

Cancel = Leg.CancelStatus


def kitchen_leg(order: Order, provider: str) -> Leg:
    return order.legs.get(kind=Leg.Kind.KITCHEN, provider=provider)


def sent(leg: Leg, external_id: str, provider_status: str = "") -> Leg:
    """The leg as the poller leaves it after creating its sub-order (and maybe a status)."""
    leases.legs_set_external_ids(external_ids={leg.pk: external_id})
    if provider_status:
        services.leg_apply_status(leg_id=leg.pk, provider_status=provider_status, source="poll")
    leg.refresh_from_db()
    return leg


def cancel_events(order: Order) -> list[tuple[int, str]]:
    events = order.events.filter(type=OrderEvent.Type.LEG_CANCEL).order_by("seq")
    return list(events.values_list("leg_id", "cancel_status"))


def open_alerts(order: Order, kind: str) -> list[Alert]:
    return list(order.alerts.filter(kind=kind, cleared_at__isnull=True))


def submits(callbacks) -> int:
    """How many of the on-commit callbacks announce that an order is due (orders.signals.order_due)."""
    return sum(getattr(callback, "func", None) == signals.order_due.send for callback in callbacks)


class TestCancelAsksTheProviders:
    def test_sent_legs_are_requested_and_due_now_and_unsent_ones_confirmed_at_once(
        self, customer, operator, restaurants, django_capture_on_commit_callbacks
    ):
        order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        melange = sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        bueno = kitchen_leg(order, "bueno")  # not sent: its create was never claimed
        before = timezone.now()
        with django_capture_on_commit_callbacks() as callbacks:
            event = services.order_cancel(order_id=order.pk, actor=operator, reason="customer phoned")
        melange.refresh_from_db()
        bueno.refresh_from_db()
        assert (event.type, event.to_status) == ("order.status", "cancelled")
        assert (melange.cancel_status, melange.status) == ("requested", "cooking")
        assert before <= melange.next_poll_at <= timezone.now() and melange.cancel_requested_at
        assert (bueno.cancel_status, bueno.status, bueno.next_poll_at) == ("confirmed", "cancelled", None)
        assert cancel_events(order) == [(melange.pk, "requested"), (bueno.pk, "confirmed")]
        assert submits(callbacks) == 1, "the cancel goes out right after commit"

    def test_a_create_in_flight_or_failed_is_requested_too(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        leases.legs_claim_due(limit=1)  # one create in flight: its lease is in next_poll_at
        in_flight = order.legs.get(next_poll_at__gt=timezone.now())
        failed = order.legs.exclude(pk=in_flight.pk).get()
        services.leg_record_failure(leg_id=failed.pk, error="timed out")  # may have reached the kitchen
        services.order_cancel(order_id=order.pk, actor=operator)
        assert set(order.legs.values_list("cancel_status", flat=True)) == {"requested"}
        failed.refresh_from_db()
        assert (failed.attempts, failed.last_error, failed.deadline_at) == (0, "", None)

    def test_a_pre_order_not_yet_sent_is_confirmed_without_a_call(self, customer, operator, restaurants):
        order = services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(restaurants["melange"]), quantity=1)],
            delivery_address="Sahaidachnoho St, 10",
            eta=timezone.now() + timedelta(hours=3),
        )
        services.order_cancel(order_id=order.pk, actor=customer)
        leg = order.legs.get()
        assert (leg.cancel_status, leg.next_poll_at) == ("confirmed", None)

    def test_override_to_cancelled_asks_the_providers_the_same_way(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = sent(kitchen_leg(order, "melange"), "mel_1", "not started")
        event = services.order_override_status(
            order_id=order.pk, actor=operator, to_status="cancelled", reason="duplicate order"
        )
        leg.refresh_from_db()
        assert (event.type, leg.cancel_status) == ("order.override", "requested")
        assert cancel_events(order) == [(leg.pk, "requested")]

    def test_a_failed_order_overridden_to_cancelled_asks_too(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.order_fail(order_id=order.pk, reason="courier down")
        services.order_override_status(order_id=order.pk, actor=operator, to_status="cancelled", reason="x")
        leg.refresh_from_db()
        assert (leg.cancel_status, leg.next_poll_at is not None) == ("requested", True)


class TestTheProvidersAnswer:
    @pytest.fixture
    def cancelled(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.order_cancel(order_id=order.pk, actor=operator)
        leg.refresh_from_db()
        return order, leg

    def test_confirmed_stops_polling_the_leg(self, cancelled):
        order, leg = cancelled
        event = services.leg_cancel_confirmed(leg_id=leg.pk, external_id="mel_1")
        leg.refresh_from_db()
        assert (leg.cancel_status, leg.status, leg.provider_status) == ("confirmed", "cancelled", "cancelled")
        assert leg.next_poll_at is None
        assert (event.type, event.cancel_status, event.leg_id) == ("leg.cancel", "confirmed", leg.pk)
        assert services.leg_cancel_confirmed(leg_id=leg.pk, external_id="mel_1") is None, "idempotent"
        assert cancel_events(order) == [(leg.pk, "requested"), (leg.pk, "confirmed")]

    def test_refused_is_recorded_and_raises_cancel_refused(self, cancelled):
        order, leg = cancelled
        event = services.leg_cancel_refused(leg_id=leg.pk, reason="already cooked")
        leg.refresh_from_db()
        assert (leg.cancel_status, leg.next_poll_at) == ("refused", None)
        assert (event.cancel_status, event.reason) == (
            "refused",
            "Melange (Melange) refused to cancel: already cooked",
        )
        [alert] = open_alerts(order, Alert.Kind.CANCEL_REFUSED)
        assert (alert.leg_id, alert.detail) == (leg.pk, "Melange (Melange) refused to cancel: already cooked")
        assert services.leg_cancel_refused(leg_id=leg.pk, reason="again") is None
        order.refresh_from_db()
        assert order.status == "cancelled"

    def test_failures_back_off_then_count_as_refused_past_the_deadline(self, cancelled, settings):
        order, leg = cancelled
        assert services.leg_cancel_failed(leg_id=leg.pk, error="melange answered 503") is None
        leg.refresh_from_db()
        assert (leg.cancel_status, leg.attempts) == ("requested", 1)
        assert leg.next_poll_at > timezone.now(), "backed off"
        assert open_alerts(order, Alert.Kind.PROVIDER_FAILING)
        Leg.objects.filter(pk=leg.pk).update(deadline_at=timezone.now())
        event = services.leg_cancel_failed(leg_id=leg.pk, error="melange answered 503")
        leg.refresh_from_db()
        assert (event.cancel_status, leg.cancel_status, leg.next_poll_at) == ("refused", "refused", None)
        [alert] = open_alerts(order, Alert.Kind.CANCEL_REFUSED)
        assert "503" in alert.detail and "Melange (Melange)" in alert.detail
        assert not open_alerts(order, Alert.Kind.PROVIDER_FAILING)

    def test_polls_and_webhooks_after_a_cancel_change_nothing(self, cancelled, customer, restaurants):
        order, leg = cancelled
        events = order.events.count()
        for status in ("cooked", "finished", "cancelled"):
            assert services.leg_apply_status(leg_id=leg.pk, provider_status=status, source="webhook") is None
        assert order.events.count() == events
        assert not order.legs.filter(kind=Leg.Kind.DELIVERY).exists(), "no courier for a cancelled order"
        leg.refresh_from_db()
        assert leg.status == "cooking"

    def test_a_poll_answer_or_webhook_does_not_reset_a_cancel_being_retried(self, cancelled):
        order, leg = cancelled
        services.leg_cancel_failed(leg_id=leg.pk, error="timeout")
        assert leases.legs_clear_failures(leg_ids=[leg.pk]) == 0
        leg.refresh_from_db()
        assert leg.attempts == 1

    def test_a_create_answered_after_the_order_was_cancelled_is_cancelled_too(
        self, customer, operator, restaurants
    ):
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        services.order_cancel(order_id=order.pk, actor=operator)  # taken for never sent
        leg.refresh_from_db()
        assert leg.cancel_status == "confirmed"
        assert leases.legs_set_external_ids(external_ids={leg.pk: "mel_late"}) == 1  # it was sent after all
        leg.refresh_from_db()
        assert (leg.cancel_status, leg.external_id, leg.next_poll_at is not None) == (
            "requested",
            "mel_late",
            True,
        )
        assert cancel_events(order) == [(leg.pk, "confirmed"), (leg.pk, "requested")]

    def test_a_provider_cancelling_on_its_own_fails_an_active_order(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["bueno"])
        leg = sent(kitchen_leg(order, "bueno"), "bno_1", "preparing")
        event = services.leg_apply_status(leg_id=leg.pk, provider_status="cancelled", source="webhook")
        order.refresh_from_db()
        assert (event.to_status, order.status) == ("failed", "failed")
        assert order.failure_reason == "Bueno (Bueno) cancelled its sub-order"
        with pytest.raises(ActionNotAllowed):
            services.order_retry(order_id=order.pk, actor=factories.make_user("op", is_staff=True))

    def test_the_cancel_state_reaches_rest_and_realtime(self, cancelled, operator):
        order, leg = cancelled
        services.leg_cancel_refused(leg_id=leg.pk, reason="already cooked")
        detail = OrderDetailSerializer(selectors.order_detail_queryset(user=operator).get(pk=order.pk)).data
        assert detail["legs"][0]["cancel_status"] == "refused"
        assert [event["cancel_status"] for event in detail["events"] if event["type"] == "leg.cancel"] == [
            "requested",
            "refused",
        ]
        event = order.events.filter(type="leg.cancel").last()
        loaded = selectors.with_payload_details(Order.objects.filter(pk=order.pk)).get()
        order_payload = payloads.order_payload(loaded, event.seq)
        assert order_payload["legs"][0]["cancel_status"] == "refused"
        assert payloads.event_payload(event, order_payload)["cancel_status"] == "refused"


class TestOverrideFollowUps:
    def test_the_api_answers_409_with_the_reason(self, client_for, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.order_cancel(order_id=order.pk, actor=operator)
        response = client_for(operator).post(
            f"/api/orders/{order.pk}/override/", {"status": "cooking", "reason": "oops"}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["code"] == "invalid_transition"
        assert "Melange (Melange)" in response.json()["detail"], "it names the leg that holds it"

    def test_out_of_cancelled_is_refused_while_a_cancel_is_pending(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.order_cancel(order_id=order.pk, actor=operator)
        with pytest.raises(InvalidTransition):
            services.order_override_status(
                order_id=order.pk, actor=operator, to_status="cooking", reason="oops"
            )
        order.refresh_from_db()
        assert order.status == "cancelled"

    def test_out_of_cancelled_is_refused_once_a_provider_confirmed(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.order_cancel(order_id=order.pk, actor=operator)
        services.leg_cancel_confirmed(leg_id=leg.pk, external_id="mel_1")
        for status in ("scheduled", "cooking", "ready", "delivering"):
            with pytest.raises(InvalidTransition):
                services.order_override_status(
                    order_id=order.pk, actor=operator, to_status=status, reason="x"
                )

    def test_out_of_cancelled_resumes_legs_that_refused_or_were_never_sent(
        self, customer, operator, restaurants, django_capture_on_commit_callbacks
    ):
        order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        melange = sent(kitchen_leg(order, "melange"), "mel_1", "cooked")
        bueno = kitchen_leg(order, "bueno")
        services.order_cancel(order_id=order.pk, actor=operator)
        services.leg_cancel_refused(leg_id=melange.pk, reason="already cooked")
        with django_capture_on_commit_callbacks() as callbacks:
            event = services.order_override_status(
                order_id=order.pk, actor=operator, to_status="cooking", reason="cooked anyway: deliver it"
            )
        assert (event.from_status, event.to_status) == ("cancelled", "cooking")
        melange.refresh_from_db()
        bueno.refresh_from_db()
        assert (melange.cancel_status, melange.status, melange.next_poll_at is not None) == (
            "",
            "ready",
            True,
        )
        assert (bueno.cancel_status, bueno.status, bueno.next_poll_at is not None) == ("", "scheduled", True)
        assert not open_alerts(order, Alert.Kind.CANCEL_REFUSED), "the refusal no longer needs anyone"
        assert submits(callbacks) == 1
        leases.legs_set_external_ids(external_ids={bueno.pk: "bno_1"})
        services.leg_apply_status(leg_id=bueno.pk, provider_status="ready", source="poll")
        order.refresh_from_db()
        assert order.status == "ready" and order.legs.filter(kind="delivery").exists()

    @pytest.mark.parametrize("from_status", ["failed", "delivered"])
    def test_out_of_a_terminal_status_re_arms_the_legs(self, customer, operator, restaurants, from_status):
        order = factories.make_order(customer, restaurants["melange"])
        leg = sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.leg_record_failure(leg_id=leg.pk, error="timeout")
        services.order_override_status(order_id=order.pk, actor=operator, to_status=from_status, reason="x")
        assert Leg.objects.get(pk=leg.pk).next_poll_at is None
        services.order_override_status(order_id=order.pk, actor=operator, to_status="cooking", reason="back")
        leg.refresh_from_db()
        assert leg.next_poll_at <= timezone.now() and (leg.attempts, leg.deadline_at) == (0, None)

    def test_back_to_ready_orders_the_courier_the_kitchens_are_waiting_for(
        self, customer, operator, restaurants
    ):
        order = factories.make_order(customer, restaurants["melange"])
        leg = sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.order_cancel(order_id=order.pk, actor=operator)
        services.leg_cancel_refused(leg_id=leg.pk, reason="already cooked")
        Leg.objects.filter(pk=leg.pk).update(status="ready", provider_status="cooked")  # it cooked meanwhile
        services.order_override_status(order_id=order.pk, actor=operator, to_status="ready", reason="deliver")
        delivery = order.legs.get(kind="delivery")
        assert delivery.next_poll_at is not None and delivery.provider == "uklon"

    def test_nothing_left_to_move_the_order_is_refused(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        sent(kitchen_leg(order, "melange"), "mel_1", "finished")
        delivery = sent(order.legs.get(kind="delivery"), "ukl_1", "delivered")
        order.refresh_from_db()
        assert (order.status, delivery.status) == ("delivered", "delivered")
        with pytest.raises(InvalidTransition):
            services.order_override_status(
                order_id=order.pk, actor=operator, to_status="delivering", reason="x"
            )

    def test_between_active_statuses_the_legs_keep_their_schedule(self, customer, operator, restaurants):
        order = services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(restaurants["melange"]), quantity=1)],
            delivery_address="Sahaidachnoho St, 10",
            eta=timezone.now() + timedelta(hours=3),
        )
        submit_at = order.legs.get().next_poll_at
        services.order_override_status(order_id=order.pk, actor=operator, to_status="submitted", reason="x")
        assert order.legs.get().next_poll_at == submit_at, "a pre-order is still sent at its time"


class TestRetryIsATransition:
    def test_retry_goes_through_the_retry_transition_and_re_arms(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = sent(kitchen_leg(order, "melange"), "mel_1", "cooking")
        services.leg_record_failure(leg_id=leg.pk, error="down")
        services.order_fail(order_id=order.pk, reason="down too long")
        event = services.order_retry(order_id=order.pk, actor=operator)
        order.refresh_from_db()
        leg.refresh_from_db()
        assert (event.type, event.from_status, event.to_status) == ("order.retry", "failed", "cooking")
        assert (order.status, order.failure_reason) == ("cooking", "")
        assert leg.next_poll_at is not None and leg.attempts == 0
        assert not open_alerts(order, Alert.Kind.FAILED)

    def test_retry_of_a_failed_order_whose_courier_delivered_ends_delivered(
        self, customer, operator, restaurants
    ):
        order = factories.make_order(customer, restaurants["melange"])
        sent(kitchen_leg(order, "melange"), "mel_1", "finished")
        delivery = sent(order.legs.get(kind="delivery"), "ukl_1", "delivery")
        services.order_fail(order_id=order.pk, reason="x")
        Leg.objects.filter(pk=delivery.pk).update(status="delivered", provider_status="delivered")
        event = services.order_retry(order_id=order.pk, actor=operator)
        assert (event.type, event.to_status) == ("order.retry", "delivered")

    def test_retry_after_a_cancel_never_sent_then_failed_sends_it(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        services.order_cancel(order_id=order.pk, actor=operator)  # never sent: confirmed at once
        services.order_override_status(order_id=order.pk, actor=operator, to_status="failed", reason="x")
        event = services.order_retry(order_id=order.pk, actor=operator)
        leg = order.legs.get()
        assert (event.to_status, leg.status, leg.cancel_status) == ("scheduled", "scheduled", "")
        assert leg.next_poll_at is not None

    def test_retry_never_writes_the_status_directly(self, customer, operator, restaurants, monkeypatch):
        calls = []
        real = services._transition

        def spy(**kwargs):
            calls.append(kwargs)
            return real(**kwargs)

        order = factories.make_order(customer, restaurants["melange"])
        services.order_fail(order_id=order.pk, reason="x")
        monkeypatch.setattr(services, "_transition", spy)
        services.order_retry(order_id=order.pk, actor=operator)
        assert [(call["to_status"], call["retry"]) for call in calls] == [(OrderStatus.SCHEDULED, True)]


def test_the_poller_never_creates_a_sub_order_for_a_finished_order(customer, operator, restaurants):
    order = factories.make_order(customer, restaurants["melange"])
    services.order_cancel(order_id=order.pk, actor=operator)  # never sent: confirmed, not polled
    leg = order.legs.get()
    Leg.objects.filter(pk=leg.pk).update(next_poll_at=timezone.now())  # re-armed by hand, say in the admin
    leg_ids, lease_until = leases.legs_claim_due(limit=10)
    assert tick.load_jobs(leg_ids, lease_until=lease_until) == []
    assert Leg.objects.get(pk=leg.pk).next_poll_at is None
