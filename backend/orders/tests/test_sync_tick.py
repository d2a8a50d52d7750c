"""orders.sync.tick: what a tick asks each provider, its limits, and one tick against the simulators."""

import pytest

from orders.models import Leg
from orders.providers import DeliveryRequest, KitchenRequest
from orders.sync import leases, tick
from orders.tests import factories


def test_time_limits_follow_the_tick_budget(settings):
    settings.POLL_TICK_BUDGET_SECONDS, settings.PROVIDER_TIMEOUT_SECONDS = 20, 5
    soft, hard = tick.time_limits()
    assert soft == 20 + 2 * 5 + tick.BATCH_WRITE_SECONDS and hard > soft
    settings.POLL_TICK_BUDGET_SECONDS = 200
    assert tick.time_limits()[0] > 200, "a longer budget never outlives the task's limit"


@pytest.mark.django_db
def test_jobs_create_unsent_legs_and_fetch_sent_ones(customer, restaurants):
    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    melange, bueno = order.legs.order_by("provider").filter(provider__in=["melange", "bueno"]).order_by("id")
    Leg.objects.filter(pk=bueno.pk).update(external_id="bno_1")
    jobs = {job.provider: job for job in tick.load_jobs([melange.pk, bueno.pk])}
    assert jobs["bueno"].request is None and jobs["bueno"].external_id == "bno_1"
    request = jobs["melange"].request
    assert isinstance(request, KitchenRequest)
    assert request.idempotency_key == f"liveops-leg-{melange.pk}" and request.reference == f"order-{order.pk}"
    assert request.items == [(factories.dish(restaurants["melange"]).name, 1)]


@pytest.mark.django_db
def test_a_delivery_job_names_every_pickup_then_the_customer(customer, restaurants):
    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    kitchens = list(order.legs.select_related("restaurant").order_by("id"))
    for number, kitchen in enumerate(kitchens):
        Leg.objects.filter(pk=kitchen.pk).update(external_id=f"k{number}")
    delivery = Leg.objects.create(order=order, kind=Leg.Kind.DELIVERY, provider="raketa")
    [job] = tick.load_jobs([delivery.pk])
    assert isinstance(job.request, DeliveryRequest)
    assert job.request.addresses == [k.restaurant.address for k in kitchens] + [order.delivery_address]
    assert job.request.comments == [f"{k.restaurant.name} order k{n}" for n, k in enumerate(kitchens)]


@pytest.mark.django_db
def test_a_finished_order_gets_no_new_sub_order(customer, operator, restaurants):
    from orders import services

    order = factories.make_order(customer, restaurants["melange"])
    services.order_override_status(order_id=order.pk, to_status="delivered", actor=operator, reason="test")
    leg_ids, lease_until = leases.legs_claim_due(limit=10)
    assert tick.load_jobs(leg_ids, lease_until=lease_until) == []


@pytest.mark.slow
def test_one_tick_polls_what_is_due_and_reschedules_it(providers, customer, restaurants):
    from django.utils import timezone

    order = factories.release(factories.make_order(customer, restaurants["melange"], restaurants["bueno"]))
    legs = order.legs.all()
    assert all(leg.external_id for leg in legs), "its follow-up task created both sub-orders"
    Leg.objects.filter(order=order).update(next_poll_at=None)
    assert tick.poll_due_legs().claimed == 0, "nothing due, nothing claimed"
    started = timezone.now()
    Leg.objects.filter(order=order).update(next_poll_at=started)
    report = tick.poll_due_legs(order_ids=[order.pk])
    assert (report.claimed, report.created, report.failed, report.errors) == (2, 0, 0, [])
    assert report.changed + report.unchanged == 2 and report.http_seconds < report.seconds
    assert all(leg.next_poll_at > started for leg in order.legs.all()), "polled legs are due again later"
