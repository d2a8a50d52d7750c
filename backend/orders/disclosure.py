"""Least disclosure: what customers and couriers are shown of an order, and what only operators see.

Operators (`is_staff`) see orders whole: provider sub-order ids and statuses, failed calls and their
errors, alerts, and who changed what. Everyone else gets the public shape (orders.serializers.Public*,
realtime.payloads.public_*): status, times, total, items, restaurants and courier, and of the history
only the events below. On WebSockets the shape follows the group: `operators` carries the full one,
`order.<id>` and `courier.<id>` the public one, whoever is connected.
"""

from django.contrib.auth.models import AbstractBaseUser

from .models import OrderEvent

# Status changes, and a leg's progress (its event carries the order as it now stands: a courier
# assigned, say). Alerts and cancellations at providers are operators' business.
PUBLIC_EVENT_TYPES: frozenset[str] = frozenset(
    {
        OrderEvent.Type.CREATED,
        OrderEvent.Type.STATUS,
        OrderEvent.Type.LEG,
        OrderEvent.Type.OVERRIDE,
        OrderEvent.Type.RETRY,
        OrderEvent.Type.COURIER,
        OrderEvent.Type.LOCATED,
    }
)


def sees_internals(user: AbstractBaseUser) -> bool:
    """Whether `user` gets orders whole rather than their public shape."""
    return bool(user.is_staff)


def is_public_event(event: OrderEvent) -> bool:
    return event.type in PUBLIC_EVENT_TYPES


def public_reason(event: OrderEvent) -> str:
    """An event's reason as the public shape carries it: the customer's own words (a cancellation they
    asked for through the API), never what the system or an operator wrote, which may quote a provider's
    error or an internal note."""
    return event.reason if event.source == OrderEvent.Source.API else ""
