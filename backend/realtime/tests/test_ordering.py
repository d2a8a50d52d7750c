"""Every socket receives events in seq order, and a resume never misses one that committed late.

Two writers commit out of seq order on purpose (orders/tests/writers.py): the earlier seq's transaction
stays open while a later seq commits. The relay runs in a thread as in production.
"""

import json

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from core.asgi import application
from orders import services
from orders.tests import factories
from orders.tests.writers import OpenWriter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TIMEOUT = 5


@pytest.fixture
def legs(customer, restaurants, relay):
    legs = [factories.make_order(customer, restaurants["melange"]).legs.get().pk for _ in range(2)]
    relay.caught_up()
    return legs


async def connect(operator, after: int | None = None) -> WebsocketCommunicator:
    key = await database_sync_to_async(factories.token_for)(operator)
    path = "/ws/operators/" + ("" if after is None else f"?after={after}")
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"authorization", f"Token {key}".encode())]
    )
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def seqs_until(communicator: WebsocketCommunicator, wanted: set[int]) -> list[int]:
    """Event seqs received, in order, until every wanted seq has arrived."""
    received: list[int] = []
    while not wanted <= set(received):
        frame = json.loads(await communicator.receive_from(timeout=TIMEOUT))
        if frame["type"] == "events":
            received += [event["seq"] for event in frame["events"]]
    return received


def apply(leg_id: int, status: str) -> int:
    return services.leg_apply_status(leg_id=leg_id, provider_status=status, source="poll").seq


def test_out_of_order_commits_reach_sockets_in_seq_order_and_a_resume_between_them_misses_nothing(
    legs, operator, relay
):
    async def scenario():
        steady = await connect(operator)
        await steady.receive_from(timeout=TIMEOUT)
        resuming = await connect(operator)
        held = json.loads(await resuming.receive_from(timeout=TIMEOUT))["seq"]

        early = await database_sync_to_async(OpenWriter)(legs[0], "not started")
        later = await database_sync_to_async(apply)(legs[1], "not started")
        assert early.seq < later
        # The later seq is committed, but must not leave before the earlier one: nothing arrives.
        assert await resuming.receive_nothing(timeout=0.5)
        await resuming.disconnect()

        # The client resumes from the highest seq it holds, between the two commits.
        resumed = await connect(operator, after=held)
        await database_sync_to_async(early.commit)()
        assert await seqs_until(resumed, {early.seq, later}) == [early.seq, later]
        assert await seqs_until(steady, {early.seq, later}) == [early.seq, later]
        for communicator in (steady, resumed):
            await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_rolled_back_seq_does_not_stall_delivery(legs, operator, relay):
    relay.relay.gap_wait = 60  # the rollback is recognised in PostgreSQL, not by waiting

    async def scenario():
        communicator = await connect(operator)
        await communicator.receive_from(timeout=TIMEOUT)
        doomed = await database_sync_to_async(OpenWriter)(legs[0], "not started")
        later = await database_sync_to_async(apply)(legs[1], "not started")
        await database_sync_to_async(doomed.rollback)()
        assert await seqs_until(communicator, {later}) == [later]
        await communicator.disconnect()

    async_to_sync(scenario)()
