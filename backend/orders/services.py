"""Every write to orders goes through here: one transaction per action, one OrderEvent per change.

Lock order, so that concurrent writers (API, operators, pollers, webhooks) queue and never deadlock:

1. the order row (`_lock_order`); several orders (a poll tick's `legs_apply_statuses`) in ascending id;
2. then, if the action writes any leg, every leg of that order in ascending id order (`_lock_legs`),
   even to write only one of them;
3. then anything else the action writes: the courier, new rows.

The poller's batch statements write legs of many orders at once without their order rows: they lock
their legs in ascending id order too, in the same statement (`_legs_locked_by_id`). A multi-row UPDATE
alone would lock rows in whatever order its plan meets them. So no transaction waits for a leg while
holding a leg with a higher id, nor for an order row while holding any leg: no cycle of waits can form.
Claims (`legs_claim_due`) skip locked legs and never wait.

Cancellation: cancelling an order (or overriding it to `cancelled`) marks each leg its provider has, or
may be getting, `requested` and makes it due at once; the poller then sends the cancel like any other
provider call (outside any transaction, retried with backoff) and reports back through
`leg_cancel_confirmed`, `leg_cancel_refused` or `leg_cancel_failed`. A leg never sent is confirmed at once.
Each step is a `leg.cancel` OrderEvent.
"""

import logging
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone

from core import metrics, rows

from . import alerts, geocoding, signals
from .errors import ActionNotAllowed, InvalidTransition, PermissionDenied
from .models import Alert, Courier, Dish, Leg, Order, OrderEvent, OrderItem, TrackingLink
from .providers import PROVIDER_CANCELLED, Driver, Provider, UnknownProviderStatus, get_provider
from .status import (
    ACTIVE,
    TERMINAL,
    OrderStatus,
    aggregate,
    can_override,
    can_retry,
    can_transition,
)

logger = logging.getLogger(__name__)

CUSTOMER_CANCELLABLE = frozenset({OrderStatus.SCHEDULED, OrderStatus.SUBMITTED})
Cancel = Leg.CancelStatus


@dataclass(frozen=True)
class ItemInput:
    dish: Dish
    quantity: int


def _event(
    *,
    order: Order,
    type: str,
    source: str,
    from_status: str = "",
    to_status: str = "",
    leg: Leg | None = None,
    provider_status: str = "",
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    cancel_status: str = "",
) -> OrderEvent:
    """An event of `order`, not yet saved."""
    return OrderEvent(
        order=order,
        type=type,
        source=source,
        from_status=from_status,
        to_status=to_status,
        leg=leg,
        provider_status=provider_status,
        actor=actor if actor is not None and actor.is_authenticated else None,
        reason=reason,
        cancel_status=cancel_status,
    )


def _append_event(**fields: Any) -> OrderEvent:
    """Record a change (`_event`'s arguments). The relay (orders.relay) releases it to clients once every
    lower seq is settled."""
    event = _event(**fields)
    event.save(force_insert=True)
    return event


def _lock_order(order_id: int) -> Order:
    return Order.objects.select_for_update().get(pk=order_id)


def _lock_legs(order_id: int) -> list[Leg]:
    """Every leg of an order whose row this transaction has locked, locked in ascending id order.

    PostgreSQL locks the rows of `ORDER BY ... FOR UPDATE` as they leave the sort, so in that order.
    """
    return list(Leg.objects.select_for_update().filter(order_id=order_id).order_by("id"))


@transaction.atomic
def order_create(
    *,
    customer: AbstractBaseUser,
    items: Iterable[ItemInput],
    delivery_address: str,
    eta: datetime | None = None,
    phone: str = "",
    loaded: bool = False,
) -> Order:
    """Create an order with its items and one kitchen leg per restaurant, status `scheduled`.

    Its delivery address is looked up on the map after commit (`order_geocode`), never on the way in.
    `loaded`: the order comes back with its items (dishes, restaurants), legs and open alerts (none) in
    hand, as selectors.order_list loads them, for a caller that shows it at once without reading it back;
    its `items.all()` and `legs.all()` then stay as written, whatever changes after.
    """
    items = list(items)
    if not items:
        raise ActionNotAllowed("An order needs at least one item.")
    geocoding_on = bool(settings.GEOCODER_URL)
    order = Order(
        customer=customer,
        delivery_address=delivery_address,
        phone=phone,
        geocode_status=Order.GeocodeStatus.PENDING if geocoding_on else Order.GeocodeStatus.OFF,
        eta=eta,
        total=sum(item.dish.price * item.quantity for item in items),
    )
    order_items = [
        OrderItem(order=order, dish=item.dish, quantity=item.quantity, price=item.dish.price)
        for item in items
    ]
    restaurants = {item.dish.restaurant_id: item.dish.restaurant for item in items}
    submit_at = order.created_at
    if eta is not None:
        submit_at = max(submit_at, eta - timedelta(minutes=settings.ORDER_LEAD_MINUTES))
    legs = [
        Leg(
            order=order,
            kind=Leg.Kind.KITCHEN,
            restaurant=restaurant,
            provider=restaurant.provider,
            next_poll_at=submit_at,
        )
        for restaurant in restaurants.values()
    ]
    event = _event(
        order=order,
        type=OrderEvent.Type.CREATED,
        source=OrderEvent.Source.API,
        to_status=order.status,
        actor=customer,
    )
    # One statement for the four tables: the ORM's create and bulk_creates cost a round trip and a query
    # compilation each, which measured most of a create's database work (docs/benchmarks.md).
    rows.insert_family(order, [order_items, legs, [event]])
    # What follows (the email, the geocoding, sending the due legs) is sent to the workers by the relay
    # when it releases the `created` event (orders.tasks.created_released): the request never waits on
    # the broker, nor fails after its order was committed when the broker is away.
    transaction.on_commit(metrics.ORDERS_CREATED.inc)
    logger.info("Order %s created with %d items at %d restaurants", order.pk, len(items), len(restaurants))
    if loaded:
        _loaded(order, "items", order_items)
        _loaded(order, "legs", legs)
        order.open_alerts = []  # as selectors.open_alerts() names them
    return order


def _loaded(instance: Order, name: str, objects: list[Any]) -> None:
    """Hands `instance.<name>.all()` the rows just written, as prefetch_related hands it those it read
    (Django's prefetch_one_level does the same), so serialising them reads nothing back. They must be
    every related row, in the order the relation's default ordering gives (bulk_create keeps it: ids
    ascend in insertion order)."""
    queryset = getattr(instance, name).get_queryset()
    queryset._result_cache = list(objects)
    queryset._prefetch_done = True
    instance.__dict__.setdefault("_prefetched_objects_cache", {})[name] = queryset


def _on_commit_submit(order_id: int) -> None:
    transaction.on_commit(partial(signals.order_due.send, sender=Order, order_id=order_id))


def _on_commit_notify(order_id: int) -> None:
    transaction.on_commit(partial(signals.order_notify.send, sender=Order, order_id=order_id))


def _transition(
    *,
    order: Order,
    to_status: str,
    source: str,
    leg: Leg | None = None,
    provider_status: str = "",
    actor: AbstractBaseUser | None = None,
    reason: str = "",
    override: bool = False,
    retry: bool = False,
) -> OrderEvent:
    """Move a locked order to `to_status` and record it, with the change's follow-up on the legs.

    Raises InvalidTransition when refused. Providers' changes follow TRANSITIONS; an operator's override
    may force any status and a retry follows RETRY_TRANSITIONS, but either one to an active status must
    leave something that moves the order on (`_resume_legs`). Cancelled: the providers are asked to
    cancel (`_cancel_legs`); another terminal status: polling stops.
    """
    from_status = order.status
    if retry:
        allowed = can_retry(from_status, to_status)
    elif override:
        allowed = can_override(from_status, to_status)
    else:
        allowed = can_transition(from_status, to_status)
    if not allowed:
        logger.warning(
            "Refused transition of order %s: %s → %s (%s)", order.pk, from_status, to_status, source
        )
        raise InvalidTransition(f"Order #{order.pk} cannot move from {from_status!r} to {to_status!r}.")
    if (override or retry) and to_status in ACTIVE:
        _resume_legs(order)
    order.status = to_status
    update_fields = ["status", "updated_at"]
    if to_status == OrderStatus.FAILED:
        order.failure_reason = reason
        update_fields.append("failure_reason")
    if to_status in TERMINAL and to_status != OrderStatus.CANCELLED:
        _lock_legs(order.pk)  # in id order first: an UPDATE by order_id would lock them in table order
        # a cancellation still being asked for goes on: its answer is wanted whatever the order became
        Leg.objects.filter(order=order).exclude(cancel_status=Cancel.REQUESTED).update(next_poll_at=None)
    if to_status in TERMINAL or to_status == OrderStatus.DELIVERING:
        _on_commit_notify(order.pk)
    order.save(update_fields=update_fields)
    if retry:
        event_type = OrderEvent.Type.RETRY
    elif override:
        event_type = OrderEvent.Type.OVERRIDE
    else:
        event_type = OrderEvent.Type.STATUS
    event = _append_event(
        order=order,
        type=event_type,
        source=source,
        from_status=from_status,
        to_status=to_status,
        leg=leg,
        provider_status=provider_status,
        actor=actor,
        reason=reason,
    )
    if to_status == OrderStatus.CANCELLED:
        _cancel_legs(order, source=source, actor=actor)
    _follow_alerts(order, from_status, source, reason)
    transaction.on_commit(metrics.ORDER_STATUS_CHANGES.labels(status=to_status).inc)
    return event


def _follow_alerts(order: Order, from_status: str, source: str, reason: str) -> None:
    """The alerts a status change settles: progress ends `stuck`; a finished order is no longer late or
    waiting for a provider; leaving `failed` ends `failed`; failing raises it."""
    settled = [Alert.Kind.STUCK]
    if order.status in TERMINAL:
        settled += [Alert.Kind.LATE, Alert.Kind.PROVIDER_FAILING]
    if from_status == OrderStatus.FAILED:
        settled.append(Alert.Kind.FAILED)
    if from_status == OrderStatus.CANCELLED and order.status in ACTIVE:
        settled.append(Alert.Kind.CANCEL_REFUSED)  # resumed: the kitchens that would not cancel go on
    alerts.clear_alerts(order=order, kinds=settled, source=source)
    if order.status == OrderStatus.FAILED:
        alerts.raise_alert(order=order, kind=Alert.Kind.FAILED, detail=reason or "Failed", source=source)


@transaction.atomic
def leg_apply_status(*, leg_id: int, provider_status: object, source: str) -> OrderEvent | None:
    """Apply a status reported by a provider to a leg and derive the order status from all legs.

    Returns the one event recorded, or None when nothing changed: a repeated status, a status that
    would move the leg backwards, or an order that is already finished. An unknown status raises
    UnknownProviderStatus before anything is written. A poll tick applies its changes in bulk
    (`legs_apply_statuses`), with the same outcome.
    """
    # the order is found from the leg and locked in one statement
    order = Order.objects.select_for_update().filter(pk=_order_of_leg(leg_id)).first()
    if order is None:
        raise Leg.DoesNotExist(f"Leg #{leg_id} does not exist.")
    legs = _lock_legs(order.pk)
    leg = next(candidate for candidate in legs if candidate.pk == leg_id)
    provider = get_provider(leg.provider)
    new_leg_status = provider.status_of(provider_status)

    if _ignored(order, leg, provider, provider_status):
        return None

    leg.provider_status = provider_status
    leg.status = new_leg_status
    leg.save(update_fields=["provider_status", "status", "updated_at"])
    if new_leg_status == OrderStatus.CANCELLED:
        # the provider dropped its part of an active order on its own: it cannot be completed as it is
        return _transition(
            order=order,
            to_status=OrderStatus.FAILED,
            source=source,
            leg=leg,
            provider_status=provider_status,
            reason=f"{_leg_label(leg)} cancelled its sub-order",
        )

    derived = _derived_status(legs)
    if derived == OrderStatus.READY and not any(candidate.kind == Leg.Kind.DELIVERY for candidate in legs):
        _order_delivery(order)
    if can_transition(order.status, derived):
        return _transition(
            order=order, to_status=derived, source=source, leg=leg, provider_status=provider_status
        )
    event = _append_event(
        order=order,
        type=OrderEvent.Type.LEG,
        source=source,
        from_status=order.status,
        to_status=order.status,
        leg=leg,
        provider_status=provider_status,
    )
    alerts.clear_alerts(order=order, kinds=[Alert.Kind.STUCK], source=source)  # a kitchen moved: progress
    return event


def _ignored(order: Order, leg: Leg, provider: Provider, provider_status: object) -> bool:
    """A status that changes nothing: for a finished order (a kitchen cooking on after a cancel changes
    nothing here), the leg's status again, or one that would move the leg backwards."""
    if order.status in TERMINAL:
        logger.info("Ignoring %r for leg %s: order %s is %s", provider_status, leg.pk, order.pk, order.status)
        return True
    if leg.provider_status == provider_status:
        return True
    if leg.provider_status and provider.is_backwards(leg.provider_status, provider_status):
        logger.warning(
            "Ignoring backwards status %r for leg %s (now %r)", provider_status, leg.pk, leg.provider_status
        )
        return True
    return False


def _derived_status(legs: list[Leg]) -> OrderStatus:
    """The order status its legs report. A leg cancelled without ever being sent counts as not sent yet
    (resuming sends it); one its provider cancelled never gets here (the order fails, and stays so)."""

    def status(leg: Leg) -> str:
        return OrderStatus.SCHEDULED if leg.status == OrderStatus.CANCELLED else leg.status

    delivery = next((status(leg) for leg in legs if leg.kind == Leg.Kind.DELIVERY), None)
    kitchen = [status(leg) for leg in legs if leg.kind == Leg.Kind.KITCHEN]
    return aggregate(kitchen, delivery)


def _order_delivery(order: Order) -> None:
    """Every kitchen is done: create the delivery leg; the poller orders the courier after commit."""
    Leg.objects.create(
        order=order, kind=Leg.Kind.DELIVERY, provider=settings.DELIVERY_PROVIDER, next_poll_at=timezone.now()
    )
    _on_commit_submit(order.pk)
    logger.info(
        "Order %s is ready at every kitchen: ordering delivery from %s", order.pk, settings.DELIVERY_PROVIDER
    )


def _order_of_leg(leg_id: int) -> RawSQL:
    return RawSQL(f"SELECT order_id FROM {Leg._meta.db_table} WHERE id = %s", [leg_id])


# --- a poll tick's status changes, in bulk -------------------------------------------------------------


@dataclass(frozen=True)
class StatusChange:
    """A status a provider reported for one of its legs (a poll answer), for `legs_apply_statuses`."""

    leg_id: int
    provider_status: object


@dataclass(frozen=True)
class StatusApplied:
    """What became of one StatusChange: the event recorded (None when nothing changed), or why it was not
    applied (UnknownProviderStatus: recorded as a failure of the leg; anything else: a bug or bad data)."""

    event: OrderEvent | None = None
    error: Exception | None = None


class _OneByOne(Exception):
    """A change the bulk path leaves to `leg_apply_status`, having touched nothing."""


def _ids(ids: Iterable[int]) -> RawSQL:
    """Right-hand side for `__in` with many ids sent as ONE array parameter (not one placeholder each)."""
    return RawSQL("SELECT unnest(%s::bigint[])", [list(ids)])


def legs_apply_statuses(*, changes: Sequence[StatusChange], source: str) -> list[StatusApplied]:
    """`leg_apply_status` for each change in turn, as a poll tick applies them: the same statuses, events,
    alerts and follow-ups, in a number of SQL statements that does not grow with the number of changes.

    The changes of an order's ordinary life (a leg moves on; its order moves along the pipeline, has its
    delivery ordered when every kitchen is ready, or is delivered; or a `leg.status` event) are applied
    for the whole batch in one transaction (`_apply_in_bulk`). The first change of an order that needs
    more (its provider cancelled its part; an open alert the change settles; an unknown status; a leg
    that is gone) and every later change of that order go through `leg_apply_status` after that
    commits, one transaction each, in their order: an order's events keep their seq in the order its
    changes came. An unknown status is recorded as a failure of its leg, as for a single answer. Should
    the bulk transaction fail, every change goes one by one: one leg's bad data never stops the others.
    One StatusApplied per change, in order.
    """
    if not changes:
        return []
    try:
        applied, deferred = _apply_in_bulk(changes, source)
    except Exception:
        logger.exception("Could not apply %d status changes in bulk: applying them one by one", len(changes))
        applied, deferred = {}, list(range(len(changes)))
    for index in deferred:
        applied[index] = _apply_one(changes[index], source)
    return [applied[index] for index in range(len(changes))]


def _apply_one(change: StatusChange, source: str) -> StatusApplied:
    try:
        event = leg_apply_status(leg_id=change.leg_id, provider_status=change.provider_status, source=source)
    except UnknownProviderStatus as unknown:
        try:
            leg_record_failure(leg_id=change.leg_id, error=str(unknown))
        except Exception as error:
            return StatusApplied(error=error)
        return StatusApplied(error=unknown)
    except Exception as error:  # the caller reports it and goes on with the other legs
        return StatusApplied(error=error)
    return StatusApplied(event=event)


@dataclass
class _Bulk:
    """What `_apply_in_bulk` has decided to write, in the order of the changes."""

    alerts: dict[int, set[str]]  # open alerts a status change may settle, by order
    events: list[OrderEvent]
    legs: dict[int, Leg]  # legs whose status changed
    orders: dict[int, Order]  # orders whose status changed
    finished: list[int]  # orders delivered: their legs are no longer polled
    deliveries: list[Leg]  # delivery legs to create
    due: list[int] = field(default_factory=list)  # orders with a leg to send now (their delivery)
    notify: list[int] = field(default_factory=list)  # orders whose customer is told their new status


# What a change settles (`_follow_alerts`): any progress ends `stuck`; finishing, `late` and
# `provider_failing` too. An order with such an alert open goes one by one, to clear it.
SETTLED_BY_PROGRESS = frozenset({Alert.Kind.STUCK})
SETTLED_BY_FINISHING = SETTLED_BY_PROGRESS | {Alert.Kind.LATE, Alert.Kind.PROVIDER_FAILING}


@transaction.atomic
def _apply_in_bulk(
    changes: Sequence[StatusChange], source: str
) -> tuple[dict[int, StatusApplied], list[int]]:
    """The ordinary changes applied together; the indexes of the others, untouched (`legs_apply_statuses`).

    Locks as every writer does (the module's docstring): the orders in ascending id, then all their legs
    in ascending id, one statement each. One statement reads the open alerts a change could settle; one
    updates the legs, one the orders, one stops polling the legs of delivered orders, one creates the
    delivery legs, and one INSERT appends every event in the order of the changes (a multi-row INSERT
    takes its seqs row after row, under the lock the relay watches: orders.relay).
    """
    applied: dict[int, StatusApplied] = {}
    deferred: list[int] = []
    order_ids = RawSQL(
        f"SELECT order_id FROM {Leg._meta.db_table} WHERE id = ANY(%s::bigint[])",
        [sorted({change.leg_id for change in changes})],
    )
    orders = {
        order.pk: order for order in Order.objects.select_for_update().filter(pk__in=order_ids).order_by("id")
    }
    legs: dict[int, Leg] = {}
    legs_of: dict[int, list[Leg]] = {order_id: [] for order_id in orders}
    for leg in Leg.objects.select_for_update().filter(order_id__in=_ids(orders)).order_by("id"):
        legs[leg.pk] = leg
        legs_of[leg.order_id].append(leg)
    bulk = _Bulk(alerts={}, events=[], legs={}, orders={}, finished=[], deliveries=[])
    open_alerts = Alert.objects.filter(
        order_id__in=_ids(orders), kind__in=SETTLED_BY_FINISHING, cleared_at__isnull=True
    )
    for order_id, kind in open_alerts.values_list("order_id", "kind"):
        bulk.alerts.setdefault(order_id, set()).add(kind)
    one_by_one: set[int] = set()  # orders whose changes from here on go through leg_apply_status
    for index, change in enumerate(changes):
        leg = legs.get(change.leg_id)
        if leg is None or leg.order_id in one_by_one:
            deferred.append(index)
            continue
        order = orders[leg.order_id]
        try:
            event = _ordinary_change(bulk, order, legs_of[order.pk], leg, change.provider_status, source)
        except _OneByOne:
            one_by_one.add(order.pk)
            deferred.append(index)
            continue
        applied[index] = StatusApplied(event=event)
    if bulk.events:
        _write(bulk)
    if bulk.due or bulk.notify:  # one message for the batch's follow-ups: orders.tasks.follow_up
        transaction.on_commit(
            partial(signals.orders_changed.send, sender=Order, due=bulk.due, notify=bulk.notify)
        )
    return applied, deferred


def _ordinary_change(
    bulk: _Bulk, order: Order, legs: list[Leg], leg: Leg, provider_status: object, source: str
) -> OrderEvent | None:
    """`leg_apply_status` on rows locked and read, in memory: the leg, its order and their follow-ups
    changed and noted in `bulk`; the event to insert, or None when nothing changes. Raises _OneByOne,
    having changed nothing, for a change that needs more (see `legs_apply_statuses`)."""
    provider = get_provider(leg.provider)
    try:
        new_leg_status = provider.status_of(provider_status)
    except UnknownProviderStatus:
        raise _OneByOne from None
    if _ignored(order, leg, provider, provider_status):
        return None
    if new_leg_status == OrderStatus.CANCELLED:
        raise _OneByOne
    leg_status, leg.status = leg.status, new_leg_status
    derived = _derived_status(legs)
    moves = can_transition(order.status, derived)
    finishing = moves and derived in TERMINAL
    settles = bulk.alerts.get(order.pk, set()) & (SETTLED_BY_FINISHING if finishing else SETTLED_BY_PROGRESS)
    if settles or (finishing and derived != OrderStatus.DELIVERED):
        leg.status = leg_status
        raise _OneByOne
    leg.provider_status = provider_status
    bulk.legs[leg.pk] = leg
    if derived == OrderStatus.READY and not any(other.kind == Leg.Kind.DELIVERY for other in legs):
        delivery = Leg(order=order, kind=Leg.Kind.DELIVERY, provider=settings.DELIVERY_PROVIDER)
        delivery.next_poll_at = timezone.now()
        legs.append(delivery)  # `_order_delivery`, in bulk
        bulk.deliveries.append(delivery)
        bulk.due.append(order.pk)
        logger.info(
            "Order %s is ready at every kitchen: ordering delivery from %s", order.pk, delivery.provider
        )
    from_status = order.status
    if moves:  # `_transition` to a status its legs report
        order.status = derived
        bulk.orders[order.pk] = order
        if derived == OrderStatus.DELIVERED:
            bulk.finished.append(order.pk)
        if derived in TERMINAL or derived == OrderStatus.DELIVERING:
            bulk.notify.append(order.pk)
        transaction.on_commit(metrics.ORDER_STATUS_CHANGES.labels(status=derived).inc)
    event = OrderEvent(
        order=order,
        type=OrderEvent.Type.STATUS if moves else OrderEvent.Type.LEG,
        source=source,
        from_status=from_status,
        to_status=order.status,
        leg=leg,
        provider_status=provider_status,
    )
    bulk.events.append(event)
    return event


def _write(bulk: _Bulk) -> None:
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {Leg._meta.db_table} AS leg
                SET provider_status = new.provider_status, status = new.status, updated_at = %s
                FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS new(id, provider_status, status)
                WHERE leg.id = new.id""",
            [
                now,
                list(bulk.legs),
                [leg.provider_status for leg in bulk.legs.values()],
                [leg.status for leg in bulk.legs.values()],
            ],
        )
        if bulk.orders:
            cursor.execute(
                f"""UPDATE {Order._meta.db_table} AS o SET status = new.status, updated_at = %s
                    FROM unnest(%s::bigint[], %s::text[]) AS new(id, status) WHERE o.id = new.id""",
                [now, list(bulk.orders), [order.status for order in bulk.orders.values()]],
            )
    if bulk.finished:
        # as `_transition`: a cancellation still being asked for goes on, whatever the order became
        Leg.objects.filter(order_id__in=_ids(bulk.finished)).exclude(cancel_status=Cancel.REQUESTED).update(
            next_poll_at=None
        )
    if bulk.deliveries:
        Leg.objects.bulk_create(bulk.deliveries)
    OrderEvent.objects.bulk_create(bulk.events)


@transaction.atomic
def order_cancel(*, order_id: int, actor: AbstractBaseUser, reason: str = "") -> OrderEvent:
    """Cancel an order: its customer before cooking starts, an operator any time before it is delivered."""
    order = _lock_order(order_id)
    if order.status in TERMINAL:
        raise ActionNotAllowed(f"Order #{order.pk} is already {order.status}.")
    if actor.is_staff:
        source = OrderEvent.Source.OPERATOR
    elif order.customer_id == actor.pk:
        if order.status not in CUSTOMER_CANCELLABLE:
            raise ActionNotAllowed(f"Order #{order.pk} is {order.status} and can no longer be cancelled.")
        source = OrderEvent.Source.API
    else:
        raise PermissionDenied("Only the order's customer or an operator may cancel it.")
    event = _transition(
        order=order, to_status=OrderStatus.CANCELLED, source=source, actor=actor, reason=reason
    )
    logger.info("Order %s cancelled by %s", order.pk, actor)
    return event


@transaction.atomic
def order_override_status(
    *, order_id: int, actor: AbstractBaseUser, to_status: str, reason: str
) -> OrderEvent:
    """An operator forces a status, bypassing the machine; who and why are recorded."""
    if not actor.is_staff:
        raise PermissionDenied("Only operators may override a status.")
    if not reason.strip():
        raise ActionNotAllowed("An override needs a reason.")
    order = _lock_order(order_id)
    event = _transition(
        order=order,
        to_status=to_status,
        source=OrderEvent.Source.OPERATOR,
        actor=actor,
        reason=reason.strip(),
        override=True,
    )
    logger.warning(
        "Order %s overridden %s → %s by %s: %s", order.pk, event.from_status, to_status, actor, reason
    )
    return event


@transaction.atomic
def order_fail(*, order_id: int, reason: str, leg: Leg | None = None) -> OrderEvent | None:
    """Fail an order with a reason operators see; a no-op when it is already finished."""
    order = _lock_order(order_id)
    if order.status in TERMINAL:
        return None
    return _transition(
        order=order, to_status=OrderStatus.FAILED, source=OrderEvent.Source.SYSTEM, leg=leg, reason=reason
    )


# --- provider bookkeeping: claims, external ids, failures, couriers ------------------------------------


@transaction.atomic
def leg_recovered(*, order_id: int, leg_id: int) -> None:
    order = _lock_order(order_id)
    alerts.clear_alerts(
        order=order, kinds=[Alert.Kind.PROVIDER_FAILING], leg_id=leg_id, source=OrderEvent.Source.POLL
    )


def _count_failure(leg: Leg, error: str) -> datetime:
    """One more failed call on a locked leg: the error, the deadline from its first failure, the backoff."""
    now = timezone.now()
    leg.attempts += 1
    leg.last_error = error[:2000]
    leg.deadline_at = leg.deadline_at or now + timedelta(seconds=settings.PROVIDER_FAILURE_DEADLINE_SECONDS)
    leg.next_poll_at = now + _backoff(leg.attempts)
    leg.save(update_fields=["attempts", "last_error", "deadline_at", "next_poll_at", "updated_at"])
    return now


def _backoff(attempts: int) -> timedelta:
    base = settings.POLL_INTERVAL_SECONDS * 2 ** min(attempts - 1, 16)
    seconds = min(base, settings.PROVIDER_MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)
    return timedelta(seconds=seconds)


@transaction.atomic
def leg_record_failure(*, leg_id: int, error: str) -> OrderEvent | None:
    """A provider call failed: log it on the leg and back off; past the leg's deadline, fail the order."""
    order, leg = _lock_leg(leg_id)
    if order.status in TERMINAL:
        return None
    now = _count_failure(leg, error)
    logger.warning("Leg %s (%s) failed attempt %d: %s", leg.pk, leg.provider, leg.attempts, error)
    if now < leg.deadline_at:
        alerts.raise_alert(
            order=order,
            kind=Alert.Kind.PROVIDER_FAILING,
            leg=leg,
            detail=f"{_leg_label(leg)} failing: {error} (attempt {leg.attempts})",
            source=OrderEvent.Source.SYSTEM,
        )
        return None
    target = leg.restaurant.name if leg.restaurant_id else "delivery"
    reason = f"{leg.provider} ({target}) failing for {leg.attempts} attempts, last error: {error}"
    return _transition(
        order=order,
        to_status=OrderStatus.FAILED,
        source=OrderEvent.Source.SYSTEM,
        leg=leg,
        reason=reason[:2000],
    )


def _courier_for(driver: Driver, provider: str) -> Courier:
    """Our courier record of a provider's driver, created on first sight (no password: no login)."""
    courier = Courier.objects.filter(external_id=driver.external_id).first()
    if courier is not None:
        return courier
    user, _ = get_user_model().objects.get_or_create(
        username=f"{provider}-{driver.external_id}"[:150], defaults={"is_active": True}
    )
    if user.has_usable_password():
        user.set_unusable_password()
        user.save(update_fields=["password"])
    courier, _ = Courier.objects.get_or_create(
        user=user, defaults={"name": driver.name, "phone": driver.phone, "external_id": driver.external_id}
    )
    return courier


@transaction.atomic
def delivery_record_progress(
    *, leg_id: int, driver: Driver | None, location: tuple[float, float] | None, source: str = "poll"
) -> bool:
    """Record the courier on the order and the courier's last position. True when anything changed.

    The provider's driver becomes the order's courier (an `order.courier` event), unless an operator has
    handed the order to a courier of their choice (order_reassign_courier): that choice holds, and the
    provider's reports then only move their own driver on the map.
    """
    leg = Leg.objects.only("order_id", "provider").get(pk=leg_id)
    order = _lock_order(leg.order_id)
    if order.status in TERMINAL or driver is None:
        return False
    changed = False
    courier = _courier_for(driver, leg.provider)
    if order.courier_id != courier.pk and not _operator_chose_courier(order):
        previous = order.courier.name if order.courier_id else ""
        _assign_courier(
            order,
            courier,
            source=source,
            leg=leg,
            reason=f"{previous} → {courier.name}" if previous else courier.name,
        )
        changed = True
    if location is not None and (courier.lat, courier.lng) != location:
        _courier_move(courier, location)
        changed = True
    return changed


def _assign_courier(
    order: Order,
    courier: Courier,
    *,
    source: str,
    leg: Leg | None,
    reason: str,
    actor: AbstractBaseUser | None = None,
) -> OrderEvent:
    """Hand a locked order to `courier`: the `order.courier` event brings it to that courier's socket."""
    order.courier = courier
    order.save(update_fields=["courier", "updated_at"])
    return _append_event(
        order=order,
        type=OrderEvent.Type.COURIER,
        source=source,
        from_status=order.status,
        to_status=order.status,
        leg=leg,
        actor=actor,
        reason=reason,
    )


def _operator_chose_courier(order: Order) -> bool:
    return order.events.filter(type=OrderEvent.Type.COURIER, source=OrderEvent.Source.OPERATOR).exists()


def _courier_move(courier: Courier, location: tuple[float, float]) -> None:
    courier.lat, courier.lng = location
    courier.location_at = timezone.now()
    courier.save(update_fields=["lat", "lng", "location_at"])
    transaction.on_commit(partial(signals.courier_moved.send, sender=Courier, courier_id=courier.pk))


@transaction.atomic
def courier_report_location(*, courier_id: int, lat: float, lng: float) -> None:
    """A courier app pushed its position (validated by the caller): store it and tell operators."""
    courier = Courier.objects.select_for_update().get(pk=courier_id)
    _courier_move(courier, (lat, lng))


@transaction.atomic
def order_retry(*, order_id: int, actor: AbstractBaseUser) -> OrderEvent:
    """An operator retries a failed order, or the failing legs of an active one, right now.

    A failed order goes back to the status its legs report, through the retry transition
    (RETRY_TRANSITIONS), which re-arms its legs; refused when a provider has cancelled its part.
    """
    if not actor.is_staff:
        raise PermissionDenied("Only operators may retry provider calls.")
    order = _lock_order(order_id)
    legs = _lock_legs(order.pk)
    failing = [leg for leg in legs if leg.attempts > 0 or leg.last_error]
    if order.status in {OrderStatus.DELIVERED, OrderStatus.CANCELLED}:
        raise ActionNotAllowed(f"Order #{order.pk} is {order.status}: nothing to retry.")
    if order.status != OrderStatus.FAILED and not failing:
        raise ActionNotAllowed(f"Order #{order.pk} has no failing provider call to retry.")
    if order.status == OrderStatus.FAILED:
        problem = _resume_problem(legs)
        if problem:
            raise ActionNotAllowed(f"Order #{order.pk} cannot be retried: {problem}")
    now = timezone.now()
    for leg in failing:
        leg.attempts, leg.last_error, leg.deadline_at = 0, "", None
    if order.status != OrderStatus.FAILED:
        for leg in legs:
            leg.next_poll_at = now
        Leg.objects.bulk_update(legs, ["attempts", "last_error", "deadline_at", "next_poll_at"])
        _on_commit_submit(order.pk)
        event = _append_event(
            order=order,
            type=OrderEvent.Type.RETRY,
            source=OrderEvent.Source.OPERATOR,
            from_status=order.status,
            to_status=order.status,
            actor=actor,
            reason="retry",
        )
        alerts.clear_alerts(
            order=order, kinds=[Alert.Kind.PROVIDER_FAILING], source=OrderEvent.Source.OPERATOR
        )
        return event
    Leg.objects.bulk_update(failing, ["attempts", "last_error", "deadline_at"])
    order.failure_reason = ""
    order.save(update_fields=["failure_reason", "updated_at"])
    event = _transition(
        order=order,
        to_status=_derived_status(legs),
        source=OrderEvent.Source.OPERATOR,
        actor=actor,
        reason="retry",
        retry=True,
    )
    logger.info("Order %s retried by %s: %s → %s", order.pk, actor, event.from_status, event.to_status)
    alerts.clear_alerts(order=order, kinds=[Alert.Kind.PROVIDER_FAILING], source=OrderEvent.Source.OPERATOR)
    return event


# --- follow-ups of operator actions: resuming legs, cancelling them at their providers -----------------


def _leg_label(leg: Leg) -> str:
    """A leg as operators name it: "Melange (Pasta Fabbrica)", "Uklon (delivery)"."""
    return f"{leg.provider.title()} ({leg.restaurant.name if leg.restaurant_id else 'delivery'})"


def _resume_problem(legs: list[Leg]) -> str:
    """Why the legs of a finished order cannot carry it on again ("" when they can)."""
    for leg in legs:
        if leg.cancel_status == Cancel.REQUESTED:
            return f"{_leg_label(leg)} is still being asked to cancel; wait for its answer."
        if leg.status == OrderStatus.CANCELLED and leg.external_id:
            return f"{_leg_label(leg)} has cancelled its sub-order."
    return ""


def _resume_legs(order: Order) -> None:
    """An operator moves a locked order to an active status: make sure its legs will carry it on.

    Legs still active at their providers and not polled (the order was finished) are due again, with
    their failures forgotten; cancellations that were refused or never sent are dropped (a leg never
    sent is sent now, or at its pre-order time); a delivery is ordered if every kitchen is ready without
    one. Raises InvalidTransition when a provider has cancelled its part, a cancellation is still
    pending, or no leg could move the order any more (its courier has delivered, say).
    """
    legs = _lock_legs(order.pk)
    problem = _resume_problem(legs)
    if problem:
        raise InvalidTransition(f"Order #{order.pk} cannot be resumed: {problem}")
    now = timezone.now()
    send_at = max(now, alerts.submit_at(order))
    changed = []
    for leg in legs:
        dirty = False
        if leg.cancel_status:
            leg.cancel_status, leg.cancel_requested_at = Cancel.NONE, None
            if leg.status == OrderStatus.CANCELLED:  # never sent (see _resume_problem)
                leg.status = OrderStatus.SCHEDULED
            dirty = True
        if leg.status not in TERMINAL and leg.next_poll_at is None:
            leg.next_poll_at = now if leg.external_id else send_at
            leg.attempts, leg.last_error, leg.deadline_at = 0, "", None
            dirty = True
        if dirty:
            changed.append(leg)
    if changed:
        Leg.objects.bulk_update(
            changed,
            [
                "cancel_status",
                "cancel_requested_at",
                "status",
                "next_poll_at",
                "attempts",
                "last_error",
                "deadline_at",
            ],
        )
    kitchens = [leg for leg in legs if leg.kind == Leg.Kind.KITCHEN]
    delivery = next((leg for leg in legs if leg.kind == Leg.Kind.DELIVERY), None)
    if delivery is None and kitchens and all(leg.status == OrderStatus.READY for leg in kitchens):
        _order_delivery(order)
    elif delivery is not None and delivery.status in TERMINAL:
        raise InvalidTransition(
            f"Order #{order.pk} cannot be resumed: {_leg_label(delivery)} is {delivery.status}."
        )
    elif delivery is None and not any(leg.status not in TERMINAL for leg in kitchens):
        raise InvalidTransition(f"Order #{order.pk} cannot be resumed: no provider has it any more.")
    if changed:
        _on_commit_submit(order.pk)


def _may_be_in_flight(leg: Leg, now: datetime, submit_at: datetime) -> bool:
    """A leg without an external id whose create may reach (or have reached) its provider: claimed by a
    poller right now (a lease, not its pre-order time, in next_poll_at), or tried and failed (the create
    may have arrived though we never heard back)."""
    if leg.attempts > 0:
        return True
    return leg.next_poll_at is not None and leg.next_poll_at > now and leg.next_poll_at != submit_at


def _cancel_legs(order: Order, *, source: str, actor: AbstractBaseUser | None) -> None:
    """The locked order was just cancelled: ask each provider that has (or may be getting) its part.

    Such a leg becomes `requested` and due now: the poller sends the cancel after commit, retries it
    with backoff and reports back. A leg never sent is `confirmed` at once, without a call. Each is a
    `leg.cancel` event.
    """
    now = timezone.now()
    submit_at = alerts.submit_at(order)
    requested = False
    for leg in _lock_legs(order.pk):
        if leg.cancel_status in (Cancel.REQUESTED, Cancel.CONFIRMED):
            continue
        leg.cancel_requested_at = now
        leg.attempts, leg.last_error, leg.deadline_at = 0, "", None  # the cancel gets its own deadline
        if leg.status == OrderStatus.CANCELLED:
            leg.cancel_status, leg.next_poll_at = Cancel.CONFIRMED, None
            reason = f"{_leg_label(leg)} had cancelled its sub-order already"
        elif leg.external_id or _may_be_in_flight(leg, now, submit_at):
            leg.cancel_status, leg.next_poll_at = Cancel.REQUESTED, now
            reason = f"Asking {_leg_label(leg)} to cancel"
            requested = True
        else:
            leg.cancel_status, leg.status, leg.next_poll_at = Cancel.CONFIRMED, OrderStatus.CANCELLED, None
            reason = f"{_leg_label(leg)} was never sent the order: nothing to cancel"
        leg.save(
            update_fields=[
                "cancel_status",
                "cancel_requested_at",
                "status",
                "next_poll_at",
                "attempts",
                "last_error",
                "deadline_at",
                "updated_at",
            ]
        )
        _leg_cancel_event(order, leg, source=source, reason=reason, actor=actor)
    if requested:
        _on_commit_submit(order.pk)  # the cancels go out right after commit, not at the next tick


def _leg_cancel_event(
    order: Order,
    leg: Leg,
    *,
    source: str,
    reason: str,
    actor: AbstractBaseUser | None = None,
    provider_status: str = "",
) -> OrderEvent:
    return _append_event(
        order=order,
        type=OrderEvent.Type.LEG_CANCEL,
        source=source,
        from_status=order.status,
        to_status=order.status,
        leg=leg,
        provider_status=provider_status,
        actor=actor,
        reason=reason,
        cancel_status=leg.cancel_status,
    )


def _lock_leg(leg_id: int) -> tuple[Order, Leg]:
    """The order of a leg and the leg, locked in the lock order (the order, then all its legs)."""
    order = _lock_order(Leg.objects.values_list("order_id", flat=True).get(pk=leg_id))
    leg = next(candidate for candidate in _lock_legs(order.pk) if candidate.pk == leg_id)
    return order, leg


@transaction.atomic
def leg_cancel_confirmed(*, leg_id: int, external_id: str) -> OrderEvent | None:
    """The provider cancelled the sub-order: the leg is cancelled and no longer polled."""
    order, leg = _lock_leg(leg_id)
    if leg.cancel_status == Cancel.CONFIRMED and leg.status == OrderStatus.CANCELLED:
        return None  # a repeated answer
    was_refused = leg.cancel_status == Cancel.REFUSED
    leg.external_id = leg.external_id or external_id  # a create replayed by the cancel job names it
    leg.cancel_status, leg.status, leg.provider_status = (
        Cancel.CONFIRMED,
        OrderStatus.CANCELLED,
        PROVIDER_CANCELLED,
    )
    leg.next_poll_at, leg.attempts, leg.last_error, leg.deadline_at = None, 0, "", None
    leg.save(
        update_fields=[
            "external_id",
            "cancel_status",
            "status",
            "provider_status",
            "next_poll_at",
            "attempts",
            "last_error",
            "deadline_at",
            "updated_at",
        ]
    )
    logger.info("Leg %s (%s) of order %s cancelled at its provider", leg.pk, leg.provider, order.pk)
    source = OrderEvent.Source.POLL
    if order.status in ACTIVE:  # resumed meanwhile, yet the provider has dropped its part
        return _transition(
            order=order,
            to_status=OrderStatus.FAILED,
            source=source,
            leg=leg,
            provider_status=PROVIDER_CANCELLED,
            reason=f"{_leg_label(leg)} cancelled its sub-order",
        )
    event = _leg_cancel_event(
        order,
        leg,
        source=source,
        reason=f"{_leg_label(leg)} confirmed the cancellation",
        provider_status=PROVIDER_CANCELLED,
    )
    settled = [Alert.Kind.PROVIDER_FAILING] + ([Alert.Kind.CANCEL_REFUSED] if was_refused else [])
    alerts.clear_alerts(order=order, kinds=settled, leg_id=leg.pk, source=source)
    return event


@transaction.atomic
def leg_cancel_refused(*, leg_id: int, reason: str) -> OrderEvent | None:
    """The provider will not cancel (it has cooked, or delivered): recorded, and an operator is alerted."""
    order, leg = _lock_leg(leg_id)
    if leg.cancel_status != Cancel.REQUESTED:
        return None  # answered already
    return _cancel_refused(order, leg, detail=f"{_leg_label(leg)} refused to cancel: {reason}")


def _cancel_refused(order: Order, leg: Leg, *, detail: str) -> OrderEvent:
    leg.cancel_status, leg.next_poll_at = Cancel.REFUSED, None
    leg.save(update_fields=["cancel_status", "next_poll_at", "updated_at"])
    logger.warning("Leg %s of order %s: %s", leg.pk, order.pk, detail)
    source = OrderEvent.Source.POLL
    event = _leg_cancel_event(order, leg, source=source, reason=detail[:2000])
    alerts.clear_alerts(order=order, kinds=[Alert.Kind.PROVIDER_FAILING], leg_id=leg.pk, source=source)
    alerts.raise_alert(order=order, kind=Alert.Kind.CANCEL_REFUSED, leg=leg, detail=detail, source=source)
    return event


@transaction.atomic
def leg_cancel_failed(*, leg_id: int, error: str) -> OrderEvent | None:
    """A cancel call failed: back off and try again; past the leg's deadline it counts as refused, with
    an alert, since nobody can say whether the provider stopped."""
    order, leg = _lock_leg(leg_id)
    if leg.cancel_status != Cancel.REQUESTED:
        return None
    now = _count_failure(leg, error)
    logger.warning("Cancel of leg %s (%s) failed attempt %d: %s", leg.pk, leg.provider, leg.attempts, error)
    if now < leg.deadline_at:
        alerts.raise_alert(
            order=order,
            kind=Alert.Kind.PROVIDER_FAILING,
            leg=leg,
            detail=f"{_leg_label(leg)} failing to cancel: {error} (attempt {leg.attempts})",
            source=OrderEvent.Source.SYSTEM,
        )
        return None
    detail = f"{_leg_label(leg)} did not confirm the cancellation: {error} ({leg.attempts} attempts)"
    return _cancel_refused(order, leg, detail=detail)


@transaction.atomic
def leg_cancel_reached_late(*, order_id: int, leg_id: int) -> None:
    """A create we took for never sent was answered after all: that provider has the sub-order now."""
    order = _lock_order(order_id)
    leg = next(candidate for candidate in _lock_legs(order.pk) if candidate.pk == leg_id)
    if leg.cancel_status != Cancel.CONFIRMED or leg.provider_status == PROVIDER_CANCELLED:
        return
    now = timezone.now()
    leg.cancel_status, leg.cancel_requested_at, leg.next_poll_at = Cancel.REQUESTED, now, now
    leg.status = OrderStatus.SCHEDULED
    leg.save(update_fields=["cancel_status", "cancel_requested_at", "next_poll_at", "status", "updated_at"])
    reason = f"{_leg_label(leg)} received the order after all: asking it to cancel"
    _leg_cancel_event(order, leg, source=OrderEvent.Source.POLL, reason=reason)
    _on_commit_submit(order.pk)


# --- operators' courier reassignment --------------------------------------------------------------------


@transaction.atomic
def order_reassign_courier(
    *, order_id: int, courier_id: int, actor: AbstractBaseUser, reason: str
) -> OrderEvent:
    """An operator hands an active order to another (active) courier; who, to whom and why are recorded.

    The order keeps its status. The change is an `order.courier` event (public: it carries the order as
    it now stands), so the relay brings it to operators, the order's followers and the new courier's
    group (realtime.broadcast), whose app thus receives the order. From then on the operator's choice
    holds over the delivery provider's driver (delivery_record_progress).
    """
    if not actor.is_staff:
        raise PermissionDenied("Only operators may reassign a courier.")
    if not reason.strip():
        raise ActionNotAllowed("A courier reassignment needs a reason.")
    order = _lock_order(order_id)
    if order.status in TERMINAL:
        raise ActionNotAllowed(f"Order #{order.pk} is already {order.status}.")
    courier = Courier.objects.filter(pk=courier_id, is_active=True).first()
    if courier is None:
        raise ActionNotAllowed(f"Courier #{courier_id} does not exist or is not active.")
    if order.courier_id == courier.pk:
        raise ActionNotAllowed(f"Order #{order.pk} is already carried by {courier.name}.")
    previous = order.courier.name if order.courier_id else "nobody"
    event = _assign_courier(
        order,
        courier,
        source=OrderEvent.Source.OPERATOR,
        leg=Leg.objects.filter(order=order, kind=Leg.Kind.DELIVERY).first(),
        actor=actor,
        reason=f"Courier {previous} → {courier.name}: {reason.strip()}",
    )
    logger.info("Order %s reassigned from %s to courier %s by %s", order.pk, previous, courier.pk, actor)
    return event


# --- shareable tracking links ------------------------------------------------------------------------------


def _may_share(order: Order, actor: AbstractBaseUser) -> bool:
    return bool(actor.is_staff) or order.customer_id == actor.pk


def tracking_link_create(*, order_id: int, actor: AbstractBaseUser) -> tuple[str, TrackingLink]:
    """A new link to follow the order without signing in, valid for TRACKING_LINK_TTL_HOURS.

    Returns the token (shown once: only its hash is stored) and the link. The order's customer and
    operators may share it.
    """
    order = Order.objects.get(pk=order_id)
    if not _may_share(order, actor):
        raise PermissionDenied("Only the order's customer or an operator may share it.")
    token = secrets.token_urlsafe(24)
    now = timezone.now()
    link = TrackingLink.objects.create(
        order=order,
        token_hash=TrackingLink.hash_token(token),
        created_at=now,
        expires_at=now + timedelta(hours=settings.TRACKING_LINK_TTL_HOURS),
        created_by=actor,
    )
    logger.info("Tracking link %s of order %s created by %s", link.pk, order.pk, actor)
    return token, link


@transaction.atomic
def tracking_links_revoke(*, order_id: int, actor: AbstractBaseUser) -> int:
    """Revoke every live tracking link of the order; the sockets opened through them are closed after
    commit (orders.signals.tracking_revoked). Returns how many links were revoked."""
    order = _lock_order(order_id)
    if not _may_share(order, actor):
        raise PermissionDenied("Only the order's customer or an operator may revoke its links.")
    revoked = TrackingLink.objects.filter(order_id=order.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    # Announced even when nothing was live: cheap, and a socket that raced a revocation is closed too.
    transaction.on_commit(partial(signals.tracking_revoked.send, sender=TrackingLink, order_id=order.pk))
    logger.info("%d tracking links of order %s revoked by %s", revoked, order.pk, actor)
    return revoked


GEOCODE_REASONS = {
    Order.GeocodeStatus.FOUND: "Delivery point found: {label}",
    Order.GeocodeStatus.NOT_FOUND: "The geocoder does not know this address: the order has no map point",
    Order.GeocodeStatus.FAILED: "The geocoder could not be reached, the order has no map point: {error}",
}


def order_geocode(*, order_id: int, geocoder: geocoding.Geocoder, give_up: bool = False) -> OrderEvent | None:
    """Look the order's delivery address up and store its point (an `order.located` event).

    The lookup runs outside any transaction. GeocoderError (RateLimited included) propagates for the
    caller to try again later, unless `give_up`: then the order is left without a point, marked `failed`.
    Nothing happens to an order already located or gone.
    """
    order = Order.objects.filter(pk=order_id).only("delivery_address", "geocode_status").first()
    if order is None or order.geocode_status not in (Order.GeocodeStatus.PENDING, Order.GeocodeStatus.FAILED):
        return None
    try:
        place = geocoding.locate(order.delivery_address, geocoder)
    except geocoding.RateLimited:
        raise
    except geocoding.GeocoderError as error:
        if not give_up:
            raise
        logger.warning("Order %s stays off the map: %s", order_id, error)
        return _store_point(order_id, None, Order.GeocodeStatus.FAILED, error=str(error))
    status = Order.GeocodeStatus.FOUND if place is not None else Order.GeocodeStatus.NOT_FOUND
    return _store_point(order_id, place, status)


@transaction.atomic
def _store_point(
    order_id: int, place: geocoding.Place | None, status: str, error: str = ""
) -> OrderEvent | None:
    order = Order.objects.select_for_update().filter(pk=order_id).first()
    if order is None or order.geocode_status == Order.GeocodeStatus.FOUND:
        return None  # gone, or located meanwhile by a duplicate task
    order.lat, order.lng = (place.lat, place.lng) if place is not None else (None, None)
    order.geocode_status = status
    order.save(update_fields=["lat", "lng", "geocode_status", "updated_at"])
    reason = GEOCODE_REASONS[status].format(label=place.label if place else "", error=error)
    return _append_event(
        order=order, type=OrderEvent.Type.LOCATED, source=OrderEvent.Source.SYSTEM, reason=reason
    )
