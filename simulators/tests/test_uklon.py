"""Uklon: drivers and a moving location (coordinates: simulators.geo, tested in test_geo.py)."""

import pytest

from simulators.geo import geocode
from simulators.tests.conftest import Simulator, wait_until
from simulators.uklon import driver_for

PICKUP = "Khreshchatyk St, 22, Kyiv"
SECOND_PICKUP = "Velyka Vasylkivska St, 5, Kyiv"
DROPOFF = "Obolonskyi Ave, 10, Kyiv"
DELIVERY = {"addresses": [PICKUP, SECOND_PICKUP, DROPOFF], "comments": ["ring twice"]}


def create(uklon: Simulator, body: object = DELIVERY) -> str:
    response = uklon.client.post("/drivers/orders", json=body)
    assert response.status_code == 201, response.text
    assert response.json() == {
        "id": response.json()["id"],
        "status": "not started",
        "location": None,
        "driver": None,
    }
    return response.json()["id"]


def test_get_before_delivery_has_no_driver_or_location(uklon: Simulator) -> None:
    uklon.configure(step_seconds=60)
    order_id = create(uklon)
    body = uklon.client.get(f"/drivers/orders/{order_id}").json()
    assert body["status"] == "not started"
    assert body["location"] is None
    assert body["driver"] is None
    assert body["addresses"] == DELIVERY["addresses"]
    assert body["comments"] == ["ring twice"]
    assert body["updated_at"].endswith("Z")


def test_location_moves_during_delivery_and_ends_at_the_dropoff(uklon: Simulator) -> None:
    uklon.configure(step_seconds=0.8)
    order_id = create(uklon)
    uklon.advance(order_id, "delivery")
    seen = []

    def delivered() -> bool:
        body = uklon.client.get(f"/drivers/orders/{order_id}").json()
        seen.append(body)
        return body["status"] == "delivered"

    wait_until(delivered, interval=0.02)
    on_the_way = [body for body in seen if body["status"] == "delivery"]
    locations = [tuple(body["location"]) for body in on_the_way]
    assert locations[0] == geocode(PICKUP)
    assert len(set(locations)) >= 3, "the courier should visibly move"
    assert all(body["driver"] == driver_for(order_id) for body in on_the_way)
    final = seen[-1]
    assert tuple(final["location"]) == geocode(DROPOFF)
    assert final["driver"] == driver_for(order_id)


def test_progresses_to_delivered_on_its_own(uklon: Simulator) -> None:
    order_id = create(uklon)
    wait_until(lambda: uklon.client.get(f"/drivers/orders/{order_id}").json()["status"] == "delivered")


def test_idempotent_replay_shows_the_current_driver(uklon: Simulator) -> None:
    uklon.configure(step_seconds=60)
    headers = {"Idempotency-Key": "delivery-leg-1"}
    first = uklon.client.post("/drivers/orders", json=DELIVERY, headers=headers).json()
    uklon.advance(first["id"], "delivery")
    again = uklon.client.post("/drivers/orders", json=DELIVERY, headers=headers)
    assert again.status_code == 200
    assert again.json() == {
        "id": first["id"],
        "status": "delivery",
        "location": list(geocode(PICKUP)),
        "driver": driver_for(first["id"]),
    }


@pytest.mark.parametrize(
    "body",
    [
        {"addresses": [PICKUP]},
        {"addresses": PICKUP},
        {"addresses": [PICKUP, 5]},
        {"addresses": [PICKUP, "  "]},
        {"addresses": [PICKUP, DROPOFF], "comments": "fragile"},
        {"addresses": [PICKUP, DROPOFF], "comments": [1]},
    ],
)
def test_bad_create_bodies_are_400(uklon: Simulator, body: dict) -> None:
    assert uklon.client.post("/drivers/orders", json=body).status_code == 400


def test_driver_is_deterministic_and_complete() -> None:
    driver = driver_for("ukl_1")
    assert driver == driver_for("ukl_1")
    assert set(driver) == {"id", "name", "phone"}
    assert driver["phone"].startswith("+380")
