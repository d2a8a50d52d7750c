"""Melange's contract, plus the behaviour every simulator shares (checked once, here)."""

import asyncio
import http.client
import time
from datetime import datetime

import httpx
import pytest

from simulators.tests.conftest import Simulator, wait_until

STATUSES = ["not started", "cooking", "cooked", "finished"]
ORDER = {"order": [{"dish": "borscht", "quantity": 2}, {"dish": "varenyky", "quantity": 1}]}


def create(melange: Simulator, body: object = ORDER, **headers: str) -> httpx.Response:
    return melange.client.post("/api/orders", json=body, headers=headers)


def test_create_then_get_progresses_to_finished(melange: Simulator) -> None:
    created = create(melange)
    assert created.status_code == 201
    order_id = created.json()["id"]
    assert created.json() == {"id": order_id, "status": "not started"}

    seen = []

    def finished() -> bool:
        body = melange.client.get(f"/api/orders/{order_id}").json()
        if body["status"] not in seen:
            seen.append(body["status"])
        return body["status"] == "finished"

    wait_until(finished)
    assert seen == sorted(seen, key=STATUSES.index)
    assert seen[-1] == "finished"
    body = melange.client.get(f"/api/orders/{order_id}").json()
    assert body["order"] == ORDER["order"]
    assert datetime.fromisoformat(body["updated_at"]).utcoffset().total_seconds() == 0


def test_unknown_order_is_404_json(melange: Simulator) -> None:
    response = melange.client.get("/api/orders/nope")
    assert response.status_code == 404
    assert "error" in response.json()


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"order": []},
        {"order": "borscht"},
        {"order": ["borscht"]},
        {"order": [{"dish": "", "quantity": 1}]},
        {"order": [{"dish": 5, "quantity": 1}]},
        {"order": [{"dish": "borscht"}]},
        {"order": [{"dish": "borscht", "quantity": 0}]},
        {"order": [{"dish": "borscht", "quantity": 51}]},
        {"order": [{"dish": "borscht", "quantity": "2"}]},
        {"order": [{"dish": "borscht", "quantity": True}]},
        [ORDER],
    ],
)
def test_bad_create_bodies_are_400(melange: Simulator, body: object) -> None:
    response = create(melange, body)
    assert response.status_code == 400
    assert response.json()["error"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"\xff\xfe", b"[" * 100_000])
def test_malformed_json_is_400(melange: Simulator, raw: bytes) -> None:
    response = melange.client.post("/api/orders", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]


def test_bodies_over_a_megabyte_are_413_json(melange: Simulator) -> None:
    raw = b'{"order": "' + b"x" * 1_000_001 + b'"}'
    declared = melange.client.post("/api/orders", content=raw, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413
    assert declared.json()["error"]
    chunked = melange.client.post("/api/orders", content=iter([raw[:500_000], raw[500_000:]]))
    assert chunked.status_code == 413
    assert chunked.json()["error"]
    assert melange.stats()["creates"] == 0


def test_unknown_path_is_404_and_wrong_method_405(melange: Simulator) -> None:
    assert melange.client.get("/nowhere").status_code == 404
    assert melange.client.get("/_sim/nowhere").status_code == 404
    wrong = melange.client.delete("/api/orders")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST"
    assert wrong.json()["error"]
    assert melange.client.put("/api/orders/x", json={}).status_code == 405
    assert melange.client.get("/_sim/reset").status_code == 405


def test_idempotency_key_returns_the_same_order(melange: Simulator) -> None:
    first = create(melange, **{"Idempotency-Key": "order-42-kitchen"})
    again = create(melange, **{"Idempotency-Key": "order-42-kitchen"})
    other = create(melange, **{"Idempotency-Key": "order-43-kitchen"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    stats = melange.stats()
    assert stats["creates"] == 2
    assert stats["idempotent_replays"] == 1


def test_idempotency_key_with_a_different_body_is_409(melange: Simulator) -> None:
    create(melange, **{"Idempotency-Key": "k1"})
    changed = create(melange, {"order": [{"dish": "kvass", "quantity": 1}]}, **{"Idempotency-Key": "k1"})
    assert changed.status_code == 409


def test_stats_count_gets_by_id(melange: Simulator) -> None:
    first = create(melange).json()["id"]
    second = create(melange).json()["id"]
    for _ in range(3):
        melange.client.get(f"/api/orders/{first}")
    melange.client.get(f"/api/orders/{second}")
    stats = melange.stats()
    assert stats["creates"] == 2
    assert stats["gets"] == 4
    assert stats["gets_by_id"] == {first: 3, second: 1}
    melange.admin("POST", "reset")
    assert melange.stats()["gets_by_id"] == {}
    assert melange.client.get(f"/api/orders/{first}").status_code == 404


def test_advance_forces_a_status(melange: Simulator) -> None:
    melange.configure(step_seconds=60)
    order_id = create(melange).json()["id"]
    assert melange.advance(order_id, "cooked")["status"] == "cooked"
    assert melange.client.get(f"/api/orders/{order_id}").json()["status"] == "cooked"
    bad = melange.client.post("/_sim/advance", json={"id": order_id, "status": "burnt"})
    assert bad.status_code == 400
    missing = melange.client.post("/_sim/advance", json={"id": "nope", "status": "cooked"})
    assert missing.status_code == 404


def test_a_longer_step_does_not_move_orders_back(melange: Simulator) -> None:
    order_id = create(melange).json()["id"]
    wait_until(lambda: melange.client.get(f"/api/orders/{order_id}").json()["status"] == "cooked")
    melange.configure(step_seconds=60)
    assert melange.client.get(f"/api/orders/{order_id}").json()["status"] in {"cooked", "finished"}


def test_keep_alive_reuses_the_connection(melange: Simulator) -> None:
    connection = http.client.HTTPConnection(melange.client.base_url.host, melange.client.base_url.port)
    try:
        connection.request("GET", "/api/orders/missing")
        first = connection.getresponse()
        first.read()
        socket_after_first = connection.sock
        connection.request("POST", "/api/orders", body=b"{broken")
        second = connection.getresponse()
        second.read()
        assert (first.status, second.status) == (404, 400)
        assert socket_after_first is not None
        assert connection.sock is socket_after_first
    finally:
        connection.close()


def test_serves_hundreds_of_concurrent_requests(melange: Simulator) -> None:
    order_id = create(melange).json()["id"]
    melange.configure(latency_ms=300)
    count = 250

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(base_url=melange.url, limits=limits, timeout=20) as client:
            responses = await asyncio.gather(*(client.get(f"/api/orders/{order_id}") for _ in range(count)))
        return [response.status_code for response in responses]

    started = time.monotonic()
    statuses = asyncio.run(fire())
    elapsed = time.monotonic() - started
    assert statuses == [200] * count
    assert elapsed < 10, f"{count} requests of 300 ms took {elapsed:.1f}s: not concurrent"
    assert melange.stats()["gets_by_id"] == {order_id: count}
