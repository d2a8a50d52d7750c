"""The `Liveops-Signature` header, signed like Stripe's: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The HMAC key is the endpoint's secret; the message is the timestamp, a dot, and the raw body. A receiver
recomputes it over the bytes it received, compares in constant time, and refuses a timestamp older than
its replay window (README "Integrating with webhooks" has the ten lines it takes).
"""

import hashlib
import hmac
import secrets
import time

HEADER = "Liveops-Signature"
SECRET_PREFIX = "whsec_"
# What verify() accepts by default: a delivery signed more than five minutes ago is a replay
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, body: bytes, timestamp: int) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def header_value(secret: str, body: bytes, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(secret, body, timestamp)}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance: int = TOLERANCE_SECONDS, now: float | None = None
) -> bool:
    """Whether `header` signs `body` with `secret` within `tolerance` seconds of `now`."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = signature(secret, body, timestamp)
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))
