"""Housekeeping tasks of the project itself (beat runs them; see orders/schedules.py)."""

import logging

from celery import shared_task
from django.utils import timezone
from knox.models import AuthToken

logger = logging.getLogger(__name__)


@shared_task(name="core.purge_expired_tokens", ignore_result=True, soft_time_limit=60, time_limit=90)
def purge_expired_tokens() -> int:
    """Delete API tokens past their expiry. They no longer work anyway (knox checks on use); this keeps
    the table to the tokens that do, which every authentication of their user reads."""
    deleted, _ = AuthToken.objects.filter(expiry__lt=timezone.now()).delete()
    if deleted:
        logger.info("Purged %d expired API tokens", deleted)
    return deleted
