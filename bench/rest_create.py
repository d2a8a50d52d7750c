"""REST order creation: orders per second and latency with 16 concurrent clients against one web process.

    PYTHONPATH=backend:. python -m bench.rest_create --clients 16 --duration 20 --json out.json

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones); works in `<name>_bench`.
A daphne web process (as the Procfile starts it) serves the API; a separate client process runs
`--clients` concurrent customers, each POSTing /api/orders/ (two dishes from two restaurants, token
auth) as soon as its previous answer arrived. Every 201 must be an order in the database with both
items and its `created` event; anything else is counted as an error and fails the run.

JSON keys: clients, duration_s, orders, orders_per_s, p50_ms, p90_ms, p99_ms, max_ms, errors
(status or exception -> count), in_database, web_cpu_percent, profile (py-spy: top functions of the
web process), ok.
"""

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

from bench import common

logger = logging.getLogger("bench.rest_create")
WARMUP_REQUESTS = 50


async def _customer(
    client: httpx.AsyncClient, body: dict, until: float, latencies: list, errors: Counter
) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            response = await client.post("/api/orders/", json=body)
        except httpx.HTTPError as error:
            errors[type(error).__name__] += 1
            continue
        if response.status_code == 201:
            latencies.append(time.perf_counter() - started)
        else:
            errors[str(response.status_code)] += 1


async def _load(base: str, token: str, body: dict, clients: int, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = common.authorization(token)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30) as client:
        for _ in range(WARMUP_REQUESTS):
            (await client.post("/api/orders/", json=body)).raise_for_status()
        latencies: list[float] = []
        errors: Counter = Counter()
        started = time.monotonic()
        await asyncio.gather(
            *(_customer(client, body, started + seconds, latencies, errors) for _ in range(clients))
        )
        elapsed = time.monotonic() - started
    return {"latencies": latencies, "errors": dict(errors), "elapsed": elapsed, "warmup": WARMUP_REQUESTS}


def client_main(args: argparse.Namespace) -> None:
    body = json.loads(args.body)
    result = asyncio.run(_load(args.base, args.token, body, args.clients, args.duration))
    Path(args.out).write_text(json.dumps(result))


def measure(clients: int, duration: float) -> dict:
    common.setup_django()
    from orders.models import Dish, Order, OrderEvent, OrderItem

    token = common.api_token("customer")
    dishes = [
        Dish.objects.filter(restaurant__provider=p, is_active=True).first() for p in ("melange", "bueno")
    ]
    body = {
        "items": [{"dish": dish.pk, "quantity": 1 + n} for n, dish in enumerate(dishes)],
        "delivery_address": "Khreshchatyk St, 22, apt 5",
    }
    port = common.free_port()
    work = Path(tempfile.mkdtemp(prefix="bench-rest-"))
    # --clients (16) clients of one customer, each POSTing as fast as it is answered: no order rate limit
    web = common.start_web(port, work / "web.log", **common.ORDER_RATE_OFF)
    try:
        logger.info("%d clients POST /api/orders/ for %.0f s ...", clients, duration)
        out = work / "client.json"
        client = subprocess.Popen(
            [
                sys.executable, "-m", "bench.rest_create", "client",
                "--base", f"http://127.0.0.1:{port}",
                "--token", token,
                "--body", json.dumps(body),
                "--clients", str(clients),
                "--duration", str(duration),
                "--out", str(out),
            ],
            cwd=common.REPO,
            env=common.python_path_env(),
        )  # fmt: skip
        process = psutil.Process(web.pid)
        time.sleep(min(3, duration / 4))  # past the warm-up
        process.cpu_percent()
        cpu_started = time.monotonic()
        profile = common.profile(web.pid, max(2, duration / 2), work / "web.pyspy")
        cpu = process.cpu_percent() if time.monotonic() - cpu_started > 0.5 else None
        if client.wait(timeout=duration + 120) != 0:
            raise RuntimeError("the client process failed")
        load = json.loads(out.read_text())
    finally:
        common.stop(web)
        common.purge_broker()
    latencies = load["latencies"]
    created = len(latencies) + load["warmup"]
    complete = (
        Order.objects.filter(items__isnull=False).distinct().count(),
        OrderItem.objects.count(),
        OrderEvent.objects.filter(type="order.created").count(),
    )
    in_database = Order.objects.count()
    ok = not load["errors"] and in_database == created and complete == (created, 2 * created, created)
    result = {
        "clients": clients,
        "duration_s": round(load["elapsed"], 2),
        "orders": len(latencies),
        "orders_per_s": round(len(latencies) / load["elapsed"], 1),
        "p50_ms": common.ms(common.percentile(latencies, 0.5)),
        "p90_ms": common.ms(common.percentile(latencies, 0.9)),
        "p99_ms": common.ms(common.percentile(latencies, 0.99)),
        "max_ms": common.ms(max(latencies, default=None)),
        "errors": load["errors"],
        "in_database": in_database,
        "web_cpu_percent": cpu,
        "profile": profile,
        "ok": ok,
    }
    logger.info(
        "%s orders/s, p50 %s ms, p99 %s ms, errors %s, %s",
        result["orders_per_s"],
        result["p50_ms"],
        result["p99_ms"],
        result["errors"] or "none",
        "complete" if ok else "INCOMPLETE",
    )
    return result


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=20, help="seconds of load after a warm-up")


def _client_options(client: argparse.ArgumentParser) -> None:
    for name in ("base", "token", "body", "out"):
        client.add_argument(f"--{name}", required=True)
    client.add_argument("--clients", type=int, required=True)
    client.add_argument("--duration", type=float, required=True)


def main() -> None:
    common.main(
        __doc__, _options, lambda args: measure(args.clients, args.duration), _client_options, client_main
    )


if __name__ == "__main__":
    main()
