"""Schemathesis against the OpenAPI schema the API serves: no 5xx, and every answer is as documented.

Every operation of `/api/schema/` is called with generated valid and invalid requests (schemathesis'
examples, coverage and fuzzing phases, positive and negative data) on the real Django app, in process
over WSGI, signed in with a token as an operator and as a customer, on real PostgreSQL and Redis, with
commit-time effects (broadcast, provider submission task) running. All of schemathesis' checks apply:
no server error, status codes, content types, headers and bodies as documented, bad input rejected,
valid input accepted, auth enforced.

Hypothesis is derandomized with no example database, so a run is the same every time.
"""

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from orders.models import Dish, Order
from orders.tests import factories

pytestmark = [pytest.mark.django_db(transaction=True, reset_sequences=True), pytest.mark.slow]

schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())

# "A schema-valid request is accepted" cannot hold where validity depends on the database, which a schema
# cannot say: a token needs a real user's password; an order needs ids of active dishes, each once, and
# an ETA in the future. Those get a documented 400, checked by every other check.
USERNAMES = {"operator": "olena", "customer": "alice"}  # backend/conftest.py
STATE_DEPENDENT_INPUT = {"POST /api/auth/token/", "POST /api/orders/"}


@pytest.fixture
def tokens(customer, other_customer, operator, restaurants, settings) -> dict[str, str]:
    """Three orders (one of another customer) and the catalogue's dishes to aim generated ids at."""
    # Every sign-in attempt hashes the password; PBKDF2's million rounds would make the token endpoint
    # alone take 10 s. The users' own (PBKDF2) hashes still verify.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    factories.make_order(customer, restaurants["melange"])
    factories.make_order(customer, restaurants["bueno"], restaurants["melange"])
    factories.make_order(other_customer, restaurants["bueno"])
    return {"operator": factories.token_for(operator), "customer": factories.token_for(customer)}


def _aim(value: object, ids: list[int]) -> object:
    """An id generated from the schema (an int, or its digits after the coverage phase's stringifying),
    mapped onto a real row most of the time, deterministically; otherwise kept (a row that is not there)."""
    digits = str(value)
    if isinstance(value, bool) or not (isinstance(value, int) or digits.isdigit()):
        return value
    choices = [*ids, int(digits)]
    aimed = choices[int(digits) % len(choices)]
    return aimed if isinstance(value, int) else str(aimed)


def aim_at_real_rows(case) -> None:
    """Schema-valid ids rarely name a row: then every call of an order's action is a 404 and creating an
    order is a 400 for an unknown dish. Positive components only: invalid ones must stay invalid."""
    meta = case.meta
    if meta is None:
        return
    if (
        case.path_parameters
        and "id" in case.path_parameters
        and not meta.is_negative_at(ParameterLocation.PATH)
    ):
        case.path_parameters["id"] = _aim(
            case.path_parameters["id"], list(Order.objects.values_list("pk", flat=True))
        )
    body = case.body
    if (
        isinstance(body, dict)
        and isinstance(body.get("items"), list)
        and not meta.is_negative_at(ParameterLocation.BODY)
    ):
        dishes = list(Dish.objects.filter(is_active=True).values_list("pk", flat=True))
        for item in body["items"]:
            if isinstance(item, dict) and "dish" in item:
                item["dish"] = _aim(item["dish"], dishes)


@pytest.mark.parametrize("role", ["operator", "customer"])
@schema.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    # Function-scoped fixtures are meant: the same users and orders serve every example of a test.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_conforms_to_its_schema(case, tokens, role):
    aim_at_real_rows(case)
    excluded = [positive_data_acceptance] if case.operation.label in STATE_DEPENDENT_INPUT else []
    token = tokens[role]
    if case.operation.path.startswith("/api/auth/logout"):
        # A logout revokes its token: each example gets a fresh one, so each is a real logout.
        token = factories.token_for(get_user_model().objects.get(username=USERNAMES[role]))
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, excluded_checks=excluded)


# --- what the fuzzing found, pinned one by one ------------------------------------------------------------


class TestFindings:
    def test_a_stale_token_does_not_stop_signing_in(self, api, customer):
        api.credentials(HTTP_AUTHORIZATION="Token revoked-long-ago")
        body = {"username": "alice", "password": factories.PASSWORD}
        response = api.post("/api/auth/token/", body, format="json")
        assert response.status_code == 200, response.content  # was 401 "Invalid token."

    @pytest.mark.parametrize("path", ["/api/orders/abc/", "/api/orders/1,2/cancel/", "/api/nothing/here/"])
    def test_unknown_api_paths_are_json_404_for_any_method(self, client_for, customer, path):
        client = client_for(customer)
        for response in (client.get(path), client.post(path, {}, format="json")):
            assert response.status_code == 404  # was HTML, and a POST got Django's CSRF page (403)
            assert response.json() == {"detail": "Not found."}

    def test_a_path_without_its_slash_is_still_redirected(self, client_for, customer):
        assert client_for(customer).get("/api/orders").status_code == 301

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("page_size=abc", "page_size"),  # was ignored: 50 results
            ("page_size=0", "page_size"),
            ("page_size=201", "page_size"),  # was clamped silently
            ("page=0", "page"),  # was 404 "Invalid page."
            ("page=", "page"),
            ("status=", "status"),  # was no filter
            ("status=cooking,", "status"),
        ],
    )
    def test_bad_list_parameters_are_400_with_the_field(self, client_for, customer, query, field):
        response = client_for(customer).get(f"/api/orders/?{query}")
        assert response.status_code == 400, response.content
        assert field in response.json()

    def test_a_page_past_the_last_is_still_404(self, client_for, customer):
        assert client_for(customer).get("/api/orders/?page=2").status_code == 404

    def test_an_order_is_json_only(self, client_for, customer, restaurants):
        body = {"items[0]dish": factories.dish(restaurants["melange"]).pk, "delivery_address": "Kyiv"}
        response = client_for(customer).post("/api/orders/", body, format="multipart")
        assert response.status_code == 415  # was offered in the schema, then "items: required"

    def test_the_schema_documents_every_answer(self, api):
        document = api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
        create = document["paths"]["/api/orders/"]["post"]
        assert set(create["responses"]) == {"201", "400", "401", "429"}  # 429: THROTTLE_ORDER_CREATE_PER_USER
        assert set(create["requestBody"]["content"]) == {"application/json"}
        sign_in = document["paths"]["/api/auth/token/"]["post"]
        assert set(sign_in["responses"]) == {"200", "400", "429"}
        assert set(sign_in["requestBody"]["content"]) == {"application/json"}
        answer = sign_in["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
        assert set(document["components"]["schemas"][answer]["properties"]) == {"token", "expiry"}
        for path in ("/api/auth/logout/", "/api/auth/logout-all/"):
            assert set(document["paths"][path]["post"]["responses"]) == {"204", "401"}
        items = document["components"]["schemas"]["OrderCreateRequest"]["properties"]["items"]
        assert (items["minItems"], items["maxItems"]) == (1, 100)
        assert set(document["paths"]["/api/orders/{id}/cancel/"]["post"]["responses"]) == {
            "200",
            "400",
            "401",
            "403",
            "404",
            "409",
        }
