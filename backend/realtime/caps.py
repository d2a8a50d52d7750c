"""How many WebSockets one user holds open, across every web process: REALTIME_SOCKETS_PER_USER.

Each open socket is a member of a Redis sorted set per user, scored with the time its lease was last
renewed. A socket takes its place atomically (a Lua script drops expired leases, counts, adds) or is
refused; each web process renews the leases of its own sockets every RENEW_SECONDS, so the places of a
process that died without closing its sockets free themselves after LEASE_SECONDS.
"""

import asyncio
import logging
import time
from collections import defaultdict
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings

from core import limits

logger = logging.getLogger(__name__)

LEASE_SECONDS = 90
RENEW_SECONDS = 30

_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1] - ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2] * 2)
return 1
"""

# This process's open sockets per user, whose leases it renews.
_local: dict[int, set[str]] = defaultdict(set)
_renewers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}


@lru_cache
def _claim_script(client: redis.Redis) -> Any:
    """The claim script, registered once per client (then run by its SHA)."""
    return client.register_script(_CLAIM)


def _key(user_id: int) -> str:
    return limits.key("sockets", user_id)


def claim(user_id: int, socket_id: str) -> bool:
    """Take a place for this socket; False when the user already holds REALTIME_SOCKETS_PER_USER.

    Redis down: allowed (the socket itself will then be told to resume when its layer fails anyway).
    """
    cap = settings.REALTIME_SOCKETS_PER_USER
    if cap == 0:
        return True
    client = limits.client()
    try:
        taken = _claim_script(client)(keys=[_key(user_id)], args=[time.time(), LEASE_SECONDS, cap, socket_id])
    except redis.RedisError as error:
        logger.warning("Socket cap not applied, Redis is unavailable: %s", error)
        taken = 1
    if taken:
        _local[user_id].add(socket_id)
    return bool(taken)


def holds(user_id: int, socket_id: str) -> bool:
    """Whether this socket took a place (none is taken while REALTIME_SOCKETS_PER_USER is 0)."""
    return socket_id in _local.get(user_id, ())


def release(user_id: int, socket_id: str) -> None:
    members = _local.get(user_id)
    if members is None or socket_id not in members:
        return
    members.discard(socket_id)
    if not members:
        del _local[user_id]
    try:
        limits.client().zrem(_key(user_id), socket_id)
    except redis.RedisError as error:  # its lease runs out by itself
        logger.info("Could not release a socket place, Redis is unavailable: %s", error)


def renew() -> None:
    """Renew the leases of every socket this process holds (only those still present: XX)."""
    now = time.time()
    try:
        pipe = limits.client().pipeline(transaction=False)
        for user_id, members in list(_local.items()):
            pipe.zadd(_key(user_id), dict.fromkeys(list(members), now), xx=True)
            pipe.expire(_key(user_id), LEASE_SECONDS * 2)
        pipe.execute()
    except redis.RedisError as error:
        logger.warning("Could not renew socket leases, Redis is unavailable: %s", error)


def ensure_renewer() -> None:
    """Start the lease renewer of the running event loop (one per process and loop) if it is not running."""
    loop = asyncio.get_running_loop()
    task = _renewers.get(loop)
    if task is None or task.done():
        for stale in [other for other in _renewers if other.is_closed()]:
            del _renewers[stale]
        _renewers[loop] = loop.create_task(_renew_forever(), name="socket-lease-renewer")


async def _renew_forever() -> None:
    while True:
        await asyncio.sleep(RENEW_SECONDS)
        if _local:
            await asyncio.to_thread(renew)
