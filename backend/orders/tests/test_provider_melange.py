"""Melange: its status table, its create body, its answers."""

import pytest

from orders.providers import KitchenRequest, ProviderBadResponse, UnknownProviderStatus
from orders.providers.melange import Melange
from orders.status import OrderStatus
from orders.tests.provider_contract import assert_table_is_well_formed

MELANGE = Melange(url="http://melange/")


def test_status_table():
    assert_table_is_well_formed(Melange)
    assert MELANGE.status_of("not started") == OrderStatus.SUBMITTED
    assert MELANGE.status_of("cooking") == OrderStatus.COOKING
    assert MELANGE.status_of("cooked") == MELANGE.status_of("finished") == OrderStatus.READY
    assert MELANGE.is_backwards("finished", "cooking") and not MELANGE.is_backwards("cooking", "cooked")


@pytest.mark.parametrize("status", ["Cooking", "ready", "", None, 3, "cooking "])
def test_unknown_statuses(status):
    with pytest.raises(UnknownProviderStatus):
        MELANGE.status_of(status)


def test_create_request_and_paths():
    request = KitchenRequest(
        idempotency_key="k", items=[("Borscht", 2), ("Varenyky", 1)], reference="order-7"
    )
    assert MELANGE.create_request(request) == (
        "/api/orders",
        {"order": [{"dish": "Borscht", "quantity": 2}, {"dish": "Varenyky", "quantity": 1}]},
    )
    assert (MELANGE.fetch_path("mel_1"), MELANGE.cancel_path("mel_1")) == (
        "/api/orders/mel_1",
        "/api/orders/mel_1/cancel",
    )
    assert MELANGE.base_url == "http://melange"


def test_answers():
    order = MELANGE.parse_order({"id": "mel_1", "status": "cooking", "extra": "ignored"})
    assert (order.external_id, order.status, order.driver, order.location) == ("mel_1", "cooking", None, None)
    for payload in ({"status": "cooking"}, {"id": "", "status": "cooking"}, {"id": "mel_1", "status": 5}):
        with pytest.raises(ProviderBadResponse):
            MELANGE.parse_order(payload)


def test_pushes_no_webhooks():
    assert not MELANGE.accepts_webhooks
