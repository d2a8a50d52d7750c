"""A partner's receiver follows an order's whole life through webhooks: the real relay, Celery worker and
beat as processes, the provider simulators over HTTP, a receiver over HTTP."""

import time

import httpx
import pytest

from orders.models import Order, OrderEvent
from orders.tests import factories
from webhooks.models import WebhookDelivery

pytestmark = pytest.mark.slow


@pytest.fixture
def fast_retries(monkeypatch) -> None:
    """Read by the worker the pipeline starts: retry a failed delivery within a second."""
    monkeypatch.setenv("WEBHOOK_BACKOFF_SECONDS", "0.3")
    monkeypatch.setenv("WEBHOOKS_ALLOW_PRIVATE", "true")


def test_every_event_of_an_order_reaches_the_receiver_once_in_order_and_signed(
    fast_retries, worker_and_beat, live_server, restaurants, receiver
):
    operator = factories.make_user("dispatcher", is_staff=True)
    ops = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {factories.token_for(operator)}"}
    )
    endpoints = {}
    for path in ("/ok", "/flaky"):
        response = ops.post("/api/webhook-endpoints/", json={"url": receiver.url(path), "events": ["*"]})
        assert response.status_code == 201, response.text
        endpoints[path] = response.json()

    customer = factories.make_user("alice")
    shop = httpx.Client(
        base_url=live_server.url, headers={"Authorization": f"Token {factories.token_for(customer)}"}
    )
    items = [{"dish": factories.dish(restaurant).pk, "quantity": 1} for restaurant in restaurants.values()]
    response = shop.post("/api/orders/", json={"items": items, "delivery_address": "Sahaidachnoho St, 10"})
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]

    deadline = time.monotonic() + 120
    while True:
        done = Order.objects.filter(pk=order_id, status="delivered").exists()
        events = OrderEvent.objects.filter(order_id=order_id).count()
        delivered = WebhookDelivery.objects.filter(order_id=order_id, status="delivered").count()
        if done and delivered == 2 * events:
            break
        assert time.monotonic() < deadline, (
            f"order delivered: {done}; {delivered} of {2 * events} webhook deliveries done\n"
            + worker_and_beat["worker"].read_text()[-3000:]
        )
        time.sleep(0.3)

    seqs = list(OrderEvent.objects.filter(order_id=order_id).order_by("seq").values_list("seq", flat=True))
    types = set(OrderEvent.objects.filter(order_id=order_id).values_list("type", flat=True))
    assert {"order.created", "order.status", "leg.status"} <= types

    ok = receiver.at("/ok")
    assert all(request.signed_by(endpoints["/ok"]["secret"]) for request in ok)
    bodies = [request.json for request in ok]
    assert [body["seq"] for body in bodies] == seqs, "every event, once, in seq order"
    assert len({body["id"] for body in bodies}) == len(bodies)
    assert all(body["data"]["order"]["id"] == order_id for body in bodies)
    assert bodies[-1]["data"]["order"]["status"] == "delivered"
    assert {body["type"] for body in bodies} == types

    # /flaky answered 500 to each delivery's first try: each id arrives twice, and the lane waited for it
    flaky = receiver.at("/flaky")
    assert all(request.signed_by(endpoints["/flaky"]["secret"]) for request in flaky)
    ids = [request.json["id"] for request in flaky]
    assert len(ids) == 2 * len(seqs) and all(ids.count(delivery_id) == 2 for delivery_id in ids)
    assert [request.json["seq"] for request in flaky] == [seq for seq in seqs for _ in (1, 2)]
    assert not any(request.signed_by(endpoints["/ok"]["secret"]) for request in flaky)

    log = ops.get(f"/api/webhook-endpoints/{endpoints['/flaky']['id']}/deliveries/?page_size=200").json()
    assert {tuple(a["status_code"] for a in d["attempts"]) for d in log["results"]} == {(500, 200)}
