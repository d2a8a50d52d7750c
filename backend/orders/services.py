"""Every write to orders goes through here: one transaction per action, one OrderEvent per change.

Lock order is always Order, then its Legs, so that concurrent writers (API, poller, webhooks)
serialise on the order row and cannot deadlock.
"""

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from .errors import ActionNotAllowed, InvalidTransition, PermissionDenied
from .models import Dish, Leg, Order, OrderEvent, OrderItem
from .status import (
    TERMINAL,
    OrderStatus,
    aggregate,
    can_override,
    can_transition,
    is_forward,
    map_provider_status,
)

logger = logging.getLogger(__name__)

CUSTOMER_CANCELLABLE = frozenset({OrderStatus.SCHEDULED, OrderStatus.SUBMITTED})


@dataclass(frozen=True)
class ItemInput:
    dish: Dish
    quantity: int


def _append_event(
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
) -> OrderEvent:
    return OrderEvent.objects.create(
        order=order,
        type=type,
        source=source,
        from_status=from_status,
        to_status=to_status,
        leg=leg,
        provider_status=provider_status,
        actor=actor if actor is not None and actor.is_authenticated else None,
        reason=reason,
    )


def _lock_order(order_id: int) -> Order:
    return Order.objects.select_for_update().get(pk=order_id)


@transaction.atomic
def order_create(
    *,
    customer: AbstractBaseUser,
    items: Iterable[ItemInput],
    delivery_address: str,
    eta: datetime | None = None,
) -> Order:
    """Create an order with its items and one kitchen leg per restaurant, status `scheduled`."""
    items = list(items)
    if not items:
        raise ActionNotAllowed("An order needs at least one item.")
    order = Order.objects.create(
        customer=customer,
        delivery_address=delivery_address,
        eta=eta,
        total=sum(item.dish.price * item.quantity for item in items),
    )
    OrderItem.objects.bulk_create(
        OrderItem(order=order, dish=item.dish, quantity=item.quantity, price=item.dish.price)
        for item in items
    )
    restaurants = {item.dish.restaurant_id: item.dish.restaurant for item in items}
    Leg.objects.bulk_create(
        Leg(
            order=order,
            kind=Leg.Kind.KITCHEN,
            restaurant=restaurant,
            provider=restaurant.provider,
            next_poll_at=order.created_at,
        )
        for restaurant in restaurants.values()
    )
    _append_event(
        order=order,
        type=OrderEvent.Type.CREATED,
        source=OrderEvent.Source.API,
        to_status=order.status,
        actor=customer,
    )
    logger.info("Order %s created with %d items at %d restaurants", order.pk, len(items), len(restaurants))
    return order


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
) -> OrderEvent:
    """Move a locked order to `to_status` and record it. Raises InvalidTransition when refused."""
    from_status = order.status
    allowed = can_override(from_status, to_status) if override else can_transition(from_status, to_status)
    if not allowed:
        logger.warning(
            "Refused transition of order %s: %s → %s (%s)", order.pk, from_status, to_status, source
        )
        raise InvalidTransition(f"Order #{order.pk} cannot move from {from_status!r} to {to_status!r}.")
    order.status = to_status
    update_fields = ["status", "updated_at"]
    if to_status == OrderStatus.FAILED:
        order.failure_reason = reason
        update_fields.append("failure_reason")
    if to_status in TERMINAL:
        Leg.objects.filter(order=order).update(next_poll_at=None)
    order.save(update_fields=update_fields)
    return _append_event(
        order=order,
        type=OrderEvent.Type.OVERRIDE if override else OrderEvent.Type.STATUS,
        source=source,
        from_status=from_status,
        to_status=to_status,
        leg=leg,
        provider_status=provider_status,
        actor=actor,
        reason=reason,
    )


@transaction.atomic
def leg_apply_status(*, leg_id: int, provider_status: object, source: str) -> OrderEvent | None:
    """Apply a status reported by a provider to a leg and derive the order status from all legs.

    Returns the one event recorded, or None when nothing changed: a repeated status, a status that
    would move the leg backwards, or an order that is already finished. An unknown status raises
    UnknownProviderStatus before anything is written.
    """
    leg = Leg.objects.only("order_id", "provider").get(pk=leg_id)
    new_leg_status = map_provider_status(leg.provider, provider_status)
    order = _lock_order(leg.order_id)
    legs = list(Leg.objects.select_for_update().filter(order=order))
    leg = next(candidate for candidate in legs if candidate.pk == leg_id)

    if order.status in TERMINAL:
        logger.info("Ignoring %r for leg %s: order %s is %s", provider_status, leg.pk, order.pk, order.status)
        return None
    if leg.provider_status == provider_status:
        return None
    if leg.status != OrderStatus.SCHEDULED and is_forward(new_leg_status, leg.status):
        logger.warning(
            "Ignoring backwards status %r for leg %s (%s → %s)",
            provider_status,
            leg.pk,
            leg.status,
            new_leg_status,
        )
        return None

    leg.provider_status = provider_status
    leg.status = new_leg_status
    leg.attempts = 0
    leg.last_error = ""
    leg.save(update_fields=["provider_status", "status", "attempts", "last_error", "updated_at"])

    delivery = next((candidate.status for candidate in legs if candidate.kind == Leg.Kind.DELIVERY), None)
    kitchen = [candidate.status for candidate in legs if candidate.kind == Leg.Kind.KITCHEN]
    derived = aggregate(kitchen, delivery)
    if can_transition(order.status, derived):
        return _transition(
            order=order, to_status=derived, source=source, leg=leg, provider_status=provider_status
        )
    return _append_event(
        order=order,
        type=OrderEvent.Type.LEG,
        source=source,
        from_status=order.status,
        to_status=order.status,
        leg=leg,
        provider_status=provider_status,
    )


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
