"""Fan-out: operator and courier sockets on ONE web process while the pipeline changes statuses.

    PYTHONPATH=backend:. python -m bench.fanout --operators 500 --couriers 100 --rate 300 --duration 60

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones). Works in a database of its own
(`<name>_bench`, emptied first) and a Redis database of its own for Celery, so it never touches real data.

The driver applies provider statuses through the real service (`leg_apply_status`) in batches of
100 ms, as the poller does, so publishing goes through `realtime.broadcast` exactly as in production.
Every client then checks it received every event it may see (operators: all; a courier: its orders),
with no duplicate and seq ascending. Latency runs from the event's timestamp, taken in the writing
transaction just before commit, to the moment the client read the frame.
"""

import argparse
import json
import logging
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil

logger = logging.getLogger("bench.fanout")
REPO = Path(__file__).resolve().parent.parent
SOCKETS_PER_CLIENT_PROCESS = 300
KITCHEN_STEPS = ["not started", "cooking", "cooked"]
DELIVERY_STEPS = ["not started", "delivery", "delivered"]
TICK_SECONDS = 0.1


def bench_database_url() -> str:
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = parts.path.lstrip("/") or "liveops"
    return urlunsplit(parts._replace(path=f"/{name}_bench"))


def ensure_database(url: str) -> None:
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    admin = psycopg2.connect(urlunsplit(parts._replace(path="/postgres")))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [parts.path.lstrip("/")])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parts.path.lstrip("/"))))
    admin.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def setup_django(flush_ms: int) -> None:
    os.environ["DATABASE_URL"] = bench_database_url()
    redis = urlsplit(os.environ["REDIS_URL"])
    os.environ["CELERY_BROKER_URL"] = urlunsplit(redis._replace(path="/15"))  # nobody consumes it here
    os.environ["REALTIME_FLUSH_MS"] = str(flush_ms)
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    logging.getLogger("bench").setLevel(logging.INFO)  # Django's LOGGING just set the root to WARNING
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0)


def prepare(orders: int, couriers: int) -> tuple[str, list[tuple[int, str]], list[tuple[int, int]]]:
    """The operator's token, (courier id, token) pairs, (order id, courier id) pairs; one kitchen leg each."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from rest_framework.authtoken.models import Token

    from orders.models import Courier, Dish, Leg, Order, OrderItem

    users = get_user_model().objects
    operator_token = Token.objects.get_or_create(user=users.get(username="operator"))[0].key
    with transaction.atomic():
        courier_users = users.bulk_create(
            [users.model(username=f"bench-courier-{n}") for n in range(couriers)]
        )
        fleet = Courier.objects.bulk_create(
            [Courier(user=user, name=f"Bench courier {n}") for n, user in enumerate(courier_users)]
        )
        tokens = Token.objects.bulk_create(
            [Token(user=user, key=Token.generate_key()) for user in courier_users]
        )
        customer = users.get(username="customer")
        dish = Dish.objects.filter(restaurant__provider="melange").first()
        made = Order.objects.bulk_create(
            [
                Order(
                    customer=customer,
                    delivery_address=f"Bench St, {n}",
                    total=dish.price,
                    courier=fleet[n % couriers],
                )
                for n in range(orders)
            ]
        )
        OrderItem.objects.bulk_create(
            [OrderItem(order=o, dish=dish, quantity=1, price=dish.price) for o in made]
        )
        Leg.objects.bulk_create(
            [
                Leg(
                    order=o,
                    kind="kitchen",
                    restaurant=dish.restaurant,
                    provider="melange",
                    external_id=f"bench-{o.pk}",
                )
                for o in made
            ]
        )
    return (
        operator_token,
        [(courier.pk, token.key) for courier, token in zip(fleet, tokens, strict=True)],
        [(order.pk, order.courier_id) for order in made],
    )


def start_web(port: int, flush_ms: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "WEB_PORT": str(port), "REALTIME_FLUSH_MS": str(flush_ms), "DEBUG": "true"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "backend"), str(REPO)])
    with open(log, "wb") as out:
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "core.asgi:application",
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return web
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"web process did not start: {log.read_text()[-2000:]}")


class Driver:
    """Moves orders one provider status at a time, `rate` changes per second, in 100 ms batches."""

    def __init__(self, orders: list[tuple[int, int]], coalesce: bool) -> None:
        from orders.models import Leg

        legs = dict(Leg.objects.filter(order_id__in=[o for o, _ in orders]).values_list("order_id", "id"))
        self.queue = [{"order": o, "courier": c, "leg": legs[o], "step": 0} for o, c in orders]
        self.coalesce = coalesce
        self.produced: list[tuple[int, int]] = []  # (seq, courier id)

    def _advance(self, state: dict) -> None:
        from orders import services
        from orders.models import Leg

        steps = KITCHEN_STEPS + DELIVERY_STEPS
        if state["step"] == len(KITCHEN_STEPS):
            state["leg"] = Leg.objects.get(order_id=state["order"], kind="delivery").pk
        status = steps[state["step"]]
        event = services.leg_apply_status(leg_id=state["leg"], provider_status=status, source="poll")
        state["step"] += 1
        if event is not None:
            self.produced.append((event.seq, state["courier"]))

    def run(self, rate: int, duration: float) -> float:
        from realtime import broadcast

        per_tick = max(1, round(rate * TICK_SECONDS))
        total = min(int(rate * duration), len(self.queue) * (len(KITCHEN_STEPS) + len(DELIVERY_STEPS)))
        started = time.monotonic()
        done, cursor, tick = 0, 0, 0
        while done < total:
            batch = broadcast.batch() if self.coalesce else _nothing()
            with batch:
                for _ in range(min(per_tick, total - done)):
                    state = self.queue[cursor % len(self.queue)]
                    cursor += 1
                    if state["step"] >= len(KITCHEN_STEPS) + len(DELIVERY_STEPS):
                        continue
                    self._advance(state)
                    done += 1
            tick += 1
            time.sleep(max(0.0, started + tick * TICK_SECONDS - time.monotonic()))
        return time.monotonic() - started


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return (
        ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]
        if ordered
        else float("nan")
    )


def run(args: argparse.Namespace) -> dict:
    setup_django(args.flush_ms if args.coalesce else 0)
    changes = args.rate * args.duration
    orders_needed = math.ceil(changes / (len(KITCHEN_STEPS) + len(DELIVERY_STEPS)))
    logger.info("Preparing %d orders and %d couriers ...", orders_needed, args.couriers)
    operator_token, couriers, orders = prepare(orders_needed, args.couriers)
    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    port = free_port()
    web = start_web(port, args.flush_ms if args.coalesce else 0, work / "web.log")
    web_process = psutil.Process(web.pid)
    specs = [
        {"path": "/ws/operators/", "token": operator_token, "expects": "all"} for _ in range(args.operators)
    ]
    specs += [{"path": "/ws/couriers/", "token": token, "expects": str(cid)} for cid, token in couriers]
    chunks = [
        specs[i : i + SOCKETS_PER_CLIENT_PROCESS] for i in range(0, len(specs), SOCKETS_PER_CLIENT_PROCESS)
    ]
    clients = []
    for index, chunk in enumerate(chunks):
        (work / f"spec-{index}.json").write_text(json.dumps(chunk))
        clients.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.ws_clients",
                    "--base",
                    f"ws://127.0.0.1:{port}",
                    "--spec",
                    str(work / f"spec-{index}.json"),
                    "--ready-file",
                    str(work / f"ready-{index}"),
                    "--until-file",
                    str(work / "until"),
                    "--expected-file",
                    str(work / "expected.json"),
                    "--out",
                    str(work / f"out-{index}.json"),
                ],
                cwd=REPO,
            )
        )
    logger.info("Connecting %d sockets ...", len(specs))
    connect_started = time.monotonic()
    while not all((work / f"ready-{i}").exists() for i in range(len(chunks))):
        if any(client.poll() is not None for client in clients):
            raise RuntimeError("a client process died while connecting")
        time.sleep(0.2)
    connected = sum(int((work / f"ready-{i}").read_text()) for i in range(len(chunks)))
    logger.info(
        "%d sockets connected in %.1fs; driving %d changes/s for %ds ...",
        connected,
        time.monotonic() - connect_started,
        args.rate,
        args.duration,
    )

    peak_rss = [web_process.memory_info().rss]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            peak_rss.append(web_process.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    web_process.cpu_percent()
    driver = Driver(orders, coalesce=args.coalesce)
    driven = driver.run(args.rate, args.duration)
    web_cpu = web_process.cpu_percent()
    sampling.set()
    (work / "until").write_text(str(time.time() + args.grace))
    expected: dict[str, list[int]] = {"all": [seq for seq, _ in driver.produced]}
    for seq, courier_id in driver.produced:
        expected.setdefault(str(courier_id), []).append(seq)
    (work / "expected.json").write_text(json.dumps(expected))
    for client in clients:
        client.wait(timeout=args.grace + 120)
    web.terminate()
    web.wait(timeout=20)

    outs = [json.loads((work / f"out-{i}.json").read_text()) for i in range(len(chunks))]
    latencies = [value for out in outs for value in out["latencies"]]
    received = sum(out["received"] for out in outs)
    result = {
        "operators": args.operators,
        "couriers": args.couriers,
        "coalesce": args.coalesce,
        "flush_ms": args.flush_ms if args.coalesce else 0,
        "target_rate": args.rate,
        "achieved_rate": round(len(driver.produced) / driven, 1),
        "duration_s": round(driven, 1),
        "changes": len(driver.produced),
        "sockets_connected": connected,
        "socket_errors": sum(len(out["errors"]) for out in outs),
        "events_expected": sum(out["expected"] for out in outs),
        "events_received": received,
        "events_per_second_delivered": round(received / driven, 0),
        "frames_per_second": round(sum(out["frames"] for out in outs) / driven, 0),
        "missing": sum(out["missing"] for out in outs),
        "incomplete_clients": sum(out["incomplete"] for out in outs),
        "duplicates": sum(out["duplicates"] for out in outs),
        "out_of_order": sum(out["out_of_order"] for out in outs),
        "latency_ms": {
            "p50": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99": round(percentile(latencies, 0.99) * 1000, 1),
            "max": round(max(latencies) * 1000, 1) if latencies else None,
        },
        "web_peak_rss_mb": round(max(peak_rss) / 2**20, 1),
        "web_cpu_percent": round(web_cpu, 0),
    }
    result["ok"] = result["missing"] == 0 and result["duplicates"] == 0 and result["socket_errors"] == 0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--operators", type=int, default=500)
    parser.add_argument("--couriers", type=int, default=100)
    parser.add_argument("--rate", type=int, default=300, help="status changes per second")
    parser.add_argument("--duration", type=int, default=60, help="seconds of changes")
    parser.add_argument("--flush-ms", type=int, default=100)
    parser.add_argument("--no-coalesce", dest="coalesce", action="store_false")
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds clients keep reading after the last change"
    )
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    result = run(args)
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        args.json.write_text(text)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
