"""The one place that publishes to WebSocket clients, and only after the transaction commits.

Services call `events_after_commit(seq)`; on commit the events are published at once, or, inside a
`batch()` (a poll tick), collected and published together: one channel-layer message per group for
the whole batch. Each event is serialised to JSON once here; each web process joins the strings into
one frame per group (realtime.hub) and hands the same text to all its sockets of that group.

Groups: `operators` (every change), `order.<id>` (one order), `courier.<id>` (that courier's orders).
"""

import asyncio
import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from orders import selectors
from orders.models import Courier, Order, OrderEvent

from . import payloads

logger = logging.getLogger(__name__)

OPERATORS = "operators"
PUBLISH_TIMEOUT_SECONDS = 5


def order_group(order_id: int) -> str:
    return f"order.{order_id}"


def courier_group(courier_id: int) -> str:
    return f"courier.{courier_id}"


# --- what services call ---------------------------------------------------------------------------------

_batch = threading.local()


def events_after_commit(seq: int) -> None:
    transaction.on_commit(partial(_committed, [seq]))


def location_after_commit(courier_id: int) -> None:
    transaction.on_commit(partial(publish_location, courier_id))


@contextmanager
def batch() -> Iterator[None]:
    """Collect the events committed inside, publish them together on exit."""
    if getattr(_batch, "seqs", None) is not None:  # nested: the outer batch publishes
        yield
        return
    _batch.seqs = []
    try:
        yield
    finally:
        seqs, _batch.seqs = _batch.seqs, None
        if seqs:
            publish_events(seqs)


def _committed(seqs: list[int]) -> None:
    pending = getattr(_batch, "seqs", None)
    if pending is not None:
        pending.extend(seqs)
    else:
        publish_events(seqs)


# --- publishing -------------------------------------------------------------------------------------------


def publish_events(seqs: list[int]) -> None:
    """Send committed events to every group that may see them: one message per group, seq ascending."""
    events = list(OrderEvent.objects.filter(seq__in=seqs).order_by("seq"))
    if not events:
        return
    orders = {
        order.pk: order
        for order in selectors.with_stream_details(Order.objects.filter(pk__in={e.order_id for e in events}))
    }
    by_group: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for event in events:
        order = orders[event.order_id]
        text = payloads.dumps(payloads.event_payload(event, payloads.order_payload(order, seq=event.seq)))
        item = (event.seq, order.pk, text)
        by_group[OPERATORS].append(item)
        by_group[order_group(order.pk)].append(item)
        if order.courier_id:
            by_group[courier_group(order.courier_id)].append(item)
    _send_all([(group, {"type": "order.events", "events": items}) for group, items in by_group.items()])


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
    _send_all([(group, message) for group in groups])


def _send_all(messages: list[tuple[str, dict[str, Any]]]) -> None:
    """Publish in order, in one hand-over to the publisher's loop (a poll tick may touch hundreds of groups).

    The group's name travels in each message: a web process subscribes once per group and fans the
    message out to its local sockets itself (realtime.hub), so it must know which group it came from.
    """
    try:
        _publisher().send_all(messages).result(timeout=PUBLISH_TIMEOUT_SECONDS)
    except Exception:
        # The database already holds the change; clients catch up by resuming. Never fail the writer.
        logger.exception("Could not publish to groups %s", ", ".join(group for group, _ in messages[:5]))


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
