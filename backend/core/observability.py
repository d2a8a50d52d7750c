"""Error tracking: Sentry, on when SENTRY_DSN is set, with no personal data.

settings.py calls `init_sentry` at import, as Sentry's Django guide asks: every process that loads the
settings reports, the web process, Celery workers and beat alike. send_default_pii, off, already keeps
cookies, auth headers, user details and client addresses out; `scrub_event` removes them again should an
integration or a future option put them back. Each report is tagged with the ids of its log lines
(core.logs): request_id, and task_id, order_id, leg_id where bound.
"""

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.integrations.redis import RedisIntegration

from .logs import current_ids

# Request headers that identify or authenticate a person, compared lower-case
PRIVATE_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization", "x-csrftoken"})
PRIVATE_USER_FIELDS = ("email", "ip_address", "username")
PRIVATE_ENV = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR")


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Drop cookies, authorization and cookie headers, and the user's email,
    username and address from an event before it leaves."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = {
                name: value for name, value in headers.items() if name.lower() not in PRIVATE_HEADERS
            }
        environment = request.get("env")
        if isinstance(environment, dict):
            for name in PRIVATE_ENV:
                environment.pop(name, None)
    user = event.get("user")
    if isinstance(user, dict):
        for field in PRIVATE_USER_FIELDS:
            user.pop(field, None)
        if not user:
            event.pop("user")
    return event


def tag_with_log_ids(event: dict[str, Any]) -> dict[str, Any]:
    """The request, task, order and leg ids of the log lines around the error, as the event's tags: a
    report leads to its request's (and its tasks') log lines."""
    ids = current_ids()
    if ids:
        tags = event.get("tags")
        event["tags"] = {**(tags if isinstance(tags, dict) else {}), **{k: str(v) for k, v in ids.items()}}
    return event


def before_send(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry's before_send (and before_send_transaction): ids tagged, personal data removed."""
    return scrub_event(tag_with_log_ids(event))


def init_sentry(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> bool:
    """Start reporting to Sentry; an empty `dsn` leaves it off. True when it is on.

    An empty `release` lets sentry-sdk find one itself (SENTRY_RELEASE, then the git commit, then the
    usual CI variables).
    """
    if not dsn:
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release or None,
        traces_sample_rate=traces_sample_rate,
        # No send_default_pii: unset, it is off (no cookies, auth headers, user details or client
        # addresses); sentry-sdk 2.x deprecates passing it, in favour of data_collection
        before_send=before_send,
        before_send_transaction=before_send,
        integrations=[DjangoIntegration(), CeleryIntegration(), RedisIntegration()],
    )
    return True
