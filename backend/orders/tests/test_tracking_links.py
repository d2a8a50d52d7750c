"""Shareable tracking links: the REST endpoints that make and revoke them, and the page and JSON a link opens
without signing in (orders.services.tracking_link_create, realtime.views)."""

from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from orders import selectors, services
from orders.models import Leg, Order, OrderEvent, TrackingLink
from orders.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(customer, restaurants, courier):
    order = factories.make_order(customer, restaurants["melange"])
    # Internals a link holder must never see: a provider's sub-order id, its error, a staff note.
    Leg.objects.filter(order=order).update(external_id="MEL-SECRET-42", last_error="Melange said: boom 500")
    Order.objects.filter(pk=order.pk).update(courier=courier, failure_reason="internal failure text")
    return order


@pytest.fixture
def courier(db):
    return factories.make_courier("vasyl")


def share(client, order_id: int) -> dict:
    response = client.post(f"/api/orders/{order_id}/share/")
    assert response.status_code == 201, response.content
    return response.json()


def token_of(url: str) -> str:
    return url.removeprefix("/t/").removesuffix("/")


class TestCreate:
    def test_customer_gets_a_link_that_expires_after_the_ttl(self, client_for, customer, order):
        before = timezone.now()
        body = share(client_for(customer), order.pk)
        assert set(body) == {"url", "expires_at"}
        assert body["url"].startswith("/t/") and body["url"].endswith("/")
        ttl = timedelta(hours=settings.TRACKING_LINK_TTL_HOURS)
        assert before + ttl <= datetime.fromisoformat(body["expires_at"]) <= timezone.now() + ttl
        token = token_of(body["url"])
        assert len(token) >= 32
        link = TrackingLink.objects.get()
        assert (link.order_id, link.created_by_id, link.revoked_at) == (order.pk, customer.pk, None)
        assert link.token_hash != token and token not in link.token_hash  # only the hash is stored
        assert selectors.tracking_link_order(token) == order

    def test_operator_may_share_any_order(self, client_for, operator, order):
        body = share(client_for(operator), order.pk)
        assert selectors.tracking_link_order(token_of(body["url"])) == order

    def test_each_link_is_new(self, client_for, customer, order):
        client = client_for(customer)
        assert share(client, order.pk)["url"] != share(client, order.pk)["url"]

    def test_someone_elses_order_is_404(self, client_for, other_customer, order):
        assert client_for(other_customer).post(f"/api/orders/{order.pk}/share/").status_code == 404
        assert client_for(other_customer).delete(f"/api/orders/{order.pk}/share/").status_code == 404
        assert not TrackingLink.objects.exists()

    def test_the_courier_of_the_order_may_not_share_it(self, client_for, courier, order):
        assert client_for(courier.user).post(f"/api/orders/{order.pk}/share/").status_code == 404

    def test_anonymous_is_401(self, api, order):
        assert api.post(f"/api/orders/{order.pk}/share/").status_code == 401
        assert api.delete(f"/api/orders/{order.pk}/share/").status_code == 401

    def test_over_the_rate_is_429(self, client_for, customer, order, settings):
        settings.THROTTLE_SHARE_PER_USER = "2/minute"
        client = client_for(customer)
        statuses = [client.post(f"/api/orders/{order.pk}/share/").status_code for _ in range(3)]
        assert statuses == [201, 201, 429]

    def test_the_service_refuses_a_stranger(self, other_customer, order):
        with pytest.raises(services.PermissionDenied):
            services.tracking_link_create(order_id=order.pk, actor=other_customer)


class TestRevoke:
    def test_delete_revokes_every_link_and_announces_after_commit(
        self, client_for, customer, order, django_capture_on_commit_callbacks
    ):
        client = client_for(customer)
        tokens = [token_of(share(client, order.pk)["url"]) for _ in range(2)]
        announced = []

        def receiver(sender, *, order_id, **kwargs):
            announced.append(order_id)

        from orders import signals

        signals.tracking_revoked.connect(receiver)
        try:
            with django_capture_on_commit_callbacks(execute=True):
                assert client.delete(f"/api/orders/{order.pk}/share/").status_code == 204
        finally:
            signals.tracking_revoked.disconnect(receiver)
        assert announced == [order.pk]
        assert all(selectors.tracking_link_order(token) is None for token in tokens)
        assert TrackingLink.objects.filter(revoked_at__isnull=True).count() == 0
        for token in tokens:
            response = Client().get(f"/t/{token}/")
            assert response.status_code == 404

    def test_operator_may_revoke(self, client_for, customer, operator, order):
        token = token_of(share(client_for(customer), order.pk)["url"])
        assert client_for(operator).delete(f"/api/orders/{order.pk}/share/").status_code == 204
        assert selectors.tracking_link_order(token) is None


class TestSharedPage:
    def test_anonymous_sees_the_order_and_its_socket(self, client_for, customer, order):
        token = token_of(share(client_for(customer), order.pk)["url"])
        response = Client().get(f"/t/{token}/")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        page = response.content.decode()
        assert f"/ws/track/{token}/" in page and f"/t/{token}/order.json" in page
        assert response.context["order"] == order and response.context["config"]["orderId"] == order.pk
        # No internals and nothing of the customer's account or their other orders.
        for secret in ("MEL-SECRET-42", "boom 500", "internal failure text", "alice", "/ws/orders/"):
            assert secret not in page
        assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]

    def test_json_is_the_public_shape_with_public_events(self, client_for, customer, operator, order):
        services.order_override_status(
            order_id=order.pk, actor=operator, to_status="cooking", reason="staff note: kitchen phoned"
        )
        token = token_of(share(client_for(customer), order.pk)["url"])
        response = Client().get(f"/t/{token}/order.json")
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == order.pk and body["status"] == "cooking"
        assert "legs" not in body and "alerts" not in body and "failure_reason" not in body
        assert body["courier"]["name"] == "Vasyl" and "phone" in body["courier"]  # the customer may call
        assert "customer" not in body and "phone" not in body  # the customer's own contact stays off the link
        assert all(set(event) == {"seq", "type", "from", "to", "reason", "at"} for event in body["events"])
        assert all(event["type"] in {t.value for t in OrderEvent.Type} for event in body["events"])
        text = response.content.decode()
        for secret in ("MEL-SECRET-42", "boom 500", "internal failure text", "olena", "staff note"):
            assert secret not in text

    def test_a_link_shows_only_its_own_order(self, client_for, customer, restaurants, order):
        other = factories.make_order(customer, restaurants["bueno"])
        token = token_of(share(client_for(customer), order.pk)["url"])
        assert Client().get(f"/t/{token}/order.json").json()["id"] == order.pk
        assert Client().get(f"/t/{token}/").context["config"]["orderId"] == order.pk
        # The link is no session: the customer's orders stay closed to its holder.
        anonymous = Client()
        anonymous.get(f"/t/{token}/")
        assert anonymous.get(f"/api/orders/{other.pk}/").status_code == 401
        assert anonymous.get(f"/orders/{other.pk}/track/").status_code == 302  # to the login page

    def test_expired_link_is_the_friendly_404(self, client_for, customer, order):
        token = token_of(share(client_for(customer), order.pk)["url"])
        TrackingLink.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
        assert selectors.tracking_link_order(token) is None
        response = Client().get(f"/t/{token}/")
        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")
        assert [t.name for t in response.templates][0] == "track_link_gone.html"
        assert Client().get(f"/t/{token}/order.json").status_code == 404

    def test_a_short_ttl_setting_applies(self, client_for, customer, order, settings):
        settings.TRACKING_LINK_TTL_HOURS = 0.5
        body = share(client_for(customer), order.pk)
        remaining = datetime.fromisoformat(body["expires_at"]) - timezone.now()
        assert timedelta(minutes=29) < remaining <= timedelta(minutes=30)

    @pytest.mark.parametrize("token", ["nope", "x" * 32])
    def test_unknown_link_is_the_friendly_404_even_with_debug(self, token, settings):
        settings.DEBUG = True
        response = Client().get(f"/t/{token}/")
        assert response.status_code == 404
        assert response["Content-Type"].startswith("text/html")
        assert b"Page not found" not in response.content and b"URLconf" not in response.content
        assert b'data-testid="link-gone"' in response.content

    def test_the_404_page_speaks_ukrainian(self):
        english = Client(headers={"accept-language": "en"}).get("/t/nope/")
        ukrainian = Client(headers={"accept-language": "uk"}).get("/t/nope/")
        assert ukrainian.status_code == 404 and 'lang="uk"' in ukrainian.content.decode()

        def heading(response) -> str:
            return response.content.decode().split('id="notice-title">')[1].split("<")[0]

        assert heading(ukrainian) != heading(english)
