"""Bad input from anyone is always a clear 4xx, never a 500, and writes nothing.

Over the full Django stack, and the same requests once more over HTTP against a real daphne process.
"""

import json

import httpx
import pytest
from rest_framework.test import APIClient

from orders.models import Order, OrderItem
from orders.tests import factories
from realtime.tests.conftest import daphne_env, free_port, start_daphne, stop

pytestmark = pytest.mark.django_db(transaction=True)

DEEP = ("[" * 5000 + "]" * 5000).encode()
DEEP_OBJECT = ('{"a":' * 100 + "1" + "}" * 100).encode()  # within recursion, over our depth limit


@pytest.fixture
def order(customer, restaurants):
    return factories.make_order(customer, restaurants["melange"])


@pytest.fixture
def dish(restaurants):
    return restaurants["melange"].dishes.filter(is_active=True).first()


def post(client: APIClient, path: str, body: bytes, content_type: str | None = "application/json"):
    """A raw POST. (The test client cannot send a body without a content type: the test over HTTP does.)"""
    return client.generic("POST", path, body, content_type=content_type)


class TestDeepJSON:
    @pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["5000 deep", "100 deep"])
    def test_every_json_endpoint_answers_400(self, body, customer, order, client_for):
        anonymous, mine = APIClient(), client_for(customer)
        answers = {
            "token": post(anonymous, "/api/auth/token/", body),
            "create": post(mine, "/api/orders/", body),
            "cancel": post(mine, f"/api/orders/{order.pk}/cancel/", body),
            "webhook": post(anonymous, "/webhooks/bueno/", body),  # unsigned: refused before parsing
        }
        assert {name: answer.status_code for name, answer in answers.items()} == {
            "token": 400,
            "create": 400,
            "cancel": 400,
            "webhook": 401,
        }
        assert "nested" in answers["create"].json()["detail"]
        assert Order.objects.count() == 1

    def test_a_signed_deep_webhook_is_400(self, api, settings):
        from orders.tests.factories import signature_of

        for body in (DEEP, DEEP_OBJECT, b"NaN", b"\xff\xfe"):
            signature = signature_of(body, settings.PROVIDERS["bueno"]["webhook_secret"])
            answer = api.generic(
                "POST",
                "/webhooks/bueno/",
                body,
                CONTENT_TYPE="application/json",
                HTTP_X_BUENO_SIGNATURE=signature,
            )
            assert answer.status_code == 400, body[:20]
            assert "error" in answer.json()


class TestIntegers:
    @pytest.mark.parametrize(
        "item",
        [
            {"dish": 1.5, "quantity": 1},
            {"dish": True, "quantity": 1},
            {"dish": "DISH_STR", "quantity": 1},
            {"dish": "DISH", "quantity": 1.5},
            {"dish": "DISH", "quantity": "2"},
            {"dish": "DISH", "quantity": True},
            {"dish": "DISH", "quantity": 2.0},
        ],
    )
    def test_ids_and_quantities_must_be_json_integers(self, item, customer, dish, client_for):
        item = {
            key: dish.pk if value == "DISH" else str(dish.pk) if value == "DISH_STR" else value
            for key, value in item.items()
        }
        if item["dish"] == 1.5:
            item["dish"] = dish.pk + 0.5
        body = {"items": [item], "delivery_address": "Khreshchatyk 1"}
        answer = client_for(customer).post("/api/orders/", body, format="json")
        assert answer.status_code == 400, answer.json()
        assert "items" in answer.json()
        assert not OrderItem.objects.exists()

    def test_a_good_order_still_goes_through(self, customer, dish, client_for):
        body = {"items": [{"dish": dish.pk, "quantity": 2}], "delivery_address": "Khreshchatyk 1"}
        assert client_for(customer).post("/api/orders/", body, format="json").status_code == 201


class TestMediaTypes:
    def test_json_endpoints_answer_415_to_anything_else(self, customer, dish, order, client_for):
        mine = client_for(customer)
        body = json.dumps({"items": [{"dish": dish.pk, "quantity": 1}], "delivery_address": "x"}).encode()
        assert post(mine, "/api/orders/", body, content_type="text/plain").status_code == 415
        assert post(mine, "/api/orders/", b"items=1", "application/x-www-form-urlencoded").status_code == 415
        assert post(
            APIClient(), "/api/auth/token/", b"username=a&password=b", "multipart/form-data"
        ).status_code in {
            400,
            415,
        }
        assert post(mine, f"/api/orders/{order.pk}/cancel/", b"reason=x", "text/plain").status_code == 415
        assert Order.objects.count() == 1

    def test_an_action_without_a_body_needs_no_content_type(self, customer, order, client_for):
        assert (
            post(client_for(customer), f"/api/orders/{order.pk}/cancel/", b"", content_type=None).status_code
            == 200
        )


class TestApiAnswersJSON:
    @pytest.mark.parametrize("path", ["/api/", "/api/nope/", "/api/orders/abc/", "/api/auth/nope/"])
    def test_every_api_path_answers_json(self, api, path):
        answer = api.get(path)
        assert answer["Content-Type"].startswith("application/json")
        assert isinstance(answer.json(), dict)

    def test_the_api_root_lists_where_to_start(self, api):
        body = api.get("/api/").json()
        assert body["schema"] == "/api/schema/"
        assert body["token"] == "/api/auth/token/"


@pytest.mark.slow
def test_over_http_on_a_real_web_process(customer, order, restaurants, tmp_path):
    """The same refusals through daphne: what a client on the network gets."""
    port = free_port()
    process = start_daphne(daphne_env(), port, tmp_path / "daphne.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            token = http.post("/api/auth/token/", json={"username": "alice", "password": factories.PASSWORD})
            headers = {"Authorization": f"Token {token.json()['token']}"}
            deep = {"Content-Type": "application/json"}
            assert http.post("/api/auth/token/", content=DEEP, headers=deep).status_code == 400
            assert http.post("/api/orders/", content=DEEP, headers={**headers, **deep}).status_code == 400
            cancel = f"/api/orders/{order.pk}/cancel/"
            assert http.post(cancel, content=DEEP, headers={**headers, **deep}).status_code == 400
            dish = restaurants["melange"].dishes.first().pk
            body = json.dumps({"items": [{"dish": dish, "quantity": 1}], "delivery_address": "x"})
            assert http.post("/api/orders/", content=body, headers=headers).status_code == 415
            half = json.dumps({"items": [{"dish": dish + 0.5, "quantity": 1}], "delivery_address": "x"})
            assert http.post("/api/orders/", content=half, headers={**headers, **deep}).status_code == 400
            root = http.get("/api/")
            assert root.status_code == 200 and root.headers["content-type"].startswith("application/json")
        assert Order.objects.count() == 1
    finally:
        stop(process)
