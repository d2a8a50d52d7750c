"""The operators' dashboard and the customer's tracking page in a real Chromium, against real processes.

Orders are created over daphne's REST API and moved by the real Celery worker through the provider
simulators; the browser only ever learns about them through its WebSocket (see conftest.py).
"""

import re
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db.models import Max
from django.utils import timezone
from playwright.sync_api import expect

from orders.models import Order, OrderEvent
from orders.tests import factories

from .conftest import in_thread

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
  counters: Object.fromEntries([...document.querySelectorAll('[data-testid^="counter-"]')]
    .map((counter) => [counter.dataset.testid.slice(8), Number(counter.textContent)])),
})
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
    first = create_order(customer, [dishes["Melange"], dishes["Bueno"]], ADDRESSES[0])
    expect(card(page, first)).to_have_attribute("data-status", "delivered", timeout=30_000)
    path = page.evaluate(f"window.__seen['card-{first}']")
    assert path[-1] == "delivered", path
    assert set(path) & {"submitted", "cooking", "ready", "courier_search", "delivering"}, path
    assert [PIPELINE.index(status) for status in path] == sorted(PIPELINE.index(s) for s in path), path
    expect(page.get_by_test_id("counter-delivered")).to_have_text("1")
    expect(page.locator('[data-testid="map"] .map-restaurant')).to_have_count(2)

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
    page.get_by_role("dialog").locator("textarea").fill("Customer called to cancel")
    page.get_by_test_id("confirm-yes").click()
    expect(card(page, second)).to_have_attribute("data-status", "cancelled")
    expect(drawer.locator('[data-role="status"]')).to_have_text("Cancelled")
    expect(drawer.get_by_test_id("drawer-timeline")).to_contain_text("Customer called to cancel")
    assert db_status(second) == "cancelled"
    page.keyboard.press("Escape")

    # 4. Retry: an operator override fails an order (REST), the drawer retries it.
    third = create_order(customer, [dishes["Sushi Nord"]], ADDRESSES[2])
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

    # 5. Filters: by order id, by status, by restaurant.
    page.get_by_test_id("filter-order").fill(str(first))
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(1)
    page.get_by_test_id("filter-order").fill("")
    page.get_by_test_id("filter-status").select_option("cancelled")
    expect(page.get_by_test_id("column-delivered")).to_be_hidden()
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(1)
    page.get_by_test_id("filter-status").select_option("")
    page.get_by_test_id("filter-restaurant").select_option(label="Bueno")
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(1)  # only the first order
    page.get_by_test_id("filter-restaurant").select_option("")
    expect(page.locator('[data-testid^="card-"]:visible')).to_have_count(3)

    # 6. The screenshot for the README: orders caught across the board, one late, one failed.
    for name, step in (("melange", 2.5), ("bueno", 3), ("uklon", 5)):
        providers[name].configure(step_seconds=step)
    failed = create_order(customer, [dishes["Bueno"]], ADDRESSES[3])
    operator.post(f"/api/orders/{failed}/override/", json={"status": "failed", "reason": "Kitchen closed"})
    later = (timezone.now() + timedelta(hours=2)).isoformat()
    scheduled = create_order(customer, [dishes["Sushi Nord"], dishes["Melange"]], ADDRESSES[4], eta=later)
    late = create_order(customer, [dishes["Melange"]], ADDRESSES[5])
    # 52 minutes old: the next event carries the new created_at, so the card turns late.
    in_thread(lambda: Order.objects.filter(pk=late).update(created_at=timezone.now() - timedelta(minutes=52)))
    for index, name in enumerate(["Pasta Fabbrica", "Bueno", "Melange", "Sushi Nord", "Pasta Fabbrica"]):
        create_order(customer, [dishes[name]], ADDRESSES[(6 + index) % len(ADDRESSES)])
        page.wait_for_timeout(2000)
    expect(card(page, late)).to_have_class(re.compile(r"\bis-late\b"))
    expect(card(page, late).locator(".badge-late")).to_have_text("Late")
    wanted = {"scheduled", "cooking", "courier_search", "delivering", "delivered", "failed", "cancelled"}

    def spread() -> bool:
        counts = page.evaluate(BOARD_STATE)["counters"]
        return all(counts[status] for status in wanted)

    wait_until(page, spread, 20, "orders spread over the board")
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.mouse.move(0, 0)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))

    # 7. Ukrainian: the language switcher posts to /i18n/setlang/ and the page comes back translated.
    page.get_by_test_id("lang-uk").click()
    expect(page.locator("html")).to_have_attribute("lang", "uk")
    expect(page.locator("#column-title-cooking")).to_have_text("Готується")
    expect(page.get_by_test_id("filter-status").locator("option").first).to_have_text("Усі статуси")
    expect(indicator).to_have_attribute("data-state", "connected")
    expect(indicator).to_have_text("Наживо")
    expect(card(page, scheduled).locator(".card-age")).to_contain_text("хв")


# --- the tracking page -------------------------------------------------------------------------------------


def test_customer_tracks_an_order_live(world, page, rest, live_stack):
    for name in ("melange", "bueno", "uklon"):
        live_stack.providers[name].configure(step_seconds=1.5)
    dishes = dishes_of(world)
    order_id = create_order(rest(world.customer_token), [dishes["Melange"]], ADDRESSES[0])
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
    expect(timeline.locator(".step.is-done")).to_have_count(len(PIPELINE))
    expect(timeline.locator('[data-step="end"]')).to_be_hidden()
    updates = page.get_by_test_id("events")
    expect(updates).to_contain_text("Order created")
    expect(updates).to_contain_text("Delivering → Delivered")
    expect(page.locator('[data-testid="map"] .map-destination')).to_have_count(1)
    expect(page.locator('[data-testid="map"] .map-restaurant')).to_have_count(1)
    page.screenshot(path=str(live_stack.daphne_log.parent / "track.png"))
