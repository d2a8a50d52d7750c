"""Raketa, the fourth provider and the README's worked example: its status table, its request and
answer shapes, its timestamped webhook signature, and calls against its simulator."""

import json
import time

import pytest

from orders.providers import BadWebhook, DeliveryRequest, ProviderBadResponse, get_provider, http
from orders.providers.raketa import WEBHOOK_TOLERANCE_SECONDS, Raketa
from orders.status import OrderStatus
from orders.tests.factories import raketa_signature
from orders.tests.provider_contract import assert_table_is_well_formed

SECRET = "raketa-test-secret"
RAKETA = Raketa(url="http://raketa", webhook_secret=SECRET)
COURIER = {"id": "rkt-c1", "name": "Olha Savchenko", "phone": "+380671112233"}


def test_status_table():
    assert_table_is_well_formed(Raketa)
    assert RAKETA.status_of("searching") == RAKETA.status_of("courier_assigned") == OrderStatus.COURIER_SEARCH
    assert RAKETA.status_of("picked_up") == OrderStatus.DELIVERING
    assert RAKETA.status_of("delivered") == OrderStatus.DELIVERED
    assert RAKETA.is_backwards("courier_assigned", "searching"), "same status of ours, still backwards"


def test_create_request_names_pickups_with_their_notes_and_the_dropoff():
    request = DeliveryRequest(
        idempotency_key="k", addresses=["Kitchen 1", "Kitchen 2", "Home"], comments=["Melange m1", "Bueno b1"]
    )
    assert RAKETA.create_request(request) == (
        "/v1/deliveries",
        {
            "pickups": [
                {"address": "Kitchen 1", "note": "Melange m1"},
                {"address": "Kitchen 2", "note": "Bueno b1"},
            ],
            "dropoff": {"address": "Home"},
        },
    )
    without_notes = DeliveryRequest(idempotency_key="k", addresses=["Kitchen 1", "Home"])
    assert RAKETA.create_request(without_notes)[1]["pickups"] == [{"address": "Kitchen 1", "note": ""}]


def test_answer_shape():
    order = RAKETA.parse_order(
        {
            "delivery_id": "rkt_1",
            "state": "picked_up",
            "courier": COURIER,
            "position": {"lat": 50.4, "lng": 30.5},
        }
    )
    assert (order.external_id, order.status, order.location) == ("rkt_1", "picked_up", (50.4, 30.5))
    assert order.driver.name == "Olha Savchenko"
    bare = RAKETA.parse_order(
        {"delivery_id": "rkt_1", "state": "searching", "courier": None, "position": None}
    )
    assert (bare.driver, bare.location) == (None, None)


@pytest.mark.parametrize(
    "payload",
    [
        {"id": "rkt_1", "status": "searching"},
        {"delivery_id": "rkt_1"},
        {"delivery_id": "rkt_1", "state": "searching", "position": [50.4, 30.5]},
        {"delivery_id": "rkt_1", "state": "searching", "position": {"lat": "50.4", "lng": 30.5}},
        {"delivery_id": "rkt_1", "state": "searching", "position": {"lat": 50.4}},
        {"delivery_id": "rkt_1", "state": "searching", "courier": {"id": "", "name": "x"}},
    ],
)
def test_answers_that_break_the_contract(payload):
    with pytest.raises(ProviderBadResponse):
        RAKETA.parse_order(payload)


def test_webhook_signature_is_timestamped():
    body = json.dumps({"delivery_id": "rkt_1", "state": "searching"}).encode()
    now = int(time.time())
    header = "X-Raketa-Signature"
    assert RAKETA.verify_signature(body, {header: raketa_signature(body, at=now, secret=SECRET)})
    assert RAKETA.verify_signature(body, {header: " " + raketa_signature(body, at=now, secret=SECRET)})
    too_old = now - WEBHOOK_TOLERANCE_SECONDS - 1
    assert not RAKETA.verify_signature(body, {header: raketa_signature(body, at=too_old, secret=SECRET)})
    too_new = now + WEBHOOK_TOLERANCE_SECONDS + 1
    assert not RAKETA.verify_signature(body, {header: raketa_signature(body, at=too_new, secret=SECRET)})
    assert not RAKETA.verify_signature(body, {header: raketa_signature(body, at=now, secret="another")})
    signed = raketa_signature(body, at=now, secret=SECRET)
    assert not RAKETA.verify_signature(body, {header: signed.replace(f"t={now}", f"t={now - 1}")})
    for broken in ("", "garbage", "t=,v1=", f"t={now}", "v1=" + "0" * 64, f"t={now},v1=zz,v1=yy"):
        assert not RAKETA.verify_signature(body, {header: broken})


def test_webhook_bodies():
    order = RAKETA.parse_webhook(
        {
            "event_id": "e1",
            "delivery_id": "rkt_1",
            "state": "courier_assigned",
            "courier": COURIER,
            "position": None,
        }
    )
    assert (order.external_id, order.status, order.driver.external_id) == (
        "rkt_1",
        "courier_assigned",
        "rkt-c1",
    )
    for payload in ([], {"id": "rkt_1", "status": "searching"}, {"delivery_id": "rkt_1", "state": 1}):
        with pytest.raises(BadWebhook):
            RAKETA.parse_webhook(payload)


@pytest.mark.slow
def test_create_fetch_and_cancel_at_the_simulator(providers):
    raketa = get_provider("raketa")
    providers["raketa"].configure(step_seconds=60)
    request = DeliveryRequest(
        idempotency_key="liveops-leg-9", addresses=["A st", "B st"], comments=["Melange m1"]
    )
    created = http.run(raketa.create(request))
    assert (created.status, created.driver, created.location) == ("searching", None, None)
    assert http.run(raketa.create(request)).external_id == created.external_id, "Idempotency-Key"
    providers["raketa"].advance(created.external_id, "picked_up")
    fetched = http.run(raketa.fetch(created.external_id))
    assert fetched.status == "picked_up" and fetched.driver is not None and fetched.location is not None
