"""Endpoints in the admin: the secret shown once, URLs checked like the API's, the log read-only."""

from datetime import timedelta

import pytest
from django.utils import timezone

from orders.models import OrderEvent
from orders.tests import factories
from webhooks import services
from webhooks.models import WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_queue(monkeypatch) -> None:
    monkeypatch.setattr(services, "_enqueue_lanes", lambda lanes, countdown=None: None)


def test_adding_an_endpoint_shows_its_secret_once(admin_client, receiver):
    response = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"url": receiver.url("/ok"), "description": "POS", "events": ["order.status"], "active": "on"},
        follow=True,
    )
    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["order.status"] and endpoint.created_by is not None
    shown = [str(message) for message in response.context["messages"]]
    assert any(endpoint.secret in message for message in shown)
    page = admin_client.get(f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/").content.decode()
    assert endpoint.secret not in page


def test_the_admin_refuses_private_addresses_when_not_allowed(admin_client, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE = False
    response = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/", {"url": "http://127.0.0.1:9/hook", "events": ["*"]}
    )
    assert response.status_code == 200 and response.context["adminform"].form.errors["url"]
    assert not WebhookEndpoint.objects.exists()


def test_switching_an_endpoint_on_forgets_why_it_was_off(admin_client, receiver):
    endpoint = services.endpoint_create(url=receiver.url("/ok"), events=["*"], active=False)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        disabled_reason="failing", failing_since=timezone.now()
    )
    admin_client.post(
        f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/",
        {"url": endpoint.url, "description": "", "events": ["*"], "active": "on"},
    )
    endpoint.refresh_from_db()
    assert endpoint.active and endpoint.disabled_reason == "" and endpoint.failing_since is None


def test_the_delivery_log_is_read_only_and_redelivers(admin_client, receiver, restaurants, customer):
    endpoint = services.endpoint_create(url=receiver.url("/ok"), events=["order.created"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(created_at=timezone.now() - timedelta(hours=1))
    factories.make_order(customer, *restaurants.values())
    services.deliveries_for_released(list(OrderEvent.objects.order_by("seq")))
    services.deliver_lane(endpoint_id=endpoint.pk, order_id=WebhookDelivery.objects.get().order_id)
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "delivered"

    assert admin_client.get("/admin/webhooks/webhookdelivery/").status_code == 200
    page = admin_client.get(f"/admin/webhooks/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    admin_client.post(
        "/admin/webhooks/webhookdelivery/", {"action": "redeliver", "_selected_action": [str(delivery.pk)]}
    )
    assert WebhookDelivery.objects.get().status == "pending"

    admin_client.post(
        "/admin/webhooks/webhookendpoint/", {"action": "send_test_event", "_selected_action": [endpoint.pk]}
    )
    assert WebhookDelivery.objects.filter(type="webhook.test").count() == 1
