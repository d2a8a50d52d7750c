"""WebSocket consumers: check who is connected, join groups, forward frames. No business rules here.

Protocol v2 (all frames JSON text; realtime.payloads says what each event carries):
  server → {"type": "snapshot", "seq": latest, "orders": [...]}           on connect (or when too far behind)
  server → {"type": "events", "events": [{"seq", "type", "at", ..., "order": {"id", changed fields}}]}
           seq ascending, coalesced; a replay's frames also carry "orders": the orders they touched, whole
           (each once per replay)
  server → {"type": "order", "order": {...}}                       the answer to a client's "order" frame
  server → {"type": "locations", "couriers": [{"id", "name", "lat", "lng", "at"}]}
  server → {"type": "error", "code": ..., "error": ...}; {"type": "pong"}
  client → {"type": "resume", "after": seq} | {"type": "ping"} | {"type": "order", "id": order id}
           | {"type": "location", "lat", "lng"} (couriers)
Connecting with `?after=<seq>` resumes instead of taking a snapshot. `?v=1` keeps protocol v1 for one
release: every event carries its whole order, as `realtime.payloads.event_payload` builds it.
Sign in with `?ticket=`, an `Authorization: Token` header or the session (realtime.auth). Close codes:
4401 not signed in, 4403 not allowed, 4429 over the frame rate or the user's socket cap, 4503 reconnect
with `?after=`.

Shapes (orders.disclosure): /ws/operators/ carries orders and events whole; /ws/orders/<id>/,
/ws/track/<token>/ (a shared tracking link, no sign-in) and /ws/couriers/ the public shape and only the
public events, even for staff (the shape follows the stream, as it follows the group in
realtime.broadcast). Their seqs have gaps where events are not shown.

Ordering: events reach every client in seq order, each once. The relay (orders.relay) releases them in
seq order only up to its high-water mark, below which every seq is committed or will never exist;
snapshots are taken at the mark and resumes replay up to it, so a client that resumes after the highest
seq it holds can never skip an event that committed late.
"""

import asyncio
import json
import logging
import math
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qs

from autobahn.exception import Disconnected
from channels import DEFAULT_CHANNEL_LAYER
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db.models import QuerySet, prefetch_related_objects
from django.utils import timezone

from core import metrics
from orders import relay, selectors, services
from orders.disclosure import PUBLIC_EVENT_TYPES
from orders.models import Order, OrderEvent
from orders.status import ACTIVE

from . import broadcast, caps, hub, payloads
from .auth import in_thread_pool

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_RATE_LIMITED = 4429  # too many frames from this client, or too many sockets of this user
CLOSE_RESUME = 4503  # unavailable for a moment: reconnect with ?after=<last seq>, the gap is replayed
REPLAY_FRAME_EVENTS = 200
RESUME_COST = 5  # a resume reads the database: it counts as this many frames against the rate
MAX_SEQ = 2**63 - 1  # OrderEvent.seq is a bigint
MAX_ID = 2**63 - 1  # Order.id is a bigint


@dataclass(frozen=True)
class Snapshot:
    seq: int
    texts: list[str]  # the snapshot's frames: one unless it is over payloads.MAX_FRAME_BYTES
    order_seqs: dict[int, int]
    taken_at: float


# Snapshots shared by the connections of one process for a moment: when hundreds of operators
# reconnect at once (a deploy, a network blip), the board is rendered once, not once per socket.
# Each connection then replays the events after the shared snapshot's seq, so none is missed.
_shared_snapshots: dict[str, Snapshot] = {}


@dataclass
class Replay:
    """What a resume sends: the events after a seq up to the mark, rendered, and (v2) the orders they
    touched as JSON by id, whole and as they stand now."""

    upto: int  # the mark
    items: list[hub.EventItem]
    orders: dict[int, str]

    @cached_property
    def frames(self) -> list[str]:
        """Its frames, built once for every socket that takes it whole (a shared replay's, after a drop)."""
        return replay_frames(self.items, self.orders)


def replay_frames(items: list[hub.EventItem], orders: dict[int, str]) -> list[str]:
    """`events` frames of REPLAY_FRAME_EVENTS events; in v2 each order whole once, in the first frame whose
    events touch it: its `seq` is its last event's, so the client holds it as it now stands and the later
    frames' events of it are already part of it (frontend/static/liveops/live.js)."""
    frames, sent = [], set()
    for start in range(0, len(items), REPLAY_FRAME_EVENTS):
        chunk = items[start : start + REPLAY_FRAME_EVENTS]
        touched = list(dict.fromkeys(item[1] for item in chunk if item[1] in orders and item[1] not in sent))
        sent.update(touched)
        frames.append(
            hub.events_frame([item[2] for item in chunk], [orders[order_id] for order_id in touched])
        )
    return frames


@dataclass
class _SharedReplay:
    """One replay, rendered once for the connections of the process that resume from the same seq within
    REALTIME_SNAPSHOT_SHARE_SECONDS: after a drop, a whole board's sockets resume from the same seq, and
    rendering it per socket (re-reading the same orders) made a 1,000-socket storm take minutes.

    The first socket to ask renders it on the thread pool, up to the mark it reads then; the others await
    the same task in the event loop (a thread waiting on a lock for it starved the pool, and the storm's
    handshakes timed out) and take its texts when that mark was read after they joined their groups, or
    is still the mark; else they render a newer one (Stream.replay_after). Keyed by the mark as well, a new
    replay was rendered at every release (10 per second) and the storm took 15-20 s."""

    marked_at: float  # monotonic, just before its mark was read: it serves sockets that joined before
    task: "asyncio.Future[tuple[int, Replay | None]]"  # its mark, and the replay (None: over the limit)
    done_at: float | None = None


# Per event loop (a web process has one; tests start one per scenario): share key, protocol, seq, limit.
SharedReplays = dict[tuple[Any, ...], _SharedReplay]
_shared_replays: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedReplays]" = (
    weakref.WeakKeyDictionary()
)


@dataclass
class Stream:
    """What one connection may see: its groups and the orders behind them (read in a worker thread)."""

    groups: list[str]
    visible: Callable[[], QuerySet[Order]]
    only_active: bool = True
    board: bool = False  # the operators' board: active orders, open alerts, today's finished ones
    share_key: str = ""  # streams with the same key see the same orders and may share a snapshot
    full: bool = False  # orders and events whole (operators); else their public shape and events
    courier: bool = False  # the public shape with the customer's contact (the courier's own orders)
    version: int = 2  # the protocol: 2, lean events; 1 (`?v=1`), every event with its whole order
    order_seqs: dict[int, int] = field(default_factory=dict)

    @property
    def shape(self) -> str:
        return "full" if self.full else "courier" if self.courier else "public"

    def snapshot(self) -> Snapshot:
        shared = _shared_snapshots.get(self.share_key) if self.share_key else None
        if shared is None or time.monotonic() - shared.taken_at > settings.REALTIME_SNAPSHOT_SHARE_SECONDS:
            shared = self._render_snapshot()
            if self.share_key:
                _shared_snapshots[self.share_key] = shared
        self.order_seqs = shared.order_seqs
        return shared

    def _render_snapshot(self) -> Snapshot:
        seq = relay.released_seq()  # first: the orders read next hold every event up to it
        orders = self.visible()
        if self.board:
            orders = selectors.board_orders(orders)
        elif self.only_active:
            orders = orders.filter(status__in=ACTIVE)
        rows = [
            self.shaped(payloads.order_payload(order, seq=order.last_seq or 0))
            for order in selectors.with_stream_details(orders)
        ]
        texts = payloads.snapshot_frames(seq, [payloads.dumps(row) for row in rows])
        return Snapshot(seq, texts, {row["id"]: row["seq"] for row in rows}, time.monotonic())

    async def replay_after(self, after: int, limit: int, joined_at: float) -> Replay | None:
        """The mark, every visible event after `after` up to it, rendered, and (v2) the orders they touched,
        whole and as they stand now, as JSON by id; None when over `limit`.

        Events above the mark are not replayed: they reach the client live, in seq order, once released.
        For that, the mark must be read after the socket joined its groups (`joined_at`, monotonic): the
        relay stores the mark before it publishes, so every event above it is published to a member
        already. A shared replay (_SharedReplay) is taken only on that condition.
        """
        if not self.share_key:
            return (await in_thread_pool(self._replay_to_mark)(after, limit))[1]
        loop = asyncio.get_running_loop()
        replays = _shared_replays.setdefault(loop, {})
        now, window = time.monotonic(), settings.REALTIME_SNAPSHOT_SHARE_SECONDS
        for stale in [
            key for key, shared in replays.items() if shared.done_at and now - shared.done_at > window
        ]:
            del replays[stale]
        key = (self.share_key, self.version, after, limit)
        while True:
            shared = replays.get(key)
            if shared is None or (shared.task.done() and shared.task.exception() is not None):
                break  # none, or it failed: render one
            if shared.marked_at >= joined_at:
                return (await asyncio.shield(shared.task))[1]
            if not shared.task.done():
                # Its mark may have been read before this socket joined: wait for it, then take or start
                # the next, which serves every socket that joined meanwhile (one rendering at a time).
                await asyncio.wait([shared.task])
                if replays.get(key) is shared:
                    break
                continue
            upto, replay = shared.task.result()
            if await in_thread_pool(relay.released_seq)() == upto:
                return replay  # nothing released since its mark
            if replays.get(key) is shared:
                break
        shared = replays[key] = _SharedReplay(
            time.monotonic(), asyncio.ensure_future(in_thread_pool(self._replay_to_mark)(after, limit))
        )
        shared.task.add_done_callback(lambda _, shared=shared: setattr(shared, "done_at", time.monotonic()))
        return (await asyncio.shield(shared.task))[1]

    def _replay_to_mark(self, after: int, limit: int) -> tuple[int, Replay | None]:
        upto = relay.released_seq()
        return upto, self._replay(after, upto, limit)

    def _replay(self, after: int, upto: int, limit: int) -> Replay | None:
        events = OrderEvent.objects.filter(seq__gt=after, seq__lte=upto, order__in=self.visible())
        if not self.full:
            events = events.filter(type__in=PUBLIC_EVENT_TYPES)
        events = list(events.order_by("seq")[: limit + 1])
        if len(events) > limit:
            return None
        items, orders = self._render_all(events, with_orders=self.version >= 2)
        return Replay(upto, items, orders)

    def _render_all(
        self, events: list[OrderEvent], with_orders: bool
    ) -> tuple[list[hub.EventItem], dict[int, str]]:
        """Events rendered in this stream's protocol and shape from their orders as they stand now."""
        prefetch_related_objects(events, "alert__acknowledged_by")  # alert events carry their alert
        orders = Order.objects.filter(pk__in={e.order_id for e in events})
        built = {
            order.pk: self.shaped(payloads.order_payload(order, seq=order.last_seq or 0))
            for order in selectors.with_stream_details(orders)
        }
        items = [
            (event.seq, event.order_id, self._render(event, built[event.order_id]))
            for event in events
            if event.order_id in built  # deleted since
        ]
        if not with_orders:
            return items, {}
        return items, {order_id: payloads.dumps(order) for order_id, order in built.items()}

    def render_v1(self, items: list[hub.EventItem]) -> list[hub.EventItem]:
        """A live batch's events (rendered in v2 by the relay) in protocol v1, from the database: each with
        its whole order as it stands now, which is at or after the event, as v1 promised."""
        events = list(OrderEvent.objects.filter(seq__in=[item[0] for item in items]).order_by("seq"))
        return self._render_all(events, with_orders=False)[0]

    def order_text(self, order_id: int) -> str | None:
        """An `order` frame with that order whole in this stream's shape, or None when it is not visible."""
        found = selectors.with_stream_details(self.visible().filter(pk=order_id)).first()
        if found is None:
            return None
        return payloads.order_frame(self.shaped(payloads.order_payload(found, seq=found.last_seq or 0)))

    def shaped(self, order: payloads.OrderPayload) -> dict[str, Any]:
        """A built order in the shape this stream gets."""
        if self.full:
            return order
        if self.courier:
            return payloads.courier_order_payload(order)
        return payloads.public_order_payload(order)

    def _render(self, event: OrderEvent, order: dict[str, Any]) -> str:
        """One event in this stream's protocol; `order` is the order in the stream's shape."""
        if self.version >= 2:
            if self.full:
                return payloads.dumps(payloads.lean_event_payload(event, order))
            return payloads.dumps(payloads.lean_public_event_payload(event, order))
        order = {**order, "seq": event.seq}  # v1: the order as it stands, numbered by the event
        if self.full:
            return payloads.dumps(payloads.event_payload(event, order))
        return payloads.dumps(payloads.public_event_payload(event, order))


class LiveConsumer(AsyncWebsocketConsumer):
    """Shared behaviour; subclasses say who may connect and what they see (`authorize`).

    Live events come from the process's hub (realtime.hub), not from the channel layer: the socket is a
    member of its groups there from before its snapshot, holds the batches that arrive while it catches
    up, then sends each later batch's shared text as it is. Everything arrives in seq order, so one number
    per socket, the highest seq it has sent (`high`), tells what is new; batches that may overlap what the
    snapshot or a replay gave this client are filtered by it.
    """

    # No channel-layer channel of its own (a Redis subscription per socket, subscribed and unsubscribed
    # one at a time: a reconnect storm's handshakes queued behind them): live batches and layer
    # interruptions come through the process's hub. get_channel_layer(None) is None, as documented.
    channel_layer_alias = None
    stream: Stream | None = None
    open = False
    anonymous = False  # whether a socket may connect without signing in (a tracking link's)
    metrics_stream = ""  # the `stream` label of its frames and open sockets (core.metrics)
    v1_sender: asyncio.Task | None = None  # a v1 socket's task rendering and sending its live batches

    # Channels' dispatch() and websocket_disconnect() without their `aclose_old_connections()`. That call
    # hops to the one thread-sensitive thread to close the old database connections of that thread, before
    # every message (connect, each frame, disconnect) and again after a disconnect: in a reconnect storm,
    # thousands of hops queued on one thread (a fifth of the event loop's time at the drop, measured with
    # py-spy under bench.reconnect). These consumers never use that thread's connection: their reads run on
    # the thread pool (in_thread_pool, whose database_sync_to_async closes old connections itself).

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message["code"])
        raise StopConsumer()

    # --- connection ---------------------------------------------------------------------------------------

    async def connect(self) -> None:
        user = self.scope.get("user")
        if not self.anonymous and (user is None or not user.is_authenticated):
            await self._refuse(CLOSE_UNAUTHENTICATED)
            return
        self.socket_id = uuid.uuid4().hex
        self.stream, admitted = await in_thread_pool(self._admit)(user)
        if self.stream is None:
            await self._refuse(CLOSE_FORBIDDEN)
            return
        self.stream.version = self._version_from_query()
        if not admitted:
            self.stream = None
            logger.info("%s is over REALTIME_SOCKETS_PER_USER: socket refused", user)
            await self._refuse(CLOSE_RATE_LIMITED)
            return
        metrics.SOCKETS_OPEN.labels(stream=self.metrics_stream).inc()  # until disconnect()
        caps.ensure_renewer()
        self.user = user
        self.allowance = float(settings.REALTIME_FRAME_BURST)  # frames this client may send right now
        self.allowance_at = time.monotonic()
        self.warned = False
        self.high = 0  # the highest seq this client holds, from a snapshot, a replay or a batch
        self.filter_upto = 0  # a batch starting above this seq holds nothing the client has
        self.live = False
        self.held: list[hub.EventBatch] = []
        self.v1_backlog: deque[hub.EventBatch] = deque()  # live batches a v1 socket has yet to render
        self.held_locations: dict[int, dict[str, Any]] = {}
        self.open = True
        await self.accept()
        fanout = hub.hub()
        for group in self.stream.groups:
            await fanout.join(group, self)
        self.joined_at = time.monotonic()  # a replay whose mark is read after this misses nothing
        after = self._after_from_query()
        if after is None:
            await self._send_snapshot()
        else:
            await self._resume(after)
        await self._go_live()

    async def _refuse(self, code: int) -> None:
        # Accept first: a close code only reaches a client on an open WebSocket. Nothing else is sent.
        await self.accept()
        await self.close(code=code)

    def _admit(self, user: Any) -> tuple[Stream | None, bool]:
        """What this user may see, and whether they may open one more socket (REALTIME_SOCKETS_PER_USER)."""
        stream = self.authorize(user)
        return stream, stream is not None and caps.claim(self.cap_holder(user), self.socket_id)

    def cap_holder(self, user: Any) -> Any:
        """Whose sockets this one counts among for REALTIME_SOCKETS_PER_USER (called once authorized)."""
        return user.pk

    async def disconnect(self, code: int) -> None:
        if self.stream is None:
            return
        metrics.SOCKETS_OPEN.labels(stream=self.metrics_stream).dec()
        self.open = False
        if caps.holds(self.cap_holder(self.user), self.socket_id):  # else no thread to wait for
            await asyncio.to_thread(caps.release, self.cap_holder(self.user), self.socket_id)
        fanout = hub.hub()
        try:
            for group in self.stream.groups:
                await fanout.leave(group, self)
        except Exception as error:  # Redis is down: its subscriptions are gone anyway
            logger.info("Could not unsubscribe %s's groups on disconnect: %s", self.user, error)

    def authorize(self, user: Any) -> Stream | None:
        raise NotImplementedError

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Every frame written to the socket is counted by stream."""
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        if text_data is not None or bytes_data is not None:
            metrics.FRAMES_SENT.labels(stream=self.metrics_stream).inc()

    def _query(self, name: str) -> list[str]:
        return parse_qs(self.scope.get("query_string", b"").decode("latin1")).get(name, [])

    def _version_from_query(self) -> int:
        """`?v=1` keeps protocol v1 (one release); anything else is v2."""
        return 1 if self._query("v")[:1] == ["1"] else 2

    def _after_from_query(self) -> int | None:
        values = self._query("after")
        if not values:
            return None
        try:
            after = max(int(values[0]), 0)
        except ValueError:
            return None
        return after if after <= MAX_SEQ else None

    # --- snapshot and resume ------------------------------------------------------------------------------

    async def _send_snapshot(self) -> None:
        snapshot = await in_thread_pool(self.stream.snapshot)()
        # The client starts over from the snapshot: what was sent before it no longer counts.
        self.high = snapshot.seq
        self.filter_upto = max([snapshot.seq, *snapshot.order_seqs.values()])
        for text in snapshot.texts:
            await self._send(text)
        # Events released after the snapshot was read (it may be shared and a moment old).
        await self._resume(snapshot.seq, quiet=True)

    async def _resume(self, after: int, quiet: bool = False) -> None:
        """Replay what was released after `after`; batches arriving meanwhile are held (not live)."""
        replay = await self.stream.replay_after(after, settings.REALTIME_RESUME_LIMIT, self.joined_at)
        if replay is None:
            limit = settings.REALTIME_RESUME_LIMIT
            logger.info("Client %s is over %d events behind: fresh snapshot", self.user, limit)
            await self._send_snapshot()
            return
        fresh = [item for item in replay.items if self._is_new(item[0], item[1])]
        self.high = max(self.high, replay.upto)
        # v2: with the orders the events touched, whole, so the client ends right whatever it held of them
        frames = replay.frames if len(fresh) == len(replay.items) else replay_frames(fresh, replay.orders)
        for text in frames:
            await self._send(text)
        if not fresh and not quiet:
            await self._send_events([])  # tells the client it is up to date

    def _is_new(self, seq: int, order_id: int) -> bool:
        """Neither sent on this socket (seq order: at or below `high`) nor part of the snapshot's order."""
        return seq > self.high and seq > self.stream.order_seqs.get(order_id, 0)

    async def _go_live(self) -> None:
        """Send the batches held while catching up, filtered, then take batches as they come."""
        await self._v1_drained()
        while self.held:
            batches, self.held = self.held, []
            for batch in batches:
                await self._send_batch(batch)
        self.live = True  # no await since the loop's check: no batch can slip in between
        if self.held_locations:
            couriers, self.held_locations = list(self.held_locations.values()), {}
            await self._send(payloads.dumps({"type": "locations", "couriers": couriers}))

    # --- live batches from the process's hub --------------------------------------------------------------

    async def take_events(self, batch: hub.EventBatch) -> None:
        if not self.open:
            return
        if not self.live:
            self.held.append(batch)
        elif self.stream.version == 1:
            # Rendered from the database in the socket's own task: the hub's fan-out never waits for it.
            self.v1_backlog.append(batch)
            if self.v1_sender is None or self.v1_sender.done():
                self.v1_sender = asyncio.create_task(self._send_v1_backlog())
        else:
            await self._send_batch(batch)

    async def _send_v1_backlog(self) -> None:
        while self.v1_backlog and self.open:
            await self._send_batch(self.v1_backlog.popleft())

    async def _v1_drained(self) -> None:
        """Wait until the live batches a v1 socket took have gone out (before a replay or held batches,
        which must follow them)."""
        if self.v1_sender is not None and not self.v1_sender.done():
            await asyncio.shield(self.v1_sender)

    async def _as_v1(self, batch: hub.EventBatch) -> hub.EventBatch:
        """The batch in protocol v1 and this stream's shape, rendered once per process and shape."""
        task = batch.v1.get(self.stream.shape)
        if task is None:
            task = batch.v1[self.stream.shape] = asyncio.create_task(self._render_v1(batch))
        return await asyncio.shield(task)

    async def _render_v1(self, batch: hub.EventBatch) -> hub.EventBatch:
        items = await in_thread_pool(self.stream.render_v1)(batch.items)
        return hub.EventBatch(items, hub.events_frame([item[2] for item in items]))

    async def take_locations(self, text: str, couriers: list[dict[str, Any]]) -> None:
        if not self.open:
            return
        if self.live:
            await self._send(text)
        else:
            self.held_locations.update((courier["id"], courier) for courier in couriers)

    async def layer_interrupted(self, message: dict[str, Any]) -> None:
        """Redis dropped this process's subscriptions (realtime.layers): what was published meanwhile
        never reaches us. Closing (4503) makes the client reconnect with its last seq and get the gap from the
        database; staying open would leave it believing it is up to date."""
        if self.stream is not None and self.open:
            self.open = False
            logger.info("Channel layer interrupted: closing the socket of %s so that it resumes", self.user)
            await self.close(code=CLOSE_RESUME)

    async def _send_batch(self, batch: hub.EventBatch) -> None:
        if self.stream.version == 1:
            batch = await self._as_v1(batch)
            if not batch.items:
                return  # its orders were deleted meanwhile
        if batch.first_seq > max(self.high, self.filter_upto):
            self.high = batch.last_seq
            await self._send(batch.text)  # the common case: no per-event work for this socket
            return
        texts = [text for seq, order_id, text in batch.items if self._is_new(seq, order_id)]
        self.high = max(self.high, batch.last_seq)
        if len(texts) == len(batch.items):
            await self._send(batch.text)
        elif texts:
            await self._send_events(texts)

    async def _send(self, text: str) -> None:
        """Send a frame of the stream (snapshot, replay, hub batch). A client that just left, even while its
        snapshot is being sent, is not an error (disconnect() comes next); a frame that could not be sent is
        a gap, so the client is told to resume (4503) rather than go on."""
        try:
            await self.send(text_data=text)
        except Disconnected:
            self.open = False
        except Exception:
            logger.exception(
                "Could not send %d bytes to %s: closing so that it resumes", len(text), self.user
            )
            self.open = False
            await self.close(code=CLOSE_RESUME)

    async def _send_events(self, texts: list[str]) -> None:
        # The events are JSON already (rendered once by the publisher): join, don't re-encode.
        await self._send(hub.events_frame(texts))

    # --- frames from the client ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.open:
            return  # closed (rate limit, layer interruption): frames still queued are not worth any work
        if not await self._within_rate(text_data):
            return
        if text_data is None:
            await self._error("binary_frame", "Only JSON text frames are accepted.")
            return
        limit = settings.REALTIME_MAX_FRAME_BYTES
        # Characters first (cheap, and never more than bytes), then the UTF-8 bytes the limit is about.
        if len(text_data) > limit or len(text_data.encode()) > limit:
            await self._error("frame_too_large", f"Frames are limited to {limit} bytes.")
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: `[[[[...` nested deeper than json goes
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

    async def _within_rate(self, text_data: str | None) -> bool:
        """A token bucket per socket: REALTIME_FRAMES_PER_SECOND on average, REALTIME_FRAME_BURST at once; a
        resume (a database read) costs RESUME_COST frames. Over it the frame is dropped with one
        `rate_limited` error; over it again before the bucket has filled up, the socket is closed (4429)."""
        now = time.monotonic()
        burst = settings.REALTIME_FRAME_BURST
        self.allowance = min(
            burst, self.allowance + (now - self.allowance_at) * settings.REALTIME_FRAMES_PER_SECOND
        )
        self.allowance_at = now
        cost = RESUME_COST if text_data and '"resume"' in text_data else 1
        if self.allowance >= cost:
            self.allowance -= cost
            if self.allowance >= burst - 1:
                self.warned = False  # calm again: the next excess is warned about once more
            return True
        if not self.warned:
            self.warned = True
            rate = settings.REALTIME_FRAMES_PER_SECOND
            await self._error(
                "rate_limited", f"Over {rate:g} frames per second: slow down or be disconnected."
            )
            return False
        logger.info("Closing the socket of %s: it kept sending over the frame rate", self.user)
        self.open = False
        await self.close(code=CLOSE_RATE_LIMITED)
        return False

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Awaitable[None]]]:
        return {"resume": self._on_resume, "ping": self._on_ping, "order": self._on_order}

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        after = frame.get("after")
        if not isinstance(after, int) or isinstance(after, bool) or not 0 <= after <= MAX_SEQ:
            await self._error("bad_frame", '"after" must be a non-negative integer seq.')
            return
        self.live = False  # hold live batches: the replay and they leave in seq order
        await self._v1_drained()
        try:
            await self._resume(after)
        finally:
            await self._go_live()

    async def _on_ping(self, frame: dict[str, Any]) -> None:
        await self.send(text_data='{"type":"pong"}')

    async def _on_order(self, frame: dict[str, Any]) -> None:
        """One order whole, in this stream's shape: what a v2 client asks for when an event names an order
        it does not hold. Not visible here and not found answer alike (no probing of other orders)."""
        order_id = frame.get("id")
        if not isinstance(order_id, int) or isinstance(order_id, bool) or not 0 < order_id <= MAX_ID:
            await self._error("bad_frame", '"id" must be a positive integer order id.')
            return
        text = await in_thread_pool(self.stream.order_text)(order_id)
        if text is None:
            await self._error("not_found", f"No order #{order_id} on this stream.", id=order_id)
            return
        await self._send(text)

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        await self.send(text_data=payloads.dumps({"type": "error", "code": code, "error": message, **extra}))


class OperatorsConsumer(LiveConsumer):
    """/ws/operators/: staff see every order."""

    metrics_stream = "operators"

    def authorize(self, user: Any) -> Stream | None:
        if not user.is_staff:
            return None
        return Stream(
            groups=[broadcast.OPERATORS],
            visible=Order.objects.all,
            board=True,
            share_key="operators",
            full=True,
        )


class CourierConsumer(LiveConsumer):
    """/ws/couriers/: a courier sees the orders assigned to them and may report their location."""

    metrics_stream = "courier"

    def authorize(self, user: Any) -> Stream | None:
        courier = selectors.active_courier_of(user)
        if courier is None:
            return None
        self.courier_id = courier.pk
        self.last_location_at = -math.inf
        return Stream(
            groups=[broadcast.courier_group(courier.pk)],
            visible=lambda: Order.objects.filter(courier_id=courier.pk),
            courier=True,
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
        await in_thread_pool(services.courier_report_location)(
            courier_id=self.courier_id, lat=float(lat), lng=float(lng)
        )


class OrderConsumer(LiveConsumer):
    """/ws/orders/<id>/: the order's customer (or staff) follows one order, finished or not, in its
    public shape (staff included: operators follow orders whole on /ws/operators/)."""

    metrics_stream = "order"

    def authorize(self, user: Any) -> Stream | None:
        order_id = self.scope["url_route"]["kwargs"]["order_id"]
        if not selectors.orders_visible_to(user).filter(pk=order_id).exists():
            return None
        return Stream(
            groups=[broadcast.order_group(order_id)],
            visible=lambda: Order.objects.filter(pk=order_id),
            only_active=False,
        )


class TrackingLinkConsumer(LiveConsumer):
    """/ws/track/<token>/: anyone holding a live tracking link follows that one order, signed in or not, in
    its public shape, as its customer does on /ws/orders/<id>/. Closed with 4403 once the link is revoked
    (orders.signals.tracking_revoked, relayed to the group `track.<order id>`) or expires.

    Sockets of one link count together against REALTIME_SOCKETS_PER_USER.
    """

    anonymous = True
    metrics_stream = "tracking"
    channel_layer_alias = DEFAULT_CHANNEL_LAYER  # its own channel hears of revocations
    link_id: int | None = None
    revocations = ""  # the channel-layer group that announces the revocation of the order's links
    expiry: asyncio.Task | None = None

    def authorize(self, user: Any) -> Stream | None:
        link = selectors.tracking_link_active(self._token())
        if link is None:
            return None
        self.link_id, self.order_id, self.expires_at = link.pk, link.order_id, link.expires_at
        order_id = link.order_id
        return Stream(
            groups=[broadcast.order_group(order_id)],
            visible=lambda: Order.objects.filter(pk=order_id),
            only_active=False,
        )

    def cap_holder(self, user: Any) -> Any:
        return f"link.{self.link_id}"

    def _token(self) -> str:
        return self.scope["url_route"]["kwargs"]["token"]

    async def connect(self) -> None:
        await super().connect()
        if self.stream is None or not self.open:
            return
        self.revocations = broadcast.tracking_group(self.order_id)
        await self.channel_layer.group_add(self.revocations, self.channel_name)
        # A revocation committed before the group was joined was announced to no one here: look again.
        if await in_thread_pool(selectors.tracking_link_active)(self._token()) is None:
            await self._end("revoked")
            return
        self.expiry = asyncio.create_task(self._expire_at(self.expires_at))

    async def disconnect(self, code: int) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        if self.revocations:
            try:
                await self.channel_layer.group_discard(self.revocations, self.channel_name)
            except Exception as error:  # Redis is down: its subscriptions are gone anyway
                logger.info("Could not leave %s on disconnect: %s", self.revocations, error)
        await super().disconnect(code)

    async def tracking_revoked(self, message: dict[str, Any]) -> None:
        """The order's links were revoked (realtime.broadcast.tracking_revoked)."""
        await self._end("revoked")

    async def _expire_at(self, expires_at: Any) -> None:
        await asyncio.sleep(max((expires_at - timezone.now()).total_seconds(), 0))
        await self._end("expired")

    async def _end(self, why: str) -> None:
        if not self.open:
            return
        self.open = False
        logger.info("Tracking link %s of order %s %s: closing its socket", self.link_id, self.order_id, why)
        await self.close(code=CLOSE_FORBIDDEN)
