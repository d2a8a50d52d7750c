"""What a socket sends of the hub's batches (realtime.consumers.LiveConsumer): every event once, in seq order.

A socket keeps one number, `high` (the highest seq it has sent), plus, after a snapshot, `filter_upto` and
the snapshot's last seq per order: batches starting above both leave as their shared text, others are
filtered event by event. While it takes a snapshot or a replay it holds the batches (`held`) and sends
them, filtered, when it goes live. Here the consumer runs as in production down to its ASGI `send`,
which records the messages instead of writing them to a WebSocket.
"""

import asyncio
import json
from collections import deque
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from autobahn.exception import Disconnected

from orders.models import Order
from realtime import consumers, hub
from realtime.hub import EventBatch


def batch(*items: tuple[int, int]) -> EventBatch:
    """A batch as the hub builds it, of (seq, order id) pairs."""
    events = [(seq, order, json.dumps({"seq": seq, "order": {"id": order}})) for seq, order in items]
    [built] = hub._batches(events)
    return built


class Socket:
    """A LiveConsumer as connect() leaves it, its ASGI messages recorded."""

    def __init__(
        self,
        *,
        high: int = 0,
        filter_upto: int = 0,
        order_seqs: dict[int, int] | None = None,
        live: bool = True,
    ) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fail_with: BaseException | None = None
        self.on_send = None  # a coroutine function run as each frame leaves (a batch arriving meanwhile)
        consumer = self.consumer = consumers.LiveConsumer()
        consumer.base_send = self._base_send
        consumer.stream = consumers.Stream(groups=[], visible=Order.objects.none, order_seqs=order_seqs or {})
        consumer.user = "someone"
        consumer.open, consumer.live = True, live
        consumer.high, consumer.filter_upto = high, filter_upto
        consumer.held, consumer.held_locations = [], {}

    async def _base_send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send" and self.fail_with is not None:
            raise self.fail_with
        self.messages.append(message)
        if message["type"] == "websocket.send" and self.on_send is not None:
            hook, self.on_send = self.on_send, None
            await hook()

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.messages if m["type"] == "websocket.send"]

    @property
    def seqs(self) -> list[int]:
        return [
            event["seq"] for frame in self.frames if frame["type"] == "events" for event in frame["events"]
        ]

    @property
    def closes(self) -> list[int]:
        return [m["code"] for m in self.messages if m["type"] == "websocket.close"]


def run(coroutine_function, *args: Any) -> Any:
    return async_to_sync(coroutine_function)(*args)


class TestLive:
    def test_a_batch_above_everything_sent_leaves_as_its_shared_text(self):
        socket = Socket(high=4)
        new = batch((5, 1), (6, 2))
        run(socket.consumer.take_events, new)
        [message] = socket.messages
        assert message["text"] is new.text, "not re-encoded"
        assert socket.consumer.high == 6

    def test_a_batch_already_sent_is_dropped(self):
        socket = Socket(high=6)
        run(socket.consumer.take_events, batch((5, 1), (6, 2)))
        assert socket.messages == []
        assert socket.consumer.high == 6

    def test_an_overlapping_batch_sends_only_what_is_new_in_seq_order(self):
        socket = Socket(high=6)
        run(socket.consumer.take_events, batch((5, 1), (6, 2), (7, 1), (8, 3)))
        assert socket.frames == [
            {"type": "events", "events": [{"seq": 7, "order": {"id": 1}}, {"seq": 8, "order": {"id": 3}}]}
        ]
        assert socket.consumer.high == 8

    def test_republished_runs_reach_the_client_once_each_in_order(self):
        socket = Socket()

        async def scenario():
            for each in (
                batch((1, 1), (2, 1), (3, 2)),
                batch((2, 1), (3, 2), (4, 1)),  # the relay published 2..3 again
                batch((4, 1)),
                batch((1, 1)),
                batch((5, 2), (6, 1)),
            ):
                await socket.consumer.take_events(each)

        run(scenario)
        assert socket.seqs == [1, 2, 3, 4, 5, 6]
        assert socket.consumer.held == [], "a live socket keeps nothing but its highest seq"

    def test_the_boundaries_are_exclusive(self):
        socket = Socket(high=10, order_seqs={1: 12})
        is_new = socket.consumer._is_new
        assert (is_new(10, 2), is_new(11, 2)) == (False, True)
        assert (is_new(12, 1), is_new(13, 1)) == (False, True)


class TestAfterASnapshot:
    """The snapshot was read at seq 10, but its orders were read a moment later and hold later events:
    order 1 up to seq 12. Events of other orders above 10 are not in it."""

    def socket(self) -> Socket:
        return Socket(high=10, filter_upto=12, order_seqs={1: 12, 2: 8, 3: 10})

    def test_events_the_snapshot_holds_are_dropped_and_the_others_sent(self):
        socket = self.socket()
        run(socket.consumer.take_events, batch((11, 2), (12, 1), (13, 3)))
        assert socket.seqs == [11, 13]
        assert socket.consumer.high == 13

    def test_a_batch_that_is_all_new_still_leaves_as_its_shared_text(self):
        socket = self.socket()
        new = batch((11, 2), (12, 3))
        run(socket.consumer.take_events, new)
        assert [m["text"] for m in socket.messages] == [new.text]

    def test_past_the_snapshot_batches_leave_whole_again(self):
        socket = self.socket()

        async def scenario():
            await socket.consumer.take_events(batch((11, 2), (12, 1)))
            await socket.consumer.take_events(later := batch((13, 1), (14, 2)))
            return later

        later = run(scenario)
        assert socket.seqs == [11, 13, 14]
        assert socket.messages[-1]["text"] is later.text


class TestHeldWhileCatchingUp:
    def test_batches_are_held_then_sent_filtered_and_in_order_on_going_live(self):
        socket = Socket(live=False)

        async def scenario():
            await socket.consumer.take_events(batch((3, 1), (4, 1)))
            await socket.consumer.take_events(batch((5, 2), (6, 1)))
            assert socket.messages == [], "nothing leaves before the snapshot or replay"
            socket.consumer.high = 5  # the replay sent everything up to 5
            await socket.consumer._go_live()
            await socket.consumer.take_events(batch((7, 2)))

        run(scenario)
        assert socket.seqs == [6, 7]
        assert socket.consumer.live and socket.consumer.held == []

    def test_a_batch_arriving_while_the_held_ones_are_sent_follows_them(self):
        socket = Socket(live=False)

        async def scenario():
            await socket.consumer.take_events(batch((1, 1), (2, 1)))
            socket.on_send = lambda: socket.consumer.take_events(batch((3, 2)))
            await socket.consumer._go_live()
            await socket.consumer.take_events(batch((4, 1)))

        run(scenario)
        assert socket.seqs == [1, 2, 3, 4]

    def test_locations_are_held_latest_per_courier_and_sent_after_the_events(self):
        socket = Socket(live=False)

        def position(courier_id: int, lat: float) -> dict[str, Any]:
            return {"id": courier_id, "name": f"C{courier_id}", "lat": lat, "lng": 30.5, "at": None}

        async def scenario():
            await socket.consumer.take_locations("unused", [position(1, 50.1), position(2, 50.2)])
            await socket.consumer.take_events(batch((1, 1)))
            await socket.consumer.take_locations("unused", [position(1, 50.3)])
            await socket.consumer._go_live()
            await socket.consumer.take_locations('{"type":"locations","couriers":[]}', [])

        run(scenario)
        assert [frame["type"] for frame in socket.frames] == ["events", "locations", "locations"]
        assert [(c["id"], c["lat"]) for c in socket.frames[1]["couriers"]] == [(1, 50.3), (2, 50.2)]
        assert socket.messages[2]["text"] == '{"type":"locations","couriers":[]}', "live: the shared text"


class TestClosed:
    def test_a_closed_socket_takes_nothing(self):
        socket = Socket(live=False)
        socket.consumer.open = False

        async def scenario():
            await socket.consumer.take_events(batch((1, 1)))
            await socket.consumer.take_locations("{}", [{"id": 1}])
            socket.consumer.live = True
            await socket.consumer.take_events(batch((2, 1)))

        run(scenario)
        assert socket.messages == []
        assert socket.consumer.held == [] and socket.consumer.held_locations == {}

    def test_a_frame_that_cannot_be_sent_closes_the_socket_so_that_it_resumes(self):
        socket = Socket()
        socket.fail_with = RuntimeError("the transport broke")

        async def scenario():
            await socket.consumer.take_events(batch((1, 1)))
            await socket.consumer.take_events(batch((2, 1)))

        run(scenario)
        assert socket.closes == [consumers.CLOSE_RESUME], "a gap: the client must resume, once"
        assert not socket.consumer.open

    def test_a_client_that_left_is_not_closed_again(self):
        socket = Socket()
        socket.fail_with = Disconnected()
        run(socket.consumer.take_events, batch((1, 1)))
        assert socket.closes == []
        assert not socket.consumer.open

    def test_a_client_that_left_while_catching_up_is_no_error(self):
        socket = Socket(live=False)
        socket.fail_with = Disconnected()

        async def scenario():
            await socket.consumer.take_events(batch((1, 1)))
            await socket.consumer.take_locations("unused", [{"id": 1, "lat": 50.4, "lng": 30.5}])
            await socket.consumer._go_live()

        run(scenario)
        assert socket.closes == []
        assert not socket.consumer.open

    @pytest.mark.parametrize("interruptions", [1, 2])
    def test_an_interrupted_layer_closes_the_socket_once(self, interruptions):
        socket = Socket()

        async def scenario():
            for _ in range(interruptions):  # the layer tells of the loss and again of the reconnect
                await socket.consumer.layer_interrupted({"type": "layer.interrupted"})
            await socket.consumer.take_events(batch((1, 1)))

        run(scenario)
        assert socket.closes == [consumers.CLOSE_RESUME]
        assert socket.messages[1:] == [], "nothing after the close"


class V1Stream(consumers.Stream):
    """A stream whose v1 rendering is recorded (the real one reads the database: test_consumers.py)."""

    def render_v1(self, items: list[hub.EventItem]) -> list[hub.EventItem]:
        self.calls.append([seq for seq, _, _ in items])
        return [(seq, order, json.dumps({"seq": seq, "v": 1})) for seq, order, _ in items]


class TestProtocolV1:
    def test_v1_sockets_render_a_batch_once_without_holding_up_the_hub(self):
        v1 = [Socket() for _ in range(3)]
        v2 = Socket()
        stream = V1Stream(groups=[], visible=Order.objects.none, version=1)
        stream.calls = []
        for socket in v1:
            socket.consumer.stream = stream
            socket.consumer.v1_backlog = deque()
        new = batch((5, 1), (6, 2))

        async def scenario():
            for socket in [*v1, v2]:  # as the hub hands a batch to its members, one after the other
                await socket.consumer.take_events(new)
                assert socket.messages == [] or socket is v2, "a v1 socket renders in a task of its own"
            assert v2.messages[0]["text"] is new.text, "v2 sockets take the shared text at once"
            await asyncio.gather(*(socket.consumer.v1_sender for socket in v1))
            await v1[-1].consumer.take_events(batch((6, 2), (7, 1)))  # overlapping: filtered as in v2
            await v1[-1].consumer.v1_sender

        run(scenario)
        assert stream.calls == [[5, 6], [6, 7]], "once per batch for every v1 socket of the process"
        for socket in v1[:2]:
            assert socket.frames == [{"type": "events", "events": [{"seq": 5, "v": 1}, {"seq": 6, "v": 1}]}]
        assert v1[-1].seqs == [5, 6, 7]

    def test_a_v1_resume_waits_for_the_batches_being_rendered(self):
        socket = Socket()
        stream = V1Stream(groups=[], visible=Order.objects.none, version=1)
        stream.calls = []
        socket.consumer.stream, socket.consumer.v1_backlog = stream, deque()

        async def scenario():
            await socket.consumer.take_events(batch((1, 1), (2, 1)))
            socket.consumer.live = False  # a resume begins: what was taken live goes out first
            await socket.consumer._v1_drained()
            assert socket.seqs == [1, 2]
            await socket.consumer.take_events(batch((3, 1)))  # held meanwhile
            await socket.consumer._go_live()

        run(scenario)
        assert socket.seqs == [1, 2, 3]
