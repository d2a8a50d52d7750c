"""A shared tracking link in a real Chromium, without signing in, against real processes (see conftest.py)."""

import pytest
from playwright.sync_api import expect

from .test_dashboard_browser import ADDRESSES, PIPELINE, create_order, dishes_of

pytestmark = pytest.mark.slow


def test_a_shared_link_follows_the_order_live_until_revoked(world, page, rest, live_stack):
    for name in ("melange", "bueno", "uklon"):
        live_stack.providers[name].configure(step_seconds=1.5)
    customer = rest(world.customer_token)
    order_id = create_order(customer, [dishes_of(world)["Melange"]], ADDRESSES[0])
    shared = customer.post(f"/api/orders/{order_id}/share/")
    assert shared.status_code == 201, shared.text
    url = shared.json()["url"]

    page.goto(url)  # a fresh browser context: no session, no token
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_have_attribute("data-status", "delivered", timeout=30_000)
    expect(timeline.locator(".step.is-done")).to_have_count(len(PIPELINE))
    updates = page.get_by_test_id("events")
    expect(updates).to_contain_text("Order created")  # the history, read through the link
    expect(updates).to_contain_text("Delivering → Delivered")
    assert all(cookie["name"] != "sessionid" for cookie in page.context.cookies())  # never signed in

    assert customer.delete(f"/api/orders/{order_id}/share/").status_code == 204
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "offline")
    response = page.goto(url)
    assert response is not None and response.status == 404
    expect(page.get_by_test_id("link-gone")).to_be_visible()
