"""Helpers for pipeline tests: drive poll ticks as beat would, and check an order's history."""

import time
from collections.abc import Callable

from orders.models import Order
from orders.status import PIPELINE, OrderStatus
from orders.sync import tick


def drive(until: Callable[[], bool], *, timeout: float = 30, pause: float = 0.05) -> None:
    """Run poll ticks as beat would, until `until()` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"pipeline did not get there within {timeout}s")
        tick.poll_due_legs()
        time.sleep(pause)


def order_reaches(order_id: int, *statuses: str) -> Callable[[], bool]:
    return lambda: Order.objects.filter(pk=order_id, status__in=statuses).exists()


def assert_history_is_clean(order: Order) -> None:
    """Order statuses only move forward, each at most once; no leg repeats a provider status."""
    ranks = {status: index for index, status in enumerate(PIPELINE)}
    order_moves = [e.to_status for e in order.events.filter(type="order.status").order_by("seq")]
    forward = [status for status in order_moves if status in ranks]
    assert forward == sorted(forward, key=ranks.__getitem__), order_moves
    assert len(order_moves) == len(set(order_moves)), order_moves
    for leg in order.legs.all():
        reported = list(leg.events.exclude(provider_status="").values_list("provider_status", flat=True))
        assert len(reported) == len(set(reported)), (leg, reported)
    assert order_moves[-1:] != [OrderStatus.SCHEDULED]
