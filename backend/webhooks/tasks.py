"""Celery tasks of outgoing webhooks: thin, ids in, the services do the work."""

import logging

from celery import shared_task
from django.conf import settings

from . import services

logger = logging.getLogger(__name__)


def _lane_time_limit() -> float:
    """Room for a lane's worth of slow receivers; a lane cut short keeps its lease and is swept later."""
    return settings.WEBHOOK_TIMEOUT_SECONDS * 20 + 30


@shared_task(name="webhooks.deliver_lane", ignore_result=True, soft_time_limit=_lane_time_limit())
def deliver_lane(endpoint_id: int, order_id: int | None) -> int:
    return services.deliver_lane(endpoint_id=endpoint_id, order_id=order_id)


@shared_task(name="webhooks.deliver_due", ignore_result=True, soft_time_limit=60, time_limit=90)
def deliver_due() -> int:
    """Beat's sweep: retries that are due, and lanes whose worker died holding them."""
    return services.enqueue_due()


@shared_task(name="webhooks.purge_deliveries", ignore_result=True, soft_time_limit=300)
def purge_deliveries() -> int:
    return services.purge_deliveries()
