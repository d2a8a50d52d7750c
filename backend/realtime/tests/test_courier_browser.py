"""The courier page (/courier/) in a real Chromium on a phone-sized window, against real processes.

A courier signs in, sees the order an operator handed them, goes on shift with the browser's
geolocation granted, and the position reaches the database and the operators' socket (see conftest.py).
"""

import json
import re

import pytest
from playwright.sync_api import expect

from orders import services
from orders.models import Courier
from orders.tests import factories

from .conftest import in_thread
from .test_dashboard_browser import create_order, wait_until

pytestmark = pytest.mark.slow

PHONE = {"width": 390, "height": 844}
HOME = {"latitude": 50.4501, "longitude": 30.5234}
NEXT = {"latitude": 50.4433, "longitude": 30.5201}


def position_of(courier_id: int) -> tuple[float | None, float | None]:
    return in_thread(lambda: tuple(Courier.objects.values_list("lat", "lng").get(pk=courier_id)))


def test_courier_sees_their_order_and_shares_their_position(world, browser, rest, live_stack):
    for name in ("melange", "bueno", "uklon", "raketa"):
        live_stack.providers[name].configure(step_seconds=600)  # the order stays active meanwhile
    courier = in_thread(lambda: factories.make_courier("taras"))
    kitchen = world.kitchens[0]
    dish = in_thread(lambda: factories.dish(kitchen).pk)
    in_thread(lambda: type(world.customer).objects.filter(pk=world.customer.pk).update(first_name="Alice"))
    order_id = create_order(rest(world.customer_token), [dish], "Peremohy Ave, 37", phone="+380 67 765 43 21")
    bare_id = create_order(rest(world.customer_token), [dish], "Heroiv Dnipra St, 2")  # no phone given
    for carried in (order_id, bare_id):
        in_thread(
            lambda carried=carried: services.order_reassign_courier(
                order_id=carried, courier_id=courier.pk, actor=world.operator, reason="nearest courier"
            )
        )

    # The operators' dashboard listens: the courier's position must reach its socket.
    operator_context = browser.new_context(base_url=live_stack.url, locale="en-US")
    operator_page = operator_context.new_page()
    operator_frames: list[dict] = []
    operator_page.on(
        "websocket",
        lambda socket: socket.on("framereceived", lambda frame: operator_frames.append(json.loads(frame))),
    )
    operator_page.goto("/login/?next=/")
    operator_page.fill("#id_username", world.operator.username)
    operator_page.fill("#id_password", factories.PASSWORD)
    operator_page.click("#login-form button[type=submit]")
    expect(operator_page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")

    context = browser.new_context(viewport=PHONE, base_url=live_stack.url, locale="en-US", has_touch=True)
    context.set_default_timeout(15_000)
    context.grant_permissions(["geolocation"], origin=live_stack.url)
    context.set_geolocation(HOME)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto("/login/?next=/courier/")
    page.fill("#id_username", "taras")
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/courier/$"))

    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    card = page.get_by_test_id(f"courier-order-{order_id}")
    expect(card).to_be_visible()
    expect(card).to_contain_text(f"Order #{order_id}")
    pickup = card.locator('[data-stop="pickup"]')
    expect(pickup).to_contain_text(kitchen.name)  # the pickup: where, by name and address
    expect(pickup).to_contain_text(kitchen.address)
    expect(card.locator('[data-stop="dropoff"]')).to_contain_text("Peremohy Ave, 37")
    # Whom to hand it to: the customer's first name and a call button.
    expect(page.get_by_test_id(f"courier-customer-{order_id}")).to_contain_text("Alice")
    call = page.get_by_test_id(f"courier-call-{order_id}")
    expect(call).to_have_attribute("href", "tel:+380677654321")
    assert call.bounding_box()["height"] >= 40
    # Without a phone there is no call button, only the name.
    expect(page.get_by_test_id(f"courier-customer-{bare_id}")).to_contain_text("Alice")
    expect(page.get_by_test_id(f"courier-call-{bare_id}")).to_have_count(0)
    assert page.get_by_test_id("map").bounding_box()["height"] >= 240
    expect(page.get_by_test_id("orders-empty")).to_be_hidden()
    layout = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert layout[0] <= layout[1], f"horizontal scroll at 390×844: {layout}"

    # On shift: the granted position goes out as a `location` frame and is stored.
    toggle = page.get_by_test_id("shift-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert position_of(courier.pk) == (None, None)
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_test_id("location-sent")).to_contain_text("50.45010")
    wait_until(page, lambda: position_of(courier.pk) == (50.4501, 30.5234), 10, "the position is stored")
    wait_until(
        operator_page,
        lambda: any(
            frame.get("type") == "locations"
            and any(item["id"] == courier.pk and item["lat"] == 50.4501 for item in frame["couriers"])
            for frame in operator_frames
        ),
        10,
        "the operators' socket gets the position",
    )
    expect(page.locator(f'[data-testid="map"] .map-courier[data-courier-id="{courier.pk}"]')).to_have_count(1)

    # The courier moves: the new position follows, paced to the server's limit (no error frame back).
    context.set_geolocation(NEXT)
    wait_until(page, lambda: position_of(courier.pk) == (50.4433, 30.5201), 10, "the new position is stored")
    expect(page.get_by_test_id("location-sent")).to_contain_text("50.44330")
    expect(page.get_by_test_id("location-error")).to_be_hidden()

    # Off shift: nothing more is sent.
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    context.set_geolocation(HOME)
    page.wait_for_timeout(1500)
    assert position_of(courier.pk) == (50.4433, 30.5201)

    # An order handed over while the page is open: its event names an order the page does not hold, so
    # the page asks the server for it (protocol v2) and shows it whole, with whom to hand it to.
    customer = rest(world.customer_token)
    third = create_order(customer, [dish], "Saksahanskoho St, 120", phone="+380 50 111 22 33")
    in_thread(
        lambda: services.order_reassign_courier(
            order_id=third, courier_id=courier.pk, actor=world.operator, reason="on the way"
        )
    )
    expect(page.get_by_test_id(f"courier-order-{third}")).to_contain_text("Saksahanskoho St, 120")
    expect(page.get_by_test_id(f"courier-call-{third}")).to_have_attribute("href", "tel:+380501112233")
    held = page.evaluate(f"window.liveops.orders().get({third})")
    assert held["customer"]["first_name"] == "Alice" and "legs" not in held, "the courier's shape"
    assert errors == []
    operator_context.close()
    context.close()
