"""orders.services.legs_apply_statuses: a poll tick's status changes in bulk, exactly as one by one.

The reference is `leg_apply_status` applied to each change in turn (an unknown status recorded as a
failure of its leg, as orders.sync.answers does): a batch must leave the same statuses, events (in the
same seq order within each order), alerts and commit-time effects, in a number of SQL statements that
does not grow with the batch.
"""

from collections import Counter
from functools import partial

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from orders import alerts, services, signals
from orders.models import Alert, Leg, Order
from orders.providers import UnknownProviderStatus
from orders.services import StatusChange
from orders.tests import factories

pytestmark = pytest.mark.django_db

# SAVEPOINT (the test's transaction wraps the service's), lock the order, lock its legs, update the leg,
# update the order, insert the event, look for a `stuck` alert to clear, RELEASE SAVEPOINT
ONE_TRANSITION = 8
ONE_LEG_EVENT = ONE_TRANSITION - 1  # the order keeps its status: not written
# SAVEPOINT, lock the orders, lock their legs, read the open alerts a change could settle, update the
# legs, update the orders, insert the events, RELEASE SAVEPOINT: whatever the number of changes
BATCH = 8
# ... and stop polling the legs of delivered orders, create the delivery legs of orders ready
BATCH_WITH_FOLLOW_UPS = BATCH + 2


def leg_of(order: Order, provider: str) -> Leg:
    return order.legs.get(provider=provider)


def apply(order: Order, provider: str, *statuses: str) -> None:
    for status in statuses:
        services.leg_apply_status(leg_id=leg_of(order, provider).pk, provider_status=status, source="poll")


def one_by_one(changes: list[StatusChange]) -> list[object]:
    """What a poll tick did before batching: each change in its own transaction, in turn."""
    results: list[object] = []
    for change in changes:
        try:
            event = services.leg_apply_status(
                leg_id=change.leg_id, provider_status=change.provider_status, source="poll"
            )
        except UnknownProviderStatus as error:
            services.leg_record_failure(leg_id=change.leg_id, error=str(error))
            results.append(UnknownProviderStatus)
            continue
        results.append(None if event is None else (event.type, event.to_status, event.provider_status))
    return results


def in_batch(changes: list[StatusChange]) -> list[object]:
    results: list[object] = []
    for applied in services.legs_apply_statuses(changes=changes, source="poll"):
        if applied.error is not None:
            results.append(type(applied.error))
            continue
        event = applied.event
        results.append(None if event is None else (event.type, event.to_status, event.provider_status))
    return results


def world(customer, operator, restaurants) -> tuple[list[Order], list[StatusChange]]:
    """Orders in every state a tick meets, and a batch of changes to them, interleaved."""
    melange, bueno = restaurants["melange"], restaurants["bueno"]
    both = factories.make_order(customer, melange, bueno)  # two legs moving in the same batch
    ready = factories.make_order(customer, melange)  # its only kitchen is done: the delivery is ordered
    backwards = factories.make_order(customer, bueno)
    apply(backwards, "bueno", "preparing")
    cancelled = factories.make_order(customer, melange)
    services.order_cancel(order_id=cancelled.pk, actor=operator, reason="test")
    unknown = factories.make_order(customer, melange)
    dropped = factories.make_order(customer, bueno)  # its provider cancels its part
    stuck = factories.make_order(customer, melange)
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=stuck.pk)
        alerts.raise_alert(order=locked, kind=Alert.Kind.STUCK, detail="No progress", source="system")
    road = factories.make_order(customer, melange)  # courier found, then on the road
    apply(road, "melange", "cooked")
    arriving = factories.make_order(customer, bueno)  # delivered: the order finishes
    apply(arriving, "bueno", "ready")
    apply(arriving, "uklon", "not started", "delivery")
    repeated = factories.make_order(customer, melange)
    apply(repeated, "melange", "cooking")
    mixed = factories.make_order(customer, melange)  # a change in bulk, then one that needs more
    late = factories.make_order(customer, bueno)  # finishing settles its `late` alert
    late_on_road = factories.make_order(customer, bueno)  # on the road, it stays late
    for order in (late, late_on_road):
        apply(order, "bueno", "ready")
        apply(order, "uklon", "not started")
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            alerts.raise_alert(order=locked, kind=Alert.Kind.LATE, detail="Late 5 min", source="system")
    apply(late, "uklon", "delivery")
    orders = [both, ready, backwards, cancelled, unknown, dropped, stuck, road, arriving, repeated, mixed]
    orders += [late, late_on_road]
    changes = [
        (both, "melange", "not started"),
        (ready, "melange", "cooked"),
        (both, "bueno", "accepted"),
        (backwards, "bueno", "accepted"),
        (cancelled, "melange", "cooking"),
        (unknown, "melange", "quantum"),
        (both, "melange", "cooking"),
        (dropped, "bueno", "cancelled"),
        (unknown, "melange", "cooking"),
        (stuck, "melange", "not started"),
        (ready, "melange", "finished"),
        (road, "uklon", "not started"),
        (arriving, "uklon", "delivered"),
        (road, "uklon", "delivery"),
        (repeated, "melange", "cooking"),
        (stuck, "melange", "cooking"),
        (both, "bueno", "preparing"),
        (mixed, "melange", "cooking"),
        (mixed, "melange", "cooked"),
        (late, "uklon", "delivered"),
        (late_on_road, "uklon", "delivery"),
        (mixed, "melange", "cancelled"),
    ]
    return orders, [StatusChange(leg_of(order, provider).pk, status) for order, provider, status in changes]


def state(orders: list[Order]) -> list[dict]:
    """Everything a status change writes, with ids replaced by positions (the two worlds differ in ids)."""
    result = []
    for order in orders:
        order.refresh_from_db()
        legs = list(order.legs.order_by("id"))
        position = {leg.pk: index for index, leg in enumerate(legs)}
        events = order.events.order_by("seq").select_related("alert")
        result.append(
            {
                "status": (order.status, order.failure_reason),
                "legs": [
                    (
                        leg.kind,
                        leg.provider,
                        leg.provider_status,
                        leg.status,
                        leg.attempts,
                        leg.next_poll_at is None,
                    )
                    for leg in legs
                ],
                "events": [
                    (
                        event.type,
                        event.from_status,
                        event.to_status,
                        position.get(event.leg_id),
                        event.provider_status,
                        event.source,
                        event.reason,
                        event.alert.kind if event.alert_id else "",
                    )
                    for event in events
                ],
                "alerts": [
                    (alert.kind, position.get(alert.leg_id), alert.detail, alert.cleared_at is None)
                    for alert in order.alerts.order_by("id")
                ],
            }
        )
    return result


def effects(callbacks: list, orders: list[Order]) -> Counter:
    """The commit-time effects: signals sent for which order, metrics counted with which labels."""
    position = {order.pk: index for index, order in enumerate(orders)}
    found: Counter = Counter()
    for callback in callbacks:
        if isinstance(callback, partial) and callback.func == signals.orders_changed.send:
            # a batch's follow-ups travel in one message: its orders count as the single ones' would
            for name, key in (("order_due", "due"), ("order_notify", "notify")):
                for order_id in callback.keywords[key]:
                    found[(name, position[order_id])] += 1
        elif isinstance(callback, partial):
            name = next(n for n in ("order_notify", "order_due") if callback.func == getattr(signals, n).send)
            found[(name, position[callback.keywords["order_id"]])] += 1
        else:
            metric = callback.__self__
            found[(metric._name, metric._labelvalues)] += 1
    return found


def test_a_batch_does_exactly_what_its_changes_do_one_by_one(
    customer, operator, restaurants, monkeypatch, django_capture_on_commit_callbacks
):
    reference_orders, reference_changes = world(customer, operator, restaurants)
    orders, changes = world(customer, operator, restaurants)
    with django_capture_on_commit_callbacks() as reference_callbacks:
        reference = one_by_one(reference_changes)
    one_at_a_time = []
    single = services.leg_apply_status

    def spy(*, leg_id: int, provider_status: object, source: str):
        one_at_a_time.append(changes.index(StatusChange(leg_id, provider_status)))
        return single(leg_id=leg_id, provider_status=provider_status, source=source)

    monkeypatch.setattr(services, "leg_apply_status", spy)
    with django_capture_on_commit_callbacks() as callbacks:
        batch = in_batch(changes)

    assert batch == reference
    assert state(orders) == state(reference_orders)
    assert effects(callbacks, orders) == effects(reference_callbacks, reference_orders)
    batch_messages = [c for c in callbacks if getattr(c, "func", None) == signals.orders_changed.send]
    assert len(batch_messages) == 1, "the bulk part's follow-ups: one message"
    # the common changes went in bulk; the rest, and what followed them in their order, one by one
    assert one_at_a_time == [5, 7, 8, 9, 15, 19, 21]
    # what the batch was about, as the reference shows it
    assert reference[0][0] == "leg.status" and reference[2][:2] == ("order.status", "submitted")
    assert [reference[3], reference[4], reference[14]] == [None] * 3  # backwards, finished, repeated
    assert reference[5] is UnknownProviderStatus
    assert reference[7][:2] == ("order.status", "failed")
    assert reference[12][:2] == ("order.status", "delivered")
    ready = orders[1]
    assert ready.legs.filter(kind=Leg.Kind.DELIVERY).exists(), "every kitchen ready: the delivery is ordered"
    assert not orders[6].alerts.filter(kind=Alert.Kind.STUCK, cleared_at__isnull=True).exists()


def test_one_applied_status_change_costs_a_fixed_number_of_statements(
    customer, restaurants, django_assert_num_queries
):
    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    melange, bueno = leg_of(order, "melange"), leg_of(order, "bueno")
    with django_assert_num_queries(ONE_TRANSITION):
        event = services.leg_apply_status(leg_id=melange.pk, provider_status="cooking", source="poll")
    assert (event.type, event.to_status) == ("order.status", "cooking")
    with django_assert_num_queries(ONE_LEG_EVENT):
        event = services.leg_apply_status(leg_id=bueno.pk, provider_status="accepted", source="webhook")
    assert (event.type, event.to_status) == ("leg.status", "cooking")


@pytest.mark.parametrize("orders", [1, 4, 25])
def test_a_batch_costs_the_same_statements_whatever_its_size(
    customer, restaurants, orders, django_assert_num_queries
):
    """Per order: three changes of a two-kitchen order (one leg twice), a kitchen done (the delivery is
    ordered), a delivery done (the order finishes); every one applied in bulk."""
    melange, bueno = restaurants["melange"], restaurants["bueno"]
    changes = []
    for _ in range(orders):
        order = factories.make_order(customer, melange, bueno)
        cooking, accepting = leg_of(order, "melange").pk, leg_of(order, "bueno").pk
        ready = leg_of(factories.make_order(customer, melange), "melange").pk
        arriving = factories.make_order(customer, bueno)
        apply(arriving, "bueno", "ready")
        apply(arriving, "uklon", "not started", "delivery")
        changes += [
            StatusChange(cooking, "not started"),
            StatusChange(accepting, "accepted"),
            StatusChange(cooking, "cooking"),
            StatusChange(ready, "cooked"),
            StatusChange(leg_of(arriving, "uklon").pk, "delivered"),
        ]
    with django_assert_num_queries(BATCH_WITH_FOLLOW_UPS):
        applied = services.legs_apply_statuses(changes=changes, source="poll")
    assert [(a.event.type, a.event.to_status) for a in applied[:5]] == [
        ("leg.status", "scheduled"),
        ("order.status", "submitted"),
        ("order.status", "cooking"),
        ("order.status", "ready"),
        ("order.status", "delivered"),
    ]
    assert all(a.event is not None and a.error is None for a in applied)
    assert Order.objects.filter(status="cooking").count() == orders
    assert Leg.objects.filter(kind=Leg.Kind.DELIVERY, provider_status="").count() == orders
    assert not Leg.objects.filter(order__status="delivered", next_poll_at__isnull=False).exists()


def test_only_the_rare_changes_cost_statements_of_their_own(customer, restaurants):
    """A provider's cancel goes the single way; the batch around it still costs the same."""
    melange, bueno = restaurants["melange"], restaurants["bueno"]
    dropped = leg_of(factories.make_order(customer, bueno), "bueno").pk
    with CaptureQueriesContext(connection) as single:
        services.leg_apply_status(leg_id=dropped, provider_status="cancelled", source="poll")
    counts = []
    for size in (2, 20):
        orders = [factories.make_order(customer, melange) for _ in range(size)]
        dropped = factories.make_order(customer, bueno)
        changes = [StatusChange(leg_of(order, "melange").pk, "cooking") for order in orders]
        changes.insert(1, StatusChange(leg_of(dropped, "bueno").pk, "cancelled"))
        with CaptureQueriesContext(connection) as batch:
            applied = services.legs_apply_statuses(changes=changes, source="poll")
        assert applied[1].event.to_status == "failed"
        counts.append(len(batch))
    assert counts[0] == counts[1] == BATCH + len(single)


def test_a_batch_that_fails_in_bulk_applies_each_change_alone(customer, restaurants, monkeypatch):
    order = factories.make_order(customer, restaurants["melange"])
    other = factories.make_order(customer, restaurants["bueno"])

    def broken(*args, **kwargs):
        raise RuntimeError("bulk path broken")

    monkeypatch.setattr(services, "_ordinary_change", broken)
    applied = services.legs_apply_statuses(
        changes=[
            StatusChange(leg_of(order, "melange").pk, "cooking"),
            StatusChange(leg_of(other, "bueno").pk, "accepted"),
        ],
        source="poll",
    )
    assert [a.event.to_status for a in applied] == ["cooking", "submitted"]


def test_a_poll_batch_caches_what_it_applied_and_records_an_unknown_status(customer, restaurants):
    """orders.sync.answers.apply_batch, the tick's apply step, over the bulk path."""
    from django.core.cache import cache

    from orders.providers import ProviderOrder
    from orders.sync import answers

    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    melange, bueno = leg_of(order, "melange"), leg_of(order, "bueno")
    odd = leg_of(factories.make_order(customer, restaurants["melange"]), "melange")
    for leg in (melange, bueno, odd):
        Leg.objects.filter(pk=leg.pk).update(external_id=f"ext_batch_{leg.pk}")
    batch = [
        (melange.pk, "melange", ProviderOrder(f"ext_batch_{melange.pk}", "cooking")),
        (odd.pk, "melange", ProviderOrder(f"ext_batch_{odd.pk}", "quantum")),
        (bueno.pk, "bueno", ProviderOrder(f"ext_batch_{bueno.pk}", "accepted")),
    ]
    keys = [answers.status_cache_key(provider, answer.external_id) for _, provider, answer in batch]
    cache.delete_many(keys)
    assert answers.apply_batch(batch) == (2, [])
    assert [cache.get(key) for key in keys] == ["cooking", None, "accepted"]
    odd.refresh_from_db()
    assert odd.attempts == 1 and "quantum" in odd.last_error
    assert list(order.events.order_by("seq").values_list("type", "to_status"))[1:] == [
        ("order.status", "cooking"),
        ("leg.status", "cooking"),
    ]
    assert answers.apply_batch(batch[:1] + batch[2:]) == (0, []), "known now: nothing to apply"
