"""orders.sync.leases: claims under SKIP LOCKED, the tick's batch bookkeeping, failures and backoff."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders import services
from orders.models import Leg, Order
from orders.sync import leases
from orders.tests import factories

pytestmark = pytest.mark.django_db


def kitchen_leg(order: Order, provider: str) -> Leg:
    return order.legs.get(kind=Leg.Kind.KITCHEN, provider=provider)


def events_of(order: Order) -> list[tuple[str, str, str]]:
    return list(order.events.order_by("seq").values_list("type", "from_status", "to_status"))


class TestPollBookkeeping:
    def test_claim_reserves_due_legs_for_one_poller(self, customer, restaurants):
        order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        leg_ids, lease_until = leases.legs_claim_due(limit=10)
        assert sorted(leg_ids) == sorted(order.legs.values_list("id", flat=True))
        assert set(order.legs.values_list("next_poll_at", flat=True)) == {lease_until}
        assert leases.legs_claim_due(limit=10)[0] == [], "claimed legs are not due again until the lease ends"

    def test_claim_respects_the_limit_and_the_order(self, customer, restaurants):
        first = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
        factories.make_order(customer, restaurants["melange"])
        assert len(leases.legs_claim_due(limit=1)[0]) == 1
        claimed, _ = leases.legs_claim_due(limit=10, order_ids=[first.pk])
        assert set(claimed) <= set(first.legs.values_list("id", flat=True))

    def test_claim_takes_only_legs_due_by_the_tick_start(self, customer, restaurants):
        """A tick slower than the poll interval must not claim, again and again, legs it rescheduled."""
        order = factories.make_order(customer, restaurants["melange"])
        tick_start = timezone.now() - timedelta(seconds=1)
        order.legs.update(next_poll_at=tick_start + timedelta(milliseconds=500))  # fell due during the tick
        assert leases.legs_claim_due(limit=10, due_by=tick_start)[0] == []
        assert leases.legs_claim_due(limit=10)[0] == [order.legs.get().pk]

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
        assert leases.legs_claim_due(limit=10)[0] == []

    def test_reschedule_skips_legs_of_finished_orders(self, customer, operator, restaurants):
        order = factories.make_order(customer, restaurants["melange"])
        leg_ids, lease_until = leases.legs_claim_due(limit=10)
        services.order_fail(order_id=order.pk, reason="kitchen closed")
        assert leases.legs_reschedule(leg_ids=leg_ids, lease_until=lease_until, at=timezone.now()) == 0
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
        leases.leg_clear_failure(leg_id=leg.pk)
        leg.refresh_from_db()
        assert (leg.attempts, leg.last_error, leg.deadline_at) == (0, "", None)

    def test_external_id_is_set_once(self, customer, restaurants):
        leg = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        leases.leg_set_external_id(leg_id=leg.pk, external_id="mel_1")
        leases.leg_set_external_id(leg_id=leg.pk, external_id="mel_2")
        leg.refresh_from_db()
        assert leg.external_id == "mel_1"

    def test_batch_bookkeeping_touches_only_the_legs_it_should(self, customer, restaurants):
        """The poller's one-statement versions: external ids set once, failures cleared, nothing else."""
        first = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        second = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        untouched = kitchen_leg(factories.make_order(customer, restaurants["melange"]), "melange")
        leases.leg_set_external_id(leg_id=first.pk, external_id="mel_1")
        for leg in (first, second, untouched):
            services.leg_record_failure(leg_id=leg.pk, error="boom")
        assert leases.legs_set_external_ids(external_ids={first.pk: "mel_x", second.pk: "mel_2"}) == 1
        assert leases.legs_clear_failures(leg_ids=[first.pk, second.pk]) == 2
        rows = Leg.objects.filter(pk__in=[first.pk, second.pk, untouched.pk]).order_by("pk")
        assert [(leg.external_id, leg.attempts) for leg in rows] == [("mel_1", 0), ("mel_2", 0), ("", 1)]
