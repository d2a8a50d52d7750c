"""Lock order: the poller, webhooks and operators writing the same orders at once never deadlock.

Every path takes the order row first, then the order's legs in ascending id order; the poller's batch
statements, which lock legs of many orders without their order rows, take the legs in ascending id order
too (orders/services.py). Each test here runs real services in threads of their own, so on database
connections of their own, as separate worker processes would.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from orders import services
from orders.models import Dish, Leg, Order, OrderEvent, Restaurant
from orders.providers import ProviderError, ProviderOrder, get_provider, http
from orders.status import TERMINAL
from orders.sync import answers, leases, tick
from orders.tests import factories
from orders.tests.pipeline import assert_history_is_clean

KITCHENS = 8  # legs of one order: a statement locking them in any order but by id nearly always clashes


# --- helpers ---------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.01)


def deadlocks_so_far() -> int:
    """Deadlocks PostgreSQL detected in this database (a session reports its own when it ends)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def sessions_alive(pids: list[int]) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids])
        return cursor.fetchone()[0] > 0


class Worker:
    """`work()` in a thread of its own, so on a database connection of its own, as another process."""

    def __init__(self, name: str, work: Callable[[], object]) -> None:
        self.name = name
        self.pid: int | None = None
        self.error: BaseException | None = None
        started = threading.Event()

        def run() -> None:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_backend_pid()")
                    self.pid = cursor.fetchone()[0]
                started.set()
                work()
            except BaseException as error:  # re-raised in the test's thread by join()
                self.error = error
            finally:
                started.set()
                connection.close()

        self.thread = threading.Thread(target=run, name=name, daemon=True)
        self.thread.start()
        started.wait(10)

    def waiting_for_a_lock(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [self.pid])
            row = cursor.fetchone()
        return row is not None and row[0] == "Lock"

    def waiting_or_done(self) -> bool:
        return not self.thread.is_alive() or self.waiting_for_a_lock()

    def join(self) -> None:
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), f"{self.name} is still running"
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error


# --- two paths meet on one order: explicit interleaving ------------------------------------------------
#
# An order with 8 legs, x1 < x2 < ... < x8 by id. A poller's claim holds x2. The first path starts and
# stops at x2, holding what it locked before it: x1 (and the order row, if it takes it). The second path
# starts and runs until it waits or ends. Then the claim commits. A path that locked the legs in any order
# but by id would be holding one of x3..x8 while it waits for x1 or x2, and the first path, resuming,
# would wait for it: a deadlock, which PostgreSQL breaks after deadlock_timeout by failing one of them.


@pytest.fixture
def order_of_many_legs(transactional_db, customer) -> tuple[Order, list[Leg]]:
    """An order with KITCHENS kitchen legs, in the state of a claimed batch whose provider calls failed."""
    dishes = []
    for index in range(KITCHENS):
        restaurant = Restaurant.objects.create(
            name=f"Kitchen {index}", provider=("melange", "bueno")[index % 2], address=f"Street {index}"
        )
        dishes.append(Dish.objects.create(restaurant=restaurant, name=f"Dish {index}", price=100))
    order = services.order_create(
        customer=customer,
        items=[services.ItemInput(dish=dish, quantity=1) for dish in dishes],
        delivery_address="Sahaidachnoho St, 10, Kyiv",
        eta=timezone.now() + timedelta(days=1),  # nothing is submitted at commit
    )
    legs = list(order.legs.order_by("id"))
    lease = timezone.now() + timedelta(minutes=5)
    # A row moves within the table each time it is written: updated highest id first, as polls of
    # different batches would, a scan of the table meets the legs in descending id order.
    for leg in reversed(legs):
        Leg.objects.filter(pk=leg.pk).update(
            next_poll_at=lease,
            attempts=1,
            last_error="timeout",
            deadline_at=timezone.now() - timedelta(seconds=1),
        )
    return order, list(order.legs.order_by("id"))


def webhook_status(order: Order, legs: list[Leg]) -> None:
    """Bueno (or anyone) pushes the first status of the order's last leg."""
    leg = legs[-1]
    status = next(iter(get_provider(leg.provider).statuses))
    assert services.leg_apply_status(leg_id=leg.pk, provider_status=status, source="webhook") is not None


def poll_reschedule(order: Order, legs: list[Leg]) -> None:
    """The end of a poll batch: every answered leg is due again after the poll interval."""
    lease, at = legs[0].next_poll_at, timezone.now() + timedelta(seconds=1)
    assert leases.legs_reschedule(leg_ids=[leg.pk for leg in legs], lease_until=lease, at=at) == len(legs)


def poll_clear_failures(order: Order, legs: list[Leg]) -> None:
    assert leases.legs_clear_failures(leg_ids=[leg.pk for leg in legs]) == len(legs)


def poll_external_ids(order: Order, legs: list[Leg]) -> None:
    external_ids = {leg.pk: f"ext-{leg.pk}" for leg in legs}
    assert leases.legs_set_external_ids(external_ids=external_ids) == len(legs)


def operator_cancel(order: Order, legs: list[Leg]) -> None:
    operator = factories.make_user(f"operator-{order.pk}", is_staff=True)
    services.order_cancel(order_id=order.pk, actor=operator, reason="customer called")


def failure_past_deadline(order: Order, legs: list[Leg]) -> None:
    """A provider call of one leg fails once more, past the leg's deadline: the order fails."""
    event = services.leg_record_failure(leg_id=legs[4].pk, error="timeout")
    assert event is not None and event.to_status == "failed"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (webhook_status, poll_reschedule),
        (webhook_status, poll_clear_failures),
        (webhook_status, poll_external_ids),
        (poll_reschedule, operator_cancel),
        (poll_reschedule, failure_past_deadline),
        (poll_reschedule, webhook_status),
    ],
    ids=lambda path: path.__name__,
)
def test_two_paths_meeting_on_one_order_both_finish(order_of_many_legs, first, second):
    order, legs = order_of_many_legs
    held, release = threading.Event(), threading.Event()

    def claim_second_leg() -> None:
        with transaction.atomic():
            Leg.objects.select_for_update().get(pk=legs[1].pk)
            held.set()
            release.wait(30)

    claim = Worker("claim", claim_second_leg)
    assert held.wait(10)
    paths = [Worker(first.__name__, lambda: first(order, legs))]
    wait_until(paths[0].waiting_for_a_lock, what=f"{first.__name__} waits for the claimed leg")
    paths.append(Worker(second.__name__, lambda: second(order, legs)))
    wait_until(paths[1].waiting_or_done, what=f"{second.__name__} waits or ends")
    release.set()
    claim.join()
    for path in paths:
        path.join()


# --- the whole pipeline: two pollers and the webhook path over the same orders -----------------------


def provider_pushes(leg_ids_of: Callable[[], list[int]], done: threading.Event) -> Callable[[], None]:
    """A webhook for every leg as soon as its provider's status changes, racing the pollers for it.

    Each round asks the providers (over HTTP) for the status of every leg of an unfinished order and
    applies each answer through the webhook path, as if every provider pushed like Bueno does.
    """

    async def ask(legs: list[tuple[int, str, str]]) -> list[ProviderOrder | ProviderError]:
        calls = [get_provider(provider).fetch(external_id) for _, provider, external_id in legs]
        return await asyncio.gather(*calls, return_exceptions=True)

    def push() -> None:
        while not done.is_set():
            legs = list(
                Leg.objects.filter(id__in=leg_ids_of())
                .exclude(external_id="")
                .values_list("id", "provider", "external_id")
            )
            for (leg_id, provider, _), answer in zip(legs, http.run(ask(legs)), strict=True):
                if isinstance(answer, ProviderOrder):
                    answers.apply_answer(leg_id=leg_id, provider=provider, answer=answer, source="webhook")
            time.sleep(0.01)

    return push


@pytest.mark.slow
def test_two_pollers_and_webhooks_over_the_same_orders_deliver_every_order_without_a_deadlock(
    providers, live_server, settings, customer, restaurants, caplog
):
    """Two pollers tick over the same 30 orders while Bueno pushes each change twice and every other
    change is pushed too: every order is delivered, each change once, and PostgreSQL saw no deadlock."""
    settings.POLL_BATCH_SIZE = 10  # the legs of one order fall into different batches, of either poller
    kitchens = [
        *restaurants.values(),
        Restaurant.objects.create(name="Melange 2", provider="melange", address="Prorizna 2"),
        Restaurant.objects.create(name="Bueno 2", provider="bueno", address="Lva Tolstoho 3"),
    ]
    for restaurant in kitchens[2:]:
        Dish.objects.create(restaurant=restaurant, name=f"{restaurant.name} dish", price=100)
    providers["bueno"].configure(webhook_duplicate_rate=1.0)
    eta = timezone.now() + timedelta(minutes=settings.ORDER_LEAD_MINUTES, seconds=1)
    order_ids = [
        services.order_create(
            customer=customer,
            items=[services.ItemInput(dish=factories.dish(kitchen), quantity=1) for kitchen in kitchens],
            delivery_address="Sahaidachnoho St, 10, Kyiv",
            eta=eta,  # due in a second: the pollers create the sub-orders, batch by batch
        ).pk
        for _ in range(30)
    ]
    unfinished = Order.objects.filter(pk__in=order_ids).exclude(status__in=TERMINAL)
    deadlocks_before = deadlocks_so_far()
    done = threading.Event()
    errors: list[str] = []

    def poller() -> None:
        while not done.is_set():
            errors.extend(tick.poll_due_legs().errors)
            time.sleep(0.01)

    def legs_of_unfinished_orders() -> list[int]:
        return list(Leg.objects.filter(order__in=unfinished).values_list("id", flat=True))

    workers = [
        Worker("poller 1", poller),
        Worker("poller 2", poller),
        Worker("pushes", provider_pushes(legs_of_unfinished_orders, done)),
    ]
    try:
        wait_until(lambda: not unfinished.exists(), timeout=40, what="every order finished")
    finally:
        done.set()
        for worker in workers:
            worker.join()
    pids = [worker.pid for worker in workers]
    wait_until(lambda: not sessions_alive(pids), what="the workers' database sessions ended")

    assert deadlocks_so_far() == deadlocks_before
    assert "deadlock detected" not in caplog.text
    assert errors == []
    for order in Order.objects.filter(pk__in=order_ids):
        assert order.status == "delivered", order.failure_reason
        assert_history_is_clean(order)
    assert OrderEvent.objects.filter(order_id__in=order_ids, source="webhook").exists()
