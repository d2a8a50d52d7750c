"""POST /webhooks/<provider>/: signed, idempotent, order-safe; Bueno's and Raketa's schemes; and their real
pushes over HTTP."""

import json
import time
import uuid

import pytest
from django.conf import settings

from orders.models import Leg
from orders.tests import factories
from orders.tests.factories import raketa_signature, signature_of
from orders.tests.pipeline import drive

URL = "/webhooks/bueno/"


@pytest.fixture
def bueno_leg(db, customer, restaurants):
    order = factories.make_order(customer, restaurants["bueno"])
    leg = order.legs.get()
    leg.external_id = f"bno_test_{uuid.uuid4().hex}"
    leg.save()
    return leg


def post(client, payload, *, secret=None, signature=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    signature = signature or signature_of(body, secret or settings.PROVIDERS["bueno"]["webhook_secret"])
    return client.post(URL, body, content_type="application/json", HTTP_X_BUENO_SIGNATURE=signature)


def test_valid_webhook_moves_the_leg(client, bueno_leg):
    response = post(
        client, {"id": bueno_leg.external_id, "status": "preparing", "at": "2026-11-26T10:00:00Z"}
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True, "changed": True}
    bueno_leg.refresh_from_db()
    assert (bueno_leg.provider_status, bueno_leg.order.status) == ("preparing", "cooking")
    event = bueno_leg.order.events.last()
    assert (event.source, event.provider_status) == ("webhook", "preparing")


@pytest.mark.parametrize("signature", ["", "sha256=deadbeef", "md5=abc", "sha256=" + "0" * 64])
def test_bad_signature_is_401_and_changes_nothing(client, bueno_leg, signature):
    body = json.dumps({"id": bueno_leg.external_id, "status": "preparing"}).encode()
    response = client.post(URL, body, content_type="application/json", HTTP_X_BUENO_SIGNATURE=signature)
    assert response.status_code == 401
    bueno_leg.refresh_from_db()
    assert bueno_leg.provider_status == ""


def test_signature_with_another_secret_is_401(client, bueno_leg):
    assert post(client, {"id": bueno_leg.external_id, "status": "ready"}, secret="guess").status_code == 401


def test_duplicate_is_one_event(client, bueno_leg):
    payload = {"id": bueno_leg.external_id, "status": "preparing"}
    assert post(client, payload).json()["changed"] is True
    for _ in range(3):
        assert post(client, payload).json() == {"ok": True, "changed": False}
    assert bueno_leg.order.events.filter(provider_status="preparing").count() == 1


def test_out_of_order_never_moves_backwards(client, bueno_leg):
    post(client, {"id": bueno_leg.external_id, "status": "ready"})
    response = post(client, {"id": bueno_leg.external_id, "status": "preparing"})
    assert response.json()["changed"] is False
    bueno_leg.refresh_from_db()
    assert (bueno_leg.provider_status, bueno_leg.order.status) == ("ready", "ready")


def test_unknown_sub_order_is_404(client, bueno_leg):
    assert post(client, {"id": "bno_nobody", "status": "ready"}).status_code == 404


def test_a_blank_id_never_matches_a_sub_order_not_yet_sent(client, bueno_leg, customer, restaurants):
    from django.core.cache import cache

    unsent = factories.make_order(customer, restaurants["bueno"])  # its Bueno leg has no external id yet
    assert unsent.legs.get().external_id == ""
    assert post(client, {"id": "", "status": "ready"}).status_code == 400  # no sub-order has a blank id
    assert unsent.events.count() == 1 and unsent.legs.get().status == "scheduled"
    assert cache.get("leg-of:bueno:") is None, "a blank is never cached"
    assert post(client, {"id": bueno_leg.external_id, "status": "preparing"}).status_code == 200


def test_unknown_status_is_422_and_changes_nothing(client, bueno_leg):
    assert post(client, {"id": bueno_leg.external_id, "status": "quantum"}).status_code == 422
    assert bueno_leg.order.events.count() == 1


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[]", b'{"id": 5, "status": "ready"}', b'{"id": "x"}', b"\xff\xfe", b'"ready"']
)
def test_malformed_bodies_are_400(client, bueno_leg, raw):
    assert post(client, None, raw=raw).status_code == 400


def test_oversized_body_is_413(client, bueno_leg):
    raw = json.dumps({"id": bueno_leg.external_id, "status": "ready", "pad": "x" * 20000}).encode()
    assert post(client, None, raw=raw).status_code == 413


def test_only_post(client):
    assert client.get(URL).status_code == 405


@pytest.mark.slow
def test_bueno_pushes_move_the_order_without_polling_bueno(providers, customer, restaurants):
    """Only Bueno's real webhooks to the live server move the leg: its polls are pushed far away."""
    order = factories.make_order(customer, restaurants["bueno"])
    drive(lambda: Leg.objects.filter(order=order).exclude(external_id="").exists())
    Leg.objects.filter(order=order).update(next_poll_at=None)  # no more polls: webhooks only
    leg = order.legs.get()

    def leg_done() -> bool:
        leg.refresh_from_db()
        return leg.provider_status == "handed_over"

    drive(leg_done, timeout=15)
    sources = set(order.events.exclude(type="order.created").values_list("source", flat=True))
    assert "webhook" in sources
    # With polls off, only pushes can have moved the leg to handed_over. How many were accepted depends on
    # timing: the first may arrive before the sub-order's id is stored (a 404, and polling catches up).
    assert providers["bueno"].stats()["webhooks_sent"] >= 1


# --- the generic view: any provider that pushes, nobody else ---------------------------------------------


@pytest.mark.parametrize("name", ["nobody", "melange", "uklon", "BUENO", "bueno%2Fx", "bueno/x"])
def test_a_provider_that_does_not_push_webhooks_is_404(client, name):
    body = json.dumps({"id": "x", "status": "ready"}).encode()
    response = client.post(f"/webhooks/{name}/", body, content_type="application/json")
    assert response.status_code == 404


def test_a_signature_for_one_provider_is_refused_by_another(client, bueno_leg):
    body = json.dumps({"id": bueno_leg.external_id, "status": "preparing"}).encode()
    response = client.post(
        "/webhooks/raketa/", body, content_type="application/json", HTTP_X_RAKETA_SIGNATURE=signature_of(body)
    )
    assert response.status_code == 401


# --- Raketa: a courier company with a timestamped signature and a body of its own shape --------------


RAKETA_URL = "/webhooks/raketa/"


@pytest.fixture
def raketa_leg(db, customer, restaurants):
    order = factories.make_order(customer, restaurants["melange"])
    return Leg.objects.create(
        order=order, kind=Leg.Kind.DELIVERY, provider="raketa", external_id=f"rkt_{uuid.uuid4().hex}"
    )


def raketa_post(client, payload, *, signature=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    signature = signature if signature is not None else raketa_signature(body)
    return client.post(RAKETA_URL, body, content_type="application/json", HTTP_X_RAKETA_SIGNATURE=signature)


def delivery(leg: Leg, state: str, **extra) -> dict:
    return {
        "event_id": uuid.uuid4().hex,
        "delivery_id": leg.external_id,
        "state": state,
        "courier": None,
        "position": None,
        "at": "2026-11-30T10:00:00Z",
        **extra,
    }


def test_raketa_webhook_books_the_courier_and_moves_them(client, raketa_leg):
    courier = {"id": "rkt-c1", "name": "Olha Savchenko", "phone": "+380671112233"}
    assert raketa_post(client, delivery(raketa_leg, "courier_assigned", courier=courier)).json()["changed"]
    position = {"lat": 50.45, "lng": 30.52}
    response = raketa_post(client, delivery(raketa_leg, "picked_up", courier=courier, position=position))
    assert response.json() == {"ok": True, "changed": True}
    order = raketa_leg.order
    order.refresh_from_db()
    assert order.status == "delivering"
    assert order.courier.name == "Olha Savchenko" and (order.courier.lat, order.courier.lng) == (50.45, 30.52)
    assert order.events.last().source == "webhook"


@pytest.mark.parametrize("signature", ["", "v1=abc", "t=notanumber,v1=abc", "t={now},v1=" + "0" * 64])
def test_raketa_bad_signatures_are_401(client, raketa_leg, signature):
    signature = signature.format(now=int(time.time()))
    assert raketa_post(client, delivery(raketa_leg, "searching"), signature=signature).status_code == 401


def test_raketa_refuses_a_replayed_webhook_older_than_five_minutes(client, raketa_leg):
    body = json.dumps(delivery(raketa_leg, "searching")).encode()
    stale = raketa_signature(body, at=int(time.time()) - 301)
    assert raketa_post(client, None, raw=body, signature=stale).status_code == 401
    fresh = raketa_signature(body, at=int(time.time()) - 60)
    assert raketa_post(client, None, raw=body, signature=fresh).status_code == 200


def test_raketa_signature_covers_the_body(client, raketa_leg):
    body = json.dumps(delivery(raketa_leg, "searching")).encode()
    signature = raketa_signature(body)
    tampered = body.replace(b"searching", b"delivered")
    assert raketa_post(client, None, raw=tampered, signature=signature).status_code == 401


@pytest.mark.parametrize(
    "payload",
    [
        {"delivery_id": 5, "state": "searching"},
        {"id": "rkt_x", "status": "searching"},  # Bueno's shape is not Raketa's
        {"delivery_id": "rkt_x", "state": "searching", "position": [50.4, 30.5]},
        {"delivery_id": "rkt_x", "state": "searching", "position": {"lat": 500, "lng": 30.5}},
        {"delivery_id": "rkt_x", "state": "searching", "courier": {"name": "no id"}},
        ["not", "an", "object"],
    ],
)
def test_raketa_malformed_deliveries_are_400_and_change_nothing(client, raketa_leg, payload):
    response = raketa_post(client, payload)
    assert response.status_code == 400, response.content
    assert raketa_leg.order.events.count() == 1


def test_raketa_unknown_state_is_422(client, raketa_leg):
    assert raketa_post(client, delivery(raketa_leg, "teleported")).status_code == 422
