import pytest
from django.db import IntegrityError, transaction

from orders import services, signals
from orders.errors import ActionNotAllowed, InvalidTransition, PermissionDenied
from orders.models import Leg, Order, OrderEvent, OrderItem
from orders.providers import Driver, UnknownProviderStatus
from orders.status import OrderStatus
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
            callback for callback in callbacks if getattr(callback, "func", None) == signals.order_due.send
        ]
        assert len(submits) == 1, "the delivery is submitted right after commit"
        services.leg_apply_status(leg_id=melange.pk, provider_status="finished", source="poll")
        services.leg_apply_status(leg_id=bueno.pk, provider_status="handed_over", source="poll")
        assert order.legs.filter(kind=Leg.Kind.DELIVERY).count() == 1


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
        [assigned] = order.events.filter(type="order.courier")
        assert (assigned.source, assigned.leg_id, assigned.reason) == ("poll", delivery.pk, known.name)

    def test_an_operators_choice_of_courier_holds_over_the_providers_driver(
        self, customer, operator, restaurants
    ):
        order = factories.make_order(customer, restaurants["melange"])
        delivery = add_delivery_leg(order)
        services.delivery_record_progress(leg_id=delivery.pk, driver=Driver("drv_1", "Ostap"), location=None)
        chosen = factories.make_courier("courier9")
        services.order_reassign_courier(
            order_id=order.pk, courier_id=chosen.pk, actor=operator, reason="bike"
        )
        moved = services.delivery_record_progress(
            leg_id=delivery.pk, driver=Driver("drv_1", "Ostap"), location=(50.41, 30.51), source="webhook"
        )
        assert moved, "the provider's driver still moves on the map"
        order.refresh_from_db()
        assert order.courier == chosen
        assignments = order.events.filter(type="order.courier").order_by("seq")
        assert list(assignments.values_list("source", flat=True)) == ["poll", "operator"]

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
