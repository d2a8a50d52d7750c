"""Every kind of page works in a real Chromium under the Content-Security-Policy (core/settings.py).

The browser reports each resource or inline code the policy refuses as a console error naming the
"Content Security Policy"; one session visits the sign-in page, the dashboard (with its WebSocket), the
tracking page, the courier page, the Django admin and the Swagger UI, and none may be reported.
"""

import re

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from orders.models import Courier
from orders.tests import factories

from .conftest import in_thread

pytestmark = pytest.mark.slow


def test_pages_run_under_the_content_security_policy(world, page, rest, live_stack):
    violations: list[str] = []

    def on_console(message) -> None:
        if "Content Security Policy" in message.text:
            violations.append(f"{page.url}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: violations.append(f"{page.url}: {error}"))
    in_thread(lambda: get_user_model().objects.filter(pk=world.operator.pk).update(is_superuser=True))
    dish = in_thread(lambda: factories.dish(world.kitchens[0]).pk)
    body = {"items": [{"dish": dish, "quantity": 1}], "delivery_address": "Peremohy Ave, 37"}
    response = rest(world.customer_token).post("/api/orders/", json=body)
    assert response.status_code == 201, response.text
    order = response.json()["id"]

    response = page.goto("/login/?next=/")
    assert "Content-Security-Policy" in {name.title() for name in response.headers}
    page.fill("#id_username", world.operator.username)
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    # connect-src 'self' lets the page open its WebSocket (ws: to the same host, CSP Level 3)
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id(f"card-{order}")).to_be_visible()
    # Scripts may set element.style (the map moves couriers so): style-src governs markup, not the CSSOM.
    page.evaluate("() => { document.body.style.transform = 'translate(1px, 2px)' }")
    assert page.evaluate("document.body.style.transform") == "translate(1px, 2px)"

    page.goto(f"/orders/{order}/track/")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")

    # The courier page needs a courier profile: the operator rides too, for this check.
    in_thread(lambda: Courier.objects.create(user=world.operator, name="Olena"))
    page.goto("/courier/")
    expect(page.get_by_test_id("live-indicator")).to_have_attribute("data-state", "connected")

    page.goto("/admin/")
    expect(page.locator("#content h1")).to_be_visible()
    page.goto("/admin/orders/order/")
    page.locator("#action-toggle").check()  # admin's actions.js counts the selected rows
    expect(page.locator("#changelist-form .action-counter")).to_contain_text("1 of 1")
    page.goto(f"/admin/orders/order/{order}/change/")
    expect(page.locator("#order_form")).to_be_visible()

    page.goto("/api/docs/")  # the split view's script file, the bundle, then /api/schema/ over fetch
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()

    assert violations == []

    # The check can fail: inline code added now is refused, and reported.
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1'; "
        "document.body.append(s); }"
    )
    page.wait_for_timeout(100)
    assert page.evaluate("window.ran") is None
    assert violations and "script-src" in violations[0]
