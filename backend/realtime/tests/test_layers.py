"""realtime.layers leans on private internals of channels_redis and redis-py: these tests fail when they move.

When one fails after an upgrade, read the new release's channels_redis/pubsub.py and redis/asyncio/client.py
against realtime.layers (its docstring names each internal and why), fix the module if needed, then
record the new version, parameters and hashes here and move the pin in pyproject.toml. The behaviour
itself is checked here on the shared Redis (a subscription cut by the server) and end to end, with a
restarted Redis under daphne, in test_redis_restart.py.
"""

import asyncio
import contextlib
import hashlib
import inspect
import tomllib
import uuid
from collections.abc import Callable

import channels_redis
import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from conftest import REPO  # backend/conftest.py
from django.conf import settings
from packaging.requirements import Requirement
from redis import asyncio as aioredis
from redis.asyncio.client import PubSub

from realtime import layers

CHANNELS_REDIS_VERSION = "4.3.0"
TIMEOUT = 5

# (class, method, its parameters, sha256 of its source as inspect.getsource returns it). Methods
# realtime.layers overrides or calls, and those whose behaviour it assumes: a shard connects lazily and
# subscribes through `_pubsub`; a channel's queue holds serialized messages that receive() deserializes;
# redis-py's PubSub resubscribes in on_connect (registered in connect) and calls _reconnect on a failure.
UPSTREAM = [
    (
        RedisPubSubChannelLayer,
        "_get_layer",
        ["self"],
        "1862b87a25ac72b2512da2fa30e56f87ca4b37f6874f1385d2ceb5e8b442079c",
    ),
    (
        RedisPubSubLoopLayer,
        "__init__",
        ["self", "hosts", "prefix", "on_disconnect", "on_reconnect", "channel_layer", "kwargs"],
        "fd9d37e275298a5823df02a3cd2157aaa237b803059aa55f3ccce2053c1ecf7f",
    ),
    (
        RedisPubSubLoopLayer,
        "receive",
        ["self", "channel"],
        "2d3fa7938ba6e0a67de22b47d7af2b6e492bbbdacce4725868239d854b845de4",
    ),
    (
        RedisSingleShardConnection,
        "__init__",
        ["self", "host", "channel_layer"],
        "9c8f408acb4c2d7be515e280121eecbc51322b451f0a0c0992871518436bf3e7",
    ),
    (
        RedisSingleShardConnection,
        "_ensure_redis",
        ["self"],
        "ba228d3cee7116dcb07e59698f384ca9c24a1a4d3b9b542ad84a15168e3816b2",
    ),
    (
        RedisSingleShardConnection,
        "subscribe",
        ["self", "channel"],
        "173a8f40b17e4e28a716afd0e3489b5059772957749b3b6ded5b3e6801fc13e0",
    ),
    (
        RedisSingleShardConnection,
        "unsubscribe",
        ["self", "channel"],
        "e2b9f0f1ff880674267d34fe08891a039472e0eadf02a6bfcd94ed635ebb7d9f",
    ),
    (
        RedisSingleShardConnection,
        "_do_receiving",
        ["self"],
        "a822736dcb875e43bfe3b5461dfe0028401fb768fa5c9708cd1cde61bed321a7",
    ),
    (
        PubSub,
        "__init__",
        [
            "self",
            "connection_pool",
            "shard_hint",
            "ignore_subscribe_messages",
            "encoder",
            "push_handler_func",
            "event_dispatcher",
        ],
        "84aba2f6324f861278f7329bf5ee1485c43336932832adb02aa0ceae01d0f3d3",
    ),
    (
        PubSub,
        "connect",
        ["self"],
        "abf02544ee5bfdbb930e1b4df5b03d3dc0d1e9e9edcab6c690c13d2f138f247c",
    ),
    (
        PubSub,
        "on_connect",
        ["self", "connection"],
        "4f91994e4caeecb7e83d60434c585f87f4355bc90f0d79a52fd5de5bf629ba95",
    ),
    (
        PubSub,
        "_reconnect",
        ["self", "conn", "error", "failure_count", "start_time", "command_name"],
        "05958af981a99f46adf94ce26a11d49e8532f32bfca82f794e2e4233dcc5e4a3",
    ),
]


def test_channels_redis_is_the_release_pinned_in_pyproject():
    with open(REPO / "pyproject.toml", "rb") as file:
        dependencies = tomllib.load(file)["project"]["dependencies"]
    [pin] = [Requirement(line) for line in dependencies if Requirement(line).name == "channels-redis"]
    assert str(pin.specifier) == f"=={CHANNELS_REDIS_VERSION}", "realtime.layers needs one exact release"
    assert channels_redis.__version__ == CHANNELS_REDIS_VERSION


@pytest.mark.parametrize(
    ("owner", "name", "parameters", "digest"),
    UPSTREAM,
    ids=[f"{owner.__module__}.{owner.__name__}.{name}" for owner, name, _, _ in UPSTREAM],
)
def test_upstream_method_is_unchanged(owner: type, name: str, parameters: list[str], digest: str):
    method: Callable = owner.__dict__[name]  # defined on that class itself, not inherited
    assert list(inspect.signature(method).parameters) == parameters
    source = inspect.getsource(method)
    assert hashlib.sha256(source.encode()).hexdigest() == digest, (
        f"{owner.__name__}.{name} changed in channels_redis {channels_redis.__version__} / redis-py "
        f"{redis.__version__}: re-read it against realtime.layers, then record the new hash"
    )


def test_the_overrides_still_override_something():
    """A rename upstream would leave our method defined and never called."""
    for owner, override in [
        (RedisPubSubChannelLayer, layers.RedisPubSubChannelLayer._get_layer),
        (RedisSingleShardConnection, layers._Shard._ensure_redis),
        (PubSub, layers._WatchedPubSub._reconnect),
        (PubSub, layers._WatchedPubSub.on_connect),
    ]:
        assert callable(owner.__dict__.get(override.__name__)), f"{owner.__name__}.{override.__name__}"


def test_the_configured_layer_builds_watched_shards():
    """The attributes realtime.layers reads and replaces exist, with the types it expects."""
    layer = get_channel_layer()
    assert isinstance(layer, layers.RedisPubSubChannelLayer)

    async def scenario():
        loop_layer = layer._get_layer()
        assert isinstance(loop_layer, RedisPubSubLoopLayer)
        assert isinstance(loop_layer.channels, dict)
        assert loop_layer.channel_layer is layer
        [shard] = loop_layer._shards
        assert isinstance(shard, layers._Shard) and shard.channel_layer is loop_layer
        assert shard._redis is None and shard._pubsub is None, "a shard connects on first use"
        assert shard.host == {"address": settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]}
        channel = await layer.new_channel()
        try:
            assert isinstance(shard._redis, aioredis.Redis)
            assert isinstance(shard._pubsub, layers._WatchedPubSub)
            assert shard._pubsub.connection_pool is shard._redis.connection_pool
            assert channel in shard._subscribed_to and shard._pubsub.subscribed
            assert layer._get_layer() is loop_layer and loop_layer._shards == [shard], "replaced once"
        finally:
            await layer.flush()

    async_to_sync(scenario)()


def test_a_subscription_cut_by_the_server_tells_the_channel_which_then_goes_on():
    """Redis drops the subscription connection (as on a restart): the channel hears `layer.interrupted`,
    redis-py resubscribes by itself, and messages sent afterwards arrive again."""
    name = f"test-layers-{uuid.uuid4().hex[:8]}"  # our connections, told apart in CLIENT LIST
    url = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
    layer = layers.RedisPubSubChannelLayer(hosts=[{"address": url, "client_name": name}], prefix=name)
    probe = {"type": "after.cut"}

    async def scenario() -> list[dict]:
        channel = await layer.new_channel()
        received: list[dict] = []
        probed = asyncio.Event()

        async def receive() -> None:
            # One receive() throughout: a cancelled receive() unsubscribes the channel.
            while True:
                received.append(await layer.receive(channel))
                if received[-1] == probe:
                    probed.set()

        receiver = asyncio.create_task(receive())
        try:
            admin = aioredis.Redis.from_url(url)
            try:
                ours = [c["id"] for c in await admin.client_list(_type="pubsub") if c["name"] == name]
                assert len(ours) == 1, ours
                await admin.client_kill_filter(_id=ours[0])
            finally:
                await admin.aclose()
            async with asyncio.timeout(TIMEOUT):
                while not received:
                    await asyncio.sleep(0.01)
                # Until the subscription is back (a message published before that is lost, as it should).
                while not probed.is_set():
                    await layer.send(channel, probe)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(probed.wait(), 0.1)
            return received
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
            await layer.flush()

    received = async_to_sync(scenario)()
    assert received[0] == layers.INTERRUPTED, received
    assert probe in received
    assert all(message in (layers.INTERRUPTED, probe) for message in received), received
