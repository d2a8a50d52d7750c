"""The one status machine: internal statuses, allowed transitions, provider mappings, aggregation.

An order moves forward along PIPELINE (skipping steps is allowed, because a poll may miss an
intermediate provider status), or to a terminal branch (failed, cancelled). Nothing moves backwards, and
nothing leaves a terminal status except an operator: an override (any status, with a reason), or a retry
of a failed order (RETRY_TRANSITIONS: back to the status its legs report). The services give each of
these its follow-up (re-arm polling, ask providers to cancel, refuse what would strand the order).
"""

from collections.abc import Iterable

from django.db import models
from django.utils.translation import gettext_lazy as _


class OrderStatus(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")
    SUBMITTED = "submitted", _("Submitted")
    COOKING = "cooking", _("Cooking")
    READY = "ready", _("Ready")
    COURIER_SEARCH = "courier_search", _("Courier search")
    DELIVERING = "delivering", _("Delivering")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


PIPELINE: tuple[OrderStatus, ...] = (
    OrderStatus.SCHEDULED,
    OrderStatus.SUBMITTED,
    OrderStatus.COOKING,
    OrderStatus.READY,
    OrderStatus.COURIER_SEARCH,
    OrderStatus.DELIVERING,
    OrderStatus.DELIVERED,
)
TERMINAL = frozenset({OrderStatus.DELIVERED, OrderStatus.FAILED, OrderStatus.CANCELLED})
ACTIVE = frozenset(OrderStatus) - TERMINAL
KITCHEN_STATUSES = frozenset(PIPELINE[: PIPELINE.index(OrderStatus.READY) + 1])
DELIVERY_STATUSES = frozenset(PIPELINE[PIPELINE.index(OrderStatus.COURIER_SEARCH) :])


def _rank(status: str) -> int:
    return PIPELINE.index(OrderStatus(status))


def _allowed_targets(source: OrderStatus) -> frozenset[OrderStatus]:
    if source in TERMINAL:
        return frozenset()
    forward = PIPELINE[_rank(source) + 1 :]
    return frozenset(forward) | {OrderStatus.FAILED, OrderStatus.CANCELLED}


TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    status: _allowed_targets(status) for status in OrderStatus
}


def is_valid_status(status: str) -> bool:
    return status in OrderStatus.values


def can_transition(source: str, target: str) -> bool:
    """Whether an automatic change from `source` to `target` is allowed. Same status is not a change."""
    if not (is_valid_status(source) and is_valid_status(target)):
        return False
    return OrderStatus(target) in TRANSITIONS[OrderStatus(source)]


def can_override(source: str, target: str) -> bool:
    """Operators may force any valid status except the current one, recorded with a reason."""
    return is_valid_status(source) and is_valid_status(target) and source != target


# An operator's retry of a failed order: it goes back to wherever its legs stand (any pipeline status,
# delivered included when the courier finished meanwhile).
RETRY_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {OrderStatus.FAILED: frozenset(PIPELINE)}


def can_retry(source: str, target: str) -> bool:
    """Whether an operator's retry may move an order from `source` to `target`."""
    if not (is_valid_status(source) and is_valid_status(target)):
        return False
    return OrderStatus(target) in RETRY_TRANSITIONS.get(OrderStatus(source), frozenset())


def aggregate(kitchen: Iterable[str], delivery: str | None) -> OrderStatus:
    """The order status derived from its legs' internal statuses.

    The delivery leg decides once its provider has accepted it. Before that: ready when every kitchen is,
    cooking as soon as any kitchen is cooking (or done), otherwise the least advanced kitchen leg.
    Failed and cancelled legs are handled by the services, not here (a leg its provider cancelled
    fails an active order before anything is derived).
    """
    if delivery is not None and delivery != OrderStatus.SCHEDULED:
        return OrderStatus(delivery)
    ranks = [_rank(status) for status in kitchen]
    if not ranks:
        return OrderStatus.SCHEDULED
    if min(ranks) >= _rank(OrderStatus.READY):
        return OrderStatus.READY
    if max(ranks) >= _rank(OrderStatus.COOKING):
        return OrderStatus.COOKING
    return PIPELINE[min(ranks)]
