"""Provider clients against the real simulators: answers and every failure become domain errors."""

import asyncio

import httpx
import pytest

from orders.providers import (
    DeliveryRequest,
    KitchenRequest,
    ProviderBadResponse,
    ProviderCancelRefused,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
    get_client,
)
from orders.providers.uklon import UklonClient

pytestmark = pytest.mark.slow


def call(coroutine_factory):
    async def run():
        async with httpx.AsyncClient() as http:
            return await coroutine_factory(http)

    return asyncio.run(run())


KITCHEN = KitchenRequest(idempotency_key="liveops-leg-1", items=[("Borscht", 2)], reference="order-1")


@pytest.mark.parametrize("provider", ["melange", "bueno"])
def test_kitchen_create_and_fetch(providers, provider):
    client = get_client(provider)
    created = call(lambda http: client.create(http, KITCHEN))
    again = call(lambda http: client.create(http, KITCHEN))
    assert again.external_id == created.external_id, "Idempotency-Key makes a repeated create safe"
    fetched = call(lambda http: client.fetch(http, created.external_id))
    assert fetched.external_id == created.external_id and fetched.status


def test_uklon_create_and_fetch_with_driver_and_location(providers):
    client = get_client("uklon")
    providers["uklon"].configure(step_seconds=60)  # stays at "delivery" however slow the machine is
    request = DeliveryRequest(
        idempotency_key="liveops-leg-2", addresses=["A st", "B st"], comments=["Melange m1"]
    )
    created = call(lambda http: client.create(http, request))
    assert created.status == "not started" and created.driver is None
    providers["uklon"].advance(created.external_id, "delivery")
    fetched = call(lambda http: client.fetch(http, created.external_id))
    assert fetched.status == "delivery"
    assert fetched.driver.external_id.startswith("drv_") and fetched.location is not None


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ({"down": True}, ProviderUnavailable, "503"),
        ({"error_rate": 1.0}, ProviderUnavailable, "500"),
        ({"garbage_rate": 1.0}, ProviderBadResponse, "not JSON"),
        ({"timeout_rate": 1.0, "timeout_seconds": 2}, ProviderUnavailable, "timed out"),
    ],
)
def test_failures_become_domain_errors(providers, fault, error, message):
    providers["melange"].configure(**fault)
    with pytest.raises(error, match=message):
        call(lambda http: get_client("melange").create(http, KITCHEN))


CANCEL_CASES = [
    # provider, request, the status from which it refuses, with the words it says so
    ("melange", KITCHEN, "cooked", "already cooked"),
    ("bueno", KITCHEN, "ready", "already ready"),
    (
        "uklon",
        DeliveryRequest(idempotency_key="liveops-leg-3", addresses=["A st", "B st"]),
        "delivered",
        None,
    ),
]


@pytest.mark.parametrize(("provider", "request_", "too_late", "words"), CANCEL_CASES)
def test_cancel_is_confirmed_then_idempotent(providers, provider, request_, too_late, words):
    client = get_client(provider)
    providers[provider].configure(step_seconds=60)
    created = call(lambda http: client.create(http, request_))
    cancelled = call(lambda http: client.cancel(http, created.external_id))
    assert (cancelled.external_id, cancelled.status) == (created.external_id, "cancelled")
    again = call(lambda http: client.cancel(http, created.external_id))
    assert again.status == "cancelled", "cancelling a cancelled sub-order is confirmed again"
    assert call(lambda http: client.fetch(http, created.external_id)).status == "cancelled"


@pytest.mark.parametrize(("provider", "request_", "too_late", "words"), CANCEL_CASES)
def test_a_refusal_is_its_own_error_with_the_providers_words(providers, provider, request_, too_late, words):
    client = get_client(provider)
    providers[provider].configure(step_seconds=60)
    created = call(lambda http: client.create(http, request_))
    providers[provider].advance(created.external_id, too_late)
    with pytest.raises(ProviderCancelRefused) as refused:
        call(lambda http: client.cancel(http, created.external_id))
    assert refused.value.reason == (words or f"already {too_late}")
    assert call(lambda http: client.fetch(http, created.external_id)).status == too_late


@pytest.mark.parametrize(
    ("fault", "error"),
    [({"down": True}, ProviderUnavailable), ({"garbage_rate": 1.0}, ProviderBadResponse)],
)
def test_cancel_failures_are_the_usual_errors(providers, fault, error):
    client = get_client("melange")
    created = call(lambda http: client.create(http, KITCHEN))
    providers["melange"].configure(**fault)
    with pytest.raises(error):
        call(lambda http: client.cancel(http, created.external_id))
    with pytest.raises(ProviderNotFound):
        providers["melange"].configure(down=False, garbage_rate=0)
        call(lambda http: client.cancel(http, "mel_nobody"))


def test_unknown_sub_order_is_not_found(providers):
    with pytest.raises(ProviderNotFound):
        call(lambda http: get_client("melange").fetch(http, "mel_nobody"))


def test_wrong_credentials_are_rejected(providers, settings):
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "melange": {**settings.PROVIDERS["melange"], "api_key": "wrong"},
    }
    with pytest.raises(ProviderRejected, match="401"):
        call(lambda http: get_client("melange").create(http, KITCHEN))


def test_unreachable_provider_is_unavailable(providers, settings, unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}"
    settings.PROVIDERS = {**settings.PROVIDERS, "melange": {**settings.PROVIDERS["melange"], "url": url}}
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        call(lambda http: get_client("melange").create(http, KITCHEN))


@pytest.mark.parametrize(
    "payload",
    [
        {"status": "delivery"},
        {"id": "", "status": "delivery"},
        {"id": "u1", "status": 3},
        {"id": "u1", "status": "delivery", "location": [91, 30]},
        {"id": "u1", "status": "delivery", "location": "50,30"},
        {"id": "u1", "status": "delivery", "location": [True, 30]},
        {"id": "u1", "status": "delivery", "driver": "Ostap"},
        {"id": "u1", "status": "delivery", "driver": {"name": "Ostap"}},
    ],
)
def test_uklon_answers_that_break_the_contract(payload):
    with pytest.raises(ProviderBadResponse):
        UklonClient(url="http://uklon").parse_order(payload)
