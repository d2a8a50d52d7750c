"""Poll tick: how long one tick takes with N due legs, against the real simulators over HTTP.

    PYTHONPATH=backend:. python -m bench.poll_tick --legs 100 1000 5000

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones); works in `<name>_bench`.
For each N it creates N orders with one kitchen leg each (Melange and Bueno alternately), then times
two ticks of the real poller (`orders.polling.poll_due_legs`): the first creates the N sub-orders at
the providers, the second polls them all (the steady state).
"""

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from bench.fanout import setup_django

logger = logging.getLogger("bench.poll_tick")


def make_orders(count: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.utils import timezone

    from orders.models import Dish, Leg, Order, OrderItem

    customer = get_user_model().objects.get(username="customer")
    dishes = [Dish.objects.filter(restaurant__provider=provider).first() for provider in ("melange", "bueno")]
    with transaction.atomic():
        orders = Order.objects.bulk_create(
            [Order(customer=customer, delivery_address=f"Bench St, {n}", total=100) for n in range(count)]
        )
        OrderItem.objects.bulk_create(
            [OrderItem(order=o, dish=dishes[n % 2], quantity=1, price=100) for n, o in enumerate(orders)]
        )
        Leg.objects.bulk_create(
            [
                Leg(
                    order=o,
                    kind="kitchen",
                    restaurant=dishes[n % 2].restaurant,
                    provider=dishes[n % 2].restaurant.provider,
                    next_poll_at=timezone.now(),
                )
                for n, o in enumerate(orders)
            ]
        )


def measure(count: int) -> dict:
    from django.core.management import call_command
    from django.utils import timezone

    from orders import polling
    from orders.models import Leg

    call_command("flush", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0)
    make_orders(count)
    create = polling.poll_due_legs()
    Leg.objects.update(next_poll_at=timezone.now())
    poll = polling.poll_due_legs()
    return {
        "legs": count,
        "create_tick_s": round(create.seconds, 3),
        "created": create.created,
        "poll_tick_s": round(poll.seconds, 3),
        "poll_http_s": round(poll.http_seconds, 3),
        "polled": poll.claimed,
        "failed": create.failed + poll.failed,
        "legs_per_second": round(poll.claimed / poll.seconds) if poll.seconds else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--legs", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    setup_django(flush_ms=100)
    from django.conf import settings

    from simulators.testing import simulator_env, start_simulator, stop_simulator

    log_dir = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    simulators = {}
    try:
        for name in ("melange", "bueno"):
            env = simulator_env(SIM_STEP_SECONDS="600", SIM_API_KEY=settings.PROVIDERS[name]["api_key"])
            simulators[name] = start_simulator(name, env, log_dir)
            settings.PROVIDERS[name]["url"] = simulators[name].url
        settings.POLL_BATCH_SIZE = max(args.legs)  # one tick takes every due leg
        settings.POLL_TICK_BUDGET_SECONDS = 600
        results = []
        for count in args.legs:
            logger.info("Measuring a tick with %d due legs ...", count)
            results.append(measure(count))
            logger.info("%s", results[-1])
    finally:
        for simulator in simulators.values():
            stop_simulator(simulator)
    report = {"concurrency_per_provider": settings.PROVIDER_CONCURRENCY, "results": results}
    text = json.dumps(report, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text)
    os._exit(0)  # the publisher thread is a daemon; nothing left to flush


if __name__ == "__main__":
    main()
