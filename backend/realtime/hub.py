"""Per-process fan-out: one channel-layer subscription per group per process, one encoded frame per batch.

Why not let every socket join its groups in the channel layer: with the pub/sub layer each socket then
gets its own copy of every group message, decodes it (msgpack), is dispatched through Channels (which
hops to a worker thread per message to close old database connections) and builds its own frame, work
that grows with the number of sockets and caps what one web process can send.

Here the process subscribes once per group, decodes each message once, and turns what arrived for a
group into one batch at most once per flush interval (REALTIME_FLUSH_MS): the events in seq order, each
seq once, and the frame text, built once and handed as it is to every local socket of the group. A
message arriving when the group's last flush is an interval old or more leaves at once (a quiet board
hears of a change without waiting); what arrives sooner waits for the interval to end, with everything
else that arrives until then. The relay publishes in seq order, so a group's batches follow each other
in seq order; a batch it publishes again (a retry, a relay taking over) may repeat seqs of an earlier
batch, which each socket drops by its highest seq sent. A socket that is still taking its snapshot or
replay holds the batches and filters them itself (`LiveConsumer.take_events`).
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from . import layers, payloads

logger = logging.getLogger(__name__)

RECEIVE_RETRY_SECONDS = 1
# How long a group stays subscribed after its last local member left: a thousand sockets reconnecting
# after a drop then join a subscribed group (bench.reconnect). Its messages meanwhile reach no one.
UNSUBSCRIBE_AFTER_SECONDS = 10

EventItem = tuple[int, int, str]  # (seq, order id, the event as JSON text), as broadcast publishes them


@dataclass(frozen=True, slots=True)
class EventBatch:
    items: list[EventItem]  # seq ascending, each seq once
    text: str  # the whole `events` frame, shared by every socket that takes the batch unfiltered
    # The batch in protocol v1 per stream shape, rendered once for the process's v1 sockets (if any) by
    # the first of them to need it (realtime.consumers.LiveConsumer._as_v1).
    v1: dict[str, "asyncio.Task[EventBatch]"] = field(default_factory=dict, compare=False, repr=False)

    @property
    def first_seq(self) -> int:
        return self.items[0][0]

    @property
    def last_seq(self) -> int:
        return self.items[-1][0]


class Member(Protocol):
    async def take_events(self, batch: EventBatch) -> None: ...

    async def take_locations(self, text: str, couriers: list[dict[str, Any]]) -> None: ...

    async def layer_interrupted(self, message: dict[str, Any]) -> None: ...


@dataclass(eq=False)
class Group:
    """One group's local sockets, what arrived for them since the last flush, and what was handed out."""

    name: str
    members: set[Member] = field(default_factory=set)
    events: list[EventItem] = field(default_factory=list)
    locations: dict[int, dict[str, Any]] = field(default_factory=dict)
    flush_scheduled: bool = False
    flushed_at: float = float("-inf")  # the event loop's time when the last flush began
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Hub:
    """The fan-out of one event loop (one web process): subscribes to groups for its local members."""

    def __init__(self) -> None:
        from channels.layers import get_channel_layer

        self.layer = get_channel_layer()
        self.groups: dict[str, Group] = {}
        self.channel: str | None = None
        self.receiver: asyncio.Task | None = None
        self.lock = asyncio.Lock()  # around subscribing and unsubscribing
        self.subscribing: dict[str, asyncio.Future] = {}
        self.background: set[asyncio.Task] = set()  # a task nobody holds may be collected before it ends

    async def join(self, name: str, member: Member) -> Group:
        """Subscribe (once per process) and add the member. Returns when the subscription is active, so
        that nothing published afterwards is missed.

        A group in `groups` is subscribed (it is added once group_add has returned, and removed before
        group_discard is awaited), so joining it is a set insertion with no await in between; sockets
        that arrive while the group is being subscribed wait for that one subscription together. Each
        taking the lock in turn made a thousand sockets resuming after a drop wait a loop iteration each
        (2.4 s at the median, measured with bench.reconnect).
        """
        while True:
            group = self.groups.get(name)
            if group is not None:
                group.members.add(member)
                return group
            subscribing = self.subscribing.get(name)
            if subscribing is None:
                subscribing = self.subscribing[name] = asyncio.ensure_future(self._subscribe(name))
            # Then round again: the group may have been left and unsubscribed before this task resumed.
            await asyncio.shield(subscribing)

    async def _subscribe(self, name: str) -> None:
        try:
            async with self.lock:
                if self.channel is None:
                    self.channel = await self.layer.new_channel("fanout.")
                    self.receiver = asyncio.create_task(self._receive(self.channel))
                if name not in self.groups:
                    await self.layer.group_add(name, self.channel)
                    self.groups[name] = Group(name)
        finally:
            # Before the task is done: a joiner never finds a finished subscription here (and loops on it).
            del self.subscribing[name]

    async def leave(self, name: str, member: Member) -> None:
        """Remove the member; the group stays subscribed UNSUBSCRIBE_AFTER_SECONDS after its last member
        left, so that sockets reconnecting after a drop (a deploy, a network blip) find it subscribed."""
        group = self.groups.get(name)
        if group is None:
            return
        group.members.discard(member)
        if group.members:
            return  # no await: the last member's leave unsubscribes
        if UNSUBSCRIBE_AFTER_SECONDS:
            loop = asyncio.get_running_loop()
            loop.call_later(
                UNSUBSCRIBE_AFTER_SECONDS,
                lambda: self._in_background(self._unsubscribe_if_empty(name, group)),
            )
            return
        await self._unsubscribe_if_empty(name, group)

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _unsubscribe_if_empty(self, name: str, group: Group) -> None:
        async with self.lock:
            if group.members or self.groups.get(name) is not group:
                return  # joined again meanwhile, or already unsubscribed
            del self.groups[name]
            await self.layer.group_discard(name, self.channel)
            if not self.groups and self.receiver is not None:
                self.receiver.cancel()  # the layer unsubscribes the channel when its receive is cancelled
                self.receiver, self.channel = None, None

    async def _receive(self, channel: str) -> None:
        while True:
            try:
                message = await self.layer.receive(channel)
            except Exception:  # the layer failed: keep trying, or every socket of the process goes quiet
                logger.exception("Could not receive from the channel layer; retrying")
                await asyncio.sleep(RECEIVE_RETRY_SECONDS)
                continue
            try:
                self._take(message)
            except Exception:  # one bad message must not stop the process's fan-out
                logger.exception("Could not fan out a %s message", message.get("type"))

    def _take(self, message: dict[str, Any]) -> None:
        if message.get("type") == layers.INTERRUPTED["type"]:
            self._interrupted(message)
            return
        group = self.groups.get(message.get("group", ""))
        if group is None:
            return  # the last member left after the message was published
        if message["type"] == "order.events":
            group.events.extend(tuple(item) for item in message["events"])
        elif message["type"] == "courier.location":
            courier = message["courier"]
            group.locations[courier["id"]] = courier
        else:
            logger.warning("Unknown realtime message type %r", message["type"])
            return
        if not group.flush_scheduled:
            group.flush_scheduled = True
            loop = asyncio.get_running_loop()
            wait = group.flushed_at + settings.REALTIME_FLUSH_MS / 1000 - loop.time()
            loop.call_later(max(0.0, wait), lambda: loop.create_task(self._flush(group)))

    def _interrupted(self, message: dict[str, Any]) -> None:
        """Redis dropped the process's subscription (realtime.layers): every member is told, as a socket
        with a channel of its own would be, and closes so that its client resumes."""
        members = [member for group in self.groups.values() for member in group.members]
        self._in_background(self._tell_interrupted(members, message))

    async def _tell_interrupted(self, members: list[Member], message: dict[str, Any]) -> None:
        for member in members:
            await self._deliver(member.layer_interrupted(message), "the interruption")

    async def _flush(self, group: Group) -> None:
        """Everything that arrived for the group since its last flush leaves as one frame per kind."""
        async with group.lock:  # batches of a group reach each member in their numbered order
            group.flush_scheduled = False
            group.flushed_at = asyncio.get_running_loop().time()
            events, group.events = group.events, []
            locations, group.locations = group.locations, {}
            members = list(group.members)
            if events:
                for batch in _batches(_by_seq(events)):  # several frames only past payloads.MAX_FRAME_BYTES
                    for member in members:
                        await self._deliver(member.take_events(batch), group.name)
            if locations:
                couriers = list(locations.values())
                text = payloads.dumps({"type": "locations", "couriers": couriers})
                for member in members:
                    await self._deliver(member.take_locations(text, couriers), group.name)

    @staticmethod
    async def _deliver(delivery: Any, what: str) -> None:
        try:
            await delivery
        except Exception:  # one broken socket must not starve the others
            logger.exception("Could not deliver %s to a member", what)


def _by_seq(events: list[EventItem]) -> list[EventItem]:
    """The events of one flush in seq order, each seq once (the first copy that arrived).

    They arrive in seq order, each once, unless the relay published a batch again within the flush
    interval (a retry after a group failed, a relay taking over): the shared frame must not repeat it.
    """
    unique: dict[int, EventItem] = {}
    for item in events:
        unique.setdefault(item[0], item)
    return sorted(unique.values(), key=lambda item: item[0])


def _batches(events: list[EventItem]) -> list[EventBatch]:
    """The events of one flush as frames under payloads.MAX_FRAME_BYTES, in seq order."""
    batches, start = [], 0
    for texts in payloads.chunked([item[2] for item in events]):
        items = events[start : start + len(texts)]
        start += len(texts)
        batches.append(EventBatch(items, events_frame(texts)))
    return batches


def events_frame(texts: list[str], orders: list[str] | None = None) -> str:
    """An `events` frame of events rendered already (joined, not re-encoded); a replay's v2 frame also
    carries the orders its events touched, whole."""
    if orders:
        return '{"type":"events","events":[' + ",".join(texts) + '],"orders":[' + ",".join(orders) + "]}"
    return '{"type":"events","events":[' + ",".join(texts) + "]}"


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The running event loop's hub (a web process has one loop; tests start a loop per scenario)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found
