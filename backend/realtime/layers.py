"""The channel layer: channels_redis' pub/sub layer that tells its consumers when Redis dropped them.

Redis pub/sub keeps nothing for a subscriber that is away: whatever was published while this process's
subscription connection was down (Redis restarted, a network blip) is gone. redis-py then reconnects
and resubscribes by itself, often inside one call and without raising, so the consumers would go on
as if nothing had happened, a gap in their stream that nobody notices.

This layer sends every local channel that was subscribed a `layer.interrupted` message when the
connection fails and again when it is back. Consumers answer by closing with 4503 (consumers.CLOSE_RESUME);
clients reconnect with `?after=<last seq>` and the missed events are replayed from PostgreSQL.

Private internals this module relies on, because no public interface reaches the subscription's
connection: channels_redis documents `on_disconnect` / `on_reconnect` options for this layer, but since
4.0 it stores them and never calls them (django/channels_redis#406), and it builds its redis-py PubSub
itself. Used, as of channels_redis 4.3.0 and redis-py 8.1.0:
- channels_redis.pubsub.RedisPubSubChannelLayer._get_layer(): called through super(); the per-loop
  RedisPubSubLoopLayer it returns has its `_shards` replaced by ours before their first use (a shard
  connects lazily), and its `channels` (channel name → queue) receive the notice;
- channels_redis.pubsub.RedisSingleShardConnection(host, channel_layer): `_ensure_redis()` is overridden
  to put our PubSub in `_pubsub`, built on the pool of the `_redis` client it has just made;
  `_subscribed_to` names the channels whose subscription went through the shard;
- redis.asyncio.client.PubSub: `_reconnect(conn, error, ...)` is overridden (redis-py calls it when a
  command or a read on the subscription failed, before reconnecting), and `on_connect(connection)`, the
  connect callback in which it resubscribes.
pyproject.toml pins channels-redis to that exact release. backend/realtime/tests/test_layers.py fails
when the installed version, a signature, an attribute or the source of any method named here changes
(redis-py's included), and test_redis_restart.py checks the behaviour end to end on a restarted Redis.
"""

import logging
from collections.abc import Callable
from typing import Any

from channels_redis import pubsub
from redis.asyncio.client import PubSub

logger = logging.getLogger(__name__)

INTERRUPTED = {"type": "layer.interrupted"}


class _WatchedPubSub(PubSub):
    """A PubSub that reports a failing connection and a reconnect that had to resubscribe."""

    def __init__(self, *args: Any, on_interrupted: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_interrupted = on_interrupted

    async def _reconnect(
        self, conn: Any, error: BaseException | None = None, *args: Any, **kwargs: Any
    ) -> None:
        # redis-py calls this when a command on the subscription failed, before reconnecting.
        if self.subscribed:
            self._on_interrupted(f"connection lost ({error})")
        await super()._reconnect(conn, error, *args, **kwargs)

    async def on_connect(self, connection: Any) -> None:
        # Called on every reconnect (the first connection is made before it is registered).
        resubscribing = self.subscribed
        await super().on_connect(connection)
        if resubscribing:
            self._on_interrupted("reconnected")


class _Shard(pubsub.RedisSingleShardConnection):
    def _ensure_redis(self) -> None:
        if self._redis is None:
            super()._ensure_redis()
            self._pubsub = _WatchedPubSub(self._redis.connection_pool, on_interrupted=self._interrupted)

    def _interrupted(self, why: str) -> None:
        """Tell every consumer whose subscription was cut; later ones subscribed on the new connection."""
        layer = self.channel_layer
        message = layer.channel_layer.serialize(INTERRUPTED)
        channels = [name for name in self._subscribed_to if name in layer.channels]
        logger.warning(
            "Channel layer subscription to %s %s: telling %d channels", self.host, why, len(channels)
        )
        for name in channels:
            layer.channels[name].put_nowait(message)


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """channels_redis.pubsub.RedisPubSubChannelLayer whose consumers hear about lost subscriptions."""

    def _get_layer(self) -> pubsub.RedisPubSubLoopLayer:
        layer = super()._get_layer()
        if not all(isinstance(shard, _Shard) for shard in layer._shards):
            # Just built for this event loop: no shard has connected yet.
            layer._shards = [_Shard(shard.host, layer) for shard in layer._shards]
        return layer
