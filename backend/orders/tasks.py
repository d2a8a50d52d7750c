"""Celery tasks: thin wrappers that take ids, call a service or the poller, and own their limits.

No task sleeps or loops waiting for a provider: beat ticks, each tick polls what is due. The services
announce work after commit (orders.signals); OrdersConfig.ready() connects the receivers below.
"""

import logging
import random
from dataclasses import asdict
from smtplib import SMTPException
from typing import Any

from celery import shared_task
from django.conf import settings

from . import alerts, geocoding, notifications, services
from .models import OrderEvent
from .sync import tick

logger = logging.getLogger(__name__)

POLL_SOFT_LIMIT, POLL_HARD_LIMIT = tick.time_limits()


@shared_task(
    name="orders.poll_due_legs",
    ignore_result=True,
    soft_time_limit=POLL_SOFT_LIMIT,
    time_limit=POLL_HARD_LIMIT,
)
def poll_due_legs() -> dict:
    """The beat tick: poll every due leg. Overlapping ticks take disjoint legs (SKIP LOCKED claims)."""
    return asdict(tick.poll_due_legs())


@shared_task(name="orders.check_alerts", ignore_result=True, soft_time_limit=60, time_limit=90)
def check_alerts() -> dict:
    """The beat check of the alerts only time raises: late and stuck orders."""
    return asdict(alerts.check_time_alerts())


@shared_task(
    name="orders.submit_order",
    ignore_result=True,
    soft_time_limit=POLL_SOFT_LIMIT,
    time_limit=POLL_HARD_LIMIT,
)
def submit_order(order_id: int) -> None:
    """Right after an order (or its delivery) is created: send its due legs now, not at the next tick."""
    tick.poll_due_legs(order_ids=[order_id])


# New orders' follow-ups per message: one message per relay batch, up to this many orders each
CREATED_PER_MESSAGE = 100


def created_released(events: list[OrderEvent]) -> None:
    """orders.relay subscriber: the follow-ups of the new orders among released events, one message per
    CREATED_PER_MESSAGE orders (orders_created).

    Sent by the relay once the orders are committed, not by the request that created them: creating an
    order never waits on the broker, a broker away for a moment is retried by the relay (orders.relay,
    Relay._call) instead of failing a request whose order is already committed, and a busy minute's
    orders share a few messages. Sending a batch again (a relay taking over republishes its last batch)
    repeats nothing visible: each follow-up is idempotent."""
    order_ids = [event.order_id for event in events if event.type == OrderEvent.Type.CREATED]
    for start in range(0, len(order_ids), CREATED_PER_MESSAGE):
        orders_created.delay(order_ids[start : start + CREATED_PER_MESSAGE])


@shared_task(
    name="orders.orders_created",
    ignore_result=True,
    soft_time_limit=POLL_SOFT_LIMIT,
    time_limit=POLL_HARD_LIMIT,
)
def orders_created(order_ids: list[int]) -> None:
    """New orders' follow-ups: each customer's email and, with a geocoder, each address's lookup as tasks
    of their own (each claims its work, so a repeated message sends no second email); then their due legs
    sent now, in one tick, rather than at the next beat tick (legs not due yet are left to their time)."""
    for order_id in order_ids:
        send_order_email.delay(order_id)
        if settings.GEOCODER_URL:
            locate_order.delay(order_id)  # an order created without a geocoder is left off (order_geocode)
    tick.poll_due_legs(order_ids=order_ids)


@shared_task(
    name="orders.order_created",
    ignore_result=True,
    soft_time_limit=POLL_SOFT_LIMIT,
    time_limit=POLL_HARD_LIMIT,
)
def order_created(order_id: int, due: bool, locate: bool) -> None:
    """One order's follow-ups, as web processes before the relay sent them (one message per request):
    kept for one release, so messages queued across an upgrade are still worked."""
    orders_created([order_id])


@shared_task(
    name="orders.follow_up",
    ignore_result=True,
    soft_time_limit=POLL_SOFT_LIMIT,
    time_limit=POLL_HARD_LIMIT,
)
def follow_up(due: list[int], notify: list[int]) -> None:
    """What a poll batch's changes call for, from the one message the batch sent: each customer's email
    (an email that fails is handed to send_order_email, which retries it), then those orders' due legs
    (their delivery) sent now in one tick of their own, as submit_order does for one order, rather than
    at the next beat tick."""
    for order_id in notify:
        try:
            notifications.send_order_email(order_id=order_id)
        except (SMTPException, OSError) as error:
            logger.info("Order %s: the email is retried on its own (%s)", order_id, error)
            send_order_email.delay(order_id)
    if due:
        tick.poll_due_legs(order_ids=due)


@shared_task(
    name="orders.send_order_email",
    ignore_result=True,
    autoretry_for=(SMTPException, OSError),
    retry_backoff=True,
    max_retries=5,
    soft_time_limit=30,
)
def send_order_email(order_id: int) -> None:
    """Email the customer the status their order is in (received, on its way, how it ended), once each.
    A failed send gives its claim back, so the retry sends it."""
    notifications.send_order_email(order_id=order_id)


@shared_task(name="orders.locate_order", ignore_result=True, soft_time_limit=60)
def locate_order(order_id: int, failures: int = 0) -> None:
    """Find the order's delivery point. An unreachable geocoder is tried again with backoff, up to
    GEOCODER_RETRIES times, then the order stays off the map; over GEOCODER_RATE, later (not a failure)."""
    geocoder = geocoding.configured_geocoder()
    if geocoder is None:
        return
    try:
        services.order_geocode(
            order_id=order_id, geocoder=geocoder, give_up=failures >= settings.GEOCODER_RETRIES
        )
    except geocoding.RateLimited as limited:
        locate_order.apply_async((order_id, failures), countdown=limited.retry_after + random.random())
    except geocoding.GeocoderError as error:
        delay = min(2**failures, 300) + random.random()
        logger.info("Order %s: geocoding again in %.0fs (%s)", order_id, delay, error)
        locate_order.apply_async((order_id, failures + 1), countdown=delay)


def enqueue_follow_up(sender: Any, *, due: list[int], notify: list[int], **kwargs: Any) -> None:
    """orders.signals.orders_changed receiver."""
    follow_up.delay(due, notify)


def enqueue_submit(sender: Any, *, order_id: int, **kwargs: Any) -> None:
    """orders.signals.order_due receiver."""
    submit_order.delay(order_id)


def enqueue_email(sender: Any, *, order_id: int, **kwargs: Any) -> None:
    """orders.signals.order_notify receiver."""
    send_order_email.delay(order_id)
