"""The README's main command stays true: `make run` from a clean copy serves the API on embedded engines,
and an order created through it reaches "delivered" by itself (worker, beat and simulators included)."""

import os
import signal
import subprocess
import time

import httpx
import pytest

from .conftest import ENGINE_VARIABLES, free_port

pytestmark = pytest.mark.slow


def wait_for_health(base_url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "make run exited early"
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"/healthz not healthy within {timeout}s")


def test_make_run_delivers_an_order_on_embedded_engines(clean_copy):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ENGINE_VARIABLES}
    env.update(
        WEB_PORT=str(port),
        CSRF_TRUSTED_ORIGINS=f"http://127.0.0.1:{port}",
        BUENO_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/bueno/",
        SIM_STEP_SECONDS="0.3",
        POLL_INTERVAL_SECONDS="1",
    )
    log_path = clean_copy / "make-run.log"
    base_url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=clean_copy,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        wait_for_health(base_url, process, timeout=180)
        served_after = time.monotonic() - started

        assert httpx.get(f"{base_url}/login/").status_code == 200
        assert httpx.get(f"{base_url}/static/liveops/liveops.css").status_code == 200

        password = (clean_copy / ".env.default").read_text().split("DEMO_PASSWORD=")[1].split()[0]
        token = httpx.post(f"{base_url}/api/auth/token/", json={"username": "customer", "password": password})
        assert token.status_code == 200, token.text
        client = httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token.json()['token']}"})
        restaurants = client.get("/api/restaurants/").json()
        items = [{"dish": restaurant["dishes"][0]["id"], "quantity": 1} for restaurant in restaurants]
        created = client.post(
            "/api/orders/", json={"items": items, "delivery_address": "Sahaidachnoho St, 10"}
        )
        assert created.status_code == 201, created.text
        order_url = f"/api/orders/{created.json()['id']}/"
        deadline = time.monotonic() + 60
        while (order := client.get(order_url).json())["status"] not in ("delivered", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"order stuck at {order['status']}"
            time.sleep(0.5)
        assert order["status"] == "delivered", order
        assert order["events"][0]["type"] == "order.created"
        assert order["courier"] is not None
        # The legs are the operators' view (customers get the public shape, without providers).
        operator = httpx.post(
            f"{base_url}/api/auth/token/", json={"username": "operator", "password": password}
        )
        whole = client.get(order_url, headers={"Authorization": f"Token {operator.json()['token']}"}).json()
        assert [leg["kind"] for leg in whole["legs"]] == ["kitchen", "kitchen", "delivery"]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            exit_code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    log = log_path.read_text(errors="replace")
    assert "Live Ops is up" in log, log[-3000:]
    assert exit_code in (0, 2, 130, -signal.SIGINT), log[-3000:]
    assert not (clean_copy / ".run/postgres/postmaster.pid").exists(), "embedded PostgreSQL left running"
    assert not (clean_copy / ".run/redis/port").exists(), "embedded Redis left running"
    print(f"make run served a healthy page {served_after:.1f}s after start")  # noqa: T201 (test report)
