"""A regression guard for the channel layer: hundreds of sockets held idle past redis-py 8's 5 s socket
timeout on one real web process (daphne) still all receive the next event.

channels_redis' RedisChannelLayer failed exactly this (idle consumers dropped with TimeoutError,
MaxConnectionsError when 200 connected at once); the pub/sub layer we use passes it.
"""

import asyncio
import json

import pytest
import websockets

from orders import services
from orders.tests import factories
from realtime.tests.conftest import daphne_env, start_daphne, stop

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SOCKETS = 200
IDLE_SECONDS = 7


@pytest.fixture
def web_process(tmp_path, unused_tcp_port):
    # SOCKETS sockets of one operator at once: no per-user socket cap
    env = daphne_env(REALTIME_SNAPSHOT_SHARE_SECONDS="1", REALTIME_SOCKETS_PER_USER="0")
    log = tmp_path / "web.log"
    process = start_daphne(env, unused_tcp_port, log)
    yield f"ws://127.0.0.1:{unused_tcp_port}", log
    stop(process)


def test_idle_sockets_survive_and_all_receive_the_next_event(
    web_process, operator, customer, restaurants, relay
):
    base, log = web_process
    headers = {"Authorization": f"Token {factories.token_for(operator)}"}
    order = factories.make_order(customer, restaurants["melange"])
    leg_id = order.legs.get().pk
    relay.caught_up()

    async def scenario() -> list[int]:
        sockets = []
        for index in range(SOCKETS):
            url = f"{base}/ws/operators/"
            sockets.append(await websockets.connect(url, additional_headers=headers, ping_interval=None))
            if index % 50 == 49:
                await asyncio.sleep(0.05)
        for ws in sockets:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "snapshot"
        await asyncio.sleep(IDLE_SECONDS)  # idle past redis-py's 5 s socket timeout
        event = await asyncio.to_thread(
            services.leg_apply_status, leg_id=leg_id, provider_status="cooking", source="poll"
        )

        async def next_seq(ws) -> int:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return frame["events"][0]["seq"] if frame["type"] == "events" else -1

        seqs = await asyncio.gather(*(next_seq(ws) for ws in sockets))
        for ws in sockets:
            await ws.close()
        return [seq - event.seq for seq in seqs]

    assert asyncio.run(scenario()) == [0] * SOCKETS
    text = log.read_text()
    assert "TimeoutError" not in text and "MaxConnectionsError" not in text
