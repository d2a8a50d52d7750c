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


# --- the tracking page ---------------------------------------------------------------------------------


@pytest.fixture
def order(customer, restaurants):
    return factories.make_order(customer, restaurants["melange"])


def test_track_page_gives_the_customer_their_actions_and_their_orders(client, customer, restaurants, order):
    older = order
    newer = factories.make_order(customer, restaurants["bueno"])
    someone_elses = factories.make_order(factories.make_user("bob"), restaurants["bueno"])
    client.force_login(customer)
    response = client.get(f"/orders/{older.pk}/track/")
    assert response.status_code == 200
    config = response.context["config"]
    assert config["cancelUrl"] == f"/api/orders/{older.pk}/cancel/"
    assert config["shareUrl"] == f"/api/orders/{older.pk}/share/"
    assert set(config["cancellable"]) == {"scheduled", "submitted"}  # services.order_cancel's rule
    # Every pipeline status belongs to exactly one of the customer's steps.
    assert sorted(sum(config["steps"].values(), [])) == sorted(config["pipeline"])
    listed = [item.pk for item, _words in response.context["recent_orders"]]
    assert listed == [newer.pk, older.pk]  # newest first, only their own
    assert someone_elses.pk not in listed
    html = response.content.decode()
    assert 'data-testid="cancel-order"' in html
    assert f'href="/orders/{newer.pk}/track/"' in html
    assert 'id="map-config"' in html


def test_track_page_offers_no_actions_to_an_operator(client, operator, order):
    client.force_login(operator)
    response = client.get(f"/orders/{order.pk}/track/")
    assert response.status_code == 200
    assert response.context["config"]["cancelUrl"] == ""
    assert not response.context["recent_orders"]
    assert 'data-testid="cancel-order"' not in response.content.decode()


def test_shared_link_page_has_no_customer_actions(client, customer, order):
    client.force_login(customer)
    url = client.post(f"/api/orders/{order.pk}/share/").json()["url"]
    client.logout()
    response = client.get(url)
    assert response.status_code == 200
    assert "cancelUrl" not in response.context["config"]
    assert response.context["recent_orders"] is None
    html = response.content.decode()
    assert 'data-testid="cancel-order"' not in html
    assert 'data-testid="share-link"' not in html
    assert 'data-testid="my-orders"' not in html


@pytest.mark.parametrize("whose", ["unknown", "someone else's"])
def test_track_page_of_an_order_not_theirs_is_the_friendly_404(client, customer, restaurants, order, whose):
    other = factories.make_order(factories.make_user("bob"), restaurants["bueno"])
    order_id = other.pk if whose == "someone else's" else other.pk + 1000
    client.force_login(customer)
    response = client.get(f"/orders/{order_id}/track/")
    assert response.status_code == 404
    assert [template.name for template in response.templates][0] == "track_link_gone.html"
    html = response.content.decode()
    assert 'data-testid="link-gone"' in html
    assert f'href="/orders/{order.pk}/track/"' in html  # back to their own orders


def test_courier_page_has_the_map_configuration(client, courier, settings):
    settings.MAP_TILE_URL = "https://tile.example.org/{z}/{x}/{y}.png"
    client.force_login(courier.user)
    response = client.get("/courier/")
    assert 'id="map-config"' in response.content.decode()
    assert "tile.example.org" in response.content.decode()
