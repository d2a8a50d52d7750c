"""The one place that publishes to WebSocket clients, and only what is committed.

Events reach here from the relay (orders.relay), released in seq order up to the high-water mark:
`publish_released` is subscribed in RealtimeConfig.ready() and sends each released batch as one
channel-layer message per group. Each event is serialised to JSON once here; each web process joins
the strings into one frame per group (realtime.hub) and hands the same text to all its sockets.
Courier locations carry no seq: the services announce them after commit (orders.signals.courier_moved).

Groups: `operators` (every change), `order.<id>` (one order), `courier.<id>` (that courier's orders).
The shape follows the group (orders.disclosure): `operators` get every event whole; the order and courier
groups get the public events only, in the public shape, whoever listens. Their streams thus skip some seqs;
clients order and resume by seq and take no gap for a loss.
"""

import asyncio
import logging
import os
import threading
from collections import defaultdict
from concurrent.futures import Future
from typing import Any

from channels.layers import get_channel_layer
from django.db.models import prefetch_related_objects

from core import metrics
from orders import selectors
from orders.disclosure import is_public_event
from orders.models import Courier, Order, OrderEvent

from . import payloads

logger = logging.getLogger(__name__)

OPERATORS = "operators"
PUBLISH_TIMEOUT_SECONDS = 5


def order_group(order_id: int) -> str:
    return f"order.{order_id}"


def courier_group(courier_id: int) -> str:
    return f"courier.{courier_id}"


def tracking_group(order_id: int) -> str:
    """The sockets opened through the order's tracking links (they join it themselves: it carries no
    events, only the revocation of the links)."""
    return f"track.{order_id}"


# --- what orders announces ------------------------------------------------------------------------------


def location_moved(sender: object, *, courier_id: int, **kwargs: object) -> None:
    """orders.signals.courier_moved receiver (sent after commit): publish the courier's position."""
    publish_location(courier_id)


def tracking_revoked(sender: object, *, order_id: int, **kwargs: object) -> None:
    """orders.signals.tracking_revoked receiver (sent after commit): close the sockets opened through the
    order's links. Not raised: the links are revoked in the database, which a reconnect checks."""
    try:
        _publisher().send_all([(tracking_group(order_id), {"type": "tracking.revoked"})]).result(
            timeout=PUBLISH_TIMEOUT_SECONDS
        )
    except Exception:
        logger.exception("Could not close the tracking sockets of order %s", order_id)


# --- publishing -------------------------------------------------------------------------------------------


def publish_released(events: list[OrderEvent]) -> None:
    """Send events the relay released (seq ascending) to every group that may see them, one message per
    group, in protocol v2 (realtime.payloads.lean_event_payload): each event rendered at most three times,
    whole for operators, public for the order's followers and with the customer's contact for its
    courier, each from one payload of its order per batch. v1 sockets (`?v=1`) get their frames rendered
    by their own web process (realtime.consumers.Stream.render_v1), so v2's fan-out pays nothing for them.
    Raises when a group could not be reached, so that the relay tries again."""
    if not events:
        return
    orders = {
        order.pk: order
        for order in selectors.with_payload_details(Order.objects.filter(pk__in={e.order_id for e in events}))
    }
    prefetch_related_objects(events, "alert__acknowledged_by")  # alert events carry their alert
    built: dict[int, payloads.OrderPayload] = {}  # as the order stands now: the same for its every event
    by_group: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for event in events:
        order = orders.get(event.order_id)
        if order is None:
            continue  # deleted since (its events went with it)
        full = built.get(order.pk)
        if full is None:
            full = built[order.pk] = payloads.order_payload(order, seq=0)  # v2 carries no order seq
        lean = payloads.lean_event_payload(event, full)
        by_group[OPERATORS].append((event.seq, order.pk, payloads.dumps(lean)))
        if not is_public_event(event):
            continue
        public = payloads.lean_public_event_payload(event, payloads.public_order_payload(full))
        by_group[order_group(order.pk)].append((event.seq, order.pk, payloads.dumps(public)))
        if order.courier_id:
            carried = payloads.lean_public_event_payload(event, payloads.courier_order_payload(full))
            by_group[courier_group(order.courier_id)].append((event.seq, order.pk, payloads.dumps(carried)))
    messages = [(group, {"type": "order.events", "events": items}) for group, items in by_group.items()]
    _publisher().send_all(messages).result(timeout=PUBLISH_TIMEOUT_SECONDS)
    metrics.EVENTS_PUBLISHED.inc(len(events))


def publish_location(courier_id: int) -> None:
    """A courier moved: tell operators and the customers of the orders it carries."""
    courier = Courier.objects.filter(pk=courier_id).first()
    if courier is None or courier.lat is None:
        return
    message = {"type": "courier.location", "courier": payloads.courier_payload(courier)}
    groups = [OPERATORS]
    groups += [
        order_group(order_id)
        for order_id in selectors.active_orders().filter(courier_id=courier_id).values_list("id", flat=True)
    ]
    try:
        _publisher().send_all([(group, message) for group in groups]).result(timeout=PUBLISH_TIMEOUT_SECONDS)
    except Exception:
        # The database holds the position; the next one replaces it. Never fail the writer.
        logger.exception("Could not publish courier %s's location", courier_id)


class _Publisher:
    """One event loop thread per process holding the channel layer's Redis connection.

    Publishing from sync code (Celery tasks, DRF views) through async_to_sync would open a new event
    loop, and with it a new Redis connection, on every call.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.layer = get_channel_layer()
        threading.Thread(target=self.loop.run_forever, name="realtime-publisher", daemon=True).start()

    def send_all(self, messages: list[tuple[str, dict[str, Any]]]) -> Future:
        """Publish in order, in one hand-over to the loop (a batch may touch hundreds of groups).

        The group's name travels in each message: a web process subscribes once per group and fans the
        message out to its local sockets itself (realtime.hub), so it must know which group it came from.
        """
        return asyncio.run_coroutine_threadsafe(self._send_all(messages), self.loop)

    async def _send_all(self, messages: list[tuple[str, dict[str, Any]]]) -> None:
        failed = 0
        for group, message in messages:
            try:
                await self.layer.group_send(group, {**message, "group": group})
            except Exception:
                failed += 1
                logger.exception("Could not publish to group %s", group)
        if failed:
            raise RuntimeError(f"{failed} of {len(messages)} publishes failed")


_publisher_instance: _Publisher | None = None
_publisher_lock = threading.Lock()


def _publisher() -> _Publisher:
    global _publisher_instance
    with _publisher_lock:
        # A forked process (Celery prefork) must not share its parent's loop thread or sockets.
        if _publisher_instance is None or _publisher_instance.pid != os.getpid():
            _publisher_instance = _Publisher()
        return _publisher_instance
