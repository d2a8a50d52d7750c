"""Cancelling a sub-order: each provider's rules, idempotency, faults, and Bueno's webhook for it."""

import time

import httpx
import pytest

from simulators.tests.conftest import Simulator, WebhookReceiver, wait_until

KITCHEN_ORDER = {"order": [{"dish": "borscht", "quantity": 1}]}
BUENO_ORDER = {"items": [{"name": "taco", "qty": 1}]}
DELIVERY = {"addresses": ["Khreshchatyk St, 22, Kyiv", "Obolonskyi Ave, 10, Kyiv"]}


def create(simulator: Simulator, path: str, body: dict) -> str:
    response = simulator.client.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


# (fixture, create path, body, statuses it may still be cancelled in, statuses it refuses in)
PROVIDERS = {
    "melange": ("/api/orders", KITCHEN_ORDER, ["not started", "cooking"], ["cooked", "finished"]),
    "bueno": ("/", BUENO_ORDER, ["accepted", "preparing"], ["ready", "handed_over"]),
    "uklon": ("/drivers/orders", DELIVERY, ["not started", "delivery"], ["delivered"]),
}
CASES = [
    (provider, status, cancellable)
    for provider, (_, _, allowed, refused) in PROVIDERS.items()
    for statuses, cancellable in ((allowed, True), (refused, False))
    for status in statuses
]


def item_path(provider: str, order_id: str) -> str:
    collection = PROVIDERS[provider][0].rstrip("/")
    return f"{collection}/{order_id}"


@pytest.mark.parametrize(("provider", "status", "cancellable"), CASES)
def test_cancel_until_too_late_then_409(request, provider, status, cancellable) -> None:
    simulator: Simulator = request.getfixturevalue(provider)
    simulator.configure(step_seconds=60)
    path, body, _, _ = PROVIDERS[provider]
    order_id = create(simulator, path, body)
    simulator.advance(order_id, status)
    response = simulator.client.post(f"{item_path(provider, order_id)}/cancel")
    current = simulator.client.get(item_path(provider, order_id)).json()
    if cancellable:
        assert response.status_code == 200, response.text
        assert response.json()["id"] == order_id
        assert response.json()["status"] == current["status"] == "cancelled"
        assert simulator.stats()["cancels"] == 1
    else:
        assert response.status_code == 409
        assert response.json() == {"error": f"already {status}"}
        assert current["status"] == status
        assert simulator.stats()["cancels_refused"] == 1


def test_a_cancelled_order_stops_advancing_and_cancelling_again_is_200(melange: Simulator) -> None:
    order_id = create(melange, "/api/orders", KITCHEN_ORDER)
    melange.advance(order_id, "cooking")
    first = melange.client.post(f"/api/orders/{order_id}/cancel")
    assert first.status_code == 200
    time.sleep(0.5)  # five steps: a live order would be finished by now
    body = melange.client.get(f"/api/orders/{order_id}").json()
    assert body["status"] == "cancelled"
    assert body["updated_at"] == first.json()["updated_at"]
    again = melange.client.post(f"/api/orders/{order_id}/cancel", json={})
    assert again.status_code == 200
    assert again.json() == body
    stats = melange.stats()
    assert (stats["cancels"], stats["cancel_replays"]) == (1, 1)


def test_a_cancelled_delivery_keeps_the_driver_where_it_was(uklon: Simulator) -> None:
    uklon.configure(step_seconds=60)
    order_id = create(uklon, "/drivers/orders", DELIVERY)
    uklon.advance(order_id, "delivery")
    cancelled = uklon.client.post(f"/drivers/orders/{order_id}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["driver"] is not None and cancelled["location"] is not None
    assert uklon.client.get(f"/drivers/orders/{order_id}").json()["location"] == cancelled["location"]


def test_advance_brings_a_cancelled_order_back(melange: Simulator) -> None:
    melange.configure(step_seconds=60)
    order_id = create(melange, "/api/orders", KITCHEN_ORDER)
    melange.client.post(f"/api/orders/{order_id}/cancel")
    assert melange.advance(order_id, "cooking")["status"] == "cooking"


def test_unknown_order_and_bad_body(melange: Simulator) -> None:
    assert melange.client.post("/api/orders/nope/cancel").status_code == 404
    order_id = create(melange, "/api/orders", KITCHEN_ORDER)
    bad = melange.client.post(
        f"/api/orders/{order_id}/cancel", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert bad.status_code == 400
    assert melange.client.get(f"/api/orders/{order_id}/cancel").status_code == 405
    assert melange.client.get(f"/api/orders/{order_id}").json()["status"] != "cancelled"


@pytest.mark.parametrize(
    ("fault", "status"), [({"error_rate": 1}, 500), ({"down": True}, 503), ({"garbage_rate": 1}, 200)]
)
def test_faults_apply_to_cancel(melange: Simulator, fault: dict, status: int) -> None:
    order_id = create(melange, "/api/orders", KITCHEN_ORDER)
    melange.configure(**fault)
    response = melange.client.post(f"/api/orders/{order_id}/cancel")
    assert response.status_code == status
    assert "cancelled" not in response.text
    melange.configure(error_rate=0, down=False, garbage_rate=0)
    assert melange.client.get(f"/api/orders/{order_id}").json()["status"] != "cancelled"


def test_a_timed_out_cancel_still_happens(melange: Simulator) -> None:
    melange.configure(step_seconds=60)
    order_id = create(melange, "/api/orders", KITCHEN_ORDER)
    melange.configure(timeout_rate=1, timeout_seconds=0.5)
    with pytest.raises(httpx.ReadTimeout):
        melange.client.post(f"/api/orders/{order_id}/cancel", timeout=0.2)
    melange.configure(timeout_rate=0)
    wait_until(lambda: melange.client.get(f"/api/orders/{order_id}").json()["status"] == "cancelled")


def test_auth_applies_to_cancel(launch) -> None:
    melange = launch("melange", SIM_API_KEY="secret")
    headers = {"Authorization": "Bearer secret"}
    order_id = melange.client.post("/api/orders", json=KITCHEN_ORDER, headers=headers).json()["id"]
    assert melange.client.post(f"/api/orders/{order_id}/cancel").status_code == 401
    assert melange.client.post(f"/api/orders/{order_id}/cancel", headers=headers).status_code == 200


def test_bueno_sends_a_signed_webhook_for_the_cancellation(
    bueno: Simulator, webhook_receiver: WebhookReceiver
) -> None:
    bueno.configure(step_seconds=0.3)
    order_id = create(bueno, "/", BUENO_ORDER)
    assert bueno.client.post(f"/{order_id}/cancel").json()["status"] == "cancelled"
    deliveries = wait_until(
        lambda: (
            (found := webhook_receiver.deliveries_for(order_id))
            and found[-1].payload["status"] == "cancelled"
            and found
        )
    )
    time.sleep(1.0)  # three steps: nothing follows the cancellation
    statuses = [delivery.payload["status"] for delivery in webhook_receiver.deliveries_for(order_id)]
    assert statuses == [delivery.payload["status"] for delivery in deliveries]
    assert statuses.count("cancelled") == 1 and statuses[-1] == "cancelled"
    assert set(statuses) <= {"preparing", "cancelled"}
    assert deliveries[-1].headers["X-Bueno-Signature"].startswith("sha256=")
