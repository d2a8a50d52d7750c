"""Raketa: deliveries polled and pushed as Stripe-style signed webhooks, received by a server in the test."""

import hashlib
import hmac
import time
from datetime import datetime

import pytest

from simulators.geo import geocode
from simulators.raketa import courier_for
from simulators.tests.conftest import WEBHOOK_SECRET, Delivery, Simulator, WebhookReceiver, wait_until
from simulators.uklon import driver_for

PICKUP = "Khreshchatyk St, 22, Kyiv"
SECOND_PICKUP = "Velyka Vasylkivska St, 5, Kyiv"
DROPOFF = "Obolonskyi Ave, 10, Kyiv"
DELIVERY = {
    "pickups": [{"address": PICKUP, "note": "Melange mel_1"}, {"address": SECOND_PICKUP}],
    "dropoff": {"address": DROPOFF},
}
STATES = ["searching", "courier_assigned", "picked_up", "delivered"]


def create(raketa: Simulator, body: object = DELIVERY, **headers: str) -> str:
    response = raketa.client.post("/v1/deliveries", json=body, headers=headers)
    assert response.status_code == 201, response.text
    delivery_id = response.json()["delivery_id"]
    assert delivery_id.startswith("rkt_")
    assert response.json() == {
        "delivery_id": delivery_id,
        "state": "searching",
        "courier": None,
        "position": None,
    }
    return delivery_id


def get(raketa: Simulator, delivery_id: str) -> dict:
    response = raketa.client.get(f"/v1/deliveries/{delivery_id}")
    assert response.status_code == 200, response.text
    return response.json()


def point(position: dict) -> tuple[float, float]:
    return (position["lat"], position["lng"])


def signature_is_valid(delivery: Delivery) -> bool:
    """Checks ``X-Raketa-Signature: t=<unix seconds>,v1=<hex>`` as a receiver would."""
    parts = dict(part.split("=", 1) for part in delivery.headers["X-Raketa-Signature"].split(","))
    if abs(time.time() - int(parts["t"])) > 60:
        return False
    signed = f"{parts['t']}.".encode() + delivery.body
    expected = hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected)


def wait_for_deliveries(receiver: WebhookReceiver, delivery_id: str, count: int) -> list[Delivery]:
    return wait_until(
        lambda: (found := receiver.deliveries_for(delivery_id)) and len(found) >= count and found
    )


def test_progresses_through_every_state_to_delivered(raketa: Simulator) -> None:
    delivery_id = create(raketa)
    seen: list[str] = []

    def delivered() -> bool:
        state = get(raketa, delivery_id)["state"]
        if state not in seen:
            seen.append(state)
        return state == "delivered"

    wait_until(delivered, interval=0.005)
    assert seen == sorted(seen, key=STATES.index)


def test_courier_from_assignment_and_position_from_pickup(raketa: Simulator) -> None:
    raketa.configure(step_seconds=60)
    delivery_id = create(raketa)
    assigned = raketa.advance(delivery_id, "courier_assigned")
    assert assigned["courier"] == courier_for(delivery_id)
    assert assigned["position"] is None
    picked_up = raketa.advance(delivery_id, "picked_up")
    assert picked_up["courier"] == courier_for(delivery_id)
    assert point(picked_up["position"]) == geocode(PICKUP)
    delivered = raketa.advance(delivery_id, "delivered")
    assert point(delivered["position"]) == geocode(DROPOFF)
    assert get(raketa, delivery_id) == delivered


def test_position_moves_along_the_route_while_picked_up(raketa: Simulator) -> None:
    raketa.configure(step_seconds=0.8)
    delivery_id = create(raketa)
    raketa.advance(delivery_id, "picked_up")
    seen = []

    def delivered() -> bool:
        body = get(raketa, delivery_id)
        seen.append(body)
        return body["state"] == "delivered"

    wait_until(delivered, interval=0.02)
    on_the_way = [point(body["position"]) for body in seen if body["state"] == "picked_up"]
    assert on_the_way[0] == geocode(PICKUP)
    assert len(set(on_the_way)) >= 3, "the courier should visibly move"
    assert point(seen[-1]["position"]) == geocode(DROPOFF)


def test_courier_is_deterministic_and_shares_the_demo_couriers_with_uklon() -> None:
    couriers = [courier_for(f"rkt_{number}") for number in range(400)]
    assert courier_for("rkt_7") == couriers[7]
    assert all(set(courier) == {"id", "name", "phone"} for courier in couriers)
    assert all(courier["phone"].startswith("+380") for courier in couriers)
    uklon_drivers = {driver_for(f"ukl_{number}")["id"]: driver_for(f"ukl_{number}") for number in range(400)}
    by_id = {courier["id"]: courier for courier in couriers}
    for demo_id in ("drv_1", "drv_2", "drv_3"):  # seed_demo's courier1..courier3
        assert by_id[demo_id] == uklon_drivers[demo_id]
    own = {courier["name"] for courier in by_id.values()} - {
        driver["name"] for driver in uklon_drivers.values()
    }
    assert len(own) >= 3, "Raketa has a fleet of its own too"


@pytest.mark.parametrize("state", ["searching", "courier_assigned"])
def test_cancel_before_pickup(raketa: Simulator, state: str) -> None:
    raketa.configure(step_seconds=60)
    delivery_id = create(raketa)
    raketa.advance(delivery_id, state)
    response = raketa.client.post(f"/v1/deliveries/{delivery_id}/cancel")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["delivery_id"] == delivery_id
    assert cancelled["state"] == "cancelled"
    assert cancelled["position"] is None
    assert (cancelled["courier"] is None) == (state == "searching")
    assert get(raketa, delivery_id) == cancelled
    again = raketa.client.post(f"/v1/deliveries/{delivery_id}/cancel", json={})
    assert (again.status_code, again.json()) == (200, cancelled)
    stats = raketa.stats()
    assert (stats["cancels"], stats["cancel_replays"]) == (1, 1)


@pytest.mark.parametrize("state", ["picked_up", "delivered"])
def test_cancel_is_refused_from_pickup_on(raketa: Simulator, state: str) -> None:
    raketa.configure(step_seconds=60)
    delivery_id = create(raketa)
    raketa.advance(delivery_id, state)
    response = raketa.client.post(f"/v1/deliveries/{delivery_id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"]
    assert get(raketa, delivery_id)["state"] == state
    assert raketa.stats()["cancels_refused"] == 1


def test_a_cancelled_delivery_stops(raketa: Simulator) -> None:
    delivery_id = create(raketa)
    assert raketa.client.post(f"/v1/deliveries/{delivery_id}/cancel").json()["state"] == "cancelled"
    time.sleep(0.5)  # five steps: a live delivery would be delivered by now
    assert get(raketa, delivery_id)["state"] == "cancelled"


def test_unknown_delivery_and_wrong_method(raketa: Simulator) -> None:
    missing = raketa.client.get("/v1/deliveries/rkt_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]
    assert raketa.client.post("/v1/deliveries/rkt_nope/cancel").status_code == 404
    wrong = raketa.client.get("/v1/deliveries")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"
    assert raketa.client.get("/v1/nowhere").status_code == 404


def test_idempotency_key(raketa: Simulator) -> None:
    raketa.configure(step_seconds=60)
    headers = {"Idempotency-Key": "delivery-leg-1"}
    delivery_id = create(raketa, **headers)
    raketa.advance(delivery_id, "courier_assigned")
    again = raketa.client.post("/v1/deliveries", json=DELIVERY, headers=headers)
    assert again.status_code == 200
    assert again.json() == {
        "delivery_id": delivery_id,
        "state": "courier_assigned",
        "courier": courier_for(delivery_id),
        "position": None,
    }
    changed = {**DELIVERY, "dropoff": {"address": "Somewhere else"}}
    assert raketa.client.post("/v1/deliveries", json=changed, headers=headers).status_code == 409
    assert raketa.stats()["creates"] == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"pickups": [], "dropoff": {"address": DROPOFF}},
        {"pickups": [{"address": PICKUP}] * 101, "dropoff": {"address": DROPOFF}},
        {"pickups": {"address": PICKUP}, "dropoff": {"address": DROPOFF}},
        {"pickups": [PICKUP], "dropoff": {"address": DROPOFF}},
        {"pickups": [{"address": "  "}], "dropoff": {"address": DROPOFF}},
        {"pickups": [{"note": "no address"}], "dropoff": {"address": DROPOFF}},
        {"pickups": [{"address": PICKUP, "note": 5}], "dropoff": {"address": DROPOFF}},
        {"pickups": [{"address": PICKUP}]},
        {"pickups": [{"address": PICKUP}], "dropoff": DROPOFF},
        {"pickups": [{"address": PICKUP}], "dropoff": {"address": ""}},
        [DELIVERY],
    ],
)
def test_bad_create_bodies_are_400(raketa: Simulator, body: object) -> None:
    response = raketa.client.post("/v1/deliveries", json=body)
    assert response.status_code == 400
    assert response.json()["error"]


def test_a_hundred_pickups_and_empty_notes_are_fine(raketa: Simulator) -> None:
    pickups = [{"address": f"Kitchen {number}", "note": ""} for number in range(100)]
    create(raketa, {"pickups": pickups, "dropoff": {"address": DROPOFF}})


def test_faults_and_auth_apply(launch) -> None:
    raketa = launch("raketa", SIM_API_KEY="s3cret", SIM_DOWN="1")
    headers = {"Authorization": "Bearer s3cret"}
    assert raketa.client.post("/v1/deliveries", json=DELIVERY, headers=headers).status_code == 503
    raketa.configure(down=False)
    assert raketa.client.post("/v1/deliveries", json=DELIVERY).status_code == 401
    assert raketa.client.post("/v1/deliveries", json=DELIVERY, headers=headers).status_code == 201
    assert raketa.stats()["creates"] == 1
    config = raketa.admin("GET", "config")
    assert {"webhook_duplicate_rate", "webhook_out_of_order", "webhook_bad_signature_rate"} <= set(config)


def test_every_change_is_posted_with_a_valid_signature(
    raketa: Simulator, raketa_receiver: WebhookReceiver
) -> None:
    delivery_id = create(raketa)
    deliveries = wait_for_deliveries(raketa_receiver, delivery_id, 3)
    payloads = [delivery.payload for delivery in deliveries]
    assert [payload["state"] for payload in payloads] == ["courier_assigned", "picked_up", "delivered"]
    assert all(signature_is_valid(delivery) for delivery in deliveries)
    assert all(
        set(payload) == {"event_id", "delivery_id", "state", "courier", "position", "at"}
        for payload in payloads
    )
    assert len({payload["event_id"] for payload in payloads}) == 3
    assert all(payload["courier"] == courier_for(delivery_id) for payload in payloads)
    assert payloads[0]["position"] is None
    assert point(payloads[1]["position"]) == geocode(PICKUP)
    assert point(payloads[2]["position"]) == geocode(DROPOFF)
    moments = [datetime.fromisoformat(payload["at"]) for payload in payloads]
    assert moments == sorted(moments)
    assert all(moment.utcoffset().total_seconds() == 0 for moment in moments)
    assert wait_until(lambda: raketa.stats()["webhooks_sent"] == 3)


def test_a_cancellation_is_posted_once_and_nothing_follows(
    raketa: Simulator, raketa_receiver: WebhookReceiver
) -> None:
    raketa.configure(step_seconds=60)
    delivery_id = create(raketa)
    raketa.advance(delivery_id, "courier_assigned")
    cancelled = raketa.client.post(f"/v1/deliveries/{delivery_id}/cancel").json()
    deliveries = wait_for_deliveries(raketa_receiver, delivery_id, 2)
    time.sleep(0.5)
    assert raketa_receiver.deliveries_for(delivery_id) == deliveries
    payloads = [delivery.payload for delivery in deliveries]
    assert [payload["state"] for payload in payloads] == ["courier_assigned", "cancelled"]
    assert {key: payloads[-1][key] for key in cancelled} == cancelled
    assert all(signature_is_valid(delivery) for delivery in deliveries)


def test_duplicate_mode_sends_each_event_twice(raketa: Simulator, raketa_receiver: WebhookReceiver) -> None:
    raketa.configure(webhook_duplicate_rate=1)
    delivery_id = create(raketa)
    deliveries = wait_for_deliveries(raketa_receiver, delivery_id, 6)
    states = [delivery.payload["state"] for delivery in deliveries]
    assert states == ["courier_assigned"] * 2 + ["picked_up"] * 2 + ["delivered"] * 2
    assert deliveries[0].body == deliveries[1].body
    assert all(signature_is_valid(delivery) for delivery in deliveries)


def test_out_of_order_mode_sends_a_change_after_the_next(
    raketa: Simulator, raketa_receiver: WebhookReceiver
) -> None:
    raketa.configure(webhook_out_of_order=True)
    delivery_id = create(raketa)
    deliveries = wait_for_deliveries(raketa_receiver, delivery_id, 3)
    states = [delivery.payload["state"] for delivery in deliveries]
    assert states == ["picked_up", "courier_assigned", "delivered"]


def test_bad_signature_mode(raketa: Simulator, raketa_receiver: WebhookReceiver) -> None:
    raketa.configure(webhook_bad_signature_rate=1)
    delivery_id = create(raketa)
    deliveries = wait_for_deliveries(raketa_receiver, delivery_id, 3)
    assert not any(signature_is_valid(delivery) for delivery in deliveries)


def test_failed_webhooks_are_retried(raketa: Simulator, raketa_receiver: WebhookReceiver) -> None:
    raketa_receiver.fail_next(2)
    delivery_id = create(raketa)
    deliveries = wait_for_deliveries(raketa_receiver, delivery_id, 5)
    assert [delivery.answered for delivery in deliveries] == [500, 500, 200, 200, 200]
    assert len({delivery.body for delivery in deliveries[:3]}) == 1, "a retry resends the same body"
    assert raketa.stats()["webhooks_failed"] == 0
