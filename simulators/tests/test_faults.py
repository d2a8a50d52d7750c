"""Fault modes and runtime config, observed over HTTP (on Melange; the code is shared)."""

import json
import time

import httpx
import pytest

from simulators.tests.conftest import Simulator

ORDER = {"order": [{"dish": "borscht", "quantity": 1}]}
CONTRACT_STATUSES = {"not started", "cooking", "cooked", "finished"}


def create_order(melange: Simulator) -> str:
    response = melange.client.post("/api/orders", json=ORDER)
    assert response.status_code == 201
    return response.json()["id"]


def test_error_rate_answers_500_json(melange: Simulator) -> None:
    melange.configure(error_rate=1)
    response = melange.client.get("/api/orders/anything")
    assert response.status_code == 500
    assert response.json()["error"]
    assert melange.stats()["faults"] == {"error": 1}


def test_garbage_rate_answers_200_that_is_not_json(melange: Simulator) -> None:
    order_id = create_order(melange)
    melange.configure(garbage_rate=1)
    response = melange.client.get(f"/api/orders/{order_id}")
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_unknown_status_rate_reports_a_status_outside_the_contract(melange: Simulator) -> None:
    order_id = create_order(melange)
    melange.configure(unknown_status_rate=1)
    body = melange.client.get(f"/api/orders/{order_id}").json()
    assert body["status"] not in CONTRACT_STATUSES
    assert body["id"] == order_id


def test_backwards_rate_reports_the_previous_status(melange: Simulator) -> None:
    melange.configure(step_seconds=60, backwards_rate=1)
    order_id = create_order(melange)
    # Nothing before the first status: it is reported as is.
    assert melange.client.get(f"/api/orders/{order_id}").json()["status"] == "not started"
    melange.advance(order_id, "cooked")
    assert melange.client.get(f"/api/orders/{order_id}").json()["status"] == "cooking"
    melange.configure(backwards_rate=0)
    assert melange.client.get(f"/api/orders/{order_id}").json()["status"] == "cooked"


def test_down_answers_503_but_admin_endpoints_still_work(melange: Simulator) -> None:
    config = melange.configure(down=True, error_rate=1, latency_ms=2000)
    assert config["down"] is True
    started = time.monotonic()
    assert melange.client.get("/_sim/health").json() == {"ok": True, "provider": "melange"}
    assert time.monotonic() - started < 1.5
    melange.configure(latency_ms=0)
    response = melange.client.post("/api/orders", json=ORDER)
    assert response.status_code == 503
    assert response.json()["error"]
    melange.configure(down=False, error_rate=0)
    assert melange.client.post("/api/orders", json=ORDER).status_code == 201


def test_latency_delays_each_answer(melange: Simulator) -> None:
    melange.configure(latency_ms=250)
    started = time.monotonic()
    response = melange.client.get("/api/orders/missing")
    assert response.status_code == 404
    assert time.monotonic() - started >= 0.25


def test_timeout_hangs_longer_than_a_client_waits(melange: Simulator) -> None:
    melange.configure(timeout_rate=1, timeout_seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        melange.client.get("/api/orders/missing", timeout=0.3)


def test_timeout_answers_after_timeout_seconds(melange: Simulator) -> None:
    melange.configure(timeout_rate=1, timeout_seconds=0.3)
    started = time.monotonic()
    response = melange.client.post("/api/orders", json=ORDER)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 201
    assert melange.stats()["faults"] == {"timeout": 1}


def test_config_merges_partial_updates_and_reports_everything(melange: Simulator) -> None:
    before = melange.admin("GET", "config")
    after = melange.configure(error_rate=0.25)
    assert after == {**before, "error_rate": 0.25}
    assert melange.configure(latency_ms="15") == {**after, "latency_ms": 15.0}
    assert melange.admin("GET", "config") == {**after, "latency_ms": 15.0}


@pytest.mark.parametrize(
    "update",
    [
        {"error_rate": 1.5},
        {"error_rate": "lots"},
        {"latency_ms": -1},
        {"step_seconds": 0},
        {"down": "maybe"},
        {"down": 1},
        {"no_such_setting": 1},
        {"webhook_out_of_order": True},  # Bueno only
    ],
)
def test_bad_config_is_400_and_changes_nothing(melange: Simulator, update: dict) -> None:
    before = melange.admin("GET", "config")
    response = melange.client.post("/_sim/config", json=update)
    assert response.status_code == 400
    assert response.json()["error"]
    assert melange.admin("GET", "config") == before
