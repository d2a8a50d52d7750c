"""The status machine as a full table: every (from, to) pair is accepted or refused as specified."""

import itertools

import pytest

from orders.status import (
    OrderStatus,
    aggregate,
    can_override,
    can_retry,
    can_transition,
)

S = OrderStatus
# Written out by hand from DESIGN.md: forward along the pipeline (skips allowed, a poll may miss a
# step), failed/cancelled from any non-terminal status, nothing out of a terminal status.
ALLOWED = {
    S.SCHEDULED: {
        S.SUBMITTED,
        S.COOKING,
        S.READY,
        S.COURIER_SEARCH,
        S.DELIVERING,
        S.DELIVERED,
        S.FAILED,
        S.CANCELLED,
    },
    S.SUBMITTED: {S.COOKING, S.READY, S.COURIER_SEARCH, S.DELIVERING, S.DELIVERED, S.FAILED, S.CANCELLED},
    S.COOKING: {S.READY, S.COURIER_SEARCH, S.DELIVERING, S.DELIVERED, S.FAILED, S.CANCELLED},
    S.READY: {S.COURIER_SEARCH, S.DELIVERING, S.DELIVERED, S.FAILED, S.CANCELLED},
    S.COURIER_SEARCH: {S.DELIVERING, S.DELIVERED, S.FAILED, S.CANCELLED},
    S.DELIVERING: {S.DELIVERED, S.FAILED, S.CANCELLED},
    S.DELIVERED: set(),
    S.FAILED: set(),
    S.CANCELLED: set(),
}


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_every_transition_pair(source, target):
    assert can_transition(source, target) is (target in ALLOWED[source])


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_override_allows_any_change_but_a_repeat(source, target):
    assert can_override(source, target) is (source != target)


@pytest.mark.parametrize(("source", "target"), list(itertools.product(S, S)))
def test_retry_takes_a_failed_order_back_to_any_pipeline_status_only(source, target):
    expected = source == S.FAILED and target not in {S.FAILED, S.CANCELLED}
    assert can_retry(source, target) is expected


@pytest.mark.parametrize("bogus", ["", "COOKING", "lost", None, 3])
def test_unknown_statuses_are_refused(bogus):
    assert not can_transition(S.SCHEDULED, bogus)
    assert not can_transition(bogus, S.COOKING)
    assert not can_retry(S.FAILED, bogus)
    assert not can_override(S.SCHEDULED, bogus)


@pytest.mark.parametrize(
    ("kitchen", "delivery", "expected"),
    [
        ([], None, S.SCHEDULED),
        ([S.SCHEDULED], None, S.SCHEDULED),
        ([S.SCHEDULED, S.SUBMITTED], None, S.SCHEDULED),
        ([S.SUBMITTED, S.SUBMITTED], None, S.SUBMITTED),
        ([S.SUBMITTED, S.COOKING], None, S.COOKING),
        ([S.SCHEDULED, S.READY], None, S.COOKING),
        ([S.COOKING, S.READY], None, S.COOKING),
        ([S.READY], None, S.READY),
        ([S.READY, S.READY], None, S.READY),
        ([S.READY, S.READY], S.SCHEDULED, S.READY),
        ([S.READY, S.READY], S.COURIER_SEARCH, S.COURIER_SEARCH),
        ([S.READY], S.DELIVERING, S.DELIVERING),
        ([S.READY], S.DELIVERED, S.DELIVERED),
    ],
)
def test_aggregate(kitchen, delivery, expected):
    assert aggregate(kitchen, delivery) == expected
