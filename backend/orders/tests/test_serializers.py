"""orders.serializers.represent: an order rendered by the thread's reused serializer equals a new
serializer's `.data`, for every order shape, one order after another, in any thread."""

import threading

import pytest

from orders import alerts, selectors, services
from orders.models import Alert, Order
from orders.serializers import (
    OrderDetailSerializer,
    OrderSerializer,
    PublicOrderDetailSerializer,
    PublicOrderSerializer,
    represent,
)
from orders.tests import factories

pytestmark = pytest.mark.django_db

SHAPES = [OrderSerializer, OrderDetailSerializer, PublicOrderSerializer, PublicOrderDetailSerializer]


@pytest.fixture
def orders(customer, operator, restaurants) -> list[Order]:
    """Orders that differ in every part a serializer reads: one or two kitchens, a courier, alerts (one
    acknowledged), a customer's cancellation with its reason, an ETA."""
    melange, bueno = restaurants["melange"], restaurants["bueno"]
    plain = factories.make_order(customer, melange)
    carried = factories.make_order(customer, melange, bueno, quantity=3)
    Order.objects.filter(pk=carried.pk).update(courier=factories.make_courier("courier1"))
    late = alerts.raise_alert(order=carried, kind=Alert.Kind.LATE, detail="Late 5 min", source="system")
    alerts.raise_alert(order=carried, kind=Alert.Kind.STUCK, detail="Stuck", source="system")
    Alert.objects.filter(pk=late.pk).update(acknowledged_by=operator, note="called the kitchen")
    cancelled = factories.make_order(customer, bueno)
    services.order_cancel(order_id=cancelled.pk, actor=customer, reason="changed my mind")
    return [plain, carried, cancelled]


def loaded(user, order: Order) -> Order:
    return selectors.order_detail_queryset(user=user).get(pk=order.pk)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_the_reused_serializer_renders_each_order_as_a_new_one_does(shape, orders, customer, operator):
    user = operator if shape in (OrderSerializer, OrderDetailSerializer) else customer
    for order in orders + orders[::-1]:  # one after another: nothing of the previous order stays
        order = loaded(user, order)
        assert represent(shape, order) == shape(order).data


def test_each_thread_renders_with_its_own_serializer(orders, customer):
    """Fields are bound to their serializer: a serializer shared between HTTP threads would mix orders."""
    first, second = (loaded(customer, order) for order in orders[:2])
    here = represent(PublicOrderDetailSerializer, first)
    there: list[dict] = []
    thread = threading.Thread(target=lambda: there.append(represent(PublicOrderDetailSerializer, second)))
    thread.start()
    thread.join()
    assert here == PublicOrderDetailSerializer(first).data
    assert there == [PublicOrderDetailSerializer(second).data]
    assert here != there[0]
