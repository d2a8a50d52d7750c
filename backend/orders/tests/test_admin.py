import pytest

from orders import services
from orders.models import Order
from orders.tests import factories

pytestmark = pytest.mark.django_db

PAGES = ["restaurant", "dish", "courier", "order", "leg", "orderevent", "alert"]


@pytest.fixture
def admin_client(client, operator, customer, restaurants):
    operator.is_superuser = True
    operator.save()
    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    services.leg_apply_status(leg_id=order.legs.first().pk, provider_status="not started", source="poll")
    factories.make_courier()
    client.force_login(operator)
    return client


@pytest.mark.parametrize("model", PAGES)
def test_changelists_with_search_and_filters_load(admin_client, model):
    assert admin_client.get(f"/admin/orders/{model}/").status_code == 200
    assert admin_client.get(f"/admin/orders/{model}/?q=1").status_code == 200


def test_order_page_shows_legs_and_history(admin_client):
    order_id = Order.objects.get().pk
    response = admin_client.get(f"/admin/orders/order/{order_id}/change/")
    assert response.status_code == 200
    assert b"order.created" in response.content
    assert b"not started" in response.content


def test_event_history_is_read_only(admin_client):
    event = Order.objects.get().events.first()
    assert admin_client.get("/admin/orders/orderevent/add/").status_code == 403
    assert (
        admin_client.post(f"/admin/orders/orderevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert admin_client.get(f"/admin/orders/orderevent/{event.pk}/change/").status_code == 200  # view only


def test_customers_are_kept_out(client, customer):
    client.force_login(customer)
    assert client.get("/admin/orders/order/").status_code == 302


def test_alerts_are_read_only_in_the_admin(admin_client):
    from orders import alerts
    from orders.models import Alert

    order = Order.objects.get()
    alert = alerts.raise_alert(order=order, kind=Alert.Kind.LATE, detail="Late 5 min", source="system")
    assert b"Late 5 min" in admin_client.get("/admin/orders/alert/").content
    assert admin_client.get("/admin/orders/alert/add/").status_code == 403
    change = admin_client.post(f"/admin/orders/alert/{alert.pk}/change/", {"kind": "stuck", "detail": "x"})
    assert change.status_code == 403
    alert.refresh_from_db()
    assert (alert.kind, alert.detail) == ("late", "Late 5 min")


def test_no_form_changes_a_status_or_a_cancellation(admin_client):
    """Status and cancellation change through the services (cancel, override, retry), never a form."""
    order = Order.objects.get()
    leg = order.legs.first()
    for page in (f"/admin/orders/order/{order.pk}/change/", f"/admin/orders/leg/{leg.pk}/change/"):
        form = admin_client.get(page).content
        for field in (b"status", b"cancel_status", b"legs-0-status", b"legs-0-cancel_status"):
            assert b'name="' + field + b'"' not in form, (page, field)
