"""Reads (orders.selectors): what each returns on a small realistic dataset, and in how many statements,
whatever the number of rows (details are joined or prefetched, never fetched per order)."""

import uuid
from datetime import datetime, timedelta
from itertools import pairwise

import pytest
from django.utils import timezone

from orders import alerts, selectors, services
from orders.models import Alert, Courier, Leg, Order, OrderEvent, Restaurant
from orders.tests import factories

pytestmark = pytest.mark.django_db

# Selecting orders with their details: the orders (with the courier joined), then items, their dishes,
# the dishes' restaurants, legs (with their restaurant joined) and open alerts, one statement each.
ORDERS_WITH_DETAILS = 6
# Payload details: the orders (courier joined), legs (restaurant joined), open alerts.
ORDERS_WITH_PAYLOAD = 3


@pytest.fixture(autouse=True)
def fast_passwords(settings) -> None:
    """Nobody here signs in with a password (force_login, tokens): a cheap hasher saves a second per user."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def advance(leg: Leg, *statuses: str) -> None:
    for status in statuses:
        services.leg_apply_status(leg_id=leg.pk, provider_status=status, source="poll")


def age(order: Order, days: int) -> None:
    """Move an order and its history `days` into the past."""
    then = timezone.now() - timedelta(days=days)
    Order.objects.filter(pk=order.pk).update(created_at=then, updated_at=then)
    OrderEvent.objects.filter(order=order).update(at=then)


@pytest.fixture
def world(customer, other_customer, operator, restaurants) -> dict:
    """Orders in every kind of state, of two customers, one carried by a courier, with alerts."""
    melange, bueno = restaurants["melange"], restaurants["bueno"]
    courier = factories.make_courier("courier1")
    factories.make_courier("courier2")
    Courier.objects.filter(pk=factories.make_courier("retired").pk).update(is_active=False)

    mine = factories.make_order(customer, melange, bueno)
    advance(mine.legs.get(provider="melange"), "not started")
    advance(mine.legs.get(provider="bueno"), "accepted")
    external_id = f"mel_{uuid.uuid4().hex[:8]}"  # the leg lookup cache outlives a test
    Leg.objects.filter(order=mine, provider="melange").update(
        external_id=external_id
    )  # as its create answered

    carried = factories.make_order(other_customer, bueno)
    Order.objects.filter(pk=carried.pk).update(courier=courier)

    delivered = factories.make_order(customer, melange)
    advance(delivered.legs.get(), "not started", "cooking", "cooked")
    advance(delivered.legs.get(kind=Leg.Kind.DELIVERY), "not started", "delivery", "delivered")

    cancelled = factories.make_order(customer, melange)
    services.order_cancel(order_id=cancelled.pk, actor=customer)

    old = factories.make_order(customer, melange)
    services.order_cancel(order_id=old.pk, actor=customer)
    age(old, days=3)

    failed_long_ago = factories.make_order(other_customer, bueno)
    services.order_fail(order_id=failed_long_ago.pk, reason="Bueno down")  # raises `failed`
    age(failed_long_ago, days=3)

    alerts.raise_alert(order=mine, kind=Alert.Kind.LATE, detail="Late 5 min", source="system")
    alerts.raise_alert(order=mine, kind=Alert.Kind.STUCK, detail="Stuck", source="system")
    alerts.clear_alerts(order=mine, kinds=[Alert.Kind.STUCK], source="system")
    orders = {
        "mine": mine,
        "carried": carried,
        "delivered": delivered,
        "cancelled": cancelled,
        "old": old,
        "failed_long_ago": failed_long_ago,
    }
    return {
        **{name: Order.objects.get(pk=order.pk) for name, order in orders.items()},
        "courier": courier,
        "external_id": external_id,
    }


def ids(orders) -> list[int]:
    return [order.pk for order in orders]


def touch_details(orders: list[Order]) -> list[tuple]:
    """Read everything the API and payloads read of each order."""
    return [
        (
            order.courier.name if order.courier_id else None,
            [(item.dish.name, item.dish.restaurant.name) for item in order.items.all()],
            [(leg.kind, leg.restaurant.name if leg.restaurant_id else None) for leg in order.legs.all()],
            [(alert.kind, alert.acknowledged_by) for alert in order.open_alerts],
        )
        for order in orders
    ]


# --- the catalogue and couriers -------------------------------------------------------------------------


def test_restaurant_list_is_the_active_catalogue_with_active_dishes(restaurants, django_assert_num_queries):
    Restaurant.objects.create(name="Closed", provider="melange", address="Podil 1", is_active=False)
    with django_assert_num_queries(2):
        listed = [(r.name, [dish.name for dish in r.dishes.all()]) for r in selectors.restaurant_list()]
    assert listed == [
        ("Bueno", ["Bueno dish 0", "Bueno dish 1", "Bueno dish 2"]),
        ("Melange", ["Melange dish 0", "Melange dish 1", "Melange dish 2"]),
    ]


def test_courier_list_is_the_active_couriers_by_name(world, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert [courier.name for courier in selectors.courier_list()] == ["Courier1", "Courier2"]


# --- who sees which orders ------------------------------------------------------------------------------


def test_orders_visible_to_operators_customers_and_couriers(
    world, operator, customer, other_customer, django_assert_num_queries
):
    everyone = {order.pk for order in Order.objects.all()}
    stranger = factories.make_user("mallory")
    expected = {
        operator: everyone,
        customer: {world[name].pk for name in ("mine", "delivered", "cancelled", "old")},
        other_customer: {world["carried"].pk, world["failed_long_ago"].pk},
        world["courier"].user: {world["carried"].pk},
        stranger: set(),
    }
    for user, visible in expected.items():
        with django_assert_num_queries(1):
            assert set(ids(selectors.orders_visible_to(user))) == visible, user


# --- order lists ----------------------------------------------------------------------------------------


def test_order_list_is_newest_first_with_every_detail_in_a_fixed_number_of_queries(
    world, operator, django_assert_num_queries
):
    with django_assert_num_queries(ORDERS_WITH_DETAILS):
        orders = list(selectors.order_list(user=operator))
        details = touch_details(orders)
    assert ids(orders) == ids(Order.objects.order_by("-created_at", "-id"))
    assert ids(orders)[-2:] == sorted([world["old"].pk, world["failed_long_ago"].pk], reverse=True)
    mine = details[ids(orders).index(world["mine"].pk)]
    assert mine[1] == [("Melange dish 0", "Melange"), ("Bueno dish 0", "Bueno")]
    assert mine[2] == [("kitchen", "Melange"), ("kitchen", "Bueno")]
    assert mine[3] == [("late", None)], "only open alerts"
    assert details[ids(orders).index(world["carried"].pk)][0] == "Courier1"


def test_order_list_filters(world, operator, customer, restaurants, django_assert_num_queries):
    def listed(user=operator, **filters) -> set[int]:
        with django_assert_num_queries(1):
            return set(selectors.order_list(user=user, **filters).values_list("pk", flat=True))

    mine, carried = world["mine"].pk, world["carried"].pk
    assert listed(statuses=["cancelled", "failed"]) == {
        world["cancelled"].pk,
        world["old"].pk,
        world["failed_long_ago"].pk,
    }
    assert listed(q=f"#{mine}") == listed(q=str(mine)) == {mine}
    assert listed(q="bob") == {carried, world["failed_long_ago"].pk}
    assert listed(q="sahaidachnoho") == set(Order.objects.values_list("pk", flat=True))
    assert listed(q=world["external_id"].upper()) == {mine}, "operators find a provider's sub-order id"
    assert listed(user=customer, q=world["external_id"]) == set(), "customers cannot confirm a guessed one"
    assert listed(user=customer, statuses=["submitted"]) == {mine}
    assert listed(created_after=timezone.now() - timedelta(days=1)) == {
        mine,
        carried,
        world["delivered"].pk,
        world["cancelled"].pk,
    }
    assert listed(created_before=timezone.now() - timedelta(days=1)) == {
        world["old"].pk,
        world["failed_long_ago"].pk,
    }
    assert listed(restaurant=restaurants["bueno"].pk) == {mine, carried, world["failed_long_ago"].pk}
    assert listed(provider="uklon") == {world["delivered"].pk}
    assert listed(courier=world["courier"].pk) == {carried}


def test_order_detail_shows_operators_the_whole_history_and_customers_the_public_part(
    world, operator, customer, django_assert_num_queries
):
    mine = world["mine"].pk
    everything = list(OrderEvent.objects.filter(order_id=mine).values_list("type", flat=True))
    assert {"alert.raised", "alert.cleared"} <= set(everything)
    # the orders and their details, then the events with their actor and alert joined
    with django_assert_num_queries(ORDERS_WITH_DETAILS + 1):
        whole = selectors.order_detail_queryset(user=operator).get(pk=mine)
        seen_whole = [(event.type, event.actor, event.alert) for event in whole.events.all()]
        touch_details([whole])
    assert [event_type for event_type, _, _ in seen_whole] == everything
    public = selectors.order_detail_queryset(user=customer).get(pk=mine)
    assert [event.type for event in public.events.all()] == [
        "order.created",
        "leg.status",
        "order.status",
    ]
    assert not selectors.order_detail_queryset(user=customer).filter(pk=world["carried"].pk).exists()


def test_board_orders_are_the_active_the_recent_and_the_alerting(world, django_assert_num_queries):
    with django_assert_num_queries(1):
        board = set(ids(selectors.board_orders(Order.objects.all())))
    expected = {"mine", "carried", "delivered", "cancelled", "failed_long_ago"}
    assert board == {world[name].pk for name in expected}, "ended long ago without an alert: off the board"


def test_active_orders_with_their_details(world, django_assert_num_queries):
    with django_assert_num_queries(ORDERS_WITH_DETAILS):
        orders = list(selectors.active_orders())
        touch_details(orders)
    assert set(ids(orders)) == {world["mine"].pk, world["carried"].pk}


def test_payload_and_stream_details_carry_each_orders_last_seq(world, django_assert_num_queries):
    with django_assert_num_queries(ORDERS_WITH_PAYLOAD):
        orders = list(selectors.with_payload_details(Order.objects.all()))
        touched = [
            (order.courier_id and order.courier.name, [leg.restaurant for leg in order.legs.all()])
            for order in orders
        ]
        [order.open_alerts for order in orders]
    assert len(touched) == Order.objects.count()
    with django_assert_num_queries(ORDERS_WITH_PAYLOAD):
        streamed = {order.pk: order.last_seq for order in selectors.with_stream_details(Order.objects.all())}
    for order in Order.objects.all():
        assert streamed[order.pk] == order.events.order_by("-seq").values_list("seq", flat=True).first()


# --- alerts ---------------------------------------------------------------------------------------------


def test_alert_list_filters_newest_first(world, operator, django_assert_num_queries):
    def listed(**filters) -> list[tuple[int, str]]:
        with django_assert_num_queries(1):
            return [
                (alert.order.pk, alert.kind, alert.acknowledged_by)
                for alert in selectors.alert_list(**filters)
            ]

    mine, failed = world["mine"].pk, world["failed_long_ago"].pk
    late = Alert.objects.get(kind=Alert.Kind.LATE)
    alerts.alert_acknowledge(alert_id=late.pk, actor=operator, note="calling the kitchen")
    assert listed() == [(mine, "stuck", None), (mine, "late", operator), (failed, "failed", None)]
    assert listed(open=True) == [(mine, "late", operator), (failed, "failed", None)]
    assert listed(open=False) == [(mine, "stuck", None)]
    assert listed(kind="failed") == [(failed, "failed", None)]
    assert listed(order=mine, open=True) == [(mine, "late", operator)]


# --- provider lookups and figures -----------------------------------------------------------------------


def test_leg_for_a_providers_id_is_cached_and_misses_are_not(world, django_assert_num_queries):
    leg = world["mine"].legs.get(provider="melange")
    with django_assert_num_queries(1):
        assert selectors.leg_id_for_external("melange", world["external_id"]) == leg.pk
    with django_assert_num_queries(0):
        assert selectors.leg_id_for_external("melange", world["external_id"]) == leg.pk
    with django_assert_num_queries(0):
        assert selectors.leg_id_for_external("melange", "") is None, "a leg not yet sent never matches"
    unknown = f"mel_{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        with django_assert_num_queries(1):
            assert selectors.leg_id_for_external("melange", unknown) is None
    with django_assert_num_queries(1):
        assert selectors.leg_id_for_external("bueno", world["external_id"]) is None, "ids are per provider"


def test_throughput_counts_created_and_delivered_orders_per_minute(world, django_assert_num_queries):
    with django_assert_num_queries(1):
        series = selectors.throughput_per_minute(minutes=5)
    assert len(series) == 5
    minutes = [datetime.fromisoformat(point["minute"]) for point in series]
    assert all(later - earlier == timedelta(minutes=1) for earlier, later in pairwise(minutes))
    assert sum(point["created"] for point in series) == 4, "the two aged orders are outside the window"
    assert sum(point["delivered"] for point in series) == 1
