"""DRF throttles on core.limits: 429 with Retry-After, counted in Redis across every web process."""

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from . import limits


def client_ip(request: Any) -> str:
    """The client's address. Forwarded headers were applied (trusted proxies only) or dropped before
    Django saw the request (core.proxies), so REMOTE_ADDR is the client."""
    return request.META.get("REMOTE_ADDR") or "unknown"


class RedisThrottle(BaseThrottle):
    """One named limit; `rate_setting` names the setting holding its rate, `ident` says whom it counts."""

    name = ""
    rate_setting = ""
    methods: frozenset[str] | None = None  # None: every method

    def ident(self, request: Request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        self.retry_after: float | None = None
        if self.methods is not None and request.method not in self.methods:
            return True
        ident = self.ident(request)
        if ident is None:
            return True
        rate = limits.parse_rate(getattr(settings, self.rate_setting))
        self.retry_after = limits.hit(self.name, ident, rate)
        return self.retry_after is None

    def wait(self) -> float | None:
        return self.retry_after


class SignInThrottle(RedisThrottle):
    """Sign-in attempts per client address: each costs a password hash."""

    name = "signin-ip"
    rate_setting = "THROTTLE_SIGNIN_PER_IP"

    def ident(self, request: Request) -> str | None:
        return client_ip(request)


class OrderCreateThrottle(RedisThrottle):
    name = "order-create"
    rate_setting = "THROTTLE_ORDER_CREATE_PER_USER"
    methods = frozenset({"POST"})

    def ident(self, request: Request) -> str | None:
        return str(request.user.pk) if request.user.is_authenticated else None


class TicketThrottle(RedisThrottle):
    name = "ticket"
    rate_setting = "THROTTLE_TICKET_PER_USER"

    def ident(self, request: Request) -> str | None:
        return str(request.user.pk) if request.user.is_authenticated else None


class ShareThrottle(RedisThrottle):
    """Tracking links created by one user (POST /api/orders/{id}/share/)."""

    name = "share"
    rate_setting = "THROTTLE_SHARE_PER_USER"
    methods = frozenset({"POST"})

    def ident(self, request: Request) -> str | None:
        return str(request.user.pk) if request.user.is_authenticated else None
