"""WebSocket tickets: a browser-less client trades its API token for a short-lived, single-use ticket and
opens its socket with `?ticket=`, so that no long-lived secret ever sits in a URL (and in access logs).

Redis holds a hash of each ticket with the user's id until it is used or REALTIME_TICKET_SECONDS pass;
GETDEL makes the first connection that presents it the only one.
"""

import hashlib
import logging
import secrets

import redis
from django.conf import settings

from core import limits

logger = logging.getLogger(__name__)

MAX_TICKET_CHARS = 100


def _key(ticket: str) -> str:
    return limits.key("ticket", hashlib.sha256(ticket.encode()).hexdigest())


def issue(user_id: int) -> str:
    ticket = secrets.token_urlsafe(32)
    limits.client().set(_key(ticket), user_id, ex=settings.REALTIME_TICKET_SECONDS)
    return ticket


def redeem(ticket: str) -> int | None:
    """The user id a ticket was issued to, once: None when unknown, used or expired."""
    if not ticket or len(ticket) > MAX_TICKET_CHARS:
        return None
    try:
        value = limits.client().getdel(_key(ticket))
    except redis.RedisError as error:
        logger.warning("Could not check a WebSocket ticket, Redis is unavailable: %s", error)
        return None
    return int(value) if value is not None else None
