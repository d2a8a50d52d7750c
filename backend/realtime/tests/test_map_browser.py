"""The dashboard's street map and couriers panel in a real Chromium at 1280×720, tiles off (see conftest.py).

Orders are created through the real service and given map points the way the geocoder stores them;
the browser learns about them through its WebSocket, and about a free courier through a `locations`
frame of the real service.
"""

import random
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from orders import services
from orders.models import Courier, Order
from orders.status import OrderStatus
from orders.tests import factories

from .conftest import in_thread
from .test_dashboard_browser import log_in, wait_until

pytestmark = pytest.mark.slow

SCREEN = {"width": 1280, "height": 720}
CROWD = 60  # orders around the centre: at the fitted zoom they cannot all stand apart
CENTRE = (50.45, 30.52)
FAR_DOOR = (50.53, 30.36)  # one order north-west of the crowd, never clustered with it
FREE_SPOT = (50.40, 30.62)  # where the free courier reports from, away from everything else
BUSY_PHONE = "+380 67 123 45 67"
FREE_PHONE = "+380 50 765 43 21"


def seed(world) -> dict:
    """The crowd, the far order, a courier carrying the far order and one more, and a free courier."""
    rng = random.Random(14)
    kitchens = [kitchen for kitchen in world.kitchens if kitchen.point]  # Melange and Bueno
    customer = world.customer

    def order_at(point: tuple[float, float], index: int) -> int:
        kitchen = kitchens[index % len(kitchens)]
        order = services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(kitchen), quantity=1)],
            delivery_address=f"Test street {index}, Kyiv",
        )
        Order.objects.filter(pk=order.pk).update(
            lat=point[0], lng=point[1], geocode_status=Order.GeocodeStatus.FOUND
        )
        return order.pk

    crowd = [
        order_at((CENTRE[0] + rng.uniform(-0.03, 0.03), CENTRE[1] + rng.uniform(-0.04, 0.04)), index)
        for index in range(CROWD)
    ]
    far = order_at(FAR_DOOR, CROWD)
    busy = Courier.objects.create(
        user=factories.make_user("taras"),
        name="Taras",
        phone=BUSY_PHONE,
        lat=50.46,
        lng=30.45,
        location_at=timezone.now(),
    )
    free = Courier.objects.create(user=factories.make_user("oksana"), name="Oksana", phone=FREE_PHONE)
    for order_id in (far, crowd[0]):
        services.order_reassign_courier(
            order_id=order_id, courier_id=busy.pk, actor=world.operator, reason="nearest courier"
        )
    return {"crowd": crowd, "far": far, "busy": busy.pk, "free": free.pk}


def markers(page) -> dict[str, list[int]]:
    return page.evaluate("window.liveops.mapMarkers()")


def view(page) -> dict:
    return page.evaluate("window.liveops.mapView()")


def shows(view: dict, point: tuple[float, float]) -> bool:
    (south, west), (north, east) = view["bounds"]
    return south <= point[0] <= north and west <= point[1] <= east


def test_map_clusters_orders_and_the_couriers_panel_focuses_it(world, browser, live_stack):
    for simulator in live_stack.providers.values():
        simulator.configure(step_seconds=600)  # the orders hold still while the map is read
    data = in_thread(seed, world)
    shown = {*data["crowd"], data["far"]}
    context = browser.new_context(viewport=SCREEN, base_url=live_stack.url, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, world.operator.username)
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")

    # The map panel (folded at this size) opens on a plain background: tests have no tile server (no
    # MAP_TILE_URL, or one that cannot be reached: then the failing tiles switch the map over).
    page.get_by_test_id("toggle-map").click()
    the_map = page.get_by_test_id("map")
    expect(the_map).to_be_visible()
    expect(the_map.get_by_test_id("map-tiles-off")).to_have_text("Map tiles are off")
    assert the_map.locator(".leaflet-tile").count() == 0

    # Every order's door is on the map, but at the fitted zoom the crowd stands in clusters.
    wait_until(page, lambda: set(markers(page)["destinations"]) == shown, 15, "every door is on the map")
    assert set(markers(page)["restaurants"]) == {kitchen.pk for kitchen in world.kitchens if kitchen.point}
    clusters = the_map.locator(".marker-cluster")
    expect(clusters.first).to_be_visible()
    drawn = the_map.locator(".map-destination").count()
    assert drawn < len(shown) / 2, f"{drawn} pins drawn one by one: the crowd is not clustered"
    fitted = view(page)
    assert shows(fitted, FAR_DOOR) and shows(fitted, CENTRE), fitted  # fitted to what is shown

    # A cluster opens up on a click; Fit brings the whole picture back.
    clusters.first.click()
    wait_until(page, lambda: view(page)["zoom"] > fitted["zoom"], 5, "a cluster zooms in")
    assert not shows(view(page), FAR_DOOR)
    page.get_by_test_id("map-fit").click()  # at once: while the zoom may still be under way
    wait_until(page, lambda: shows(view(page), FAR_DOOR) and shows(view(page), CENTRE), 5, "Fit shows it all")

    # The far order's pin: its popup names the order, its status, its promise and its courier's phone.
    pin = the_map.locator(f'.map-destination[data-order-id="{data["far"]}"]')
    expect(pin).to_have_count(1)
    pin.click()
    popup = the_map.locator(".leaflet-popup")
    expect(popup).to_be_visible()
    status = in_thread(lambda: Order.objects.get(pk=data["far"]).status)
    expect(popup).to_contain_text(f"Order #{data['far']}")
    expect(popup.locator(".status-pill")).to_have_text(str(OrderStatus(status).label))
    expect(popup).to_contain_text("Promised")
    expect(popup).to_contain_text("Courier: Taras")
    expect(popup.locator('a[href^="tel:"]')).to_have_attribute("href", "tel:+380671234567")
    popup.get_by_role("button", name=f"Order #{data['far']}").click()  # as a card does: the drawer
    drawer = page.get_by_test_id("drawer")
    expect(drawer.locator('[data-role="title"]')).to_have_text(f"Order #{data['far']}")
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()

    # The couriers panel: Taras carries two orders, Oksana (no order, just reporting) is free.
    panel = page.get_by_test_id("couriers")
    busy_row = panel.get_by_test_id(f"courier-row-{data['busy']}")
    expect(busy_row).to_have_attribute("data-state", "carrying")
    expect(busy_row).to_contain_text("carrying 2 orders")
    expect(busy_row.locator('a[href^="tel:"]')).to_have_attribute("href", "tel:+380671234567")
    for order_id in (data["far"], data["crowd"][0]):
        expect(busy_row.get_by_role("button", name=f"#{order_id}", exact=True)).to_be_visible()
    free_row = panel.get_by_test_id(f"courier-row-{data['free']}")
    expect(free_row).to_have_count(0)  # not on the job, not reporting: not listed
    lat, lng = FREE_SPOT
    in_thread(lambda: services.courier_report_location(courier_id=data["free"], lat=lat, lng=lng))
    expect(free_row).to_have_attribute("data-state", "free")
    expect(free_row).to_contain_text("free")
    expect(free_row).to_contain_text(re.compile(r"seen \d+ s ago"))
    expect(free_row.locator('a[href^="tel:"]')).to_have_attribute("href", "tel:+380507654321")
    rows = panel.locator(".courier-row")
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-courier-id", str(data["busy"]))  # carrying first

    # A row focuses the map on its courier: the view moves there and their popup opens.
    before = view(page)
    free_row.click()
    courier_popup = the_map.locator(f'.leaflet-popup [data-courier-id="{data["free"]}"]')
    expect(courier_popup).to_be_visible()
    expect(courier_popup).to_contain_text("Oksana")
    expect(courier_popup).to_contain_text("Free")
    after = view(page)
    assert after["center"] != before["center"], (before, after)
    assert abs(after["center"][0] - FREE_SPOT[0]) < abs(before["center"][0] - FREE_SPOT[0])

    # An order in a courier's row opens the drawer.
    busy_row.get_by_role("button", name=f"#{data['crowd'][0]}", exact=True).click()
    expect(drawer.locator('[data-role="title"]')).to_have_text(f"Order #{data['crowd'][0]}")
    page.keyboard.press("Escape")

    # The picture for the README: the board over the map and its couriers.
    close_buttons = the_map.locator(".leaflet-popup-close-button")
    close_buttons.evaluate_all("(buttons) => buttons.forEach((button) => button.click())")
    page.get_by_test_id("map-fit").click()
    page.wait_for_timeout(500)
    clusters.first.click()  # into the crowd: clusters and single pins side by side
    page.locator(".panel-map").scroll_into_view_if_needed()
    page.mouse.move(0, 0)
    page.wait_for_timeout(800)
    page.screenshot(path=str(live_stack.daphne_log.parent / "dashboard-map.png"))
    assert errors == []
    context.close()
