"""Periodic tasks declared in code and installed into django-celery-beat's database scheduler.

Installed when missing (after every migrate); an interval an operator changed in the admin is kept.
"""

import logging
from typing import Any

from django.conf import settings
from django.db import transaction

from core.liveness import tick_interval_seconds

logger = logging.getLogger(__name__)


def declared_schedules() -> list[dict[str, Any]]:
    interval = tick_interval_seconds()  # beat counts whole seconds
    return [
        {
            "name": "Poll providers",
            "task": "orders.poll_due_legs",
            "every": interval,
            # A tick that waited longer than two intervals in the queue is stale: the next one is coming.
            "expire_seconds": interval * 2,
            "description": "Submit due kitchen/delivery legs and poll the providers of active ones.",
        },
        {
            "name": "Check late and stuck orders",
            "task": "orders.check_alerts",
            "every": settings.ALERT_CHECK_SECONDS,
            "expire_seconds": settings.ALERT_CHECK_SECONDS * 2,
            "description": "Raise `late` and `stuck` alerts that only the passing of time makes true.",
        },
        {
            "name": "Send due webhook deliveries",
            "task": "webhooks.deliver_due",
            "every": 15,
            "expire_seconds": 30,
            "description": "Partners' webhook retries that are due, and deliveries a stopped worker held.",
        },
        {
            "name": "Purge the webhook delivery log",
            "task": "webhooks.purge_deliveries",
            "every": 24 * 3600,
            "expire_seconds": 3600,
            "description": "Delete webhook deliveries that ended more than 30 days ago.",
        },
        {
            "name": "Purge expired API tokens",
            "task": "core.purge_expired_tokens",
            "every": 3600,
            "expire_seconds": 3600,
            "description": "Delete API tokens past their expiry (core/tasks.py).",
        },
    ]


@transaction.atomic
def install_schedules(**kwargs: Any) -> int:
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    installed = 0
    for spec in declared_schedules():
        if PeriodicTask.objects.filter(name=spec["name"]).exists():
            continue
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=spec["every"], period=IntervalSchedule.SECONDS
        )
        PeriodicTask.objects.create(
            name=spec["name"],
            task=spec["task"],
            interval=interval,
            expire_seconds=spec["expire_seconds"],
            description=spec["description"],
        )
        installed += 1
        logger.info("Installed periodic task %r every %ss", spec["name"], spec["every"])
    return installed
