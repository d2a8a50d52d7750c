"""Idle capacity: how many WebSockets one web process holds, and its memory per socket.

    PYTHONPATH=backend:. python -m bench.idle --sockets 2000 --idle 20 --json out.json

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones); works in `<name>_bench`.
Client processes open `--sockets` operator sockets on one daphne process in waves, each reads its
snapshot, then every socket stays silent for `--idle` seconds (longer than redis-py's 5 s socket
timeout, the trap of channels_redis issue #422). The web process's memory is sampled before and at
the plateau. Then one order is created through the real service: every socket must receive its
event (released by the relay, `manage.py relay_events`, as in production), which proves the sockets it
holds are live, not just open.

JSON keys: sockets, connected, alive_after_idle (received the probe event), connect_s, idle_s,
probe_p99_ms (creation to the last socket's frame), rss_before_mib, rss_at_n_mib, kib_per_socket,
web_threads, errors (first few), ok.
"""

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import websockets

from bench import common

logger = logging.getLogger("bench.idle")
SOCKETS_PER_PROCESS = 1000
WAVE = 50


async def _hold(url: str, token: str, ready: asyncio.Event, probe: dict, errors: list) -> None:
    try:
        async with websockets.connect(
            url,
            additional_headers=common.authorization(token),
            max_size=None,
            open_timeout=120,
            ping_interval=None,
        ) as ws:
            await ws.recv(decode=False)  # the snapshot
            ready.set()
            while True:
                frame = await ws.recv(decode=False)
                if b'"order.created"' in frame:
                    probe["received"].append(time.time())
                    return
    except Exception as error:  # a failed socket is a finding, reported in the result
        errors.append(f"{type(error).__name__}: {error}")
        ready.set()


async def _clients(url: str, token: str, count: int, ready_file: Path, wait: float) -> dict:
    readies = [asyncio.Event() for _ in range(count)]
    probe: dict = {"received": []}
    errors: list[str] = []
    tasks = []
    started = time.monotonic()
    for start in range(0, count, WAVE):  # a wave connects once the previous one has its snapshots
        wave = range(start, min(start + WAVE, count))
        tasks.extend(asyncio.create_task(_hold(url, token, readies[index], probe, errors)) for index in wave)
        await asyncio.gather(*(readies[index].wait() for index in wave))
    ready_file.write_text(
        json.dumps({"connected": count - len(errors), "seconds": time.monotonic() - started})
    )
    done, pending = await asyncio.wait(tasks, timeout=wait)
    for task in pending:
        task.cancel()
    return {"received": probe["received"], "errors": errors, "timed_out": len(pending)}


def client_main(args: argparse.Namespace) -> None:
    result = asyncio.run(_clients(args.url, args.token, args.count, Path(args.ready_file), args.wait))
    Path(args.out).write_text(json.dumps(result))


def _rss_mib(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def _wait_for(paths: list[Path], clients: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(path.exists() for path in paths):
        if any(client.poll() not in (None, 0) for client in clients):
            raise RuntimeError("a client process failed")
        if time.monotonic() > deadline:
            raise RuntimeError("clients did not connect in time")
        time.sleep(0.2)


def measure(sockets: int, idle: float) -> dict:
    common.setup_django()
    from django.contrib.auth import get_user_model

    from orders import services
    from orders.models import Dish

    users = get_user_model().objects
    token = common.api_token("operator")
    port = common.free_port()
    work = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    # --sockets (2,000) sockets of one operator user: no per-user socket cap
    web = common.start_web(port, work / "web.log", **common.SOCKET_CAP_OFF)
    clients: list[subprocess.Popen] = []
    relay = None
    try:
        relay = common.start_relay(work / "relay.log", work / "relay-stats.json")  # publishes the probe
        process = psutil.Process(web.pid)
        time.sleep(1)
        rss_before = _rss_mib(process)
        url = f"ws://127.0.0.1:{port}/ws/operators/"
        wait = idle + 120
        counts = [
            min(SOCKETS_PER_PROCESS, sockets - start) for start in range(0, sockets, SOCKETS_PER_PROCESS)
        ]
        readies = [work / f"ready-{n}.json" for n in range(len(counts))]
        outs = [work / f"out-{n}.json" for n in range(len(counts))]
        logger.info("opening %d operator sockets from %d client processes ...", sockets, len(counts))
        started = time.monotonic()
        for n, count in enumerate(counts):
            clients.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.idle",
                        "client",
                        "--url",
                        url,
                        "--token",
                        token,
                        "--count",
                        str(count),
                        "--ready-file",
                        str(readies[n]),
                        "--wait",
                        str(wait),
                        "--out",
                        str(outs[n]),
                    ],
                    cwd=common.REPO,
                    env=common.python_path_env(),
                )  # fmt: skip
            )
        _wait_for(readies, clients, timeout=300)
        connect_s = time.monotonic() - started
        connected = sum(json.loads(path.read_text())["connected"] for path in readies)
        logger.info("%d connected in %.1f s; idle for %.0f s ...", connected, connect_s, idle)
        time.sleep(idle)
        rss_at_n = _rss_mib(process)
        threads = process.num_threads()
        customer = users.get(username="customer")
        dish = Dish.objects.filter(is_active=True).first()
        probe_at = time.time()
        services.order_create(
            customer=customer, items=[services.ItemInput(dish, 1)], delivery_address="Probe St, 1"
        )
        for client in clients:
            client.wait(timeout=wait + 30)
        results = [json.loads(path.read_text()) for path in outs]
    finally:
        for client in clients:
            common.stop(client)
        if relay is not None:
            common.stop(relay)
        common.stop(web)
        common.purge_broker()
    received = [at for result in results for at in result["received"]]
    errors = [error for result in results for error in result["errors"]]
    latencies = [at - probe_at for at in received]
    result = {
        "sockets": sockets,
        "connected": connected,
        "alive_after_idle": len(received),
        "connect_s": round(connect_s, 1),
        "idle_s": idle,
        "probe_p99_ms": common.ms(common.percentile(latencies, 0.99)),
        "rss_before_mib": round(rss_before, 1),
        "rss_at_n_mib": round(rss_at_n, 1),
        "kib_per_socket": round((rss_at_n - rss_before) * 1024 / max(connected, 1), 1),
        "web_threads": threads,
        "errors": errors[:5],
        "ok": connected == sockets and len(received) == sockets,
    }
    logger.info(
        "%d/%d sockets alive after %.0f s idle; %.1f KiB per socket (RSS %.0f -> %.0f MiB)",
        result["alive_after_idle"],
        sockets,
        idle,
        result["kib_per_socket"],
        rss_before,
        rss_at_n,
    )
    return result


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=20, help="seconds every socket stays silent")


def _client_options(client: argparse.ArgumentParser) -> None:
    for name in ("url", "token", "ready-file", "out"):
        client.add_argument(f"--{name}", required=True)
    client.add_argument("--count", type=int, required=True)
    client.add_argument("--wait", type=float, required=True)


def main() -> None:
    common.main(
        __doc__, _options, lambda args: measure(args.sockets, args.idle), _client_options, client_main
    )


if __name__ == "__main__":
    main()
