from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from orders import services
from orders.errors import ActionNotAllowed, InvalidTransition, PermissionDenied
from orders.models import Leg, Order, OrderEvent, OrderItem
from orders.providers import Driver
from orders.status import OrderStatus, UnknownProviderStatus
from orders.tests import factories

pytestmark = pytest.mark.django_db


def events_of(order: Order) -> list[tuple[str, str, str]]:
    return list(order.events.order_by("seq").values_list("type", "from_status", "to_status"))


def kitchen_leg(order: Order, provider: str) -> Leg:
    return order.legs.get(kind=Leg.Kind.KITCHEN, provider=provider)


def add_delivery_leg(order: Order) -> Leg:
    return Leg.objects.create(order=order, kind=Leg.Kind.DELIVERY, provider="uklon")


class TestOrderCreate:
    def test_creates_items_legs_total_and_one_event(self, customer, restaurants):
        melange, bueno = restaurants["melange"], restaurants["bueno"]
        order = services.order_create(
            customer=customer,
            items=[
                services.ItemInput(dish=factories.dish(melange, 0), quantity=2),
                services.ItemInput(dish=factories.dish(melange, 1), quantity=1),
                services.ItemInput(dish=factories.dish(bueno, 2), quantity=3),
            ],
            delivery_address="Sahaidachnoho 10",
        )
        assert order.status == OrderStatus.SCHEDULED
        assert order.total == 2 * 10000 + 15000 + 3 * 20000
        assert list(order.items.values_list("quantity", "price")) == [(2, 10000), (1, 15000), (3, 20000)]
        legs = order.legs.order_by("provider")
        assert [(leg.kind, leg.provider, leg.restaurant) for leg in legs] == [
            ("kitchen", "bueno", bueno),
            ("kitchen", "melange", melange),
        ]
        assert all(leg.status == OrderStatus.SCHEDULED and leg.next_poll_at for leg in legs)
        assert events_of(order) == [("order.created", "", "scheduled")]

    def test_price_is_frozen_at_order_time(self, customer, restaurants):
        dish = factories.dish(restaurants["melange"])
        order = factories.make_order(customer, restaurants["melange"])
        dish.price = 1
        dish.save()
        assert order.items.get().price == 10000

    def test_empty_order_is_refused(self, customer, restaurants):
        with pytest.raises(ActionNotAllowed):
            services.order_create(customer=customer, items=[], delivery_address="x")
        assert not Order.objects.exists()

    def test_failure_midway_leaves_nothing(self, customer, restaurants):
        dish = factories.dish(restaurants["melange"])
        with pytest.raises(IntegrityError):
            services.order_create(
                customer=customer, items=[services.ItemInput(dish=dish, quantity=0)], delivery_address="x"
            )
        assert not Order.objects.exists()
        assert not OrderEvent.objects.exists()


class TestDatabaseConstraints:
    @pytest.mark.parametrize("quantity", [0, 51])
    def test_quantity_range(self, customer, restaurants, quantity):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(IntegrityError), transaction.atomic():
            OrderItem.objects.create(
                order=order, dish=factories.dish(restaurants["bueno"]), quantity=quantity, price=1
            )

    def test_one_kitchen_leg_per_restaurant(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(IntegrityError), transaction.atomic():
            Leg.objects.create(
                order=order, kind=Leg.Kind.KITCHEN, restaurant=restaurants["melange"], provider="melange"
            )

    def test_one_delivery_leg_per_order(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        add_delivery_leg(order)
        with pytest.raises(IntegrityError), transaction.atomic():
            add_delivery_leg(order)

    def test_kitchen_leg_needs_a_restaurant(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(IntegrityError), transaction.atomic():
            Leg.objects.create(order=order, kind=Leg.Kind.KITCHEN, provider="melange")

    def test_status_must_be_known(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(IntegrityError), transaction.atomic():
            Order.objects.filter(pk=order.pk).update(status="lost")


class TestLegApplyStatus:
    def test_order_follows_the_slowest_kitchen_then_the_delivery(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        melange, bueno = kitchen_leg(order, "melange"), kitchen_leg(order, "bueno")
        steps = [
            (melange, "not started", "leg.status", "scheduled"),
            (bueno, "accepted", "order.status", "submitted"),
            (melange, "cooking", "order.status", "cooking"),
            (bueno, "preparing", "leg.status", "cooking"),
            (melange, "cooked", "leg.status", "cooking"),
            (bueno, "ready", "order.status", "ready"),
            (melange, "finished", "leg.status", "ready"),
        ]
        for leg, provider_status, event_type, order_status in steps:
            event = services.leg_apply_status(leg_id=leg.pk, provider_status=provider_status, source="poll")
            assert (event.type, event.provider_status) == (event_type, provider_status)
            order.refresh_from_db()
            assert order.status == order_status, provider_status
        delivery = order.legs.get(kind=Leg.Kind.DELIVERY)
        assert (delivery.provider, delivery.status, delivery.external_id) == ("uklon", "scheduled", "")
        assert delivery.next_poll_at is not None, "the delivery is ordered by the next poll"
        for provider_status, order_status in [
            ("not started", "courier_search"),
            ("delivery", "delivering"),
            ("delivered", "delivered"),
        ]:
            services.leg_apply_status(leg_id=delivery.pk, provider_status=provider_status, source="poll")
            order.refresh_from_db()
            assert order.status == order_status
        assert order.events.count() == 1 + len(steps) + 3
        assert [e[2] for e in events_of(order) if e[0] == "order.status"] == [
            "submitted",
            "cooking",
            "ready",
            "courier_search",
            "delivering",
            "delivered",
        ]
        assert not order.legs.filter(next_poll_at__isnull=False).exists(), "finished orders are not polled"

    def test_repeated_status_is_a_no_op(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        assert services.leg_apply_status(leg_id=leg.pk, provider_status="cooking", source="poll")
        assert services.leg_apply_status(leg_id=leg.pk, provider_status="cooking", source="webhook") is None
        assert order.events.count() == 2

    def test_skipped_steps_are_accepted(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        services.leg_apply_status(leg_id=leg.pk, provider_status="cooked", source="poll")
        order.refresh_from_db()
        assert order.status == OrderStatus.READY

    def test_backwards_status_is_ignored(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        services.leg_apply_status(leg_id=leg.pk, provider_status="cooked", source="poll")
        assert services.leg_apply_status(leg_id=leg.pk, provider_status="cooking", source="poll") is None
        leg.refresh_from_db()
        order.refresh_from_db()
        assert (leg.provider_status, leg.status, order.status) == ("cooked", "ready", "ready")
        assert order.events.count() == 2

    def test_unknown_status_raises_and_writes_nothing(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        with pytest.raises(UnknownProviderStatus):
            services.leg_apply_status(leg_id=leg.pk, provider_status="quantum", source="poll")
        leg.refresh_from_db()
        assert (leg.provider_status, leg.status) == ("", "scheduled")
        assert order.events.count() == 1

    def test_finished_order_ignores_late_statuses(self, customer, restaurants, operator):
        order = factories.make_order(customer, restaurants["melange"])
        services.order_cancel(order_id=order.pk, actor=operator)
        leg = kitchen_leg(order, "melange")
        assert services.leg_apply_status(leg_id=leg.pk, provider_status="cooking", source="poll") is None
        order.refresh_from_db()
        assert order.status == OrderStatus.CANCELLED

    def test_leg_progress_after_an_override_records_a_leg_event(self, customer, restaurants, operator):
        order = factories.make_order(customer, restaurants["melange"])
        services.order_override_status(order_id=order.pk, actor=operator, to_status="ready", reason="phoned")
        event = services.leg_apply_status(
            leg_id=kitchen_leg(order, "melange").pk, provider_status="cooking", source="poll"
        )
        order.refresh_from_db()
        assert (event.type, order.status) == ("leg.status", "ready")


class TestCancel:
    @pytest.mark.parametrize("status", ["scheduled", "submitted"])
    def test_customer_may_cancel_before_cooking(self, customer, restaurants, status):
        order = factories.make_order(customer, restaurants["melange"])
        Order.objects.filter(pk=order.pk).update(status=status)
        event = services.order_cancel(order_id=order.pk, actor=customer, reason="changed my mind")
        assert (event.from_status, event.to_status, event.source, event.actor) == (
            status,
            "cancelled",
            "api",
            customer,
        )

    @pytest.mark.parametrize("status", ["cooking", "ready", "courier_search", "delivering"])
    def test_customer_may_not_cancel_once_cooking(self, customer, restaurants, status):
        order = factories.make_order(customer, restaurants["melange"])
        Order.objects.filter(pk=order.pk).update(status=status)
        with pytest.raises(ActionNotAllowed):
            services.order_cancel(order_id=order.pk, actor=customer)
        order.refresh_from_db()
        assert order.status == status

    @pytest.mark.parametrize("status", ["scheduled", "cooking", "ready", "courier_search", "delivering"])
    def test_operator_may_cancel_until_delivered(self, customer, operator, restaurants, status):
        order = factories.make_order(customer, restaurants["melange"])
        Order.objects.filter(pk=order.pk).update(status=status)
        event = services.order_cancel(order_id=order.pk, actor=operator, reason="kitchen closed")
        assert (event.to_status, event.source, event.reason) == ("cancelled", "operator", "kitchen closed")
        assert not order.legs.filter(next_poll_at__isnull=False).exists()

    @pytest.mark.parametrize("status", ["delivered", "failed", "cancelled"])
    def test_nobody_cancels_a_finished_order(self, customer, operator, restaurants, status):
        order = factories.make_order(customer, restaurants["melange"])
        Order.objects.filter(pk=order.pk).update(status=status)
        with pytest.raises(ActionNotAllowed):
            services.order_cancel(order_id=order.pk, actor=operator)

    def test_someone_else_may_not_cancel(self, customer, other_customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(PermissionDenied):
            services.order_cancel(order_id=order.pk, actor=other_customer)


class TestOverrideAndFail:
    def test_override_records_who_and_why(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        services.order_cancel(order_id=order.pk, actor=operator)
        event = services.order_override_status(
            order_id=order.pk, actor=operator, to_status="cooking", reason=" cancelled by mistake "
        )
        assert (event.type, event.from_status, event.to_status, event.actor, event.reason) == (
            "order.override",
            "cancelled",
            "cooking",
            operator,
            "cancelled by mistake",
        )

    def test_override_needs_staff_a_reason_and_a_change(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(PermissionDenied):
            services.order_override_status(order_id=order.pk, actor=customer, to_status="ready", reason="x")
        with pytest.raises(ActionNotAllowed):
            services.order_override_status(order_id=order.pk, actor=operator, to_status="ready", reason=" ")
        with pytest.raises(InvalidTransition):
            services.order_override_status(
                order_id=order.pk, actor=operator, to_status="scheduled", reason="x"
            )
        assert order.events.count() == 1

    def test_fail_records_the_reason_once(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        event = services.order_fail(order_id=order.pk, reason="Melange unreachable for 10 minutes")
        assert services.order_fail(order_id=order.pk, reason="again") is None
        order.refresh_from_db()
        assert (order.status, order.failure_reason) == ("failed", "Melange unreachable for 10 minutes")
        assert (event.to_status, event.source) == ("failed", "system")


class TestDeliveryOrdering:
    def test_delivery_leg_is_created_once_when_every_kitchen_is_ready(
        self, customer, restaurants, django_capture_on_commit_callbacks
    ):
        order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        melange, bueno = kitchen_leg(order, "melange"), kitchen_leg(order, "bueno")
        services.leg_apply_status(leg_id=melange.pk, provider_status="cooked", source="poll")
        assert not order.legs.filter(kind=Leg.Kind.DELIVERY).exists()
        with django_capture_on_commit_callbacks() as callbacks:
            services.leg_apply_status(leg_id=bueno.pk, provider_status="ready", source="poll")
        assert order.legs.filter(kind=Leg.Kind.DELIVERY).count() == 1
        submits = [
            callback for callback in callbacks if "_on_commit_submit" in getattr(callback, "__qualname__", "")
        ]
        assert len(submits) == 1, "the delivery is submitted right after commit"
        services.leg_apply_status(leg_id=melange.pk, provider_status="finished", source="poll")
        services.leg_apply_status(leg_id=bueno.pk, provider_status="handed_over", source="poll")
        assert order.legs.filter(kind=Leg.Kind.DELIVERY).count() == 1


class TestPollBookkeeping:
    def test_claim_reserves_due_legs_for_one_poller(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        leg_ids, lease_until = services.legs_claim_due(limit=10)
        assert sorted(leg_ids) == sorted(order.legs.values_list("id", flat=True))
        assert set(order.legs.values_list("next_poll_at", flat=True)) == {lease_until}
        assert services.legs_claim_due(limit=10)[0] == [], (
            "claimed legs are not due again until the lease ends"
        )

    def test_claim_respects_the_limit_and_the_order(self, customer, restaurants):
        first = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        factories.make_order(customer, restaurants["melange"])
        assert len(services.legs_claim_due(limit=1)[0]) == 1
        claimed, _ = services.legs_claim_due(limit=10, order_id=first.pk)
        assert set(claimed) <= set(first.legs.values_list("id", flat=True))

    def test_claim_takes_only_legs_due_by_the_tick_start(self, customer, restaurants):
        """A tick slower than the poll interval must not claim, again and again, legs it rescheduled."""
        order = factories.make_order(customer, restaurants["melange"])
        tick_start = timezone.now() - timedelta(seconds=1)
        order.legs.update(next_poll_at=tick_start + timedelta(milliseconds=500))  # fell due during the tick
        assert services.legs_claim_due(limit=10, due_by=tick_start)[0] == []
        assert services.legs_claim_due(limit=10)[0] == [order.legs.get().pk]

    def test_future_eta_is_submitted_before_the_eta(self, customer, restaurants, settings):
        settings.ORDER_LEAD_MINUTES = 30
        eta = timezone.now() + timedelta(hours=2)
        order = services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(restaurants["melange"]), quantity=1)],
            delivery_address="x",
            eta=eta,
        )
        assert order.legs.get().next_poll_at == eta - timedelta(minutes=30)
        assert services.legs_claim_due(limit=10)[0] == []

    def test_reschedule_skips_legs_of_finished_orders(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg_ids, lease_until = services.legs_claim_due(limit=10)
        services.order_fail(order_id=order.pk, reason="kitchen closed")
        assert services.legs_reschedule(leg_ids=leg_ids, lease_until=lease_until, at=timezone.now()) == 0
        assert order.legs.get().next_poll_at is None

    def test_failures_back_off_then_fail_the_order_past_the_deadline(self, customer, restaurants, settings):
        settings.POLL_INTERVAL_SECONDS = 2
        settings.PROVIDER_MAX_BACKOFF_SECONDS = 60
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        delays = []
        for _ in range(4):
            assert services.leg_record_failure(leg_id=leg.pk, error="melange answered 503") is None
            leg.refresh_from_db()
            delays.append((leg.next_poll_at - timezone.now()).total_seconds())
        assert leg.attempts == 4 and leg.last_error == "melange answered 503"
        assert 1.5 < delays[0] < 2.5 and 12 < delays[3] < 20, delays
        Leg.objects.filter(pk=leg.pk).update(deadline_at=timezone.now())
        event = services.leg_record_failure(leg_id=leg.pk, error="melange timed out after 5s")
        order.refresh_from_db()
        assert event.to_status == order.status == "failed"
        assert "melange (Melange) failing for 5 attempts" in order.failure_reason
        assert "timed out" in order.failure_reason
        assert order.legs.get().next_poll_at is None

    def test_an_answer_clears_past_failures(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        services.leg_record_failure(leg_id=leg.pk, error="boom")
        services.leg_clear_failure(leg_id=leg.pk)
        leg.refresh_from_db()
        assert (leg.attempts, leg.last_error, leg.deadline_at) == (0, "", None)

    def test_external_id_is_set_once(self, customer, restaurants):
        leg = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        services.leg_set_external_id(leg_id=leg.pk, external_id="mel_1")
        services.leg_set_external_id(leg_id=leg.pk, external_id="mel_2")
        leg.refresh_from_db()
        assert leg.external_id == "mel_1"

    def test_batch_bookkeeping_touches_only_the_legs_it_should(self, customer, restaurants):
        """The poller's one-statement versions: external ids set once, failures cleared, nothing else."""
        first = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        second = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        untouched = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        services.leg_set_external_id(leg_id=first.pk, external_id="mel_1")
        for leg in (first, second, untouched):
            services.leg_record_failure(leg_id=leg.pk, error="boom")
        assert services.legs_set_external_ids(external_ids={first.pk: "mel_x", second.pk: "mel_2"}) == 1
        assert services.legs_clear_failures(leg_ids=[first.pk, second.pk]) == 2
        rows = Leg.objects.filter(pk__in=[first.pk, second.pk, untouched.pk]).order_by("pk")
        assert [(leg.external_id, leg.attempts) for leg in rows] == [("mel_1", 0), ("mel_2", 0), ("", 1)]


class TestCourierProgress:
    def test_driver_becomes_the_orders_courier_and_moves(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        delivery = add_delivery_leg(order)
        known = factories.make_courier("courier1")
        known.external_id = "drv_1"
        known.save()
        driver = Driver(external_id="drv_1", name="Ostap")
        assert services.delivery_record_progress(leg_id=delivery.pk, driver=driver, location=(50.45, 30.52))
        assert not services.delivery_record_progress(
            leg_id=delivery.pk, driver=driver, location=(50.45, 30.52)
        )
        order.refresh_from_db()
        known.refresh_from_db()
        assert order.courier == known
        assert (known.lat, known.lng) == (50.45, 30.52)

    def test_unknown_driver_gets_a_courier_without_login(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        delivery = add_delivery_leg(order)
        services.delivery_record_progress(
            leg_id=delivery.pk, driver=Driver("drv_7", "Andrii", "+380"), location=None
        )
        order.refresh_from_db()
        assert (order.courier.name, order.courier.external_id) == ("Andrii", "drv_7")
        assert not order.courier.user.has_usable_password()


class TestRetry:
    def test_retry_revives_a_failed_order(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg = kitchen_leg(order, "melange")
        services.leg_apply_status(leg_id=leg.pk, provider_status="cooking", source="poll")
        services.leg_record_failure(leg_id=leg.pk, error="down")
        services.order_fail(order_id=order.pk, reason="down too long")
        event = services.order_retry(order_id=order.pk, actor=operator)
        order.refresh_from_db()
        leg.refresh_from_db()
        assert (event.type, event.from_status, event.to_status, event.actor) == (
            "order.retry",
            "failed",
            "cooking",
            operator,
        )
        assert (order.status, order.failure_reason) == ("cooking", "")
        assert (leg.attempts, leg.last_error, leg.next_poll_at is not None) == (0, "", True)

    def test_retry_of_failing_legs_in_an_active_order(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        services.leg_record_failure(leg_id=kitchen_leg(order, "melange").pk, error="down")
        event = services.order_retry(order_id=order.pk, actor=operator)
        assert (event.type, event.to_status) == ("order.retry", "scheduled")

    def test_nothing_to_retry(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(ActionNotAllowed):
            services.order_retry(order_id=order.pk, actor=operator)
        services.order_cancel(order_id=order.pk, actor=operator)
        with pytest.raises(ActionNotAllowed):
            services.order_retry(order_id=order.pk, actor=operator)

    def test_only_operators_retry(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        with pytest.raises(PermissionDenied):
            services.order_retry(order_id=order.pk, actor=customer)


def test_backwards_within_the_same_internal_status_is_ignored(customer, restaurants):
    order = factories.make_order(customer, restaurants["bueno"])
    leg = kitchen_leg(order, "bueno")
    services.leg_apply_status(leg_id=leg.pk, provider_status="handed_over", source="poll")
    assert services.leg_apply_status(leg_id=leg.pk, provider_status="ready", source="webhook") is None
    leg.refresh_from_db()
    assert leg.provider_status == "handed_over"
