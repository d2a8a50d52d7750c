"""The operators' dashboard and the customer's tracking page in a real Chromium, against real processes.

Orders are created over daphne's REST API and moved by the real Celery worker through the provider
simulators; the browser only ever learns about them through its WebSocket (see conftest.py).
"""

import json
import re
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import Max
from django.utils import timezone
from playwright.sync_api import expect

from orders import alerts, geocoding, services
from orders.alerts import check_time_alerts
from orders.models import Alert, Leg, Order, OrderEvent
from orders.tests import factories

from .conftest import VIEWPORT, in_thread

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
SCREENSHOT = REPO / "docs" / "screenshots" / "dashboard.png"
PIPELINE = ["scheduled", "submitted", "cooking", "ready", "courier_search", "delivering", "delivered"]
STATUSES = [*PIPELINE, "failed", "cancelled"]
ADDRESSES = [
    "Sahaidachnoho St, 10",
    "Volodymyrska St, 40",
    "Antonovycha St, 176",
    "Peremohy Ave, 37",
    "Yaroslaviv Val St, 21",
    "Saksahanskoho St, 120",
    "Heroiv Dnipra St, 2",
    "Obolonska Embankment, 11",
    "Mykilsko-Slobidska St, 4",
]

# Installed before any page script: records every value each data-testid element's data-status took
# (cards, the tracking timeline) and every data-state of the live indicator, even several changes
# within one frame (attributeOldValue), so a status the board passed through quickly is not missed.
RECORDER = """
(() => {
  const seen = {};
  const states = [];
  window.__seen = seen;
  window.__states = states;
  const push = (list, value) => { if (value !== null && list[list.length - 1] !== value) list.push(value); };
  const listFor = (el) => seen[el.getAttribute('data-testid')] || (seen[el.getAttribute('data-testid')] = []);
  new MutationObserver((records) => {
    const touched = new Set();
    for (const record of records) {
      if (record.type === 'attributes') {
        if (!record.target.hasAttribute('data-testid')) continue;
        push(record.attributeName === 'data-state' ? states : listFor(record.target), record.oldValue);
        touched.add(record.target);
      } else {
        for (const node of record.addedNodes) {
          if (node.nodeType !== 1) continue;
          if (node.hasAttribute('data-testid')) touched.add(node);
          node.querySelectorAll('[data-testid]').forEach((child) => touched.add(child));
        }
      }
    }
    for (const el of touched) {
      if (el.hasAttribute('data-state')) push(states, el.getAttribute('data-state'));
      else if (el.hasAttribute('data-status')) push(listFor(el), el.getAttribute('data-status'));
    }
  }).observe(document, {
    subtree: true, childList: true, attributes: true, attributeOldValue: true,
    attributeFilter: ['data-status', 'data-state'],
  });
})();
"""

BOARD_STATE = """
() => ({
  cards: Object.fromEntries([...document.querySelectorAll('[data-testid^="card-"]')]
    .map((card) => [card.dataset.orderId, card.dataset.status])),
  counters: Object.fromEntries(
    [...document.querySelectorAll('[data-testid^="counter-"]')].map((counter) =>
      [counter.dataset.testid.slice(8), Number(counter.dataset.total ?? counter.textContent)])
  ),
})
"""

# Installed before any page script: a Notification API that records what the page shows, with a
# permission the "user" grants on request and that lasts for the browser context (like a real one).
FAKE_NOTIFICATIONS = """
(() => {
  const shown = [];
  window.__notifications = shown;
  class FakeNotification {
    static get permission() { return localStorage.getItem('test.permission') || 'default'; }
    static async requestPermission() { localStorage.setItem('test.permission', 'granted'); return 'granted'; }
    constructor(title, options = {}) { shown.push({ title, body: options.body }); }
    close() {}
  }
  window.Notification = FakeNotification;
})();
"""

# How the page fits the window: horizontal and vertical page scroll, and whether the dashboard's own
# area (which scrolls as a fallback) has to.
LAYOUT = """
() => {
  const root = document.documentElement;
  const main = document.querySelector('main');
  return {
    scrollWidth: root.scrollWidth, width: window.innerWidth,
    scrollHeight: root.scrollHeight, height: window.innerHeight,
    mainOverflow: main.scrollHeight - main.clientHeight,
  };
}
"""


# --- helpers -------------------------------------------------------------------------------------------


def wait_until(page, probe, timeout: float, message: str):
    """Polls `probe` while letting Playwright dispatch its events (time.sleep would starve it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"{message} (within {timeout}s); last value {value!r}"
        page.wait_for_timeout(100)


def log_in(page, username: str) -> None:
    page.goto("/login/?next=/")
    page.fill("#id_username", username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))


def create_order(client, dishes: list[int], address: str, **extra) -> int:
    body = {"items": [{"dish": dish, "quantity": 1 + index} for index, dish in enumerate(dishes)]}
    response = client.post("/api/orders/", json={**body, "delivery_address": address, **extra})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def map_markers(page) -> dict[str, list[int]]:
    """What the map holds, by kind (restaurants, destinations, couriers), clustered or not."""
    return page.evaluate("window.liveops.mapMarkers()")


class OnePointGeocoder:
    """A geocoder that finds every address at one point (the tests run without a geocoder process)."""

    def __init__(self, point: tuple[float, float]) -> None:
        self.point = point

    def lookup(self, address: str) -> geocoding.Place:
        return geocoding.Place(lat=self.point[0], lng=self.point[1], label=address)


def place_on_map(order_id: int, point: tuple[float, float] = (50.4501, 30.5234)) -> None:
    """Locates an order as the geocoding task does (services.order_geocode): its `order.located` event
    brings the point to the board."""

    def locate() -> None:
        Order.objects.filter(pk=order_id).update(geocode_status=Order.GeocodeStatus.PENDING)
        services.order_geocode(order_id=order_id, geocoder=OnePointGeocoder(point))

    in_thread(locate)


def card(page, order_id: int):
    return page.locator(f'[data-testid="card-{order_id}"]')


def db_statuses() -> dict[str, str]:
    return in_thread(lambda: {str(pk): status for pk, status in Order.objects.values_list("pk", "status")})


def db_status(order_id: int) -> str:
    return in_thread(lambda: Order.objects.get(pk=order_id).status)


def board_matches_database(page) -> bool:
    board = page.evaluate(BOARD_STATE)
    statuses = db_statuses()
    counts = Counter(statuses.values())
    return board["cards"] == statuses and board["counters"] == {status: counts[status] for status in STATUSES}


def dishes_of(world) -> dict[str, int]:
    return in_thread(lambda: {kitchen.name: factories.dish(kitchen).pk for kitchen in world.kitchens})


# --- the dashboard ---------------------------------------------------------------------------------------


def test_operator_dashboard_is_live_resumes_and_acts(world, page, rest, live_stack):
    providers = live_stack.providers
    dishes = dishes_of(world)
    customer = rest(world.customer_token)
    operator = rest(world.operator_token)

    # Every operator socket goes through Playwright, so a reconnect can be held back at will.
    held, hold = [], {"on": False}

    def route_socket(socket) -> None:
        if hold["on"]:
            held.append(socket)
        else:
            socket.connect_to_server()

    page.route_web_socket(re.compile(r"/ws/operators/"), route_socket)
    page.add_init_script(RECORDER)
    log_in(page, "olena")
    indicator = page.get_by_test_id("live-indicator")
    expect(indicator).to_have_attribute("data-state", "connected")
    for status in STATUSES:
        expect(page.get_by_test_id(f"column-{status}")).to_be_visible()
        expect(page.get_by_test_id(f"counter-{status}")).to_have_text("0")

    # 1. An order crosses the board by itself, no reload: created, through the kitchens, delivered.
    # Steps of a second: slower than a relay or a browser held up by a busy machine, so the board shows
    # the order moving rather than all its events in one frame.
    for name in ("melange", "bueno", "uklon"):
        providers[name].configure(step_seconds=1.0)
    first = create_order(customer, [dishes["Melange"], dishes["Bueno"]], ADDRESSES[0])
    expect(card(page, first)).to_have_attribute("data-status", "delivered", timeout=45_000)
    for name in ("melange", "bueno", "uklon"):
        providers[name].configure(step_seconds=providers[name].initial_config["step_seconds"])
    path = page.evaluate(f"window.__seen['card-{first}']")
    assert path[-1] == "delivered", path
    assert set(path) & {"submitted", "cooking", "ready", "courier_search", "delivering"}, path
    assert [PIPELINE.index(status) for status in path] == sorted(PIPELINE.index(s) for s in path), path
    expect(page.get_by_test_id("counter-delivered")).to_have_text("1")
    wait_until(page, lambda: len(map_markers(page)["restaurants"]) == 2, 10, "both kitchens on the map")

    # 2. The connection drops; an order is created and moves while the dashboard is away; on resume
    # the server replays the gap and the board equals the database.
    for name in ("melange", "bueno"):
        providers[name].configure(step_seconds=60)  # the next order waits in "submitted" meanwhile
    wait_until(page, lambda: board_matches_database(page), 10, "board settled before the drop")
    last_seq = page.evaluate("window.liveops.lastSeq()")
    hold["on"] = True
    page.evaluate("window.liveops.dropConnection()")
    expect(indicator).to_have_attribute("data-state", "reconnecting")
    wait_until(page, lambda: held, 10, "the dashboard tries to reconnect")
    assert f"after={last_seq}" in held[0].url
    second = create_order(customer, [dishes["Pasta Fabbrica"]], ADDRESSES[1])
    wait_until(page, lambda: db_status(second) == "submitted", 10, "second order submitted")
    expect(card(page, second)).to_have_count(0)  # nothing arrives while disconnected
    hold["on"] = False
    held[0].connect_to_server()
    expect(indicator).to_have_attribute("data-state", "connected")
    expect(card(page, second)).to_have_attribute("data-status", "submitted")
    wait_until(page, lambda: board_matches_database(page), 10, "board equals the database after resume")
    latest = in_thread(lambda: OrderEvent.objects.aggregate(seq=Max("seq"))["seq"])
    assert page.evaluate("window.liveops.lastSeq()") == latest
    assert page.evaluate("window.__states").count("reconnecting") >= 2  # page load, then the drop

    # 3. The drawer shows the order's whole history; Cancel goes out over REST and comes back live.
    card(page, first).click()
    drawer = page.get_by_test_id("drawer")
    expect(drawer).to_be_visible()
    events = in_thread(lambda: OrderEvent.objects.filter(order_id=first).count())
    expect(drawer.locator('[data-testid="drawer-timeline"] li')).to_have_count(events)
    expect(drawer.get_by_test_id("drawer-timeline")).to_contain_text("Order created")
    expect(drawer.get_by_test_id("drawer-timeline")).to_contain_text(re.compile(r"→ Delivered"))
    expect(drawer.locator(".leg")).to_have_count(3)  # two kitchens and the delivery
    expect(page.get_by_test_id("cancel-button")).to_be_disabled()  # delivered: nothing to cancel
    page.keyboard.press("Escape")
    expect(drawer).to_be_hidden()

    card(page, second).click()
    page.get_by_test_id("cancel-button").click()
    # The dialog says what will happen: the kitchen that has the order is asked, and may refuse.
    expect(page.get_by_role("dialog")).to_contain_text("Pasta Fabbrica (Melange)")
    expect(page.get_by_role("dialog")).to_contain_text("Cancel refused")
    page.get_by_role("dialog").locator("textarea").fill("Customer called to cancel")
    page.get_by_test_id("confirm-yes").click()
    expect(card(page, second)).to_have_attribute("data-status", "cancelled")
    expect(drawer.locator('[data-role="status"]')).to_have_text("Cancelled")
    expect(drawer.get_by_test_id("drawer-timeline")).to_contain_text("Customer called to cancel")
    # The kitchen's leg says where asking its provider to cancel stands.
    expect(drawer.get_by_test_id("leg-cancel-status")).to_have_text(
        re.compile(r"Cancel (requested|confirmed)")
    )
    assert db_status(second) == "cancelled"
    page.keyboard.press("Escape")

    # 4. Retry: an operator override fails an order (REST), the drawer retries it.
    third = create_order(customer, [dishes["Sushi Nord"]], ADDRESSES[2])
    place_on_map(third)  # its order.located event brings the point to the map
    response = operator.post(
        f"/api/orders/{third}/override/", json={"status": "failed", "reason": "Kitchen closed early"}
    )
    assert response.status_code == 200, response.text
    card(page, third).click()
    expect(drawer.locator('[data-role="status"]')).to_have_text("Failed")
    page.get_by_test_id("retry-button").click()
    page.get_by_test_id("confirm-yes").click()
    expect(card(page, third)).not_to_have_attribute("data-status", "failed")
    expect(page.get_by_test_id("drawer-error")).to_be_hidden()
    page.keyboard.press("Escape")

    # 5. Filters: by order number, by status, by restaurant; the counters follow them.
    search = page.get_by_test_id("filter-q")
    search.fill(f"#{first}")
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(1)
    expect(page.get_by_test_id("counter-delivered")).to_have_text("1 of 1")
    expect(page.get_by_test_id("counter-cancelled")).to_have_text("0 of 1")
    expect(page.get_by_test_id("filter-summary")).to_have_text("Showing 1 of 3 orders")
    shown_activity = "[...document.querySelectorAll('[data-testid=activity] li')].filter((li) => !li.hidden)"
    feed = page.evaluate(f"{shown_activity}.map((li) => li.dataset.orderId)")
    assert feed and set(feed) == {str(first)}, feed  # the activity feed follows the filters
    wait_until(page, lambda: map_markers(page)["destinations"] == [], 10, "the map follows the filters")
    search.fill("")
    wait_until(page, lambda: map_markers(page)["destinations"] == [third], 10, "the third order's door")
    page.get_by_test_id("filter-status").select_option("cancelled")
    expect(page.get_by_test_id("column-delivered")).to_be_hidden()
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(1)
    page.get_by_test_id("filter-status").select_option("")
    page.get_by_test_id("filter-restaurant").select_option(label="Bueno")
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(1)  # only the first order
    page.get_by_test_id("filter-restaurant").select_option("")
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(3)
    expect(page.get_by_test_id("counter-delivered")).to_have_text("1")

    # 6. The screenshot for the README, on a 1920×1080 screen: orders across the board, and above them
    # what needs an operator: a failed order, a late one (acknowledged), a kitchen whose provider is down.
    page.set_viewport_size({"width": 1920, "height": 1080})
    for name, step in (("melange", 2.5), ("bueno", 3), ("uklon", 5)):
        providers[name].configure(step_seconds=step)
    failed = create_order(customer, [dishes["Bueno"]], ADDRESSES[3])
    operator.post(f"/api/orders/{failed}/override/", json={"status": "failed", "reason": "Kitchen closed"})
    later = (timezone.now() + timedelta(hours=2)).isoformat()
    scheduled = create_order(customer, [dishes["Sushi Nord"], dishes["Melange"]], ADDRESSES[4], eta=later)
    for index, name in enumerate(["Pasta Fabbrica", "Bueno", "Melange", "Sushi Nord", "Pasta Fabbrica"]):
        create_order(customer, [dishes[name]], ADDRESSES[(6 + index) % len(ADDRESSES)])
        page.wait_for_timeout(2000)
    wanted = {"scheduled", "cooking", "courier_search", "delivering", "delivered", "failed", "cancelled"}

    def spread() -> bool:
        counts = page.evaluate(BOARD_STATE)["counters"]
        return all(counts[status] for status in wanted)

    wait_until(page, spread, 20, "orders spread over the board")
    lane = page.get_by_test_id("attention")
    expect(lane.locator(f'[data-kind="failed"][data-order-id="{failed}"]')).to_contain_text("Kitchen closed")

    # Placed 52 minutes ago, no ETA: past the 45-minute promise. The check beat runs every
    # ALERT_CHECK_SECONDS is run here and now.
    late = create_order(customer, [dishes["Melange"]], ADDRESSES[5])
    in_thread(lambda: Order.objects.filter(pk=late).update(created_at=timezone.now() - timedelta(minutes=52)))
    in_thread(check_time_alerts)
    late_entry = lane.locator(f'[data-kind="late"][data-order-id="{late}"]')
    expect(late_entry).to_contain_text("Late")
    expect(card(page, late).locator(".badge-late")).to_have_text("Late")
    late_alert = in_thread(lambda: Alert.objects.get(order_id=late, kind="late").pk)
    response = operator.post(f"/api/alerts/{late_alert}/acknowledge/", json={"note": "Customer informed"})
    assert response.status_code == 200, response.text
    expect(late_entry).to_have_class(re.compile(r"\bis-acknowledged\b"))
    expect(late_entry).to_contain_text("Acknowledged by olena")

    providers["bueno"].configure(error_rate=1.0)  # Bueno goes down: Sushi Nord's next order cannot be placed
    stranded = create_order(customer, [dishes["Sushi Nord"]], ADDRESSES[7])
    expect(lane.locator(f'[data-kind="provider_failing"][data-order-id="{stranded}"]')).to_contain_text(
        "Sushi Nord (Bueno) is failing"
    )
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    # 7. The layout: 1920×1080 is used without a page scroll and the chart stays smaller than the board;
    # at 1280×720 nothing scrolls sideways: the finished columns fold into their counters.
    layout = page.evaluate(LAYOUT)
    assert layout["scrollHeight"] <= layout["height"] and layout["mainOverflow"] <= 0, layout
    assert layout["scrollWidth"] <= layout["width"], layout
    board_box = page.get_by_test_id("board").bounding_box()
    chart_box = page.get_by_test_id("chart").bounding_box()
    assert chart_box["height"] < board_box["height"] and chart_box["width"] < board_box["width"] / 2
    page.set_viewport_size({"width": 1280, "height": 720})
    layout = page.evaluate(LAYOUT)
    assert layout["scrollWidth"] <= layout["width"], layout
    for status in ("delivered", "failed", "cancelled"):
        expect(page.get_by_test_id(f"counter-{status}")).to_be_visible()
        assert page.get_by_test_id(f"column-{status}").bounding_box()["width"] < 60
    expect(card(page, failed)).to_be_hidden()
    page.get_by_test_id("expand-failed").click()
    expect(card(page, failed)).to_be_visible()
    assert page.evaluate(LAYOUT)["scrollWidth"] <= 1280
    providers["bueno"].configure(error_rate=0)
    page.set_viewport_size(VIEWPORT)

    # 8. Ukrainian: the language switcher posts to /i18n/setlang/ and the page comes back translated,
    # provider codes included.
    page.get_by_test_id("lang-uk").click()
    expect(page.locator("html")).to_have_attribute("lang", "uk")
    expect(page.locator("#column-title-cooking")).to_have_text("Готується")
    expect(page.get_by_test_id("filter-status").locator("option").first).to_have_text("Усі статуси")
    expect(indicator).to_have_attribute("data-state", "connected")
    expect(indicator).to_have_text("Наживо")
    expect(card(page, scheduled).locator(".card-due")).to_contain_text("через")
    expect(page.get_by_test_id("attention")).to_contain_text("Потребує уваги")
    # A provider update names its kitchen (and provider) or the courier, and the provider's code in words.
    named = re.compile(r"(Melange|Bueno|Sushi Nord|Pasta Fabbrica|Кур’єр)( \(\w+\))?: [а-яіїєґ’ ]+$")
    provider_update = page.locator('[data-testid="activity"] .type-leg-status', has_text=named)
    expect(provider_update.first).to_be_attached(timeout=20_000)
    for code in ("handed_over", "not started", "preparing", "cooked", "finished"):
        expect(page.get_by_test_id("activity")).not_to_contain_text(code)


def test_failing_provider_alert_is_acknowledged_and_clears(world, page, rest, live_stack):
    """A kitchen's provider answers 500: the order lands in "Needs attention" within seconds, with a
    badge on its card and a desktop notification for the operator who asked for them; it is
    acknowledged from the lane, stays (quieter) while the provider is down, and goes once it answers."""
    melange = live_stack.providers["melange"]
    dishes = dishes_of(world)
    customer = rest(world.customer_token)
    page.add_init_script(FAKE_NOTIFICATIONS)
    log_in(page, "olena")
    lane = page.get_by_test_id("attention")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("attention-count")).to_have_text("0")
    desktop = page.get_by_test_id("alert-desktop")
    desktop.click()  # the browser asks for permission on this click, and only then
    expect(desktop).to_have_attribute("aria-pressed", "true")

    melange.configure(error_rate=1.0)
    order_id = create_order(customer, [dishes["Pasta Fabbrica"]], ADDRESSES[0])
    entry = lane.locator(f'[data-kind="provider_failing"][data-order-id="{order_id}"]')
    expect(entry).to_contain_text("Pasta Fabbrica (Melange) is failing", timeout=10_000)
    expect(entry).to_contain_text("500")  # the server's detail: what the provider answered
    expect(page.get_by_test_id("attention-count")).to_have_text("1")
    expect(card(page, order_id).locator(".badge-provider_failing")).to_have_text("Provider failing")
    wait_until(page, lambda: page.evaluate("window.__notifications.length") == 1, 5, "one notification")
    notification = page.evaluate("window.__notifications[0]")
    assert f"#{order_id}" in notification["title"], notification
    assert "Pasta Fabbrica (Melange)" in notification["body"], notification

    # A reload shows the alert again (the snapshot has it) but does not announce it as new.
    page.reload()
    expect(entry).to_be_visible()
    expect(desktop).to_have_attribute("aria-pressed", "true")  # the choice is remembered
    page.wait_for_timeout(1000)
    assert page.evaluate("window.__notifications.length") == 0

    # The order number opens the drawer, which lists the alert too.
    entry.locator(".attention-order").click()
    drawer = page.get_by_test_id("drawer")
    expect(drawer.get_by_test_id("drawer-alerts")).to_contain_text("Provider failing")
    page.keyboard.press("Escape")

    entry.get_by_test_id("acknowledge").click()
    dialog = page.get_by_test_id("acknowledge-dialog")
    expect(dialog).to_contain_text("Pasta Fabbrica (Melange) is failing")
    dialog.get_by_test_id("acknowledge-note").fill("Called Melange: their API is down")
    dialog.get_by_test_id("acknowledge-confirm").click()
    expect(dialog).to_be_hidden()
    expect(entry).to_have_class(re.compile(r"\bis-acknowledged\b"))
    expect(entry).to_contain_text("Acknowledged by olena")
    expect(entry).to_contain_text("Called Melange: their API is down")
    expect(page.get_by_test_id("attention-count")).to_have_text("0")
    alert = in_thread(lambda: Alert.objects.select_related("acknowledged_by").get(order_id=order_id))
    assert alert.acknowledged_by.username == "olena" and alert.cleared_at is None

    # The provider answers again: the server clears the alert, and the lane lets it go.
    melange.configure(error_rate=0)
    expect(entry).to_have_count(0, timeout=45_000)  # at the leg's next retry (exponential backoff)
    expect(card(page, order_id)).not_to_have_attribute("data-status", "scheduled")
    expect(card(page, order_id).locator(".badge")).to_have_count(0)
    assert in_thread(lambda: Alert.objects.get(pk=alert.pk).cleared_at) is not None


def test_reload_filters_search_and_history(world, page, rest, live_stack):
    """A reload keeps today's finished orders, failures of any age and the filters (they live in the URL);
    the search finds orders that are no longer on the board, and History lists and opens any order."""
    dishes = dishes_of(world)
    customer = rest(world.customer_token)
    operator = rest(world.operator_token)
    delivered = create_order(customer, [dishes["Melange"]], ADDRESSES[0])
    later = (timezone.now() + timedelta(hours=3)).isoformat()
    cancelled = create_order(customer, [dishes["Bueno"]], ADDRESSES[1], eta=later)
    failed = create_order(customer, [dishes["Sushi Nord"]], ADDRESSES[2], eta=later)
    old_failure = create_order(customer, [dishes["Pasta Fabbrica"]], ADDRESSES[3], eta=later)
    old_delivered = create_order(customer, [dishes["Pasta Fabbrica"]], "Khreshchatyk St, 1", eta=later)
    assert (
        operator.post(f"/api/orders/{cancelled}/cancel/", json={"reason": "Changed mind"}).status_code == 200
    )
    for order_id in (failed, old_failure):
        response = operator.post(
            f"/api/orders/{order_id}/override/", json={"status": "failed", "reason": "No stock"}
        )
        assert response.status_code == 200, response.text
    response = operator.post(
        f"/api/orders/{old_delivered}/override/", json={"status": "delivered", "reason": "Test"}
    )
    assert response.status_code == 200, response.text
    wait_until(page, lambda: db_status(delivered) == "delivered", 30, "the first order delivered")
    # Geocoding is a change too (it moves updated_at): let it land before the orders are backdated.
    pending = Order.objects.filter(
        pk__in=[old_failure, old_delivered], geocode_status=Order.GeocodeStatus.PENDING
    )
    wait_until(page, lambda: not in_thread(pending.exists), 30, "the backdated orders geocoded")
    # Two of them ended days ago: the failure still has its open alert, the delivered one has nothing.
    days_ago = timezone.now() - timedelta(days=3)
    in_thread(
        lambda: Order.objects.filter(pk__in=[old_failure, old_delivered]).update(
            created_at=days_ago, updated_at=days_ago
        )
    )

    log_in(page, "olena")
    for _ in range(2):  # the first load, then a reload: the same board
        for order_id, status in ((delivered, "delivered"), (cancelled, "cancelled"), (failed, "failed")):
            expect(card(page, order_id)).to_have_attribute("data-status", status)
        expect(card(page, old_failure)).to_have_attribute("data-status", "failed")  # its alert is open
        expect(card(page, old_delivered)).to_have_count(0)  # ended days ago: History has it
        expect(page.get_by_test_id("attention").locator(f'[data-order-id="{old_failure}"]')).to_be_visible()
        page.reload()

    # Filters and their counters; a reload keeps them, the URL carries them.
    page.get_by_test_id("filter-provider").select_option("bueno")
    expect(page.get_by_test_id("counter-cancelled")).to_have_text("1 of 1")
    expect(page.get_by_test_id("counter-failed")).to_have_text("1 of 2")
    expect(page.get_by_test_id("counter-delivered")).to_have_text("0 of 1")
    expect(page.get_by_test_id("filter-summary")).to_have_text("Showing 2 of 4 orders")
    page.get_by_test_id("filter-q").fill("Volodymyrska")
    expect(page.get_by_test_id("counter-cancelled")).to_have_text("1 of 1")
    expect(page.get_by_test_id("counter-failed")).to_have_text("0 of 2")
    wait_until(
        page, lambda: "q=Volodymyrska" in page.url and "provider=bueno" in page.url, 5, "filters in the URL"
    )
    page.reload()
    expect(page.get_by_test_id("filter-q")).to_have_value("Volodymyrska")
    expect(page.get_by_test_id("filter-provider")).to_have_value("bueno")
    expect(page.get_by_test_id("counter-cancelled")).to_have_text("1 of 1")
    expect(page.get_by_test_id("counter-failed")).to_have_text("0 of 2")

    # What cannot be used is said, not ignored: a link with an unknown status, a malformed number.
    page.goto("/?status=lost&q=%23abc")
    errors = page.get_by_test_id("filter-errors")
    expect(errors).to_contain_text("There is no status “lost”")
    expect(errors).to_contain_text("“#abc” is not an order number")
    expect(page.get_by_test_id("filter-q")).to_have_attribute("aria-invalid", "true")
    page.get_by_test_id("clear-filters").click()
    expect(errors).to_be_hidden()
    expect(page.get_by_test_id("filter-summary")).to_have_text("4 orders on the board")

    # The search box asks the API when the board has no match: an order that ended days ago.
    page.get_by_test_id("filter-q").fill(f"#{old_delivered}")
    lookup = page.get_by_test_id("search-lookup")
    expect(lookup).to_contain_text("No order on the board matches")
    lookup.get_by_test_id(f"lookup-{old_delivered}").click()
    drawer = page.get_by_test_id("drawer")
    expect(drawer.locator('[data-role="title"]')).to_have_text(f"Order #{old_delivered}")
    expect(drawer.locator('[data-role="status"]')).to_have_text("Delivered")
    expect(drawer.get_by_test_id("drawer-timeline")).to_contain_text("Test")  # the override's reason
    page.keyboard.press("Escape")

    # History: every order, server-paged, the same filters; a row opens the drawer.
    page.get_by_test_id("clear-filters").click()
    page.get_by_test_id("view-history").click()
    history = page.get_by_test_id("history")
    expect(history.locator("tbody tr")).to_have_count(5)
    expect(history.get_by_test_id("history-summary")).to_contain_text("of 5 orders")
    page.get_by_test_id("filter-q").fill("Khreshchatyk")
    expect(history.locator("tbody tr")).to_have_count(1)
    page.get_by_test_id("filter-to").fill((timezone.localdate() - timedelta(days=1)).isoformat())
    expect(history.get_by_test_id(f"history-row-{old_delivered}")).to_be_visible()  # placed 3 days ago
    assert "view=history" in page.url and "q=Khreshchatyk" in page.url
    page.reload()
    expect(history.get_by_test_id(f"history-row-{old_delivered}")).to_be_visible()
    history.get_by_test_id(f"history-row-{old_delivered}").click()
    expect(drawer.locator('[data-role="title"]')).to_have_text(f"Order #{old_delivered}")
    expect(drawer.locator(".leg")).to_have_count(1)
    page.keyboard.press("Escape")
    page.get_by_test_id("filter-from").fill(timezone.localdate().isoformat())
    expect(page.get_by_test_id("filter-errors")).to_contain_text("“To” is before “From”")
    page.get_by_test_id("view-board").click()
    expect(page.get_by_test_id("board")).to_be_visible()


# --- the tracking page -------------------------------------------------------------------------------------


def test_customer_tracks_an_order_live(world, page, rest, live_stack):
    for name in ("melange", "bueno", "uklon"):
        live_stack.providers[name].configure(step_seconds=1.5)
    dishes = dishes_of(world)
    order_id = create_order(rest(world.customer_token), [dishes["Melange"]], ADDRESSES[0])
    place_on_map(order_id)
    page.add_init_script(RECORDER)

    # A customer landing on the dashboard is sent on to their latest order.
    log_in(page, "alice")
    expect(page.get_by_role("heading", name="This dashboard is for operators")).to_be_visible()
    page.get_by_role("link", name=f"Track your latest order #{order_id}").click()
    page.wait_for_url(f"**/orders/{order_id}/track/")

    timeline = page.get_by_test_id("timeline")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    expect(timeline).to_have_attribute("data-status", "delivered", timeout=30_000)
    assert len(page.evaluate("window.__seen['timeline']")) >= 2, "the steps moved while the page was open"
    expect(timeline.locator('[aria-current="step"]')).to_have_attribute("data-step", "delivered")
    # Every customer step is done (the customer's steps group the pipeline: realtime.views.CUSTOMER_STEPS).
    expect(timeline.locator('.step:not([data-step="end"])')).not_to_have_count(0)
    expect(timeline.locator('.step:not([data-step="end"]):not(.is-done)')).to_have_count(0)
    expect(timeline.locator('[data-step="end"]')).to_be_hidden()
    updates = page.get_by_test_id("events")
    # The history in the customer's words (track.js): from placing the order to its delivery.
    expect(updates.locator('li[data-type="order.created"]')).to_have_count(1)
    expect(updates.locator('li[data-type="order.status"]').first).to_be_visible()
    expect(updates.locator("li").first).to_have_attribute("data-type", "order.status")  # newest first
    expect(page.locator('[data-testid="map"] .map-destination')).to_have_count(1)
    expect(page.locator('[data-testid="map"] .map-restaurant')).to_have_count(1)
    page.screenshot(path=str(live_stack.daphne_log.parent / "track.png"))


# --- protocol v2: what lean events leave in the browser ---------------------------------------------------


def fresh_snapshot(live_stack, token: str) -> dict[str, dict]:
    """The orders of a snapshot taken now on a new operators' socket, by id (as JSON object keys)."""
    from websockets.sync.client import connect

    url = live_stack.url.replace("http://", "ws://") + "/ws/operators/"
    with connect(url, additional_headers={"Authorization": f"Token {token}"}, max_size=None) as socket:
        frame = json.loads(socket.recv(timeout=10))
    assert frame["type"] == "snapshot" and frame["parts"] == 1
    return {str(order["id"]): order for order in frame["orders"]}


def test_lean_events_leave_the_board_identical_to_a_fresh_snapshot(world, page, rest, live_stack):
    """The dashboard holds orders whole and merges each v2 event into its order (frontend/static/liveops/
    live.js): after orders went through the pipeline, an override, alerts raised and acknowledged, and
    events for an order it never held (it asks the server for it), every order it holds is exactly what
    a fresh snapshot says."""
    dishes = dishes_of(world)
    customer = rest(world.customer_token)
    # An order that ended days ago: on no board, until an alert brings it back.
    forgotten = in_thread(lambda: factories.make_order(world.customer, world.kitchens[2]).pk)
    in_thread(lambda: services.order_cancel(order_id=forgotten, actor=world.operator, reason="test"))
    wait_until(
        page,
        lambda: not in_thread(Leg.objects.filter(order_id=forgotten, cancel_status="requested").exists),
        30,
        "cancelled",
    )
    days_ago = timezone.now() - timedelta(days=3)
    in_thread(lambda: Order.objects.filter(pk=forgotten).update(created_at=days_ago, updated_at=days_ago))

    log_in(page, "olena")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    assert str(forgotten) not in page.evaluate("Object.fromEntries(window.liveops.orders())")

    moving = [create_order(customer, [dishes["Melange"], dishes["Bueno"]], ADDRESSES[n]) for n in range(2)]
    for order_id in moving:
        expect(card(page, order_id)).to_have_attribute("data-status", "delivered", timeout=60_000)
    # An override (a failure reason, the `failed` alert), and an alert on an order off the board.
    in_thread(
        lambda: services.order_override_status(
            order_id=moving[0], actor=world.operator, to_status="failed", reason="rang the customer"
        )
    )

    def raise_on_forgotten(kind: str) -> int:
        order = Order.objects.get(pk=forgotten)
        return alerts.raise_alert(order=order, kind=kind, detail="a kitchen kept it", source="system").pk

    # Acknowledging an alert of a finished order clears it; the other one stays open, on the board.
    seen = in_thread(raise_on_forgotten, Alert.Kind.CANCEL_REFUSED)
    in_thread(lambda: alerts.alert_acknowledge(alert_id=seen, actor=world.operator, note="seen"))
    in_thread(raise_on_forgotten, Alert.Kind.FAILED)
    expect(card(page, forgotten)).to_be_visible()

    def settled():
        latest = in_thread(lambda: OrderEvent.objects.aggregate(seq=Max("seq"))["seq"])
        last_of_forgotten = in_thread(
            lambda: OrderEvent.objects.filter(order_id=forgotten).aggregate(seq=Max("seq"))["seq"]
        )
        held_seq = page.evaluate(f"window.liveops.orders().get({forgotten})?.seq")
        return page.evaluate("window.liveops.lastSeq()") == latest and held_seq == last_of_forgotten

    # The forgotten order's events wait in the browser while it asks for the order, then apply.
    wait_until(page, settled, 20, "every event reached the browser and applied")
    held = page.evaluate("Object.fromEntries(window.liveops.orders())")
    snapshot = fresh_snapshot(live_stack, world.operator_token)
    assert [alert["kind"] for alert in held[str(forgotten)]["alerts"]] == ["failed"]
    assert set(held) == set(snapshot)
    for order_id, order in snapshot.items():
        assert without_position(held[order_id]) == without_position(order), order_id


def without_position(order: dict) -> dict:
    """The order without its courier's position: positions move without events (`locations` frames move
    the map), so an order's copy is the position when it was last rendered, by the relay for an event or
    by a snapshot: a report landing between the two (the simulated courier reports every moment) makes
    them differ, as measured once in CI."""
    if not order.get("courier"):
        return order
    courier = {key: value for key, value in order["courier"].items() if key not in {"lat", "lng", "at"}}
    return {**order, "courier": courier}
