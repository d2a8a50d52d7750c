"""The operators' REST API of webhook endpoints."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from orders.models import OrderEvent
from orders.tests import factories
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db

BASE = "/api/webhook-endpoints/"


@pytest.fixture
def ops(client_for, operator):
    return client_for(operator)


@pytest.fixture(autouse=True)
def no_queue(monkeypatch) -> None:
    monkeypatch.setattr(services, "_enqueue_lanes", lambda lanes, countdown=None: None)


def subscribed_earlier(endpoint: WebhookEndpoint) -> None:
    """As if it had been created before the test's order was placed."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(created_at=timezone.now() - timedelta(hours=1))


def test_creating_an_endpoint_shows_its_secret_once(ops, receiver):
    response = ops.post(BASE, {"url": receiver.url("/ok"), "events": ["order.status"]}, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["secret"].startswith("whsec_") and created["events"] == ["order.status"]
    assert created["active"] is True
    assert WebhookEndpoint.objects.get().secret == created["secret"]

    for answer in (ops.get(BASE).json()["results"][0], ops.get(f"{BASE}{created['id']}/").json()):
        assert "secret" not in answer and answer["url"] == receiver.url("/ok")


def test_every_event_is_star_and_events_are_validated(ops, receiver):
    response = ops.post(BASE, {"url": receiver.url("/ok"), "events": ["order.status", "*"]}, format="json")
    assert response.json()["events"] == ["*"]
    for events in ([], ["order.exploded"], "order.status", None):
        response = ops.post(BASE, {"url": receiver.url("/ok"), "events": events}, format="json")
        assert response.status_code == 400, events
        assert "events" in response.json()
    assert WebhookEndpoint.objects.count() == 1


def test_bad_urls_are_refused(ops, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    for url in ("ftp://partner.example.com/", "not a url", "http://127.0.0.1:9/hook", "http://[::1]/"):
        response = ops.post(BASE, {"url": url, "events": ["*"]}, format="json")
        assert response.status_code == 400, (url, response.content)
        assert "url" in response.json()
    settings.WEBHOOKS_REQUIRE_HTTPS = True
    response = ops.post(BASE, {"url": "http://93.184.216.34/hook", "events": ["*"]}, format="json")
    assert response.status_code == 400 and "https" in str(response.json()["url"])
    assert not WebhookEndpoint.objects.exists()


def test_only_operators_manage_endpoints(client_for, customer, api, receiver):
    endpoint = services.endpoint_create(url=receiver.url("/ok"), events=["*"])
    for client, expected in ((client_for(customer), 403), (api, 401)):
        assert client.get(BASE).status_code == expected
        assert (
            client.post(BASE, {"url": receiver.url("/x"), "events": ["*"]}, format="json").status_code
            == expected
        )
        assert client.patch(f"{BASE}{endpoint.pk}/", {"active": False}, format="json").status_code == expected
        assert client.delete(f"{BASE}{endpoint.pk}/").status_code == expected
        assert client.get(f"{BASE}{endpoint.pk}/deliveries/").status_code == expected
        assert client.post(f"{BASE}{endpoint.pk}/test/").status_code == expected
    assert WebhookEndpoint.objects.get().active


def test_patch_turns_a_disabled_endpoint_on_again_and_delete_removes_it(ops, receiver):
    endpoint = services.endpoint_create(url=receiver.url("/ok"), events=["*"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=False, disabled_reason="failing")
    response = ops.patch(f"{BASE}{endpoint.pk}/", {"active": True, "description": "POS"}, format="json")
    assert response.status_code == 200
    assert response.json()["active"] and response.json()["disabled_reason"] == ""
    assert ops.put(f"{BASE}{endpoint.pk}/", {}, format="json").status_code == 405
    assert ops.delete(f"{BASE}{endpoint.pk}/").status_code == 204
    assert ops.get(f"{BASE}{endpoint.pk}/").status_code == 404


def test_the_delivery_log_lists_attempts_and_redelivers(
    ops, receiver, restaurants, customer, django_capture_on_commit_callbacks
):
    endpoint = services.endpoint_create(url=receiver.url("/flaky"), events=["order.created"])
    subscribed_earlier(endpoint)
    order = factories.make_order(customer, *restaurants.values())
    services.deliveries_for_released(list(OrderEvent.objects.order_by("seq")))
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)  # 500: waits for a retry

    page = ops.get(f"{BASE}{endpoint.pk}/deliveries/").json()
    (delivery,) = page["results"]
    assert delivery["status"] == "pending" and delivery["order"] == order.pk
    assert delivery["type"] == "order.created" and delivery["next_retry_at"] is not None
    (attempt,) = delivery["attempts"]
    assert attempt["status_code"] == 500 and attempt["error"] == "HTTP 500: not now"
    assert attempt["duration_ms"] >= 0 and attempt["next_retry_at"] == delivery["next_retry_at"]

    response = ops.post(f"{BASE}{endpoint.pk}/deliveries/{delivery['id']}/redeliver/")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=order.pk)
    delivery = ops.get(f"{BASE}{endpoint.pk}/deliveries/?status=delivered").json()["results"][0]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 200]
    assert ops.get(f"{BASE}{endpoint.pk}/deliveries/?status=pending").json()["results"] == []
    assert ops.get(f"{BASE}{endpoint.pk}/deliveries/?status=bogus").status_code == 400

    other = services.endpoint_create(url=receiver.url("/ok"), events=["*"])
    missing = f"{BASE}{other.pk}/deliveries/{delivery['id']}/redeliver/"
    assert ops.post(missing).status_code == 404, "a delivery is found under its own endpoint only"
    assert ops.post(f"{BASE}{endpoint.pk}/deliveries/not-a-uuid/redeliver/").status_code == 404


def test_redelivery_to_a_disabled_endpoint_is_a_conflict(ops, receiver, restaurants, customer):
    endpoint = services.endpoint_create(url=receiver.url("/ok"), events=["order.created"])
    subscribed_earlier(endpoint)
    factories.make_order(customer, *restaurants.values())
    services.deliveries_for_released(list(OrderEvent.objects.order_by("seq")))
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(active=False)
    delivery = WebhookDelivery.objects.get()
    response = ops.post(f"{BASE}{endpoint.pk}/deliveries/{delivery.pk}/redeliver/")
    assert response.status_code == 409 and response.json()["code"] == "webhook_conflict"


def test_send_test_event(ops, receiver):
    endpoint = services.endpoint_create(url=receiver.url("/ok"), events=["*"])
    response = ops.post(f"{BASE}{endpoint.pk}/test/")
    assert response.status_code == 202
    assert response.json()["type"] == "webhook.test" and response.json()["status"] == "pending"
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=None)
    assert ops.get(f"{BASE}{endpoint.pk}/deliveries/").json()["results"][0]["status"] == "delivered"
    assert ops.post(f"{BASE}999999/test/").status_code == 404


def test_the_schema_documents_the_endpoints(tmp_path):
    path = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(path), "--validate", "--fail-on-warn")
    schema = path.read_text()
    for operation in ("/api/webhook-endpoints/", "/deliveries/", "/redeliver/", "/test/"):
        assert operation in schema
