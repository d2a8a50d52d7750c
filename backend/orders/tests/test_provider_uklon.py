"""Uklon: its status table, its create body, its answers with a driver and a location, and its simulator."""

import pytest

from orders.providers import DeliveryRequest, ProviderBadResponse, get_provider, http
from orders.providers.uklon import Uklon
from orders.status import OrderStatus
from orders.tests.provider_contract import assert_table_is_well_formed

UKLON = Uklon(url="http://uklon")


def test_status_table():
    assert_table_is_well_formed(Uklon)
    assert UKLON.status_of("not started") == OrderStatus.COURIER_SEARCH
    assert UKLON.status_of("delivery") == OrderStatus.DELIVERING
    assert UKLON.status_of("delivered") == OrderStatus.DELIVERED
    assert not UKLON.accepts_webhooks


def test_create_request():
    request = DeliveryRequest(
        idempotency_key="k", addresses=["A st", "B st", "C st"], comments=["Melange m1"]
    )
    assert UKLON.create_request(request) == (
        "/drivers/orders",
        {"addresses": ["A st", "B st", "C st"], "points": [None, None, None], "comments": ["Melange m1"]},
    )


def test_answer_with_driver_and_location():
    order = UKLON.parse_order(
        {
            "id": "ukl_1",
            "status": "delivery",
            "driver": {"id": "drv_1", "name": "Ostap Kovalenko", "phone": "+380670000001"},
            "location": [50.45, 30.52],
        }
    )
    assert order.location == (50.45, 30.52)
    assert (order.driver.external_id, order.driver.name, order.driver.phone) == (
        "drv_1",
        "Ostap Kovalenko",
        "+380670000001",
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "delivery"},
        {"id": "", "status": "delivery"},
        {"id": "u1", "status": 3},
        {"id": "u1", "status": "delivery", "location": [91, 30]},
        {"id": "u1", "status": "delivery", "location": "50,30"},
        {"id": "u1", "status": "delivery", "location": [True, 30]},
        {"id": "u1", "status": "delivery", "driver": "Ostap"},
        {"id": "u1", "status": "delivery", "driver": {"name": "Ostap"}},
    ],
)
def test_answers_that_break_the_contract(payload):
    with pytest.raises(ProviderBadResponse):
        UKLON.parse_order(payload)


@pytest.mark.slow
def test_create_and_fetch_with_driver_and_location_at_the_simulator(providers):
    provider = get_provider("uklon")
    providers["uklon"].configure(step_seconds=60)  # stays at "delivery" however slow the machine is
    request = DeliveryRequest(
        idempotency_key="liveops-leg-2", addresses=["A st", "B st"], comments=["Melange m1"]
    )
    created = http.run(provider.create(request))
    assert created.status == "not started" and created.driver is None
    providers["uklon"].advance(created.external_id, "delivery")
    fetched = http.run(provider.fetch(created.external_id))
    assert fetched.status == "delivery"
    assert fetched.driver.external_id.startswith("drv_") and fetched.location is not None
