"""Bueno: pull API and signed webhooks, received by a small server in the test."""

import hashlib
import hmac
from datetime import datetime

import pytest

from simulators.tests.conftest import WEBHOOK_SECRET, Delivery, Simulator, WebhookReceiver, wait_until

STATUSES = ["accepted", "preparing", "ready", "handed_over"]
ORDER = {"items": [{"name": "taco", "qty": 3}], "reference": "ord-1001"}


def create(bueno: Simulator, body: object = ORDER) -> str:
    response = bueno.client.post("/", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "accepted"
    return response.json()["id"]


def signature_is_valid(delivery: Delivery) -> bool:
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), delivery.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(delivery.headers["X-Bueno-Signature"], expected)


def wait_for_deliveries(receiver: WebhookReceiver, order_id: str, count: int) -> list[Delivery]:
    return wait_until(lambda: (found := receiver.deliveries_for(order_id)) and len(found) >= count and found)


def test_create_then_get_progresses_to_handed_over(bueno: Simulator) -> None:
    order_id = create(bueno)
    body = wait_until(
        lambda: (found := bueno.client.get(f"/{order_id}").json())["status"] == "handed_over" and found
    )
    assert body["items"] == ORDER["items"]
    assert body["reference"] == "ord-1001"
    assert body["updated_at"].endswith("Z")


@pytest.mark.parametrize(
    "body",
    [
        {"items": []},
        {"items": [{"name": "taco"}]},
        {"items": [{"name": "taco", "qty": 0}]},
        {"items": [{"name": "", "qty": 1}]},
        {"items": [{"name": "taco", "qty": 1}], "reference": 12},
    ],
)
def test_bad_create_bodies_are_400(bueno: Simulator, body: dict) -> None:
    assert bueno.client.post("/", json=body).status_code == 400


def test_paths(bueno: Simulator) -> None:
    assert bueno.client.get("/").status_code == 405
    assert bueno.client.get("/nope").status_code == 404
    assert bueno.client.get("/a/b").status_code == 404


def test_idempotency_key(bueno: Simulator) -> None:
    headers = {"Idempotency-Key": "kitchen-leg-7"}
    first = bueno.client.post("/", json=ORDER, headers=headers)
    second = bueno.client.post("/", json=ORDER, headers=headers)
    assert second.json()["id"] == first.json()["id"]
    assert bueno.stats()["creates"] == 1


def test_every_change_is_posted_with_a_valid_signature(
    bueno: Simulator, webhook_receiver: WebhookReceiver
) -> None:
    order_id = create(bueno)
    deliveries = wait_for_deliveries(webhook_receiver, order_id, 3)
    payloads = [delivery.payload for delivery in deliveries]
    assert [payload["status"] for payload in payloads] == ["preparing", "ready", "handed_over"]
    assert all(signature_is_valid(delivery) for delivery in deliveries)
    assert all(set(payload) == {"id", "status", "at", "event_id"} for payload in payloads)
    assert len({payload["event_id"] for payload in payloads}) == 3
    moments = [datetime.fromisoformat(payload["at"]) for payload in payloads]
    assert moments == sorted(moments)
    assert all(moment.utcoffset().total_seconds() == 0 for moment in moments)
    assert wait_until(lambda: bueno.stats()["webhooks_sent"] == 3)


def test_forced_change_is_posted(bueno: Simulator, webhook_receiver: WebhookReceiver) -> None:
    bueno.configure(step_seconds=60)
    order_id = create(bueno)
    bueno.advance(order_id, "ready")
    deliveries = wait_for_deliveries(webhook_receiver, order_id, 2)
    assert [delivery.payload["status"] for delivery in deliveries] == ["preparing", "ready"]


def test_duplicate_mode_sends_each_event_twice(bueno: Simulator, webhook_receiver: WebhookReceiver) -> None:
    bueno.configure(webhook_duplicate_rate=1)
    order_id = create(bueno)
    deliveries = wait_for_deliveries(webhook_receiver, order_id, 6)
    statuses = [delivery.payload["status"] for delivery in deliveries]
    assert statuses == ["preparing", "preparing", "ready", "ready", "handed_over", "handed_over"]
    assert deliveries[0].body == deliveries[1].body
    assert all(signature_is_valid(delivery) for delivery in deliveries)


def test_out_of_order_mode_sends_a_change_after_the_next(
    bueno: Simulator, webhook_receiver: WebhookReceiver
) -> None:
    bueno.configure(webhook_out_of_order=True)
    order_id = create(bueno)
    deliveries = wait_for_deliveries(webhook_receiver, order_id, 3)
    assert [delivery.payload["status"] for delivery in deliveries] == ["ready", "preparing", "handed_over"]


def test_bad_signature_mode(bueno: Simulator, webhook_receiver: WebhookReceiver) -> None:
    bueno.configure(webhook_bad_signature_rate=1)
    order_id = create(bueno)
    deliveries = wait_for_deliveries(webhook_receiver, order_id, 3)
    assert deliveries
    assert not any(signature_is_valid(delivery) for delivery in deliveries)


def test_failed_webhooks_are_retried(bueno: Simulator, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.fail_next(2)
    order_id = create(bueno)
    deliveries = wait_for_deliveries(webhook_receiver, order_id, 5)
    assert [delivery.answered for delivery in deliveries] == [500, 500, 200, 200, 200]
    assert len({delivery.payload["event_id"] for delivery in deliveries[:3]}) == 1
    accepted = [delivery.payload["status"] for delivery in deliveries if delivery.answered == 200]
    assert accepted == ["preparing", "ready", "handed_over"]
    assert bueno.stats()["webhooks_failed"] == 0
