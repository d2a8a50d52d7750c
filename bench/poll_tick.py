"""Poll tick: how long one tick of the real poller takes with N due legs, against the real simulators.

    PYTHONPATH=backend:. python -m bench.poll_tick --legs 100 1000 5000 --json .run/bench/poll_tick.json

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones); works in `<name>_bench`, emptied
and re-seeded for every N, with Melange and Bueno started fresh as processes (SIM_LOG_LEVEL=WARNING: their
per-request log line is not our cost) and reset between sizes. For each N it creates N orders with one
kitchen leg each, half at each provider, then times two ticks of `orders.sync.tick.poll_due_legs`:

- the create tick: every leg is created at its provider and its first status applied (N status
  changes, N events; publishing them is the relay's work, in a process of its own, measured by
  bench.fanout);
- the poll tick (the target: one tick of 5,000 due legs < 2 s): every leg is due again and polled; the
  providers answer the status we already have (the steady state between changes).

One tick takes every due leg (POLL_BATCH_SIZE is raised to N); PROVIDER_CONCURRENCY comes from the
environment as in production. The largest poll tick is sampled with py-spy (`profile`, `limits`).
It never hangs: database statements and lock waits time out, provider calls time out, and a watchdog
writes what was measured, stops the simulators and exits 3 after --timeout seconds.

JSON written to --json (keys are stable; bench/report.py reads them):

    ok            true when every tick created and polled every leg without a failure
    failures      what went wrong, in words (empty when ok)
    settings      provider_concurrency, poll_batch_size, provider_timeout_s, simulator_log_level
    ticks         one object per N, in the order given:
        legs                N
        create_tick_s       seconds of the create tick; create_http_s: of which waiting for the providers
        created             sub-orders created in it
        poll_tick_s         seconds of the poll tick (the figure the target is about)
        poll_http_s         of which the providers' calls (our client's CPU plus waiting for answers)
        poll_db_s           the rest: claim, load, apply answers, reschedule
        polled              legs the poll tick claimed; changed / unchanged: what their answers did
        failed              provider calls that failed in either tick; errors: answers we failed to apply
        legs_per_second     polled / poll_tick_s
        cpu_s               CPU seconds during the poll tick: bench (this process: the poller), simulators
                            (both), postgres (this process's database backend), machine (all processes,
                            every core: more than ours means the tick shared the CPU), capacity (the
                            tick's seconds times the cores: what an otherwise idle machine offers)
    target        {"legs": 5000, "tick_s": 2.0, "measured_s": ..., "met": true/false/null}
    profile       py-spy over the largest poll tick: the functions most often on top of the stack
    phases        the same samples by part of the tick (provider calls, claim, load legs, apply answers, ...)
    limits        what bounds the tick, from the phases, CPU figures and profile above
"""

import argparse
import faulthandler
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench import common

logger = logging.getLogger("bench.poll_tick")
TARGET_LEGS, TARGET_SECONDS = 5000, 2.0
STATEMENT_TIMEOUT_MS = 120_000
LOCK_TIMEOUT_MS = 10_000
# py-spy frames that tell which part of the tick a sample belongs to, innermost first. Events are
# published by the relay process (realtime.broadcast.publish_released), never inside a tick.
PHASES = (
    # the calls' coroutines run on the provider loop's own thread (orders.providers.http)
    ("BaseEventLoop.run_forever (", "provider calls"),
    ("legs_claim_due (", "claim"),
    ("load_jobs (", "load legs"),
    ("legs_reschedule (", "reschedule"),
    ("_apply_results (", "apply answers"),
)


PROVIDER_LOOP = PHASES[0][0]


def guard_database() -> None:
    """Every connection of this process gives up on a stuck statement or lock instead of waiting forever
    (a run killed half-way, or someone else's session on the bench database, must not hang the next)."""
    from django.db.backends.signals import connection_created

    def limit(sender: object, connection: Any, **kwargs: object) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}; SET lock_timeout = {LOCK_TIMEOUT_MS}"
            )

    connection_created.connect(limit, weak=False)


def others_on_database() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, left(query, 80) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [f"pid {pid} {state}: {query}" for pid, state, query in cursor.fetchall()]


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
        now = timezone.now()
        Leg.objects.bulk_create(
            [
                Leg(
                    order=o,
                    kind="kitchen",
                    restaurant=dishes[n % 2].restaurant,
                    provider=dishes[n % 2].restaurant.provider,
                    next_poll_at=now,
                )
                for n, o in enumerate(orders)
            ]
        )


def clean_state(simulators: dict[str, Any]) -> None:
    """An empty bench database with the demo seed, empty simulators, no cached provider statuses."""
    from django.core.cache import cache
    from django.core.management import call_command

    from orders.models import Leg
    from orders.sync.answers import status_cache_key

    keys = [
        status_cache_key(p, e)
        for p, e in Leg.objects.exclude(external_id="").values_list("provider", "external_id")
    ]
    cache.delete_many(keys)
    others = others_on_database()
    if others:
        logger.warning("Other sessions on the bench database (lock_timeout guards us): %s", others)
    call_command("flush", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0)
    for simulator in simulators.values():
        simulator.admin("POST", "reset")


class CpuMeter:
    """CPU seconds used by this process, the simulators and our PostgreSQL backend between start and stop."""

    def __init__(self, simulators: dict[str, Any]) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        self.processes = {
            "bench": [psutil.Process()],
            "simulators": [psutil.Process(s.process.pid) for s in simulators.values()],
            "postgres": [psutil.Process(backend)],
        }

    def _read(self) -> dict[str, float]:
        def cpu(process: psutil.Process) -> float:
            try:
                times = process.cpu_times()
            except psutil.Error:  # not ours to read (PostgreSQL on another host, another user)
                return float("nan")
            return times.user + times.system

        used = {name: sum(cpu(p) for p in processes) for name, processes in self.processes.items()}
        machine = psutil.cpu_times()  # on Linux `user` and `nice` include guest time
        used["machine"] = machine.user + machine.nice + machine.system + machine.irq + machine.softirq
        return used

    def __enter__(self) -> "CpuMeter":
        self.started = self._read()
        self.wall = time.monotonic()
        return self

    def __exit__(self, *exc_info: object) -> None:
        ended = self._read()
        self.used = {
            name: (None if ended[name] != ended[name] else round(ended[name] - self.started[name], 2))
            for name in ended
        }
        self.used["capacity"] = round((time.monotonic() - self.wall) * psutil.cpu_count(), 2)


class Profiler:
    """py-spy sampling this process while a tick runs; py-spy writes its file when interrupted."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Profiler":
        command = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(os.getpid())]
        command += ["--format", "raw", "--output", str(self.out), "--rate", "250", "--nonblocking"]
        try:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError as error:
            logger.warning("no profile: %s", error)
            return self
        time.sleep(1.0)  # py-spy attaches before the tick starts
        if self.process.poll() is not None:
            logger.warning("no profile: py-spy exited: %s", self.process.stderr.read().decode()[-300:])
            self.process = None
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def phases(self) -> dict[str, float]:
        """Share of the tick's busy samples by part of the tick."""
        if not self.out.exists():
            return {}
        shares: Counter[str] = Counter()
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            if not ("poll_due_legs" in stack or PROVIDER_LOOP in stack) or not samples.isdigit():
                continue
            total += int(samples)
            phase = next((name for frame, name in PHASES if f";{frame}" in stack), "other")
            shares[phase] += int(samples)
        return {name: round(count / total, 3) for name, count in shares.most_common()} if total else {}


def measure(count: int, simulators: dict[str, Any], profiler: Profiler | None) -> dict[str, Any]:
    from django.utils import timezone

    from orders.models import Leg
    from orders.sync import tick

    clean_state(simulators)
    make_orders(count)
    logger.info("  %d legs due; create tick ...", count)
    create = tick.poll_due_legs()
    logger.info(
        "  create tick %.2f s (%d created, %d failed); poll tick ...",
        create.seconds,
        create.created,
        create.failed,
    )
    Leg.objects.update(next_poll_at=timezone.now())
    with (
        profiler or _nothing(),
        CpuMeter(simulators) as cpu,
    ):  # the meter inside: py-spy's start-up is not the tick's
        poll = tick.poll_due_legs()
    logger.info("  poll tick %.2f s (HTTP %.2f s), cpu %s", poll.seconds, poll.http_seconds, cpu.used)
    return {
        "legs": count,
        "create_tick_s": round(create.seconds, 3),
        "create_http_s": round(create.http_seconds, 3),
        "created": create.created,
        "poll_tick_s": round(poll.seconds, 3),
        "poll_http_s": round(poll.http_seconds, 3),
        "poll_db_s": round(poll.seconds - poll.http_seconds, 3),
        "polled": poll.claimed,
        "changed": poll.changed,
        "unchanged": poll.unchanged,
        "failed": create.failed + poll.failed,
        "errors": (create.errors + poll.errors)[:10],
        "legs_per_second": round(poll.claimed / poll.seconds) if poll.seconds else None,
        "cpu_s": cpu.used,
    }


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def failures_of(tick: dict[str, Any]) -> list[str]:
    legs = tick["legs"]
    found = []
    if tick["created"] != legs:
        found.append(f"{legs} legs: created {tick['created']}")
    if tick["polled"] != legs:
        found.append(f"{legs} legs: polled {tick['polled']}")
    if tick["failed"] or tick["errors"]:
        found.append(f"{legs} legs: {tick['failed']} failed calls, errors {tick['errors'][:3]}")
    return found


def limits_text(ticks: list[dict[str, Any]], phases: dict[str, float], concurrency: int) -> str:
    """What bounds the largest tick, in words, from its measured split, CPU figures and profile."""
    if not ticks:
        return "nothing measured"
    tick = ticks[-1]
    wall, cpu, cores = tick["poll_tick_s"], tick["cpu_s"], psutil.cpu_count()
    ours = sum(cpu[name] or 0 for name in ("bench", "simulators", "postgres"))
    parts = [
        f"{tick['legs']} legs: poll tick {wall} s, of which {tick['poll_http_s']} s in provider calls "
        f"({concurrency} in flight per provider) and {tick['poll_db_s']} s in the database work",
        f"CPU during the tick: poller {cpu['bench']} s, both simulators {cpu['simulators']} s, "
        f"the poller's PostgreSQL backend {cpu['postgres']} s ({ours:.2f} s in all); the whole machine "
        f"used {cpu['machine']} of {cpu['capacity']} core-seconds ({cores} cores)",
    ]
    if phases:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in phases.items())
        parts.append(f"the poller's samples by phase: {shares}")
    others = (cpu["machine"] or 0) - ours
    per_leg = ", ".join(
        f"{label} {1e6 * (cpu[name] or 0) / tick['legs']:.0f} µs"
        for name, label in (("bench", "poller"), ("simulators", "simulators"), ("postgres", "PostgreSQL"))
    )
    parts.append(f"CPU per leg: {per_leg}")
    if cpu["machine"] and cpu["machine"] > 0.85 * cpu["capacity"] and others > 0.25 * cpu["capacity"]:
        parts.append(
            f"the machine was saturated and other processes took {others:.2f} core-seconds: the tick waited "
            f"for CPU; alone it needs about {ours:.2f} CPU-seconds spread over three processes"
        )
    elif ours > 0.5 * cpu["capacity"]:
        parts.append(
            f"CPU-bound across the machine: poller, simulators and PostgreSQL kept the {cores} cores "
            f"{ours / cpu['capacity']:.0%} busy between them; the provider calls' biggest single cost is the "
            "kernel's send on each request and answer (loopback), then HTTP and JSON in Python on both ends"
        )
    elif cpu["bench"] and cpu["bench"] > 0.8 * wall:
        parts.append("the poller's one Python process is CPU-bound: the tick scales with its CPU per leg")
    else:
        parts.append("neither CPU-bound nor saturated: the tick waits on round trips to the providers")
    create = tick["create_tick_s"]
    rate = round(tick["legs"] / create) if create else None
    parts.append(
        f"a tick where every leg changes costs more: the create tick took {create} s ({rate} legs/s), "
        "one transaction and one event per changed leg"
    )
    return "; ".join(parts) + "."


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--legs", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--timeout", type=float, default=840, help="give up after this many seconds (exit 3)")
    parser.add_argument(
        "--no-profile", action="store_true", help="do not sample the largest tick with py-spy"
    )
    args = parser.parse_args()
    common.configure_logging()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the finally below
    common.setup_django(REALTIME_FLUSH_MS="100")  # production settings: DEBUG off, a real secret
    guard_database()
    from django.conf import settings

    from simulators.testing import simulator_env, start_simulator, stop_simulator

    result: dict[str, Any] = {"ok": False, "failures": [], "ticks": []}
    log_dir = Path(tempfile.mkdtemp(prefix="bench-poll-"))
    simulators: dict[str, Any] = {}

    def give_up() -> None:
        logger.error("Gave up after %.0f s; stacks follow", args.timeout)
        faulthandler.dump_traceback(all_threads=True)
        result["failures"].append(f"timed out after {args.timeout:.0f} s")
        common.write_json(args.json, result)
        for simulator in simulators.values():
            simulator.process.kill()
        os._exit(3)

    watchdog = threading.Timer(args.timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        for name in ("melange", "bueno"):
            env = simulator_env(
                SIM_STEP_SECONDS="600",
                SIM_LOG_LEVEL="WARNING",
                SIM_API_KEY=settings.PROVIDERS[name]["api_key"],
            )
            simulators[name] = start_simulator(name, env, log_dir)
            settings.PROVIDERS[name]["url"] = simulators[name].url
        settings.POLL_BATCH_SIZE = max(args.legs)  # one tick takes every due leg
        settings.POLL_TICK_BUDGET_SECONDS = args.timeout
        result["settings"] = {
            "provider_concurrency": settings.PROVIDER_CONCURRENCY,
            "poll_batch_size": settings.POLL_BATCH_SIZE,
            "provider_timeout_s": settings.PROVIDER_TIMEOUT_SECONDS,
            "simulator_log_level": "WARNING",
        }
        largest = max(args.legs)
        profiler = None if args.no_profile else Profiler(log_dir / "poll_tick.pyspy")
        for count in args.legs:
            logger.info("Measuring a tick with %d due legs ...", count)
            tick = measure(count, simulators, profiler if count == largest else None)
            result["ticks"].append(tick)
            result["failures"] += failures_of(tick)
            logger.info("%s", tick)
        phases = profiler.phases() if profiler else {}
        result["profile"] = (
            common.top_frames(profiler.out) if profiler and profiler.out.exists() else "not sampled"
        )
        result["phases"] = phases
        result["limits"] = limits_text(result["ticks"], phases, settings.PROVIDER_CONCURRENCY)
        measured = next((t["poll_tick_s"] for t in result["ticks"] if t["legs"] == TARGET_LEGS), None)
        result["target"] = {
            "legs": TARGET_LEGS,
            "tick_s": TARGET_SECONDS,
            "measured_s": measured,
            "met": None if measured is None else measured < TARGET_SECONDS,
        }
        result["ok"] = not result["failures"]
    except Exception as error:
        logger.exception("Benchmark failed")
        result["failures"].append(f"{type(error).__name__}: {error}")
    except (KeyboardInterrupt, SystemExit):
        result["failures"].append("interrupted")
        raise
    finally:
        watchdog.cancel()
        for simulator in simulators.values():
            stop_simulator(simulator)
        common.write_json(args.json, result)
    logger.info("limits: %s", result.get("limits"))
    sys.stdout.flush()
    os._exit(0 if result["ok"] else 1)  # the JSON is written; no thread has anything left to flush


if __name__ == "__main__":
    main()
