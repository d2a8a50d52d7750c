import pytest

from core import liveness

pytestmark = pytest.mark.django_db


def test_healthy_engines_and_fresh_heartbeats_answer_200(client):
    liveness.record(liveness.BEAT)
    liveness.record(liveness.WORKERS)
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["problems"]) == ("ok", [])
    assert body["beat"]["ok"] and body["workers"]["ok"]
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "redis": True,
        "broker": True,
    }


def test_unreachable_redis_and_broker_answer_503(client, settings, unused_tcp_port):
    # A port nobody listens on is a real "Redis is down"; no mock involved.
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"]["ok"] is True
    assert checks["redis"]["ok"] is False and "Connection" in checks["redis"]["error"]
    assert checks["broker"]["ok"] is False
    assert len(response.json()["problems"]) == 2  # redis and broker; the database answered
    # The container's probe of this process sees the same outage.
    assert client.get("/healthz?scope=process").status_code == 503


def test_only_get(client):
    assert client.post("/healthz").status_code == 405


def test_reports_how_far_the_relay_is_behind(client, customer, restaurants):
    from orders.models import EventMark, OrderEvent
    from orders.relay import MARK
    from orders.tests import factories

    factories.make_order(customer, restaurants["melange"])
    factories.make_order(customer, restaurants["bueno"])
    latest = OrderEvent.objects.latest("seq").seq
    EventMark.objects.update_or_create(name=MARK, defaults={"seq": latest - 1})
    relay = client.get("/healthz").json()["relay"]
    assert (relay["mark"], relay["behind"]) == (latest - 1, 1)
    assert relay["stalled_seconds"] >= 0
    EventMark.objects.filter(name=MARK).update(seq=latest)
    assert client.get("/healthz").json()["relay"] == {"mark": latest, "behind": 0, "stalled_seconds": 0}
