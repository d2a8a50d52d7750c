"""Bueno: its status table, its create body, its answers and its signed webhooks."""

import json

import pytest

from orders.providers import BadWebhook, KitchenRequest, UnknownProviderStatus
from orders.providers.bueno import Bueno
from orders.status import OrderStatus
from orders.tests.factories import signature_of
from orders.tests.provider_contract import assert_table_is_well_formed

SECRET = "bueno-test-secret"
BUENO = Bueno(url="http://bueno", webhook_secret=SECRET)


def test_status_table():
    assert_table_is_well_formed(Bueno)
    assert BUENO.status_of("accepted") == OrderStatus.SUBMITTED
    assert BUENO.status_of("preparing") == OrderStatus.COOKING
    assert BUENO.status_of("ready") == BUENO.status_of("handed_over") == OrderStatus.READY
    assert BUENO.is_backwards("ready", "preparing")
    with pytest.raises(UnknownProviderStatus):
        BUENO.status_of("cooked")  # Melange's word, not Bueno's


def test_create_request_and_paths():
    request = KitchenRequest(idempotency_key="k", items=[("Taco", 3)], reference="order-7")
    assert BUENO.create_request(request) == (
        "/",
        {"items": [{"name": "Taco", "qty": 3}], "reference": "order-7"},
    )
    assert (BUENO.fetch_path("bno_1"), BUENO.cancel_path("bno_1")) == ("/bno_1", "/bno_1/cancel")


def test_webhook_signature_is_hmac_sha256_of_the_body():
    body = json.dumps({"id": "bno_1", "status": "ready"}).encode()
    good = {"X-Bueno-Signature": signature_of(body, SECRET)}
    assert BUENO.accepts_webhooks and BUENO.verify_signature(body, good)
    assert not BUENO.verify_signature(body + b" ", good)
    assert not BUENO.verify_signature(body, {"X-Bueno-Signature": signature_of(body, "another")})
    assert not BUENO.verify_signature(body, {})
    assert not Bueno(url="http://bueno").verify_signature(body, {"X-Bueno-Signature": signature_of(body, "")})


def test_webhook_bodies():
    order = BUENO.parse_webhook(
        {"id": "bno_1", "status": "preparing", "at": "2026-11-30T10:00:00Z", "event_id": "e"}
    )
    assert (order.external_id, order.status) == ("bno_1", "preparing")
    for payload in ([], "ready", {"id": 5, "status": "ready"}, {"id": "bno_1"}, None):
        with pytest.raises(BadWebhook):
            BUENO.parse_webhook(payload)
