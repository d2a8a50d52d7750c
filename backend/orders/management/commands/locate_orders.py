"""Look up the delivery points of orders that have none: after an upgrade (orders placed before
geocoding existed are `pending`), after a geocoder outage (`failed`), or after GEOCODER_URL is first set
(`off`). Active orders only, unless --all. Each lookup is a `locate_order` task, under GEOCODER_RATE.
"""

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from orders.models import Order
from orders.status import ACTIVE
from orders.tasks import locate_order

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Queue map lookups for orders without a delivery point (pending, failed or off)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--all", action="store_true", help="finished orders too, not only active ones")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.GEOCODER_URL:
            raise CommandError("GEOCODER_URL is empty: there is no geocoder to ask.")
        without_point = (Order.GeocodeStatus.PENDING, Order.GeocodeStatus.FAILED, Order.GeocodeStatus.OFF)
        orders = Order.objects.filter(geocode_status__in=without_point)
        if not options["all"]:
            orders = orders.filter(status__in=ACTIVE)
        # `off` orders were never looked up: pending now, so that order_geocode takes them.
        orders.filter(geocode_status=Order.GeocodeStatus.OFF).update(
            geocode_status=Order.GeocodeStatus.PENDING
        )
        count = 0
        for order_id in orders.values_list("id", flat=True).iterator():
            locate_order.delay(order_id)
            count += 1
        self.stdout.write(f"Queued {count} lookups.")
