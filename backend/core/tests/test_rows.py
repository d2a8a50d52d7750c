"""core.rows: the hot paths' hand-built statements write and read exactly what the ORM would."""

import pytest
from django.db import IntegrityError, transaction
from django.forms.models import model_to_dict
from knox.models import AuthToken

from core import rows
from core.authentication import _tokens_with_users
from orders import selectors, services
from orders.models import Dish, Leg, Order, OrderEvent, OrderItem, Restaurant
from orders.tests import factories


def columns(instance) -> dict:
    """Every concrete column's value, as the instance holds it."""
    return {field.attname: getattr(instance, field.attname) for field in type(instance)._meta.concrete_fields}


def test_a_family_written_in_one_statement_reads_back_as_it_was_written(customer, restaurants):
    """What order creation hands on (the 201's body) is built from the instances in hand: each must be
    exactly its row, every column, primary and foreign keys included."""
    dishes = list(Dish.objects.filter(is_active=True).order_by("-id"))  # ids not in insertion order
    order = services.order_create(
        customer=customer,
        items=[services.ItemInput(dish=dish, quantity=index + 1) for index, dish in enumerate(dishes)],
        delivery_address="Sahaidachnoho St, 10",
        phone="+380 44 000 0000",
        loaded=True,
    )
    assert columns(order) == columns(Order.objects.get(pk=order.pk))
    written = list(order.items.all())
    assert [item.dish_id for item in written] == [dish.pk for dish in dishes]
    assert [columns(item) for item in written] == [
        columns(OrderItem.objects.get(pk=item.pk)) for item in written
    ]
    legs = list(order.legs.all())
    assert [columns(leg) for leg in legs] == [columns(leg) for leg in Leg.objects.filter(order=order)]
    assert {leg.restaurant_id for leg in legs} == {dish.restaurant_id for dish in dishes}
    event = OrderEvent.objects.get(order=order)
    assert (event.type, event.actor_id) == (OrderEvent.Type.CREATED, customer.pk)
    assert all(not instance._state.adding for instance in [order, *written, *legs])


def test_ids_come_back_in_the_order_the_rows_were_given(customer, restaurants):
    order = Order(customer=customer, delivery_address="x", total=0)
    dishes = list(Dish.objects.order_by("-id"))
    items = [OrderItem(order=order, dish=dish, quantity=1, price=dish.price) for dish in dishes]
    rows.insert_family(order, [items, []])
    assert [OrderItem.objects.get(pk=item.pk).dish_id for item in items] == [dish.pk for dish in dishes]
    assert all(item.order_id == order.pk for item in items)


def test_a_row_that_fails_leaves_nothing_of_its_family(customer, restaurants):
    """One statement: a child PostgreSQL refuses takes the parent and its siblings with it."""
    order = Order(customer=customer, delivery_address="x", total=0)
    dish = Dish.objects.first()
    good = OrderItem(order=order, dish=dish, quantity=1, price=dish.price)
    bad = OrderItem(order=order, dish=dish, quantity=1, price=None)  # price is NOT NULL
    with pytest.raises(IntegrityError), transaction.atomic():
        rows.insert_family(order, [[good, bad]])
    assert not Order.objects.exists()
    assert not OrderItem.objects.exists()


def test_a_group_holds_one_model(customer, restaurants):
    order = Order(customer=customer, delivery_address="x", total=0)
    with pytest.raises(TypeError):
        rows.insert_family(order, [[OrderItem(order=order), Leg(order=order)]])


def test_orderable_dishes_are_loaded_as_the_orm_loads_them(restaurants):
    restaurants["bueno"].is_active = False
    restaurants["bueno"].save()
    every = list(Dish.objects.values_list("pk", flat=True))
    loaded = selectors.orderable_dishes(every + [0, 10**12])
    expected = Dish.objects.filter(is_active=True, restaurant__is_active=True).select_related("restaurant")
    assert sorted(loaded) == sorted(dish.pk for dish in expected)
    for dish in expected:
        assert columns(loaded[dish.pk]) == columns(dish)
        assert columns(loaded[dish.pk].restaurant) == columns(dish.restaurant)
        assert isinstance(loaded[dish.pk].restaurant, Restaurant)
        assert not loaded[dish.pk]._state.adding


def test_a_token_is_loaded_with_its_user_as_knox_loads_it(customer):
    factories.token_for(customer)
    token = AuthToken.objects.select_related("user").get(user=customer)
    (loaded,) = _tokens_with_users(token.token_key)
    assert columns(loaded) == columns(token)
    assert model_to_dict(loaded.user) == model_to_dict(token.user)
    assert columns(loaded.user) == columns(token.user)
    assert _tokens_with_users("no-such-key") == []
