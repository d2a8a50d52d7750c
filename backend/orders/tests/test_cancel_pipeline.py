"""Cancel, override and retry over the real pipeline: the simulators over HTTP, PostgreSQL, Redis, and
(for all but the first test) the real Celery worker, beat and relay.

What counts is the providers' own view: after a cancel their `GET` says `cancelled`, or the refusal is
a `cancel_refused` alert on the order; after an override or a retry the order still completes, or the
operator is told why not (409).
"""

import time
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.utils import timezone

from orders import services
from orders.models import Alert, Leg, Order, OrderEvent
from orders.tests import factories
from orders.tests.pipeline import drive
from simulators.testing import Simulator

pytestmark = pytest.mark.slow

FINISHED = ("delivered", "failed", "cancelled")
PATHS = {"melange": "/api/orders/{}", "bueno": "/{}", "uklon": "/drivers/orders/{}"}


def provider_view(providers: dict[str, Simulator], leg: Leg) -> dict:
    """The sub-order as its provider shows it (its own GET, with our credentials)."""
    key = settings.PROVIDERS[leg.provider]["api_key"]
    response = providers[leg.provider].client.get(
        PATHS[leg.provider].format(leg.external_id), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(condition: Callable[[], object], timeout: float, describe: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s:\n{describe()}")
        time.sleep(0.1)


def legs_of(order: Order) -> dict[str, Leg]:
    return {leg.provider: leg for leg in Leg.objects.filter(order=order).order_by("id")}


def describe(*orders: Order, logs: dict | None = None) -> Callable[[], str]:
    def text() -> str:
        lines = []
        for order in orders:
            order.refresh_from_db()
            lines.append(f"order {order.pk}: {order.status} {order.failure_reason}")
            for leg in Leg.objects.filter(order=order).order_by("id"):
                lines.append(
                    f"  {leg.provider} {leg.external_id or '-'} {leg.provider_status or '-'} {leg.status}"
                    f" cancel={leg.cancel_status or '-'} attempts={leg.attempts} {leg.last_error[:120]}"
                )
        if logs:
            lines.append(logs["worker"].read_text()[-3000:])
        return "\n".join(lines)

    return text


def status_is(order: Order, *statuses: str) -> Callable[[], bool]:
    return lambda: Order.objects.filter(pk=order.pk, status__in=statuses).exists()


def cancels_settled(*orders: Order) -> Callable[[], bool]:
    return lambda: not Leg.objects.filter(order__in=orders, cancel_status="requested").exists()


def cancel_history(order: Order) -> dict[int, list[str]]:
    history: dict[int, list[str]] = {}
    for leg_id, state in (
        order.events.filter(type="leg.cancel").order_by("seq").values_list("leg", "cancel_status")
    ):
        history.setdefault(leg_id, []).append(state)
    return history


def refusals(order: Order) -> list[str]:
    return sorted(
        order.alerts.filter(kind=Alert.Kind.CANCEL_REFUSED, cleared_at__isnull=True).values_list(
            "detail", flat=True
        )
    )


# --- in process: the poller's cancel jobs over HTTP, driven tick by tick ---------------------------


def test_a_cancel_is_sent_through_the_poller_and_confirmed_by_the_kitchens(providers, customer, restaurants):
    for simulator in providers.values():
        simulator.configure(step_seconds=600)
    order = factories.make_order(customer, restaurants["melange"], restaurants["bueno"])
    drive(lambda: not Leg.objects.filter(order=order, external_id="").exists())
    services.order_cancel(order_id=order.pk, actor=customer, reason="changed my mind")
    drive(cancels_settled(order))
    for leg in legs_of(order).values():
        assert provider_view(providers, leg)["status"] == "cancelled"
        assert (leg.cancel_status, leg.status, leg.next_poll_at) == ("confirmed", "cancelled", None)
    assert providers["melange"].stats()["cancels"] == providers["bueno"].stats()["cancels"] == 1
    assert set(map(tuple, cancel_history(order).values())) == {("requested", "confirmed")}


def test_a_cancel_whose_provider_keeps_failing_ends_refused_with_an_alert(
    providers, customer, restaurants, settings
):
    settings.PROVIDER_FAILURE_DEADLINE_SECONDS = 1
    providers["melange"].configure(step_seconds=600)
    order = factories.make_order(customer, restaurants["melange"])
    drive(lambda: not Leg.objects.filter(order=order, external_id="").exists())
    providers["melange"].configure(error_rate=1)
    services.order_cancel(order_id=order.pk, actor=customer)
    drive(cancels_settled(order))
    [detail] = refusals(order)
    assert detail.startswith("Melange (Melange) did not confirm the cancellation") and "500" in detail
    providers["melange"].configure(error_rate=0)
    assert provider_view(providers, legs_of(order)["melange"])["status"] == "not started"


# --- with the worker: a cancel in each state ------------------------------------------------------


@pytest.fixture
def quick_retries(monkeypatch):
    """The worker's failure settings, short enough for a test (it reads them from the environment)."""
    monkeypatch.setenv("PROVIDER_MAX_BACKOFF_SECONDS", "0.5")
    monkeypatch.setenv("PROVIDER_FAILURE_DEADLINE_SECONDS", "5")


@pytest.fixture
def operator_api(live_server, operator):
    with httpx.Client(
        base_url=live_server.url,
        headers={"Authorization": f"Token {factories.token_for(operator)}"},
        timeout=10,
    ) as client:
        yield client


def advance(providers: dict[str, Simulator], leg: Leg, status: str) -> None:
    providers[leg.provider].advance(leg.external_id, status)


def test_cancel_in_each_state_reaches_the_providers(
    quick_retries, worker_and_beat, providers, operator_api, customer, restaurants
):
    melange, bueno = restaurants["melange"], restaurants["bueno"]
    for simulator in providers.values():
        simulator.configure(step_seconds=600)  # nothing moves unless the test moves it

    # ready: the kitchen is done, but the courier cannot be booked (Uklon down): it sits in "ready"
    providers["uklon"].configure(down=True)
    ready = factories.make_order(customer, bueno)
    wait_until(lambda: legs_of(ready)["bueno"].external_id, 20, describe(ready, logs=worker_and_beat))
    advance(providers, legs_of(ready)["bueno"], "ready")
    wait_until(
        lambda: Leg.objects.filter(order=ready, kind="delivery", attempts__gte=1).exists(),
        20,
        describe(ready, logs=worker_and_beat),
    )
    assert Order.objects.get(pk=ready.pk).status == "ready"
    assert operator_api.post(f"/api/orders/{ready.pk}/cancel/").status_code == 200
    time.sleep(0.5)
    providers["uklon"].configure(down=False)  # the courier's booking is cancelled once Uklon answers

    scheduled = services.order_create(
        customer=customer,
        items=[services.ItemInput(dish=factories.dish(melange), quantity=1)],
        delivery_address="Sahaidachnoho St, 10",
        eta=timezone.now() + timedelta(hours=3),
    )
    submitted = factories.make_order(customer, melange, bueno)
    cooking = factories.make_order(customer, melange, bueno)
    courier_search = factories.make_order(customer, melange, bueno)
    delivering = factories.make_order(customer, bueno)
    active = [submitted, cooking, courier_search, delivering]
    wait_until(
        lambda: not Leg.objects.filter(order__in=active, external_id="").exists(),
        20,
        describe(*active, logs=worker_and_beat),
    )
    advance(providers, legs_of(cooking)["melange"], "cooking")
    advance(providers, legs_of(cooking)["bueno"], "ready")  # one kitchen done: it will refuse
    advance(providers, legs_of(courier_search)["melange"], "finished")
    advance(providers, legs_of(courier_search)["bueno"], "handed_over")
    advance(providers, legs_of(delivering)["bueno"], "ready")
    wait_until(
        lambda: legs_of(delivering).get("uklon") and legs_of(delivering)["uklon"].external_id,
        20,
        describe(delivering, logs=worker_and_beat),
    )
    advance(providers, legs_of(delivering)["uklon"], "delivery")
    for order, status in [
        (submitted, "submitted"),
        (cooking, "cooking"),
        (courier_search, "courier_search"),
        (delivering, "delivering"),
    ]:
        wait_until(status_is(order, status), 20, describe(order, logs=worker_and_beat))
        assert (
            operator_api.post(f"/api/orders/{order.pk}/cancel/", json={"reason": "test"}).status_code == 200
        )
    assert operator_api.post(f"/api/orders/{scheduled.pk}/cancel/").status_code == 200

    everything = [scheduled, submitted, cooking, ready, courier_search, delivering]
    wait_until(cancels_settled(*everything), 30, describe(*everything, logs=worker_and_beat))

    def cancelled_there(order: Order, *providers_names: str) -> None:
        legs = legs_of(order)
        for name in providers_names:
            assert provider_view(providers, legs[name])["status"] == "cancelled", (order.status, name)
            assert legs[name].cancel_status == "confirmed" and legs[name].next_poll_at is None

    # scheduled: never sent, so nothing to ask and nothing made
    [leg] = legs_of(scheduled).values()
    assert (leg.cancel_status, leg.external_id, leg.next_poll_at) == ("confirmed", "", None)
    assert cancel_history(scheduled) == {leg.pk: ["confirmed"]}
    cancelled_there(submitted, "melange", "bueno")
    cancelled_there(cooking, "melange")
    assert refusals(cooking) == ["Bueno (Bueno) refused to cancel: already ready"]
    assert "uklon" not in legs_of(cooking), "no courier is booked for a cancelled order"
    cancelled_there(ready, "uklon")
    assert refusals(ready) == ["Bueno (Bueno) refused to cancel: already ready"]
    cancelled_there(courier_search, "uklon")
    assert refusals(courier_search) == [
        "Bueno (Bueno) refused to cancel: already handed_over",
        "Melange (Melange) refused to cancel: already finished",
    ]
    cancelled_there(delivering, "uklon")
    assert refusals(delivering) == ["Bueno (Bueno) refused to cancel: already ready"]
    for order in everything:
        order.refresh_from_db()
        assert order.status == "cancelled"
        for leg_id, states in cancel_history(order).items():
            assert states in (["requested", "confirmed"], ["requested", "refused"], ["confirmed"]), (
                leg_id,
                states,
            )

    # Bueno pushes a webhook for each sub-order it cancelled: it arrives and changes nothing further
    bueno_ids = [legs_of(submitted)["bueno"].external_id]
    wait_until(
        lambda: all(
            f"webhook {bueno_id} cancelled -> 200" in providers["bueno"].log_text() for bueno_id in bueno_ids
        ),
        10,
        lambda: providers["bueno"].log_text()[-3000:],
    )
    events = OrderEvent.objects.filter(order__in=everything).count()
    time.sleep(1.0)
    assert OrderEvent.objects.filter(order__in=everything).count() == events
    assert not OrderEvent.objects.filter(order=submitted, source="webhook").exists()


# --- with the worker: every forced status has a follow-up -----------------------------------------


def test_overrides_and_retries_end_delivered_or_are_refused(
    quick_retries, worker_and_beat, providers, operator_api, customer, restaurants
):
    melange, bueno = restaurants["melange"], restaurants["bueno"]
    for simulator in providers.values():
        simulator.configure(step_seconds=600)

    def override(order: Order, status: str) -> httpx.Response:
        return operator_api.post(
            f"/api/orders/{order.pk}/override/", json={"status": status, "reason": "test"}
        )

    # A retry of an order failed by a provider down past its deadline
    providers["melange"].configure(down=True)
    retried = factories.make_order(customer, melange)
    # Resumed out of cancelled: its kitchen refused, and its courier could not be booked nor cancelled
    providers["uklon"].configure(down=True)
    resumed = factories.make_order(customer, bueno)
    wait_until(lambda: legs_of(resumed)["bueno"].external_id, 20, describe(resumed, logs=worker_and_beat))
    advance(providers, legs_of(resumed)["bueno"], "ready")
    wait_until(
        lambda: Leg.objects.filter(order=resumed, kind="delivery", attempts__gte=1).exists(),
        20,
        describe(resumed, logs=worker_and_beat),
    )
    # Bueno answers its cancel slowly, so that it is surely still pending when the override comes (a fast
    # worker could otherwise settle both cancels before the test's next request)
    providers["bueno"].configure(latency_ms=1500)  # under the worker's 2 s timeout
    assert operator_api.post(f"/api/orders/{resumed.pk}/cancel/").status_code == 200
    pending = override(resumed, "ready")
    providers["bueno"].configure(latency_ms=0)
    assert (pending.status_code, pending.json()["code"]) == (409, "invalid_transition"), pending.text
    wait_until(cancels_settled(resumed), 20, describe(resumed, logs=worker_and_beat))
    assert refusals(resumed) == [
        "Bueno (Bueno) refused to cancel: already ready",
        f"Uklon (delivery) did not confirm the cancellation: {legs_of(resumed)['uklon'].last_error}"
        f" ({legs_of(resumed)['uklon'].attempts} attempts)",
    ]
    wait_until(status_is(retried, "failed"), 20, describe(retried, logs=worker_and_beat))
    providers["melange"].configure(down=False)
    providers["uklon"].configure(down=False)
    assert override(resumed, "ready").status_code == 200
    assert not refusals(resumed), "resumed: the refusals need nobody any more"
    assert operator_api.post(f"/api/orders/{retried.pk}/retry/").status_code == 200

    # Refused out of cancelled: its kitchen confirmed the cancel, so it is not cooking any more
    gone = factories.make_order(customer, melange)
    # An override to each active status from a submitted order ("submitted" itself: out of failed)
    targets = ["scheduled", "cooking", "ready", "courier_search", "delivering"]
    forced = {status: factories.make_order(customer, melange, bueno) for status in targets}
    failed = factories.make_order(customer, bueno)
    every = [gone, failed, *forced.values()]
    for order in every:
        wait_until(status_is(order, "submitted"), 20, describe(order, logs=worker_and_beat))
    assert operator_api.post(f"/api/orders/{gone.pk}/cancel/").status_code == 200
    wait_until(cancels_settled(gone), 20, describe(gone, logs=worker_and_beat))
    refused = override(gone, "cooking")
    assert (refused.status_code, refused.json()["code"]) == (409, "invalid_transition")
    assert "Melange (Melange) has cancelled its sub-order" in refused.json()["detail"]
    assert operator_api.post(f"/api/orders/{gone.pk}/retry/").status_code == 409
    for status, order in forced.items():
        response = override(order, status)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == status
    assert override(failed, "failed").status_code == 200
    assert override(failed, "submitted").status_code == 200

    # Now the providers work at their pace: every order but the refused one is delivered
    for simulator in providers.values():
        simulator.configure(step_seconds=0.2)
    completing = [retried, resumed, failed, *forced.values()]
    wait_until(
        lambda: (
            Order.objects.filter(pk__in=[o.pk for o in completing], status__in=FINISHED).count()
            == len(completing)
        ),
        60,
        describe(*completing, logs=worker_and_beat),
    )
    for order in completing:
        order.refresh_from_db()
        assert order.status == "delivered", describe(order)()
        assert not Leg.objects.filter(order=order, next_poll_at__isnull=False).exists()
    gone.refresh_from_db()
    assert gone.status == "cancelled"
    assert provider_view(providers, legs_of(gone)["melange"])["status"] == "cancelled"
    assert [e.type for e in retried.events.filter(type__in=["order.retry"])] == ["order.retry"]
