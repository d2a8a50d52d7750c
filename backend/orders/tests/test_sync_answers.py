"""orders.sync.answers: one entry for poll answers and webhooks; an unchanged answer costs no write."""

import pytest
from django.core.cache import cache

from orders.models import Leg
from orders.providers import Driver, ProviderOrder
from orders.sync import answers
from orders.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def leg(customer, restaurants) -> Leg:
    order = factories.make_order(customer, restaurants["melange"])
    leg = order.legs.get()
    Leg.objects.filter(pk=leg.pk).update(external_id=f"mel_answers_{leg.pk}")
    leg.refresh_from_db()
    cache.delete(answers.status_cache_key("melange", leg.external_id))
    return leg


def answer(leg: Leg, status: str, **extra) -> ProviderOrder:
    return ProviderOrder(external_id=leg.external_id, status=status, **extra)


def test_an_answer_moves_the_leg_once_and_is_remembered(leg):
    assert answers.apply_answer(
        leg_id=leg.pk, provider="melange", answer=answer(leg, "cooking"), source="poll"
    )
    leg.refresh_from_db()
    assert (leg.provider_status, leg.order.status) == ("cooking", "cooking")
    assert cache.get(answers.status_cache_key("melange", leg.external_id)) == "cooking"
    again = answers.apply_answer(
        leg_id=leg.pk, provider="melange", answer=answer(leg, "cooking"), source="webhook"
    )
    assert again is False
    assert leg.order.events.filter(provider_status="cooking").count() == 1


def test_a_batch_of_unchanged_answers_costs_one_cache_read_and_two_statements(leg, django_assert_num_queries):
    answers.apply_answer(leg_id=leg.pk, provider="melange", answer=answer(leg, "cooking"), source="poll")
    batch = [(leg.pk, "melange", answer(leg, "cooking"))] * 50
    with django_assert_num_queries(1):  # clearing failures of the batch (matches no row); nothing per leg
        assert answers.apply_batch(batch) == (0, [])


def test_an_unknown_status_is_recorded_as_a_failure_and_not_cached(leg):
    changed = answers.apply_answer(
        leg_id=leg.pk, provider="melange", answer=answer(leg, "quantum"), source="poll"
    )
    assert changed is False
    leg.refresh_from_db()
    assert leg.attempts == 1 and "quantum" in leg.last_error
    assert cache.get(answers.status_cache_key("melange", leg.external_id)) is None
    answers.apply_answer(leg_id=leg.pk, provider="melange", answer=answer(leg, "cooking"), source="poll")
    leg.refresh_from_db()
    assert (leg.attempts, leg.last_error) == (0, ""), "a good answer clears the failure"


def test_a_batch_goes_on_past_a_leg_it_cannot_apply(leg, customer, restaurants):
    gone = factories.make_order(customer, restaurants["bueno"]).legs.get()
    Leg.objects.filter(pk=gone.pk).update(external_id="bno_gone")
    batch = [
        (gone.pk, "bueno", ProviderOrder("bno_gone", "preparing")),
        (leg.pk, "melange", answer(leg, "cooked")),
    ]
    gone.order.delete()  # its order was purged between the claim and the answer
    changed, errors = answers.apply_batch(batch)
    assert changed == 1 and len(errors) == 1 and errors[0].startswith(f"leg {gone.pk}:")
    leg.refresh_from_db()
    assert leg.provider_status == "cooked"


def test_a_courier_answer_records_the_driver_even_when_the_status_is_known(customer, restaurants):
    order = factories.make_order(customer, restaurants["melange"])
    delivery = Leg.objects.create(order=order, kind=Leg.Kind.DELIVERY, provider="uklon", external_id="ukl_a1")
    answers.apply_answer(
        leg_id=delivery.pk, provider="uklon", answer=ProviderOrder("ukl_a1", "delivery"), source="poll"
    )
    moving = ProviderOrder("ukl_a1", "delivery", location=(50.44, 30.51), driver=Driver("drv_5", "Dmytro"))
    changed, errors = answers.apply_batch([(delivery.pk, "uklon", moving)])
    assert (changed, errors) == (1, [])
    order.refresh_from_db()
    assert order.courier.name == "Dmytro" and (order.courier.lat, order.courier.lng) == (50.44, 30.51)
