"""The whole pipeline with a real Celery worker and beat: an order is delivered by itself."""

import time

import httpx
import pytest

from orders.models import Order
from orders.tests import factories
from orders.tests.pipeline import assert_history_is_clean

pytestmark = pytest.mark.slow


def test_order_created_over_rest_is_delivered_by_worker_and_beat(worker_and_beat, live_server, restaurants):
    customer = factories.make_user("alice")
    customer.email = "alice@example.com"
    customer.save()
    client = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {factories.token_for(customer)}"}
    )
    items = [{"dish": factories.dish(restaurant).pk, "quantity": 1} for restaurant in restaurants.values()]
    started = time.monotonic()
    response = client.post("/api/orders/", json={"items": items, "delivery_address": "Sahaidachnoho St, 10"})
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]

    deadline = time.monotonic() + 90
    while not Order.objects.filter(pk=order_id, status__in=["delivered", "failed", "cancelled"]).exists():
        assert time.monotonic() < deadline, worker_and_beat["worker"].read_text()[-4000:]
        time.sleep(0.2)
    elapsed = time.monotonic() - started

    order = Order.objects.get(pk=order_id)
    assert order.status == "delivered", order.failure_reason
    assert_history_is_clean(order)
    assert order.courier is not None
    body = client.get(f"/api/orders/{order_id}/").json()
    assert [event["to"] for event in body["events"] if event["type"] == "order.status"][-1] == "delivered"
    worker_log = worker_and_beat["worker"].read_text()
    assert "orders.poll_due_legs" in worker_log, "beat ticks reached the worker"
    assert "Emailed alice@example.com" in worker_log
    print(f"order delivered end to end in {elapsed:.1f}s")  # noqa: T201 (a figure for the report)
