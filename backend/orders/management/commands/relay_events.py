"""`manage.py relay_events`: the one process that releases committed events in seq order (orders.relay)."""

import json
import logging
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from core import heap, metrics
from core.liveness import FileHeartbeat
from orders.relay import Relay

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Release committed order events in seq order to realtime clients (run one; a second stands by)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--stats-file", type=Path, help="Write the counters here (JSON) on exit.")

    def handle(self, *args: Any, stats_file: Path | None = None, **options: Any) -> None:
        relay = Relay(heartbeat=FileHeartbeat("relay"))  # docker/healthcheck.py reads its age
        metrics.start_exporter("relay", settings.METRICS_RELAY_PORT)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: relay.stop())
        heap.settle()  # each step's events, orders and payloads are cyclic garbage too
        relay.run()
        stats = relay.stats.as_dict()
        logger.info("Relay stopped: %s", stats)
        if stats_file is not None:
            stats_file.write_text(json.dumps(stats, indent=2))
