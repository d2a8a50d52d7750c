"""Delivery addresses on the map (orders.geocoding, services.order_geocode, tasks.locate_order): the
Nominatim client against the geocoding simulator over real HTTP, its cache and rate limit, and an order
that gets its point after commit, or says why it has none, without ever being held up."""

import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.celery import app as celery_app
from orders import geocoding, services, tasks
from orders.models import Order, OrderEvent, Restaurant
from orders.providers import DeliveryRequest, get_provider
from orders.tests import factories
from simulators.geo import geocode as simulated_place
from simulators.testing import free_port


def unique(address: str) -> str:
    """An address no earlier test looked up (the cache outlives a test)."""
    return f"{address} {uuid.uuid4().hex[:8]}"


@pytest.fixture
def nominatim(geocoder) -> geocoding.NominatimGeocoder:
    return geocoding.configured_geocoder()


@pytest.fixture
def eager():
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = False


class TestNominatimClient:
    def test_finds_the_place_the_simulator_gives(self, nominatim, geocoder):
        address = unique("Obolonskyi Ave, 10, Kyiv")
        place = nominatim.lookup(address)
        lat, lng = simulated_place(address)
        assert (place.lat, place.lng) == (pytest.approx(lat, abs=1e-6), pytest.approx(lng, abs=1e-6))
        assert place.label.startswith(address)
        assert geocoder.stats()["gets_by_id"] == {address: 1}

    def test_an_unknown_address_is_none_not_an_error(self, nominatim):
        assert nominatim.lookup("Nowhere Lane, 1") is None

    def test_country_codes_reach_the_geocoder(self, nominatim, settings):
        nominatim.country_codes = "pl"
        assert nominatim.lookup(unique("Khreshchatyk St, 1, Kyiv")) is None
        nominatim.country_codes = "pl,ua"
        assert nominatim.lookup(unique("Khreshchatyk St, 1, Kyiv")) is not None

    @pytest.mark.parametrize(
        ("fault", "message"),
        [
            ({"down": True}, "HTTP 503"),
            ({"error_rate": 1}, "HTTP 500"),
            ({"garbage_rate": 1}, "not JSON"),
            ({"latency_ms": 3000}, "no answer from the geocoder within 0.5s"),
        ],
    )
    def test_a_failing_geocoder_is_an_error_to_retry(self, nominatim, geocoder, settings, fault, message):
        settings.GEOCODER_TIMEOUT_SECONDS = 0.5
        geocoder.configure(**fault)
        with pytest.raises(geocoding.GeocoderError, match=message):
            nominatim.lookup(unique("Khreshchatyk St, 2, Kyiv"))

    def test_an_unreachable_geocoder_is_an_error_to_retry(self, settings):
        nowhere = geocoding.NominatimGeocoder(f"http://127.0.0.1:{free_port()}", user_agent="test")
        with pytest.raises(geocoding.GeocoderError, match="unreachable"):
            nowhere.lookup("Khreshchatyk St, 3, Kyiv")

    @pytest.mark.parametrize(
        "answer", [{"lat": "1"}, [{"lat": "x", "lon": "30"}], [{"lat": "95", "lon": "30"}], ["text"]]
    )
    def test_answers_that_are_not_places_are_errors(self, answer):
        with pytest.raises(geocoding.GeocoderError):
            geocoding._place(answer[0] if isinstance(answer, list) else answer)


class TestCacheAndRate:
    def test_answers_found_or_not_are_cached(self, nominatim, geocoder):
        found, missing = unique("Obolonskyi Ave, 12, Kyiv"), unique("Nowhere St")
        first = geocoding.locate(found, nominatim)
        assert geocoding.locate(f"  {found.upper()} ", nominatim) == first  # case and spacing ignored
        assert geocoding.locate(missing, nominatim) is None
        assert geocoding.locate(missing, nominatim) is None
        assert geocoder.stats()["gets"] == 2

    def test_no_cache_with_zero_days(self, nominatim, geocoder, settings):
        settings.GEOCODER_CACHE_DAYS = 0
        address = unique("Obolonskyi Ave, 14, Kyiv")
        geocoding.locate(address, nominatim)
        geocoding.locate(address, nominatim)
        assert geocoder.stats()["gets"] == 2

    def test_over_the_rate_no_request_leaves(self, nominatim, geocoder, settings):
        settings.GEOCODER_RATE = "1/minute"
        geocoding.locate(unique("Obolonskyi Ave, 16, Kyiv"), nominatim)
        with pytest.raises(geocoding.RateLimited) as limited:
            geocoding.locate(unique("Obolonskyi Ave, 18, Kyiv"), nominatim)
        assert 0 < limited.value.retry_after <= 60
        assert geocoder.stats()["gets"] == 1


@pytest.mark.django_db(transaction=True)
class TestOrders:
    def create(self, client_for, customer, restaurants, address: str, *, released: bool = False) -> dict:
        """An order created over REST; `released`: then its follow-ups sent, as the relay sends them
        once it releases the order's events (orders.tasks.created_released; the relay itself in
        test_api.py), worked eagerly here."""
        response = client_for(customer).post(
            "/api/orders/",
            {
                "items": [{"dish": factories.dish(restaurants["melange"]).pk, "quantity": 1}],
                "delivery_address": address,
            },
            format="json",
        )
        assert response.status_code == 201, response.content
        if released:
            tasks.created_released(list(OrderEvent.objects.filter(order_id=response.json()["id"])))
        return response.json()

    def test_an_order_gets_its_point_after_commit(self, client_for, customer, restaurants, geocoder, eager):
        address = unique("Lesi Ukrainky Blvd, 5, Kyiv")
        created = self.create(client_for, customer, restaurants, address, released=True)
        order = Order.objects.get(pk=created["id"])
        lat, lng = simulated_place(address)
        assert order.geocode_status == "found"
        assert (order.lat, order.lng) == (pytest.approx(lat, abs=1e-6), pytest.approx(lng, abs=1e-6))
        event = order.events.get(type=OrderEvent.Type.LOCATED)
        assert event.reason.startswith("Delivery point found: " + address)
        body = client_for(customer).get(f"/api/orders/{order.pk}/").json()
        assert body["destination"] == [order.lat, order.lng]
        assert body["destination_status"] == "found"

    def test_an_unknown_address_leaves_the_order_off_the_map_and_says_so(
        self, client_for, customer, restaurants, geocoder, eager
    ):
        created = self.create(client_for, customer, restaurants, "Nowhere Lane, 7", released=True)
        order = Order.objects.get(pk=created["id"])
        assert (order.geocode_status, order.point) == ("not_found", None)
        assert "does not know this address" in order.events.get(type=OrderEvent.Type.LOCATED).reason
        body = client_for(customer).get(f"/api/orders/{order.pk}/").json()
        assert (body["destination"], body["destination_status"]) == (None, "not_found")

    def test_a_geocoder_down_never_blocks_creation(self, client_for, customer, restaurants, geocoder, eager):
        geocoder.configure(down=True)
        created = self.create(
            client_for, customer, restaurants, unique("Lesi Ukrainky Blvd, 9, Kyiv"), released=True
        )
        order = Order.objects.get(pk=created["id"])
        assert order.status == "scheduled"
        # Tried 1 + GEOCODER_RETRIES times (eagerly here; a worker backs off), then left off the map.
        assert geocoder.stats()["faults"]["down"] == 3
        assert (order.geocode_status, order.point) == ("failed", None)
        assert "could not be reached" in order.events.get(type=OrderEvent.Type.LOCATED).reason

    def test_a_failed_order_is_looked_up_again_and_a_found_one_never(self, customer, restaurants, geocoder):
        order = factories.make_order(customer, restaurants["melange"])
        nominatim = geocoding.configured_geocoder()
        geocoder.configure(down=True)
        services.order_geocode(order_id=order.pk, geocoder=nominatim, give_up=True)
        geocoder.configure(down=False)
        assert services.order_geocode(order_id=order.pk, geocoder=nominatim) is not None
        assert services.order_geocode(order_id=order.pk, geocoder=nominatim) is None
        order.refresh_from_db()
        assert order.geocode_status == "found"
        assert order.events.filter(type=OrderEvent.Type.LOCATED).count() == 2

    def test_without_a_geocoder_orders_are_off_and_no_lookup_is_queued(
        self, client_for, customer, restaurants
    ):
        created = self.create(
            client_for, customer, restaurants, "Lesi Ukrainky Blvd, 11, Kyiv", released=True
        )
        order = Order.objects.get(pk=created["id"])
        assert (order.geocode_status, order.point) == ("off", None)
        assert not order.events.filter(type=OrderEvent.Type.LOCATED).exists()

    def test_geocoding_adds_no_statement_to_creating_an_order(
        self, client_for, customer, restaurants, settings
    ):
        def statements(address: str) -> int:
            with CaptureQueriesContext(connection) as queries:
                self.create(client_for, customer, restaurants, address)
            return len(queries)

        statements("warm-up, Kyiv")  # the first request loads the session, the content types...
        off = statements("Lesi Ukrainky Blvd, 15, Kyiv")
        settings.GEOCODER_URL = "http://127.0.0.1:9"  # on: its lookup is sent later, by the relay
        assert statements("Lesi Ukrainky Blvd, 17, Kyiv") == off

    def test_creating_an_order_asks_no_geocoder(self, client_for, customer, restaurants, geocoder):
        """The lookup is a task the relay sends after commit: the request makes no call."""
        created = self.create(client_for, customer, restaurants, unique("Lesi Ukrainky Blvd, 13, Kyiv"))
        assert geocoder.stats()["gets"] == 0
        assert Order.objects.get(pk=created["id"]).geocode_status == "pending"


class TestCouriersGetTheStops:
    def request(self) -> DeliveryRequest:
        return DeliveryRequest(
            idempotency_key="k",
            addresses=["Khreshchatyk 22", "Nowhere Lane, 7"],
            comments=["Melange order 1"],
            points=[(50.447731, 30.522507), None],
        )

    def test_uklon_gets_each_address_point(self):
        _, body = get_provider("uklon").create_request(self.request())
        assert body["points"] == [[50.447731, 30.522507], None]

    def test_raketa_gets_lat_lng_where_known(self):
        _, body = get_provider("raketa").create_request(self.request())
        assert body["pickups"][0] | {"note": None} == {
            "address": "Khreshchatyk 22",
            "note": None,
            "lat": 50.447731,
            "lng": 30.522507,
        }
        assert body["dropoff"] == {"address": "Nowhere Lane, 7"}


@pytest.mark.django_db
class TestRestaurantPoint:
    def test_both_or_neither(self):
        from django.core.exceptions import ValidationError

        restaurant = Restaurant(name="Half", provider="melange", address="x", lat=50.4)
        with pytest.raises(ValidationError, match="both the latitude and the longitude"):
            restaurant.full_clean()

    @pytest.mark.parametrize(("lat", "lng"), [(91, 30), (50, 181), (-91, 0)])
    def test_off_the_globe_is_refused(self, lat, lng):
        from django.core.exceptions import ValidationError

        with pytest.raises(ValidationError):
            Restaurant(name="Off", provider="melange", address="x", lat=lat, lng=lng).full_clean()


@pytest.mark.django_db(transaction=True)
class TestLocateOrdersCommand:
    def test_active_orders_without_a_point_are_looked_up_again(
        self, customer, restaurants, geocoder, settings
    ):
        settings.GEOCODER_URL = ""  # placed while geocoding was off
        off = factories.make_order(customer, restaurants["melange"])
        failed = factories.make_order(customer, restaurants["bueno"])
        done = factories.make_order(customer, restaurants["bueno"])
        Order.objects.filter(pk=failed.pk).update(geocode_status="failed")
        Order.objects.filter(pk=done.pk).update(status="delivered")
        settings.GEOCODER_URL = geocoder.url
        celery_app.conf.task_always_eager = True
        try:
            call_command("locate_orders")
            assert dict(Order.objects.values_list("pk", "geocode_status")) == {
                off.pk: "found",
                failed.pk: "found",
                done.pk: "off",  # finished: only with --all
            }
            call_command("locate_orders", "--all")
        finally:
            celery_app.conf.task_always_eager = False
        assert Order.objects.get(pk=done.pk).geocode_status == "found"

    def test_refuses_without_a_geocoder(self):
        with pytest.raises(CommandError, match="GEOCODER_URL is empty"):
            call_command("locate_orders")
