"""Status changes: how many provider status changes per second the poller's apply step writes, per change
(before) and in batches (after), through the real services on this machine's PostgreSQL and Redis.

    PYTHONPATH=backend:. python -m bench.status_changes --orders 500 --json .run/bench/status_changes.json

Needs DATABASE_URL and REDIS_URL; works in `<name>_bench`, emptied and re-seeded. No provider is called:
the answers a poll tick would get are made here, so only our side of a change is measured (its provider
calls are bench.poll_tick's). Two identical sets of N orders, each with a Melange and a Bueno kitchen,
go through the life a tick sees, one round of answers per poll (11 changes per order):

    round 1  both kitchens accept            (a leg.status event, then order.status → submitted)
    round 2  both cook                       (→ cooking, then a leg.status event)
    round 3  both are done                   (a leg.status event, then → ready: the delivery is ordered)
    round 4  both hand over; a courier is searched for  (two leg.status events, → courier_search)
    round 5  the courier is on the road      (→ delivering)
    round 6  delivered                       (→ delivered: the order finishes)

Two of the 11 (every kitchen ready, delivered) need follow-ups and take the single-change path in a
batch too. Each round's answers are applied in poll batches of POLL_BATCH_SIZE, in a random order:

- per change (before): what the tick's apply step did before batching, kept here to compare: one
  statement clearing the batch's failures, the status cache read for the batch, then
  `services.leg_apply_status` for each change in a transaction of its own;
- batch (after): `orders.sync.answers.apply_batch`, the tick's apply step (`services.legs_apply_statuses`).

JSON written to --json (keys are stable; bench/report.py reads them):

    ok            true when both modes applied every change: every order delivered, each change one event
                  in the order it was applied, and both sets of orders have the same history
    failures      what went wrong, in words (empty when ok)
    settings      orders, changes_per_order, batch_size
    modes         "per_change" and "batch", each:
        changes             changes applied
        seconds             wall seconds inside the apply step, summed over the batches
        changes_per_s       changes / seconds
        statements          SQL statements sent; statements_per_change: per change
        cpu_ms_per_change   {"bench": this process (the poller), "postgres": its database backend}
    speedup       batch changes/s over per-change changes/s
    target        {"changes_per_s": 500, "measured": batch changes/s, "met": true/false}
    profile       py-spy over each mode: the functions most often on top of the stack
"""

import argparse
import logging
import random
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench import common

logger = logging.getLogger("bench.status_changes")
TARGET_CHANGES_PER_S = 500
# (provider of the leg, status) per round: the life of a two-kitchen order as a poll tick sees it
ROUNDS = (
    (("melange", "not started"), ("bueno", "accepted")),
    (("melange", "cooking"), ("bueno", "preparing")),
    (("melange", "cooked"), ("bueno", "ready")),
    (("melange", "finished"), ("bueno", "handed_over"), ("uklon", "not started")),
    (("uklon", "delivery"),),
    (("uklon", "delivered"),),
)
CHANGES_PER_ORDER = sum(len(changes) for changes in ROUNDS)
MODES = ("per_change", "batch")


def make_orders(count: int, tag: str) -> list[int]:
    """`count` orders with a Melange and a Bueno kitchen leg, each already created at its provider."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from orders.models import Dish, Leg, Order, OrderItem

    customer = get_user_model().objects.get(username="customer")
    dishes = [Dish.objects.filter(restaurant__provider=provider).first() for provider in ("melange", "bueno")]
    with transaction.atomic():
        orders = Order.objects.bulk_create(
            [Order(customer=customer, delivery_address=f"Bench St, {n}", total=200) for n in range(count)]
        )
        OrderItem.objects.bulk_create(
            [OrderItem(order=o, dish=dish, quantity=1, price=100) for o in orders for dish in dishes]
        )
        Leg.objects.bulk_create(
            [
                Leg(order=o, kind="kitchen", restaurant=dish.restaurant, provider=dish.restaurant.provider)
                for o in orders
                for dish in dishes
            ]
        )
        name_legs(tag)
    return [order.pk for order in orders]


def name_legs(tag: str) -> None:
    """Give every leg without one an external id unique to this run (the status cache is keyed by it)."""
    from django.db import connection

    from orders.models import Leg

    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Leg._meta.db_table} SET external_id = provider || %s || id WHERE external_id = ''",
            [f"-{tag}-"],
        )


def answers_of(order_ids: list[int], round_: tuple[tuple[str, str], ...], shuffle: random.Random) -> list:
    """A round's answers, (leg id, provider, answer), in the order `shuffle` gives: a tick's batch comes
    in the order its legs fell due, not order by order. Both modes get the same order."""
    from orders.models import Leg
    from orders.providers import ProviderOrder

    status_of = dict(round_)
    legs = Leg.objects.filter(order_id__in=order_ids, provider__in=status_of).order_by("order_id", "id")
    answered = [
        (leg_id, provider, ProviderOrder(external_id, status_of[provider]))
        for leg_id, provider, external_id in legs.values_list("id", "provider", "external_id")
    ]
    shuffle.shuffle(answered)
    return answered


def apply_one_by_one(answered: list[tuple[int, str, Any]]) -> tuple[int, list[str]]:
    """The apply step before batching: each change through `leg_apply_status`, a transaction of its own."""
    from django.core.cache import cache

    from orders import services
    from orders.sync import answers, leases

    leases.legs_clear_failures(leg_ids=[leg_id for leg_id, _, _ in answered])
    keys = [answers.status_cache_key(provider, answer.external_id) for _, provider, answer in answered]
    known = cache.get_many(keys)
    learned, changed, errors = {}, 0, []
    for (leg_id, _, answer), key in zip(answered, keys, strict=True):
        if known.get(key) == answer.status:
            continue
        try:
            event = services.leg_apply_status(leg_id=leg_id, provider_status=answer.status, source="poll")
        except Exception as error:
            errors.append(f"leg {leg_id}: {error}")
            continue
        learned[key] = answer.status
        changed += event is not None
    cache.set_many(learned, answers.STATUS_CACHE_SECONDS)
    return changed, errors


class Meter:
    """Wall seconds inside the apply step, the statements it sends and the CPU of both ends."""

    def __init__(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.backend = psutil.Process(cursor.fetchone()[0])
        self.seconds = 0.0
        self.statements = 0
        self.cpu = {"bench": 0.0, "postgres": 0.0}

    def _count(self, execute: Callable, sql: str, params: Any, many: bool, context: dict) -> Any:
        self.statements += 1
        return execute(sql, params, many, context)

    def _backend_cpu(self) -> float:
        try:
            times = self.backend.cpu_times()
        except psutil.Error:  # PostgreSQL on another host, or another user's
            return float("nan")
        return times.user + times.system

    @contextmanager
    def measuring(self) -> Iterator[None]:
        from django.db import connection

        wall, cpu, backend = time.monotonic(), time.process_time(), self._backend_cpu()
        with connection.execute_wrapper(self._count):
            yield
        self.seconds += time.monotonic() - wall
        self.cpu["bench"] += time.process_time() - cpu
        self.cpu["postgres"] += self._backend_cpu() - backend


def run_mode(
    mode: str, order_ids: list[int], tag: str, batch_size: int, seed: int
) -> tuple[dict[str, Any], list[str]]:
    from orders.sync import answers

    apply = apply_one_by_one if mode == "per_change" else answers.apply_batch
    meter, failures, changes = Meter(), [], 0
    for number, round_ in enumerate(ROUNDS, start=1):
        name_legs(tag)  # the delivery legs ordered in round 3 are created at their provider
        answered = answers_of(order_ids, round_, random.Random(f"{seed}-{number}"))
        for start in range(0, len(answered), batch_size):
            batch = answered[start : start + batch_size]
            with meter.measuring():
                changed, errors = apply(batch)
            changes += len(batch)
            if changed != len(batch) or errors:
                failures.append(
                    f"{mode}, round {number}: {changed} of {len(batch)} changed, errors {errors[:3]}"
                )
    per_change = 1000 / changes if changes else 0
    result = {
        "changes": changes,
        "seconds": round(meter.seconds, 3),
        "changes_per_s": round(changes / meter.seconds) if meter.seconds else None,
        "statements": meter.statements,
        "statements_per_change": round(meter.statements / changes, 2) if changes else None,
        "cpu_ms_per_change": {name: round(seconds * per_change, 3) for name, seconds in meter.cpu.items()},
    }
    logger.info("%s: %s", mode, result)
    return result, failures


def history(order_ids: list[int]) -> tuple[list[str], list[tuple]]:
    """Failures of the orders' histories, and the histories (ids replaced by positions) to compare."""
    from orders.models import Order, OrderEvent

    failures, histories = [], []
    for order in Order.objects.filter(pk__in=order_ids).order_by("id").prefetch_related("legs"):
        position = {
            leg.pk: index for index, leg in enumerate(sorted(order.legs.all(), key=lambda leg: leg.pk))
        }
        events = list(
            OrderEvent.objects.filter(order=order)
            .order_by("seq")
            .values_list("type", "from_status", "to_status", "leg_id", "provider_status")
        )
        moves = [event for event in events if event[0] in ("order.status", "leg.status")]
        if order.status != "delivered" or len(moves) != CHANGES_PER_ORDER:
            failures.append(
                f"order {order.pk}: {order.status} after {len(moves)} of {CHANGES_PER_ORDER} changes"
            )
        for leg in order.legs.all():
            applied = [event[4] for event in moves if event[3] == leg.pk]
            expected = [
                status for round_ in ROUNDS for provider, status in round_ if provider == leg.provider
            ]
            if applied != expected:
                failures.append(f"leg {leg.pk}: events {applied}, applied {expected}")
        histories.append(
            tuple((kind, old, new, position.get(leg), status) for kind, old, new, leg, status in events)
        )
    return failures, histories


class Profiler:
    """py-spy sampling this process while a mode runs (bench.poll_tick's); the top frames, or why none."""

    def __init__(self, out: Path, enabled: bool) -> None:
        from bench.poll_tick import Profiler as Sampler

        self.sampler = Sampler(out) if enabled else None

    @contextmanager
    def sampling(self) -> Iterator[None]:
        if self.sampler is None:
            yield
            return
        with self.sampler:
            yield

    def top(self) -> str:
        if self.sampler is None or not self.sampler.out.exists():
            return "not sampled"
        return common.top_frames(self.sampler.out)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    common.setup_django()  # production settings: DEBUG off, a real secret
    from django.conf import settings

    batch_size = settings.POLL_BATCH_SIZE
    result: dict[str, Any] = {
        "ok": False,
        "failures": [],
        "settings": {"orders": args.orders, "changes_per_order": CHANGES_PER_ORDER, "batch_size": batch_size},
        "modes": {},
        "profile": {},
    }
    out = Path(tempfile.mkdtemp(prefix="bench-status-"))
    histories = {}
    for mode in MODES:
        tag = secrets.token_hex(4)
        order_ids = make_orders(args.orders, tag)
        logger.info("%s: %d orders, %d changes ...", mode, args.orders, args.orders * CHANGES_PER_ORDER)
        profiler = Profiler(out / f"{mode}.pyspy", not args.no_profile)
        with profiler.sampling():
            result["modes"][mode], failures = run_mode(mode, order_ids, tag, batch_size, args.seed)
        result["profile"][mode] = profiler.top()
        wrong, histories[mode] = history(order_ids)
        result["failures"] += failures + wrong[:10]
    if histories["per_change"] != histories["batch"]:
        result["failures"].append("the batch left another history than the changes one by one")
    before, after = (result["modes"][mode]["changes_per_s"] or 0 for mode in MODES)
    result["speedup"] = round(after / before, 1) if before else None
    result["target"] = {
        "changes_per_s": TARGET_CHANGES_PER_S,
        "measured": after,
        "met": after >= TARGET_CHANGES_PER_S,
    }
    result["ok"] = not result["failures"]
    common.purge_broker()  # the delivery and notification tasks the changes queued for nobody
    return result


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--orders", type=int, default=500, help="orders per mode (11 changes each)")
    parser.add_argument("--seed", type=int, default=1, help="of the order in which a round's answers come")
    parser.add_argument("--no-profile", action="store_true", help="do not sample the modes with py-spy")


def main() -> None:
    common.main(__doc__, options, measure, lambda parser: None, lambda args: None)


if __name__ == "__main__":
    main()
