"""The server-rendered pages of realtime.views: who may open them."""

import pytest

from orders.tests import factories


@pytest.fixture
def courier(db):
    return factories.make_courier("taras")


def test_courier_page_opens_for_a_courier_with_their_stream(client, courier, settings):
    settings.REALTIME_LOCATION_MIN_INTERVAL_SECONDS = 3
    client.force_login(courier.user)
    response = client.get("/courier/")
    assert response.status_code == 200
    config = response.context["config"]
    assert config["wsPath"] == "/ws/couriers/"
    assert config["courier"] == {"id": courier.pk, "name": courier.name}
    assert config["locationMinIntervalSeconds"] == 3


def test_courier_page_refuses_an_inactive_courier(client, courier):
    courier.is_active = False
    courier.save(update_fields=["is_active"])
    client.force_login(courier.user)
    assert client.get("/courier/").status_code == 403


@pytest.mark.parametrize("who", ["customer", "operator"])
def test_courier_page_refuses_users_without_a_courier_profile(client, request, who):
    client.force_login(request.getfixturevalue(who))
    response = client.get("/courier/")
    assert response.status_code == 403
    assert "config" not in response.context


def test_courier_page_sends_the_anonymous_to_sign_in(client, db):
    response = client.get("/courier/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/courier/"
