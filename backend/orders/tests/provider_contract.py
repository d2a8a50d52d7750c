"""Checks every provider module's status table must pass (used by the test_provider_<name> modules)."""

from orders.providers import PROVIDER_CANCELLED, Provider
from orders.status import PIPELINE, OrderStatus


def assert_table_is_well_formed(provider: type[Provider]) -> None:
    """Statuses in the order they come, never backwards along our pipeline, ending with `cancelled`."""
    *progress, last = provider.statuses
    assert (last, provider.statuses[last]) == (PROVIDER_CANCELLED, OrderStatus.CANCELLED)
    ours = [provider.statuses[status] for status in progress]
    assert all(status in PIPELINE and status != OrderStatus.SCHEDULED for status in ours)
    assert ours == sorted(ours, key=PIPELINE.index), "the table lists statuses in the order they come"
    kind_statuses = {"kitchen": PIPELINE[1:4], "delivery": PIPELINE[4:]}[provider.kind]
    assert set(ours) <= set(kind_statuses), f"a {provider.kind} provider reports {provider.kind} statuses"
