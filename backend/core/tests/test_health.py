import pytest

pytestmark = pytest.mark.django_db


def test_healthy_engines_answer_200(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
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


def test_only_get(client):
    assert client.post("/healthz").status_code == 405
