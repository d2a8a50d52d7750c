"""The status machine as a full table: every (from, to) pair is accepted or refused as specified."""

import itertools

import pytest

from orders.status import (
    PROVIDER_STATUS_MAP,
    OrderStatus,
    UnknownProviderStatus,
    aggregate,
    can_override,
    can_retry,
    can_transition,
    map_provider_status,
    provider_status_rank,
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
    ("provider", "provider_status", "expected"),
    [
        ("melange", "not started", S.SUBMITTED),
        ("melange", "cooking", S.COOKING),
        ("melange", "cooked", S.READY),
        ("melange", "finished", S.READY),
        ("bueno", "accepted", S.SUBMITTED),
        ("bueno", "preparing", S.COOKING),
        ("bueno", "ready", S.READY),
        ("bueno", "handed_over", S.READY),
        ("uklon", "not started", S.COURIER_SEARCH),
        ("uklon", "delivery", S.DELIVERING),
        ("uklon", "delivered", S.DELIVERED),
        ("melange", "cancelled", S.CANCELLED),
        ("bueno", "cancelled", S.CANCELLED),
        ("uklon", "cancelled", S.CANCELLED),
    ],
)
def test_provider_status_map(provider, provider_status, expected):
    assert map_provider_status(provider, provider_status) == expected


def test_every_provider_table_maps_to_pipeline_statuses_then_ends_cancelled():
    for provider, table in PROVIDER_STATUS_MAP.items():
        *progress, last = table
        assert {table[status] for status in progress} <= set(S) - {S.FAILED, S.CANCELLED, S.SCHEDULED}
        assert (last, table[last]) == ("cancelled", S.CANCELLED)
        # last in the table: whatever a stale read reports after it is a backwards move, ignored
        assert all(
            provider_status_rank(provider, status) < provider_status_rank(provider, last)
            for status in progress
        )


@pytest.mark.parametrize(
    ("provider", "provider_status"),
    [
        ("melange", "quantum"),
        ("melange", "Cooking"),
        ("melange", None),
        ("melange", 3),
        ("bueno", "cooked"),
        ("nobody", "cooking"),
    ],
)
def test_unknown_provider_status_raises(provider, provider_status):
    with pytest.raises(UnknownProviderStatus):
        map_provider_status(provider, provider_status)


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
