"""WebSocket consumers: check who is connected, join groups, forward frames. No business rules here.

Protocol (all frames JSON text):
  server → {"type": "snapshot", "seq": latest, "orders": [...]}           on connect (or when too far behind)
  server → {"type": "events", "events": [{"seq", "type", "order", "at", ...}]}   seq ascending, coalesced
  server → {"type": "locations", "couriers": [{"id", "name", "lat", "lng", "at"}]}
  server → {"type": "error", "code": ..., "error": ...}; {"type": "pong"}
  client → {"type": "resume", "after": seq} | {"type": "ping"} | {"type": "location", "lat", "lng"} (couriers)
Connecting with `?after=<seq>` resumes instead of taking a snapshot.
"""

import asyncio
import json
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db.models import QuerySet

from orders import selectors, services
from orders.models import Courier, Order, OrderEvent
from orders.status import ACTIVE

from . import broadcast, payloads

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
REPLAY_FRAME_EVENTS = 200
REMEMBERED_SEQS = 20_000


class RecentSeqs:
    """The seqs sent on this connection lately, so that no event is sent twice."""

    def __init__(self, size: int = REMEMBERED_SEQS) -> None:
        self._order: deque[int] = deque()
        self._seen: set[int] = set()
        self._size = size

    def __contains__(self, seq: int) -> bool:
        return seq in self._seen

    def add(self, seq: int) -> None:
        self._seen.add(seq)
        self._order.append(seq)
        if len(self._order) > self._size:
            self._seen.discard(self._order.popleft())


@dataclass(frozen=True)
class Snapshot:
    seq: int
    text: str
    order_seqs: dict[int, int]
    taken_at: float


# Snapshots shared by the connections of one process for a moment: when hundreds of operators
# reconnect at once (a deploy, a network blip), the board is rendered once, not once per socket.
# Each connection then replays the events after the shared snapshot's seq, so none is missed.
_shared_snapshots: dict[str, Snapshot] = {}


@dataclass
class Stream:
    """What one connection may see: its groups and the orders behind them (read in a worker thread)."""

    groups: list[str]
    visible: Callable[[], QuerySet[Order]]
    only_active: bool = True
    share_key: str = ""  # streams with the same key see the same orders and may share a snapshot
    order_seqs: dict[int, int] = field(default_factory=dict)

    def snapshot(self) -> Snapshot:
        shared = _shared_snapshots.get(self.share_key) if self.share_key else None
        if shared is None or time.monotonic() - shared.taken_at > settings.REALTIME_SNAPSHOT_SHARE_SECONDS:
            shared = self._render_snapshot()
            if self.share_key:
                _shared_snapshots[self.share_key] = shared
        self.order_seqs = shared.order_seqs
        return shared

    def _render_snapshot(self) -> Snapshot:
        seq = selectors.latest_seq()
        orders = self.visible()
        if self.only_active:
            orders = orders.filter(status__in=ACTIVE)
        rows = [
            payloads.order_payload(order, seq=order.last_seq or 0)
            for order in selectors.with_stream_details(orders)
        ]
        text = payloads.dumps({"type": "snapshot", "seq": seq, "orders": rows})
        return Snapshot(seq, text, {row["id"]: row["seq"] for row in rows}, time.monotonic())

    def events_after(self, after: int, limit: int) -> list[tuple[int, str]] | None:
        """Every visible event after `after`, rendered; None when there are more than `limit`."""
        events = list(
            OrderEvent.objects.filter(seq__gt=after, order__in=self.visible()).order_by("seq")[: limit + 1]
        )
        if len(events) > limit:
            return None
        orders = {
            order.pk: order
            for order in selectors.with_stream_details(
                Order.objects.filter(pk__in={e.order_id for e in events})
            )
        }
        return [
            (
                event.seq,
                payloads.dumps(
                    payloads.event_payload(event, payloads.order_payload(orders[event.order_id], event.seq))
                ),
            )
            for event in events
        ]


class LiveConsumer(AsyncWebsocketConsumer):
    """Shared behaviour; subclasses say who may connect and what they see (`authorize`)."""

    stream: Stream | None = None

    # --- connection ---------------------------------------------------------------------------------------

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self._refuse(CLOSE_UNAUTHENTICATED)
            return
        self.stream = await database_sync_to_async(self.authorize)(user)
        if self.stream is None:
            await self._refuse(CLOSE_FORBIDDEN)
            return
        self.user = user
        self.sent = RecentSeqs()
        self.pending: list[tuple[int, int, str]] = []
        self.locations: dict[int, dict[str, Any]] = {}
        self.flush_handle: asyncio.TimerHandle | None = None
        self.open = True
        await self.accept()
        for group in self.stream.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        after = self._after_from_query()
        if after is None:
            await self._send_snapshot()
        else:
            await self._resume(after)

    async def _refuse(self, code: int) -> None:
        # Accept first: a close code only reaches a client on an open WebSocket. Nothing else is sent.
        await self.accept()
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        if self.stream is None:
            return
        self.open = False
        if self.flush_handle is not None:
            self.flush_handle.cancel()
        for group in self.stream.groups:
            await self.channel_layer.group_discard(group, self.channel_name)

    def authorize(self, user: Any) -> Stream | None:
        raise NotImplementedError

    def _after_from_query(self) -> int | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin1")).get("after")
        if not values:
            return None
        try:
            return max(int(values[0]), 0)
        except ValueError:
            return None

    # --- snapshot and resume ------------------------------------------------------------------------------

    async def _send_snapshot(self) -> None:
        snapshot = await database_sync_to_async(self.stream.snapshot)()
        await self.send(text_data=snapshot.text)
        # Events committed after the snapshot was read (it may be shared and a moment old).
        await self._resume(snapshot.seq, quiet=True)

    async def _resume(self, after: int, quiet: bool = False) -> None:
        limit = settings.REALTIME_RESUME_LIMIT
        events = await database_sync_to_async(self.stream.events_after)(after, limit)
        if events is None:
            logger.info("Client %s is over %d events behind: fresh snapshot", self.user, limit)
            await self._send_snapshot()
            return
        fresh = [(seq, text) for seq, text in events if seq not in self.sent]
        for start in range(0, len(fresh), REPLAY_FRAME_EVENTS):
            chunk = fresh[start : start + REPLAY_FRAME_EVENTS]
            await self._send_events([text for _, text in chunk])
            for seq, _ in chunk:
                self.sent.add(seq)
        if not fresh and not quiet:
            await self._send_events([])  # tells the client it is up to date

    # --- live messages from the channel layer -------------------------------------------------------------

    async def order_events(self, message: dict[str, Any]) -> None:
        snapshot_seqs = self.stream.order_seqs
        for seq, order_id, text in message["events"]:
            if seq in self.sent or seq <= snapshot_seqs.get(order_id, 0):
                continue  # already sent, or already part of the snapshot this client holds
            self.pending.append((seq, order_id, text))
        self._schedule_flush()

    async def courier_location(self, message: dict[str, Any]) -> None:
        courier = message["courier"]
        self.locations[courier["id"]] = courier
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self.flush_handle is None and self.open:
            loop = asyncio.get_running_loop()
            self.flush_handle = loop.call_later(
                settings.REALTIME_FLUSH_MS / 1000, lambda: loop.create_task(self._flush())
            )

    async def _flush(self) -> None:
        """Everything that arrived within one flush interval leaves as one frame (per kind)."""
        self.flush_handle = None
        if not self.open:
            return
        pending, self.pending = sorted(self.pending), []
        texts = []
        for seq, _, text in pending:
            if seq not in self.sent:
                self.sent.add(seq)
                texts.append(text)
        if texts:
            await self._send_events(texts)
        if self.locations:
            couriers, self.locations = list(self.locations.values()), {}
            await self.send(text_data=payloads.dumps({"type": "locations", "couriers": couriers}))

    async def _send_events(self, texts: list[str]) -> None:
        # The events are JSON already (rendered once by the publisher): join, don't re-encode.
        await self.send(text_data='{"type":"events","events":[' + ",".join(texts) + "]}")

    # --- frames from the client ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self._error("binary_frame", "Only JSON text frames are accepted.")
            return
        if len(text_data) > settings.REALTIME_MAX_FRAME_BYTES:
            await self._error(
                "frame_too_large", f"Frames are limited to {settings.REALTIME_MAX_FRAME_BYTES} bytes."
            )
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self._error("bad_json", "The frame is not valid JSON.")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self._error("bad_frame", 'Expected an object with a "type".')
            return
        handler = self.handlers().get(frame["type"])
        if handler is None:
            await self._error("unknown_type", f"Unknown frame type {frame['type'][:40]!r}.")
            return
        try:
            await handler(frame)
        except Exception:  # a bug in one handler must not end the connection
            logger.exception("Error handling a %s frame from %s", frame["type"], self.user)
            await self._error("internal_error", "The frame could not be handled.")

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {"resume": self._on_resume, "ping": self._on_ping}

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        after = frame.get("after")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            await self._error("bad_frame", '"after" must be a non-negative integer seq.')
            return
        await self._resume(after)

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self.send(text_data='{"type":"pong"}')

    async def _error(self, code: str, message: str) -> None:
        await self.send(text_data=payloads.dumps({"type": "error", "code": code, "error": message}))


class OperatorsConsumer(LiveConsumer):
    """/ws/operators/: staff see every order."""

    def authorize(self, user: Any) -> Stream | None:
        if not user.is_staff:
            return None
        return Stream(groups=[broadcast.OPERATORS], visible=Order.objects.all, share_key="operators")


class CourierConsumer(LiveConsumer):
    """/ws/couriers/: a courier sees the orders assigned to them and may report their location."""

    def authorize(self, user: Any) -> Stream | None:
        courier = Courier.objects.filter(user=user, is_active=True).first()
        if courier is None:
            return None
        self.courier_id = courier.pk
        self.last_location_at = -math.inf
        return Stream(
            groups=[broadcast.courier_group(courier.pk)],
            visible=lambda: Order.objects.filter(courier_id=courier.pk),
        )

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {**super().handlers(), "location": self._on_location}

    async def _on_location(self, frame: dict[str, Any]) -> None:
        lat, lng = frame.get("lat"), frame.get("lng")
        valid = all(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            for value in (lat, lng)
        )
        if not valid or not (-90 <= lat <= 90 and -180 <= lng <= 180):
            await self._error(
                "bad_location", '"lat" and "lng" must be numbers within [-90, 90] and [-180, 180].'
            )
            return
        now = time.monotonic()
        if now - self.last_location_at < settings.REALTIME_LOCATION_MIN_INTERVAL_SECONDS:
            await self._error("rate_limited", "Location updates are limited; this one was dropped.")
            return
        self.last_location_at = now
        await database_sync_to_async(services.courier_report_location)(
            courier_id=self.courier_id, lat=float(lat), lng=float(lng)
        )


class OrderConsumer(LiveConsumer):
    """/ws/orders/<id>/: the order's customer (or staff) follows one order, finished or not."""

    def authorize(self, user: Any) -> Stream | None:
        order_id = self.scope["url_route"]["kwargs"]["order_id"]
        if not selectors.orders_visible_to(user).filter(pk=order_id).exists():
            return None
        return Stream(
            groups=[broadcast.order_group(order_id)],
            visible=lambda: Order.objects.filter(pk=order_id),
            only_active=False,
        )
