"""Rate limits kept in Redis, so that they hold across every web process.

A limit is a rate such as `10/minute` or `5/15min`: at most that many hits per window. Windows are fixed
(one Redis counter per key and window, INCR then EXPIRE, one round trip), the simplest scheme that is
atomic across processes. A client over the limit learns when the window ends (`Retry-After`).
"""

import logging
import re
import threading
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_UNITS["d"] = _UNITS["day"] = 86400
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+?)s?\s*$")


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}s"


def parse_rate(text: str) -> Rate:
    """`10/minute`, `5/15min`, `600/h` → Rate; ValueError otherwise."""
    match = _RATE.match(text.lower())
    if not match or match.group(3) not in _UNITS or int(match.group(1)) < 1:
        raise ValueError(f"{text!r} is not a rate such as 10/minute, 5/15min or 600/hour")
    return Rate(int(match.group(1)), int(match.group(2) or 1) * _UNITS[match.group(3)])


def rate_setting(name: str, value: str) -> Rate:
    try:
        return parse_rate(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"Environment variable {name!r} invalid: {error}") from error


_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def client() -> redis.Redis:
    """A Redis client on CACHE_URL, one per process (its connection pool is thread-safe)."""
    url = settings.CACHE_URL
    with _clients_lock:
        if url not in _clients:
            _clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        return _clients[url]


def key(*parts: object) -> str:
    return ":".join([settings.LIMITS_KEY_PREFIX, *map(str, parts)])


def hit(name: str, ident: str, rate: Rate) -> float | None:
    """Count one hit of `ident` against `rate`; None when allowed, else the seconds until it is again.

    Redis down: allowed, with a warning. A limit must not take the service down with it.
    """
    counter = key("limit", name, ident)
    try:
        pipe = client().pipeline(transaction=False)
        pipe.incr(counter)
        pipe.expire(counter, rate.seconds, nx=True)
        pipe.ttl(counter)
        count, _, ttl = pipe.execute()
    except redis.RedisError as error:
        logger.warning("Rate limit %s not applied, Redis is unavailable: %s", name, error)
        return None
    if count <= rate.count:
        return None
    return float(ttl if ttl and ttl > 0 else rate.seconds)


def blocked_for(name: str, ident: str, rate: Rate) -> float | None:
    """Like `hit` without counting: when `ident` is over `rate`, the seconds until it is not."""
    counter = key("limit", name, ident)
    try:
        pipe = client().pipeline(transaction=False)
        pipe.get(counter)
        pipe.ttl(counter)
        count, ttl = pipe.execute()
    except redis.RedisError as error:
        logger.warning("Rate limit %s not checked, Redis is unavailable: %s", name, error)
        return None
    if count is None or int(count) < rate.count:
        return None
    return float(ttl if ttl and ttl > 0 else rate.seconds)


def reset(name: str, ident: str) -> None:
    try:
        client().delete(key("limit", name, ident))
    except redis.RedisError as error:
        logger.warning("Rate limit %s not reset, Redis is unavailable: %s", name, error)
