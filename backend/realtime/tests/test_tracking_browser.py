"""The customer's tracking page in a real Chromium, against real processes (see conftest.py): through a
shared link without signing in, and signed in on a phone-sized window with the customer's own actions."""

from pathlib import Path

import pytest
from playwright.sync_api import expect

from orders import services
from orders.models import Courier, Order
from orders.tests import factories
from realtime.views import CUSTOMER_STEPS

from .conftest import in_thread
from .test_dashboard_browser import ADDRESSES, create_order, db_status, dishes_of, log_in, wait_until

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}
DOOR = (50.4547, 30.5238)  # the delivery point, as the geocoder would have stored it
FAR = (50.5012, 30.4121)  # where the courier's last report was, kilometres from the door
SHOTS = Path("/tmp/shots")
OVERFLOW = "() => document.scrollingElement.scrollWidth"


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
    expect(timeline.locator(".step.is-done")).to_have_count(len(CUSTOMER_STEPS))
    expect(page.get_by_test_id("track-now")).to_have_text("Delivered — enjoy your meal")
    updates = page.get_by_test_id("events")
    expect(updates).to_contain_text("You placed the order")  # the history, read through the link
    # The kitchen's own step, named: received for sure (the submit answer); "started cooking" only when a
    # poll catches it between two 1.5 s steps, which a busy machine may not.
    expect(updates).to_contain_text("Melange received your order")
    expect(updates).not_to_contain_text("→")  # no back-office status pairs
    expect(updates).not_to_contain_text("Status changed")
    # A link holder follows; only the signed-in customer acts on the order.
    expect(page.get_by_test_id("cancel-order")).to_have_count(0)
    expect(page.get_by_test_id("share-link")).to_have_count(0)
    expect(page.get_by_test_id("my-orders")).to_have_count(0)
    assert all(cookie["name"] != "sessionid" for cookie in page.context.cookies())  # never signed in

    assert customer.delete(f"/api/orders/{order_id}/share/").status_code == 204
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "offline")
    response = page.goto(url)
    assert response is not None and response.status == 404
    expect(page.get_by_test_id("link-gone")).to_be_visible()


def _deliver_with(order_id: int, operator) -> Courier:
    """The order geocoded at DOOR and on the road with Olena, whose last report is FAR from it."""
    Order.objects.filter(pk=order_id).update(lat=DOOR[0], lng=DOOR[1], geocode_status="found")
    courier = factories.make_courier("olena.k")
    Courier.objects.filter(pk=courier.pk).update(name="Olena Kovalenko", phone="+380 50 123 45 67")
    services.order_reassign_courier(
        order_id=order_id, courier_id=courier.pk, actor=operator, reason="nearest"
    )
    services.courier_report_location(courier_id=courier.pk, lat=FAR[0], lng=FAR[1])
    services.order_override_status(
        order_id=order_id, actor=operator, to_status="delivering", reason="picked up"
    )
    return courier


def _close(point, expected) -> bool:
    return point is not None and all(abs(a - b) < 1e-6 for a, b in zip(point, expected, strict=True))


def test_customer_follows_their_order_on_a_phone_to_the_door(world, browser, rest, live_stack):
    for name in ("melange", "bueno", "uklon", "raketa"):
        live_stack.providers[name].configure(step_seconds=600)  # only this test moves the orders
    dishes = dishes_of(world)
    customer = rest(world.customer_token)
    earlier = create_order(customer, [dishes["Melange"]], ADDRESSES[1])
    order_id = create_order(customer, [dishes["Sushi Nord"]], ADDRESSES[0])
    courier = in_thread(_deliver_with, order_id, world.operator)

    context = browser.new_context(viewport=PHONE, base_url=live_stack.url, locale="en-US", has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, "alice")
    page.goto(f"/orders/{order_id}/track/")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")

    # Where the order is, in words, with who brings it and how to call them.
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_have_attribute("data-status", "delivering")
    expect(page.get_by_test_id("track-now")).to_have_text("Olena is bringing your order")
    expect(timeline.locator('[aria-current="step"]')).to_have_attribute("data-step", "delivering")
    expect(timeline.locator('[data-step="cooking"] .step-label')).to_have_text(
        "Your order is being cooked at Sushi Nord"
    )
    expect(timeline.locator('[data-step="received"] time')).not_to_be_empty()  # when it happened
    expect(page.get_by_test_id("promise")).to_contain_text("Arriving by")
    call = page.get_by_test_id("courier-phone")
    expect(call).to_be_visible()
    expect(call).to_have_attribute("href", "tel:+380501234567")
    assert call.bounding_box()["height"] >= 40
    expect(page.get_by_test_id("events")).to_contain_text("Olena picked up your order")
    expect(page.get_by_test_id("cancel-order")).to_be_hidden()  # cooking has started: too late to cancel
    wait_until(
        page, lambda: _close(page.evaluate("window.liveops.courierOnMap()"), FAR), 10, "the courier's report"
    )
    assert page.get_by_test_id("map").bounding_box()["height"] >= 240
    assert page.evaluate(OVERFLOW) <= PHONE["width"], "horizontal scroll at 390×844"

    # The customer's orders, newest first, each in words and a link to its page.
    orders = page.get_by_test_id("my-orders").locator("a")
    expect(orders).to_have_count(2)
    expect(orders.nth(0)).to_have_attribute("href", f"/orders/{order_id}/track/")
    expect(orders.nth(0)).to_contain_text("Your courier is bringing your order")
    expect(orders.nth(1)).to_have_attribute("href", f"/orders/{earlier}/track/")

    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "track-mobile.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    page.screenshot(path=str(SHOTS / "track.png"))
    page.set_viewport_size(PHONE)

    # Delivered, live: the courier stands at the door, and a late report from afar does not move them.
    in_thread(
        lambda: services.order_override_status(
            order_id=order_id, actor=world.operator, to_status="delivered", reason="handed over"
        )
    )
    expect(timeline).to_have_attribute("data-status", "delivered")
    expect(page.get_by_test_id("track-now")).to_have_text("Delivered — enjoy your meal")
    expect(page.get_by_test_id("promise")).to_contain_text("Delivered at")
    wait_until(
        page,
        lambda: _close(page.evaluate("window.liveops.courierOnMap()"), DOOR),
        10,
        "the courier at the door",
    )
    in_thread(lambda: services.courier_report_location(courier_id=courier.pk, lat=FAR[0], lng=FAR[1] + 0.01))
    page.wait_for_timeout(1500)
    assert _close(page.evaluate("window.liveops.courierOnMap()"), DOOR)
    assert page.evaluate(OVERFLOW) <= PHONE["width"]
    assert errors == []
    context.close()


def test_customer_cancels_before_the_kitchen_starts(world, page, rest, live_stack):
    for name in ("melange", "bueno", "uklon", "raketa"):
        live_stack.providers[name].configure(step_seconds=600)  # the kitchen has not started yet
    order_id = create_order(rest(world.customer_token), [dishes_of(world)["Melange"]], ADDRESSES[2])
    log_in(page, "alice")
    page.goto(f"/orders/{order_id}/track/")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("track-now")).to_have_text("We received your order")

    cancel = page.get_by_test_id("cancel-order")
    cancel.click()
    confirm = page.get_by_test_id("cancel-confirm")
    expect(confirm).to_be_visible()
    page.get_by_test_id("cancel-no").click()  # changed their mind: nothing happens
    expect(confirm).to_be_hidden()
    assert db_status(order_id) != "cancelled"

    cancel.click()
    page.get_by_test_id("cancel-yes").click()
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_have_attribute("data-status", "cancelled")
    expect(page.get_by_test_id("track-now")).to_have_text("Cancelled")
    expect(timeline.locator('[data-step="end"]')).to_be_visible()
    expect(page.get_by_test_id("events")).to_contain_text("Order cancelled")
    expect(cancel).to_be_hidden()
    expect(page.get_by_test_id("promise")).to_be_hidden()
    assert db_status(order_id) == "cancelled"
    expect(page.get_by_test_id("my-orders")).to_contain_text("Cancelled")


def test_customer_shares_a_tracking_link(world, page, rest, live_stack):
    order_id = create_order(rest(world.customer_token), [dishes_of(world)["Melange"]], ADDRESSES[3])
    log_in(page, "alice")
    page.goto(f"/orders/{order_id}/track/")
    page.get_by_test_id("share-link").click()
    url = page.get_by_test_id("share-url")
    expect(url).to_be_visible()
    link = url.input_value()
    assert link.startswith(f"{live_stack.url}/t/")
    other = page.context.browser.new_context(base_url=live_stack.url, locale="en-US")
    shared = other.new_page()
    response = shared.goto(link)
    assert response is not None and response.status == 200
    expect(shared.get_by_test_id("timeline")).to_be_visible()
    other.close()


def test_tracking_page_speaks_ukrainian(world, browser, rest, live_stack):
    for name in ("melange", "bueno", "uklon", "raketa"):
        live_stack.providers[name].configure(step_seconds=600)
    order_id = create_order(rest(world.customer_token), [dishes_of(world)["Melange"]], ADDRESSES[4])
    in_thread(_deliver_with, order_id, world.operator)
    context = browser.new_context(viewport=PHONE, base_url=live_stack.url, locale="uk-UA")
    context.set_default_timeout(15_000)
    context.add_cookies([{"name": "django_language", "value": "uk", "url": live_stack.url}])
    page = context.new_page()
    log_in(page, "alice")
    page.goto(f"/orders/{order_id}/track/")
    expect(page.locator("html")).to_have_attribute("lang", "uk")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("track-now")).to_have_text("Olena везе ваше замовлення")
    timeline = page.get_by_test_id("timeline")
    expect(timeline.locator('[data-step="received"] .step-label')).to_have_text("Ми отримали ваше замовлення")
    expect(timeline.locator('[data-step="courier"] .step-label')).to_have_text("Шукаємо кур’єра")
    expect(timeline.locator('[data-step="delivered"] .step-label')).to_have_text("Доставлено — смачного!")
    expect(page.get_by_test_id("promise")).to_contain_text("Прибуде до")
    assert page.evaluate(OVERFLOW) <= PHONE["width"]
    context.close()
