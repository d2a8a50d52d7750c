"""The process's fan-out (realtime.hub) on the real Redis channel layer, with members that record what
they are handed: one subscription per group, one batch per flush in seq order with each seq once, the
same batch for every member, and a broken member or message stopping nobody else."""

import asyncio
import json
import threading
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from redis import asyncio as aioredis

from realtime import broadcast, hub, layers
from realtime.hub import EventBatch, EventItem

TIMEOUT = 5
FLUSH_MS = 200  # long enough that what a test publishes back to back after a flush lands in the next


@pytest.fixture(autouse=True)
def flush_interval(settings) -> None:
    settings.REALTIME_FLUSH_MS = FLUSH_MS


class Member:
    """A socket as the hub sees it (hub.Member), recording what it is handed."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[EventBatch] = []
        self.locations: list[tuple[str, list[dict[str, Any]]]] = []
        self.interruptions: list[dict[str, Any]] = []
        self.fail = fail

    async def take_events(self, batch: EventBatch) -> None:
        if self.fail:
            raise ConnectionResetError("the socket is gone")
        self.batches.append(batch)

    async def take_locations(self, text: str, couriers: list[dict[str, Any]]) -> None:
        self.locations.append((text, couriers))

    async def layer_interrupted(self, message: dict[str, Any]) -> None:
        self.interruptions.append(message)

    @property
    def seqs(self) -> list[int]:
        return [item[0] for batch in self.batches for item in batch.items]


def run(scenario: Callable) -> Any:
    return async_to_sync(scenario)()


def group_name() -> str:
    return f"test-hub-{uuid.uuid4().hex[:12]}"


def item(seq: int, order_id: int = 1, note: str = "") -> EventItem:
    return (seq, order_id, json.dumps({"seq": seq, "order": {"id": order_id}, "note": note}))


async def publish(*messages: tuple[str, dict[str, Any]]) -> None:
    """Through broadcast's publisher, as the relay and the services publish (in order, group named)."""
    await asyncio.wrap_future(broadcast._publisher().send_all(list(messages)))


def events(group: str, *items: EventItem) -> tuple[str, dict[str, Any]]:
    return group, {"type": "order.events", "events": list(items)}


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.005)


async def just_flushed(group: str, member: Member) -> None:
    """The group has just flushed (a first event, handed out): whatever the test publishes next waits for
    the interval to end, together."""
    await publish(events(group, item(0)))
    await until(lambda: member.batches)
    member.batches.clear()


async def quiet() -> None:
    """Long enough for anything still on its way to have been flushed."""
    await asyncio.sleep(3 * FLUSH_MS / 1000)


async def subscribers(fanout: hub.Hub, group: str) -> int:
    """How many Redis subscriptions the group's channel has, in the whole Redis."""
    channel = fanout.layer._get_layer()._get_group_channel_name(group)
    url = fanout.layer._get_layer()._shards[0].host["address"]
    client = aioredis.Redis.from_url(url)
    try:
        [(_, count)] = await client.pubsub_numsub(channel)
        return count
    finally:
        await client.aclose()


async def leave_all(fanout: hub.Hub, group: str, *members: Member) -> None:
    for member in members:
        await fanout.leave(group, member)


class TestSubscriptions:
    def test_a_group_is_subscribed_once_however_many_members_join_at_once(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            members = [Member() for _ in range(10)]
            await asyncio.gather(*(fanout.join(group, member) for member in members))
            assert await subscribers(fanout, group) == 1
            assert fanout.groups[group].members == set(members)
            await leave_all(fanout, group, *members)

        run(scenario)

    def test_join_returns_once_subscribed_so_the_next_publish_is_not_missed(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            member = Member()
            await fanout.join(group, member)
            await publish(events(group, item(1)))
            await until(lambda: member.seqs == [1])
            await leave_all(fanout, group, member)

        run(scenario)

    def test_an_interrupted_layer_is_told_to_every_member_of_every_group(self):
        """Sockets have no channel of their own: the hub's channel hears of a dropped subscription
        (realtime.layers) and each member must, to close and make its client resume."""

        async def scenario():
            fanout, first_group, second_group = hub.hub(), group_name(), group_name()
            first, second = Member(), Member()
            await fanout.join(first_group, first)
            await fanout.join(second_group, second)
            await fanout.layer.send(fanout.channel, layers.INTERRUPTED)
            await until(lambda: first.interruptions == second.interruptions == [layers.INTERRUPTED])
            await leave_all(fanout, first_group, first)
            await leave_all(fanout, second_group, second)

        run(scenario)

    def test_a_group_stays_subscribed_a_while_after_its_last_member_left(self, monkeypatch):
        """Sockets reconnecting after a drop join the subscription still there, none waits for a new one."""
        monkeypatch.setattr(hub, "UNSUBSCRIBE_AFTER_SECONDS", 0.5)

        async def scenario():
            fanout, group = hub.hub(), group_name()
            first = Member()
            await fanout.join(group, first)
            await fanout.leave(group, first)
            assert group in fanout.groups and await subscribers(fanout, group) == 1

            again = Member()
            await fanout.join(group, again)  # within the delay: the same subscription
            await publish(events(group, item(3)))
            await until(lambda: again.seqs == [3])
            await fanout.leave(group, again)
            async with asyncio.timeout(TIMEOUT):
                while await subscribers(fanout, group):
                    await asyncio.sleep(0.05)
            assert group not in fanout.groups and fanout.channel is None
            assert first.seqs == []

        run(scenario)

    def test_the_last_member_leaving_unsubscribes_and_a_later_join_subscribes_again(self, monkeypatch):
        monkeypatch.setattr(hub, "UNSUBSCRIBE_AFTER_SECONDS", 0)

        async def scenario():
            fanout, group = hub.hub(), group_name()
            first, second = Member(), Member()
            await fanout.join(group, first)
            await fanout.join(group, second)
            await fanout.leave(group, first)
            assert await subscribers(fanout, group) == 1, "a member is left"
            await fanout.leave(group, second)
            await fanout.leave(group, second)  # leaving twice, or a group never joined, is no error
            await fanout.leave(group_name(), second)
            assert group not in fanout.groups
            assert fanout.channel is None and fanout.receiver is None, "no group left: nothing received"
            async with asyncio.timeout(TIMEOUT):
                while await subscribers(fanout, group):
                    await asyncio.sleep(0.01)

            again = Member()
            await fanout.join(group, again)
            await publish(events(group, item(5)))
            await until(lambda: again.seqs == [5])
            assert first.batches == second.batches == []
            await leave_all(fanout, group, again)

        run(scenario)

    def test_one_hub_per_event_loop(self):
        async def both() -> tuple[hub.Hub, hub.Hub]:
            return hub.hub(), hub.hub()

        first, same = run(both)
        assert first is same
        other: list[hub.Hub] = []
        thread = threading.Thread(target=lambda: other.append(asyncio.run(both())[0]))
        thread.start()
        thread.join()
        assert other[0] is not first


class TestBatches:
    def test_what_arrives_within_a_flush_leaves_as_one_batch_in_seq_order(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            member = Member()
            await fanout.join(group, member)
            await just_flushed(group, member)
            # Out of order across messages: a relay that took over republished an earlier run.
            await publish(events(group, item(5), item(6)), events(group, item(3), item(4)))
            await until(lambda: member.batches)
            await quiet()
            [batch] = member.batches
            assert [seq for seq, _, _ in batch.items] == [3, 4, 5, 6]
            assert (batch.first_seq, batch.last_seq) == (3, 6)
            frame = json.loads(batch.text)
            assert frame["type"] == "events"
            assert [event["seq"] for event in frame["events"]] == [3, 4, 5, 6]
            await leave_all(fanout, group, member)

        run(scenario)

    def test_a_seq_published_twice_within_a_flush_leaves_once_as_first_published(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            member = Member()
            await fanout.join(group, member)
            await just_flushed(group, member)
            # The relay retries a batch after another group failed: this group gets it a second time.
            await publish(
                events(group, item(7, note="first"), item(8, note="first")),
                events(group, item(7, note="again"), item(8, note="again"), item(9)),
            )
            await until(lambda: member.batches)
            await quiet()
            [batch] = member.batches
            assert [seq for seq, _, _ in batch.items] == [7, 8, 9]
            notes = [event["note"] for event in json.loads(batch.text)["events"]]
            assert notes == ["first", "first", ""]
            await leave_all(fanout, group, member)

        run(scenario)

    def test_a_quiet_group_flushes_at_once_and_then_at_most_once_per_interval(self, settings):
        settings.REALTIME_FLUSH_MS = 1500  # far above the time a publish takes to arrive, on any machine

        async def scenario():
            fanout, group = hub.hub(), group_name()
            member = Member()
            await fanout.join(group, member)
            loop = asyncio.get_running_loop()
            handed: list[float] = []
            take = member.take_events

            async def timed(batch: EventBatch) -> None:
                handed.append(loop.time())
                await take(batch)

            member.take_events = timed
            published = loop.time()
            await publish(events(group, item(1)))
            await until(lambda: member.batches)
            assert handed[0] - published < 0.75, "the first change after a quiet interval leaves at once"
            await publish(events(group, item(2)))
            await publish(events(group, item(3)))
            await until(lambda: len(member.batches) == 2)
            assert handed[1] - handed[0] >= 1.5, "then one flush per interval"
            assert [batch.items for batch in member.batches] == [[item(1)], [item(2), item(3)]]
            await leave_all(fanout, group, member)

        run(scenario)

    def test_later_flushes_follow_in_seq_order(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            member = Member()
            await fanout.join(group, member)
            for count in (1, 2, 3):
                await publish(events(group, item(count)))
                await until(partial(lambda n: len(member.batches) == n, count))
            assert [batch.items for batch in member.batches] == [[item(1)], [item(2)], [item(3)]]
            await leave_all(fanout, group, member)

        run(scenario)

    def test_every_member_is_handed_the_same_batch_once(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            twice, once = Member(), Member()
            await fanout.join(group, twice)
            await fanout.join(group, twice)  # a member is in a group once, however often it joins
            await fanout.join(group, once)
            await publish(events(group, item(11), item(12)))
            await until(lambda: twice.batches and once.batches)
            await quiet()
            assert len(twice.batches) == len(once.batches) == 1
            assert twice.batches[0] is once.batches[0], "encoded once, shared by every member"
            await leave_all(fanout, group, twice, once)

        run(scenario)

    def test_groups_are_apart(self):
        async def scenario():
            fanout = hub.hub()
            one, two = group_name(), group_name()
            in_one, in_two = Member(), Member()
            await fanout.join(one, in_one)
            await fanout.join(two, in_two)
            await publish(events(one, item(1)), events(two, item(2)))
            await until(lambda: in_one.batches and in_two.batches)
            await quiet()
            assert (in_one.seqs, in_two.seqs) == ([1], [2])
            await leave_all(fanout, one, in_one)
            await leave_all(fanout, two, in_two)

        run(scenario)


class TestLocations:
    def test_the_latest_position_of_each_courier_leaves_in_one_frame(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            member = Member()
            await fanout.join(group, member)

            def at(courier_id: int, lat: float) -> tuple[str, dict[str, Any]]:
                courier = {"id": courier_id, "name": f"C{courier_id}", "lat": lat, "lng": 30.5, "at": None}
                return group, {"type": "courier.location", "courier": courier}

            await publish(at(1, 50.1), at(2, 50.2), at(1, 50.3))
            await until(lambda: member.locations)
            await quiet()
            [(text, couriers)] = member.locations
            assert [(c["id"], c["lat"]) for c in couriers] == [(1, 50.3), (2, 50.2)]
            assert json.loads(text) == {"type": "locations", "couriers": couriers}
            assert member.batches == [], "no events frame without events"
            await leave_all(fanout, group, member)

        run(scenario)


class TestFailures:
    def test_a_failing_member_does_not_starve_the_others(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            broken, well = Member(fail=True), Member()
            await fanout.join(group, broken)
            await fanout.join(group, well)
            await publish(events(group, item(1)))
            await until(lambda: well.seqs == [1])
            await publish(events(group, item(2)))
            await until(lambda: well.seqs == [1, 2])
            await leave_all(fanout, group, broken, well)

        run(scenario)

    def test_a_bad_message_does_not_stop_the_fan_out(self):
        async def scenario():
            fanout, group = hub.hub(), group_name()
            member = Member()
            await fanout.join(group, member)
            await publish(
                (group, {"events": [item(1)]}),  # no type
                (group, {"type": "something.else"}),
                (group, {"type": "order.events", "events": [item(2)]}),
            )
            await until(lambda: member.seqs == [2])
            await leave_all(fanout, group, member)

        run(scenario)

    def test_a_message_for_a_group_nobody_here_follows_is_dropped(self):
        async def scenario():
            fanout = hub.hub()
            fanout._take({"type": "order.events", "group": group_name(), "events": [item(1)]})
            assert fanout.groups == {}

        run(scenario)
