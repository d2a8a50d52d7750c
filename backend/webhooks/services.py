"""Outgoing webhooks: every write, and the sending.

Released events become deliveries (`deliveries_for_released`, a subscriber of orders.relay, so events
arrive committed and in seq order). Deliveries travel in lanes, one per endpoint and order: a lane sends
its lowest pending seq first and waits while it fails, so a partner receives each order's events in seq
order. `deliver_lane` claims the head of a lane with a lease (a worker that dies lets it go when the
lease passes), POSTs it, records the attempt, and goes on to the next. A failure on the network, a
timeout, 429 or 5xx is tried again, backing off with jitter, for WEBHOOK_RETRY_HOURS; other answers fail
the delivery at once and the lane moves on. An endpoint failing for WEBHOOK_RETRY_HOURS is disabled.
Everything is at least once: a receiver drops duplicates by the body's `id`.
"""

import json
import logging
import random
import re
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from celery import current_app
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import prefetch_related_objects
from django.utils import timezone
from django.utils.translation import gettext as _

from core import metrics
from orders import selectors as order_selectors
from orders.disclosure import public_reason
from orders.errors import DomainError
from orders.models import EventMark, Order, OrderEvent
from orders.providers import http
from orders.relay import released_seq
from realtime import payloads

from . import sender, signing
from .models import TEST_EVENT, WebhookAttempt, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

MARK = "webhooks"  # EventMark: every event at or below it has its deliveries
CATCH_UP_LIMIT = 5000  # events a call takes from below a batch it finds the mark behind
LEASE_MARGIN_SECONDS = 30
LANE_LIMIT = 200  # deliveries one task sends before it hands the lane to a fresh task
DELIVERY_LOG_DAYS = 30  # how long the delivery log keeps what ended
COUNTDOWN_LIMIT_SECONDS = (
    300  # retries sooner than this are enqueued with a countdown; the sweep finds the rest
)


# What an endpoint URL may look like (the API's schema publishes it): no credentials, no IPv6 literal,
# printable ASCII after the host (`\s` would differ: Python counts \x1c-\x1f as space, JSON Schema not)
URL_PATTERN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?([/?#][!-~]*)?$")


class Conflict(DomainError):
    """The action cannot be taken in the delivery's or endpoint's current state."""

    code = "webhook_conflict"
    http_status = 409


# --- endpoints ---------------------------------------------------------------------------------------


def endpoint_create(
    *, url: str, events: list[str], description: str = "", active: bool = True, actor: Any = None
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (the only moment its secret is shown)."""
    return WebhookEndpoint.objects.create(
        url=url,
        events=events,
        description=description,
        active=active,
        secret=signing.new_secret(),
        created_by=actor,
    )


def endpoint_update(*, endpoint: WebhookEndpoint, **changes: Any) -> WebhookEndpoint:
    """Change url, description, events or active. Turning an endpoint on again forgets its failures."""
    fields = set(changes) & {"url", "description", "events", "active"}
    for name in fields:
        setattr(endpoint, name, changes[name])
    if changes.get("active"):
        endpoint.failing_since = None
        endpoint.disabled_at = None
        endpoint.disabled_reason = ""
        fields |= {"failing_since", "disabled_at", "disabled_reason"}
    endpoint.save(update_fields=[*fields, "updated_at"])
    if changes.get("active"):
        transaction.on_commit(lambda: enqueue_due(endpoint_id=endpoint.pk))
    return endpoint


def validate_url(url: str) -> None:
    """Refuse an endpoint URL partners' webhooks may not be sent to (ValidationError)."""
    if not URL_PATTERN.fullmatch(url):
        raise ValidationError(
            _("Enter an http(s) URL: a host name or IPv4 address, an optional port and path.")
        )
    parts = urlsplit(url)
    if settings.WEBHOOKS_REQUIRE_HTTPS and parts.scheme != "https":
        raise ValidationError(_("Webhook endpoints must use https://."))
    if settings.WEBHOOKS_ALLOW_PRIVATE:
        return
    host = parts.hostname
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        return  # not resolvable yet: checked again on every delivery
    for address in sorted(addresses):
        if sender.refused_reason(address):
            raise ValidationError(
                _("%(host)s is or resolves to a loopback, private or link-local address.") % {"host": host}
            )


# --- from released events to deliveries --------------------------------------------------------------


def deliveries_for_released(events: list[OrderEvent]) -> None:
    """orders.relay subscriber: one delivery per subscribed endpoint for each released event.

    A mark of its own (EventMark "webhooks") makes it safe to fail: the next batch also takes whatever
    lies between the mark and itself, CATCH_UP_LIMIT events at a time (the batch itself then waits for a
    later call, which finds it below the relay's mark). A late event (below the mark) comes alone and is
    taken as it is.
    """
    if not events:
        return
    endpoints = list(WebhookEndpoint.objects.filter(active=True))
    with transaction.atomic():
        mark = EventMark.objects.select_for_update().filter(name=MARK).first()
        if mark is None:
            mark = EventMark.objects.create(name=MARK, seq=events[0].seq - 1)
        todo = list(events)
        if endpoints and mark.seq < events[0].seq - 1:
            missed = list(
                OrderEvent.objects.filter(
                    seq__gt=mark.seq,
                    seq__lt=events[0].seq,
                    at__gte=min(endpoint.created_at for endpoint in endpoints),
                ).order_by("seq")[: CATCH_UP_LIMIT + 1]
            )
            if len(missed) > CATCH_UP_LIMIT:
                logger.warning("Webhook deliveries catching up from #%d", mark.seq)
                todo = missed[:CATCH_UP_LIMIT]
            else:
                todo = [*missed, *events]
        last = max(todo[-1].seq, mark.seq)
        if last > mark.seq:
            EventMark.objects.filter(name=MARK).update(previous=mark.seq, seq=last)
        if not endpoints:
            return
        created = _create_deliveries(endpoints, todo)
        lanes = {(delivery.endpoint_id, delivery.order_id) for delivery in created}
        transaction.on_commit(lambda: _enqueue_lanes(lanes))


def _create_deliveries(endpoints: list[WebhookEndpoint], events: list[OrderEvent]) -> list[WebhookDelivery]:
    wanted = [
        (endpoint, event)
        for event in events
        for endpoint in endpoints
        if endpoint.wants(event.type) and event.at >= endpoint.created_at
    ]
    if not wanted:
        return []
    events = list({event.seq: event for _, event in wanted}.values())
    orders = {
        order.pk: order
        for order in order_selectors.with_payload_details(
            Order.objects.filter(pk__in={e.order_id for e in events})
        )
    }
    prefetch_related_objects([event for event in events if event.alert_id], "alert")
    data = {
        event.seq: event_data(event, payloads.order_payload(orders[event.order_id], seq=event.seq))
        for event in events
        if event.order_id in orders
    }
    now = timezone.now()
    deliveries = [
        WebhookDelivery(
            endpoint=endpoint,
            event=event,
            order_id=event.order_id,
            seq=event.seq,
            type=event.type,
            occurred_at=event.at,
            data=data[event.seq],
            next_attempt_at=now,
        )
        for endpoint, event in wanted
        if event.seq in data
    ]
    # A relay taking over hands the last advance out again: those deliveries exist already
    return WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)


def event_data(event: OrderEvent, order: payloads.OrderPayload) -> dict[str, Any]:
    """The body's `data`: the public order as it stands, and what changed."""
    data: dict[str, Any] = {
        "order": payloads.public_order_payload(order),
        "from": event.from_status,
        "to": event.to_status,
        "reason": public_reason(event),
    }
    if event.type == OrderEvent.Type.LEG_CANCEL:
        data["cancel_status"] = event.cancel_status
    if event.alert_id is not None:
        alert = event.alert
        data["alert"] = {
            "id": alert.pk,
            "kind": alert.kind,
            "raised_at": alert.raised_at.isoformat(),
            "cleared_at": alert.cleared_at.isoformat() if alert.cleared_at else None,
        }
    return data


def body(delivery: WebhookDelivery) -> bytes:
    """What is POSTed: the same bytes on every attempt."""
    return json.dumps(
        {
            "id": str(delivery.id),
            "type": delivery.type,
            "created_at": delivery.occurred_at.isoformat(),
            "seq": delivery.seq,
            "data": delivery.data,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


# --- sending -----------------------------------------------------------------------------------------


def deliver_lane(*, endpoint_id: int, order_id: int | None, limit: int = LANE_LIMIT) -> int:
    """Send the due deliveries of one lane in seq order, until one fails or none is due; how many were
    sent. Test events (order_id None) go to disabled endpoints too: that is how one checks a fix."""
    endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id).first()
    if endpoint is None or (order_id is not None and not endpoint.active):
        return 0
    sent = 0
    while sent < limit:
        delivery = _claim_head(endpoint_id, order_id)
        if delivery is None:
            return sent
        payload = body(delivery)
        headers = {
            signing.HEADER: signing.header_value(endpoint.secret, payload),
            "Liveops-Delivery": str(delivery.id),
            "Liveops-Event": delivery.type,
        }
        outcome = http.run(_post(endpoint.url, payload, headers))
        sent += 1
        endpoint = _record(delivery, endpoint, outcome)
        if not outcome.delivered and not _moves_on(delivery):
            return sent
        if order_id is not None and not endpoint.active:
            return sent
    _enqueue_lanes({(endpoint_id, order_id)})  # more waiting: a fresh task, so others get a turn
    return sent


async def _post(url: str, payload: bytes, headers: dict[str, str]) -> sender.Outcome:
    async with sender.new_session() as session:
        return await sender.post(session, url, payload, headers)


def _moves_on(delivery: WebhookDelivery) -> bool:
    """After a failed attempt: does the lane go on (the delivery failed for good) or wait for it?"""
    return delivery.status != WebhookDelivery.Status.PENDING


def _claim_head(endpoint_id: int, order_id: int | None) -> WebhookDelivery | None:
    """The lane's lowest pending delivery if it is due and nobody holds it, leased to this worker.

    The outer conditions are checked again on the row itself when another worker updated it meanwhile
    (READ COMMITTED), so two workers never both take it, and neither skips ahead of it. Times are the
    statement's, not the transaction's (now()), which may have started before the delivery was due.
    """
    lease = settings.WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS
    table = WebhookDelivery._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""UPDATE {table}
                SET leased_until = statement_timestamp() + make_interval(secs => %s), attempts = attempts + 1
                WHERE id = (SELECT id FROM {table}
                            WHERE endpoint_id = %s AND order_id IS NOT DISTINCT FROM %s AND status = 'pending'
                            ORDER BY seq, created_at LIMIT 1)
                  AND status = 'pending' AND next_attempt_at <= statement_timestamp()
                  AND (leased_until IS NULL OR leased_until < statement_timestamp())
                RETURNING id""",
            [lease, endpoint_id, order_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return WebhookDelivery.objects.get(pk=row[0])


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """How long to wait after the `attempts`-th failed try: doubling, with jitter, capped."""
    delay = min(
        settings.WEBHOOK_BACKOFF_SECONDS * 2 ** min(attempts - 1, 30), settings.WEBHOOK_MAX_BACKOFF_SECONDS
    )
    delay *= random.uniform(0.5, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.WEBHOOK_MAX_BACKOFF_SECONDS))
    return delay


def _record(delivery: WebhookDelivery, endpoint: WebhookEndpoint, outcome: sender.Outcome) -> WebhookEndpoint:
    """Store the attempt and what follows from it; returns the endpoint as it now stands."""
    now = timezone.now()
    window = timedelta(hours=settings.WEBHOOK_RETRY_HOURS)
    next_retry: datetime | None = None
    if outcome.delivered:
        status, result = WebhookDelivery.Status.DELIVERED, "delivered"
    elif outcome.retry and now - delivery.created_at < window:
        status, result = WebhookDelivery.Status.PENDING, "retry"
        next_retry = now + timedelta(seconds=backoff_seconds(delivery.attempts, outcome.retry_after))
    else:
        status, result = WebhookDelivery.Status.FAILED, "refused" if outcome.refused else "failed"
    with transaction.atomic():
        WebhookAttempt.objects.create(
            delivery=delivery,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
            next_retry_at=next_retry,
        )
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=status,
            leased_until=None,
            next_attempt_at=next_retry or now,
            last_status_code=outcome.status_code,
            last_error=outcome.error,
            delivered_at=now if outcome.delivered else None,
        )
        delivery.status = status
        endpoint = _endpoint_after(endpoint.pk, delivered=outcome.delivered, error=outcome.error, now=now)
    metrics.WEBHOOK_DELIVERIES.labels(outcome=result).inc()
    metrics.WEBHOOK_DELIVERY_SECONDS.observe(outcome.duration_ms / 1000)
    log = logger.info if outcome.delivered else logger.warning
    log(
        "Webhook %s #%s to endpoint %s: %s%s",
        delivery.type,
        delivery.seq,
        endpoint.pk,
        result,
        f" ({outcome.error})" if outcome.error else "",
    )
    if status == WebhookDelivery.Status.PENDING and next_retry is not None:
        countdown = (next_retry - now).total_seconds()
        if countdown <= COUNTDOWN_LIMIT_SECONDS:
            _enqueue_lanes({(endpoint.pk, delivery.order_id)}, countdown=countdown)
    return endpoint


def _endpoint_after(endpoint_id: int, *, delivered: bool, error: str, now: datetime) -> WebhookEndpoint:
    """Track how long the endpoint has been failing; disable it once that is WEBHOOK_RETRY_HOURS."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint_id)
    if delivered:
        if endpoint.failing_since is not None:
            endpoint.failing_since = None
            endpoint.save(update_fields=["failing_since", "updated_at"])
        return endpoint
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        endpoint.save(update_fields=["failing_since", "updated_at"])
        return endpoint
    if endpoint.active and now - endpoint.failing_since >= timedelta(hours=settings.WEBHOOK_RETRY_HOURS):
        _disable(endpoint, now=now, error=error)
    return endpoint


def _disable(endpoint: WebhookEndpoint, *, now: datetime, error: str) -> None:
    since = timezone.localtime(endpoint.failing_since).strftime("%Y-%m-%d %H:%M %Z")
    endpoint.active = False
    endpoint.disabled_at = now
    endpoint.disabled_reason = f"Every delivery failed since {since}; last: {error}"[:300]
    endpoint.save(update_fields=["active", "disabled_at", "disabled_reason", "updated_at"])
    given_up = WebhookDelivery.objects.filter(
        endpoint=endpoint, status=WebhookDelivery.Status.PENDING, order__isnull=False
    ).update(status=WebhookDelivery.Status.FAILED, leased_until=None, last_error="endpoint disabled")
    metrics.WEBHOOK_DELIVERIES.labels(outcome="disabled").inc()
    logger.error(
        "Webhook endpoint %s (%s) disabled: failing since %s; %d pending deliveries given up",
        endpoint.pk,
        endpoint.url,
        since,
        given_up,
    )


# --- operators' actions ------------------------------------------------------------------------------


def delivery_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (same id: receivers that got it before drop it)."""
    if not delivery.endpoint.active and delivery.order_id is not None:
        raise Conflict(_("The endpoint is disabled: turn it on first."))
    updated = (
        WebhookDelivery.objects.filter(pk=delivery.pk)
        .exclude(leased_until__gt=timezone.now())
        .update(status=WebhookDelivery.Status.PENDING, next_attempt_at=timezone.now(), leased_until=None)
    )
    if not updated:
        raise Conflict(_("The delivery is being sent right now."))
    transaction.on_commit(lambda: _enqueue_lanes({(delivery.endpoint_id, delivery.order_id)}))
    delivery.refresh_from_db()
    return delivery


def endpoint_send_test(*, endpoint: WebhookEndpoint) -> WebhookDelivery:
    """A `webhook.test` event to check the receiver and its signature check."""
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        seq=released_seq(),
        type=TEST_EVENT,
        occurred_at=now,
        data={"endpoint": endpoint.pk, "message": "A test event from Live Ops"},
        next_attempt_at=now,
    )
    transaction.on_commit(lambda: _enqueue_lanes({(endpoint.pk, None)}))
    return delivery


# --- enqueueing --------------------------------------------------------------------------------------


def _enqueue_lanes(lanes: Iterable[tuple[int, int | None]], countdown: float | None = None) -> None:
    # By name: webhooks.tasks imports this module, not the other way round
    for endpoint_id, order_id in lanes:
        current_app.send_task("webhooks.deliver_lane", (endpoint_id, order_id), countdown=countdown)


def due_lanes(*, limit: int = 1000, endpoint_id: int | None = None) -> list[tuple[int, int | None]]:
    """Lanes whose head is due and free: the sweep's work (retries, and leases of workers that died)."""
    table = WebhookDelivery._meta.db_table
    endpoints = WebhookEndpoint._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT head.endpoint_id, head.order_id FROM (
                    SELECT DISTINCT ON (endpoint_id, order_id)
                           endpoint_id, order_id, next_attempt_at, leased_until
                    FROM {table} WHERE status = 'pending' AND (%s::bigint IS NULL OR endpoint_id = %s)
                    ORDER BY endpoint_id, order_id, seq, created_at) AS head
                JOIN {endpoints} AS endpoint ON endpoint.id = head.endpoint_id
                WHERE head.next_attempt_at <= statement_timestamp()
                  AND (head.leased_until IS NULL OR head.leased_until < statement_timestamp())
                  AND (endpoint.active OR head.order_id IS NULL)
                LIMIT %s""",
            [endpoint_id, endpoint_id, limit],
        )
        return [(row[0], row[1]) for row in cursor.fetchall()]


def enqueue_due(*, endpoint_id: int | None = None) -> int:
    """Enqueue every lane with a due head (of one endpoint, or all); how many."""
    lanes = due_lanes(endpoint_id=endpoint_id)
    _enqueue_lanes(lanes)
    return len(lanes)


def purge_deliveries() -> int:
    """Forget deliveries that ended more than DELIVERY_LOG_DAYS ago (their attempts go with them)."""
    cutoff = timezone.now() - timedelta(days=DELIVERY_LOG_DAYS)
    deleted, _ = (
        WebhookDelivery.objects.exclude(status=WebhookDelivery.Status.PENDING)
        .filter(created_at__lt=cutoff)
        .delete()
    )
    return deleted
