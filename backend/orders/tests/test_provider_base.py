"""What every provider shares (providers/base.py), against the real simulators over HTTP: answers and
every failure become domain errors, cancels are confirmed or refused."""

import pytest

from orders.providers import (
    DeliveryRequest,
    KitchenRequest,
    ProviderBadResponse,
    ProviderCancelRefused,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
    get_provider,
    http,
)

pytestmark = pytest.mark.slow


KITCHEN = KitchenRequest(idempotency_key="liveops-leg-1", items=[("Borscht", 2)], reference="order-1")


@pytest.mark.parametrize("name", ["melange", "bueno"])
def test_kitchen_create_and_fetch(providers, name):
    provider = get_provider(name)
    created = http.run(provider.create(KITCHEN))
    again = http.run(provider.create(KITCHEN))
    assert again.external_id == created.external_id, "Idempotency-Key makes a repeated create safe"
    fetched = http.run(provider.fetch(created.external_id))
    assert fetched.external_id == created.external_id and fetched.status


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
        http.run(get_provider("melange").create(KITCHEN))


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
    (
        "raketa",
        DeliveryRequest(idempotency_key="liveops-leg-4", addresses=["A st", "B st"]),
        "picked_up",
        None,
    ),
]


@pytest.mark.parametrize(("name", "request_", "too_late", "words"), CANCEL_CASES)
def test_cancel_is_confirmed_then_idempotent(providers, name, request_, too_late, words):
    provider = get_provider(name)
    providers[name].configure(step_seconds=60)
    created = http.run(provider.create(request_))
    cancelled = http.run(provider.cancel(created.external_id))
    assert (cancelled.external_id, cancelled.status) == (created.external_id, "cancelled")
    again = http.run(provider.cancel(created.external_id))
    assert again.status == "cancelled", "cancelling a cancelled sub-order is confirmed again"
    assert http.run(provider.fetch(created.external_id)).status == "cancelled"


@pytest.mark.parametrize(("name", "request_", "too_late", "words"), CANCEL_CASES)
def test_a_refusal_is_its_own_error_with_the_providers_words(providers, name, request_, too_late, words):
    provider = get_provider(name)
    providers[name].configure(step_seconds=60)
    created = http.run(provider.create(request_))
    providers[name].advance(created.external_id, too_late)
    with pytest.raises(ProviderCancelRefused) as refused:
        http.run(provider.cancel(created.external_id))
    assert refused.value.reason == (words or f"already {too_late}")
    assert http.run(provider.fetch(created.external_id)).status == too_late


@pytest.mark.parametrize(
    ("fault", "error"),
    [({"down": True}, ProviderUnavailable), ({"garbage_rate": 1.0}, ProviderBadResponse)],
)
def test_cancel_failures_are_the_usual_errors(providers, fault, error):
    provider = get_provider("melange")
    created = http.run(provider.create(KITCHEN))
    providers["melange"].configure(**fault)
    with pytest.raises(error):
        http.run(provider.cancel(created.external_id))
    with pytest.raises(ProviderNotFound):
        providers["melange"].configure(down=False, garbage_rate=0)
        http.run(provider.cancel("mel_nobody"))


def test_unknown_sub_order_is_not_found(providers):
    with pytest.raises(ProviderNotFound):
        http.run(get_provider("melange").fetch("mel_nobody"))


def test_wrong_credentials_are_rejected(providers, settings):
    settings.PROVIDERS = {
        **settings.PROVIDERS,
        "melange": {**settings.PROVIDERS["melange"], "api_key": "wrong"},
    }
    with pytest.raises(ProviderRejected, match="401"):
        http.run(get_provider("melange").create(KITCHEN))


def test_unreachable_provider_is_unavailable(providers, settings, unused_tcp_port):
    url = f"http://127.0.0.1:{unused_tcp_port}"
    settings.PROVIDERS = {**settings.PROVIDERS, "melange": {**settings.PROVIDERS["melange"], "url": url}}
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        http.run(get_provider("melange").create(KITCHEN))
