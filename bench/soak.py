"""Soak: orders through the real pipeline while operator sockets disconnect and resume with `?after=`.

    PYTHONPATH=backend:. python -m bench.soak                 # 3 orders/s for 90 s, 20 resuming sockets
    PYTHONPATH=backend:. python -m bench.soak --quick         # the same for 10 s (CI)

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones). Works in a database of its own
(`<name>_soak`, emptied and re-seeded first), a channel-layer prefix of its own and a Celery queue in
Redis database 14 (emptied before and after), so neither real data nor another benchmark meets it.

Every process is the real one, started as the Procfile starts it, all with the same environment: the
three provider simulators (fast `--step-seconds`; Bueno also pushes its webhooks to the web process, so
webhook and poll commits interleave), one daphne web process, `--workers` Celery workers (concurrency
`--concurrency` each), beat (polls every `--poll-interval` s) and the event relay (`relay_events`).

Load: `--rate` orders/s via POST /api/orders/ (one Melange and one Bueno dish each, a customer's token)
for `--duration` s, then a bounded wait (`--drain-timeout`) until every order has finished.

Sockets on /ws/operators/ (operators see every event): one reference socket that stays connected, and
`--resumers` sockets that each stay connected `--connected` s, disconnect, stay away `--away` s and
reconnect with `?after=<highest seq seen>`, their phases spread over one cycle. When the pipeline is
done and the relay has released the last event, every socket reconnects if away and reads up to it.

Checked per socket, against the database (the events above the socket's first snapshot, less those that
snapshot already held for its orders) and against the reference: no event missed across all its
reconnects, no duplicate, no inversion (a seq below the highest the socket received before it, across
reconnects). Also every order delivered, and no PostgreSQL deadlock in the soak database
(pg_stat_database.deadlocks before and after). Any of these failing fails the run (`ok: false`, exit 1);
`evidence` then names the seqs, sockets and timings.

JSON (`--json PATH`); keys are stable, bench/report.py reads them:
  ok, failures          passed; why not (short reasons)
  settings              rate, duration_s, resumers, connected_s, away_s, step_seconds, poll_interval_s,
                        workers, concurrency, gap_wait_ms (the relay's REALTIME_GAP_WAIT_MS)
  orders_created, orders_delivered, orders_by_status, create_errors
                        orders the load created (201), delivered at the end, every final status, non-201s
  create_p50_ms, create_p99_ms
                        POST /api/orders/ latency
  load_s, drain_s       seconds of load; seconds from its end until every order had finished
  events, events_by_source
                        OrderEvents in the database; by source (api, poll, webhook, ...)
  webhooks_sent, webhooks_failed
                        Bueno's webhook deliveries to the web process
  sockets, resuming_sockets, resumes
                        sockets in all, those that reconnect, reconnections with ?after= made
  events_received       events received, summed over every socket and connection
  expected              (socket, event) deliveries due, summed over the sockets
  missed                deliveries due (from the database) but never received
  missed_vs_reference   of those, events the reference socket did receive
  duplicates, inversions, unexpected
                        summed over sockets: seqs received twice; seqs below the highest received before
                        them; seqs received that the socket's snapshot already held
  sockets_with_misses   sockets that missed anything
  connect_errors        connections that failed or were closed by the server (error_samples: a few)
  parse_mismatches      sampled frames where the clients' regex and json.loads disagreed
  p50_ms, p99_ms, max_ms
                        the reference socket: an event's `at` (taken before its commit) to its receipt
  resumed_p50_ms, resumed_p99_ms
                        the same over the resuming sockets, replays after 2 s away included
  relay                 the relay's counters written at SIGTERM (orders.relay.RelayStats): released,
                        gaps, rolled_back, given_up, late, held_events, held_ms_p50, held_ms_p99,
                        held_ms_max, ...; null when it wrote none
  deadlocks             pg_stat_database.deadlocks of the soak database, after minus before
  deadlock_log_lines    "deadlock detected" lines in the processes' logs (first few)
  logged_errors         per process log (web, worker-1, relay, ...): ERROR lines, count and first one
  per_socket            name, resumes, first_snapshot_seq, received, expected, missed,
                        missed_vs_reference, duplicates, inversions
  evidence              when something failed: samples of missed seqs, inversions and duplicates with the
                        event, the reference's receipt and the socket's connection timeline (seconds since
                        the sockets connected); missed_by_transition counts missed events by from → to
"""

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

from bench import common, ws_clients

logger = logging.getLogger("bench.soak")

BROKER_DB = 14  # not common.BROKER_DB: real workers consume this queue, and other benchmarks purge theirs
PROVIDERS = ("melange", "bueno", "uklon")
DEFAULTS: dict[str, Any] = {
    "rate": 3.0,
    "duration": 90.0,
    "resumers": 20,
    "connected": 3.1,
    "away": 2.0,
    "step_seconds": 0.5,
    "poll_interval": 1,
    "workers": 2,
    "concurrency": 2,
    "drain_timeout": 120.0,
    "final_timeout": 30.0,
}
QUICK: dict[str, Any] = {"duration": 10.0, "drain_timeout": 30.0, "final_timeout": 15.0}
START_TIMEOUT_SECONDS = 60
RELAY_CATCH_UP_SECONDS = 30
PROGRESS_SECONDS = 15
EVIDENCE_SAMPLES = 25
SNAPSHOT_FRAME = b'{"type":"snapshot"'
DEADLOCK = re.compile(r"deadlock detected", re.IGNORECASE)
ERROR = re.compile(r"\bERROR\b")  # Django's and Celery's log formats both name the level


# --- the client process: the sockets --------------------------------------------------------------------


class Stream:
    """One operator's socket across all its connections: what it received, when, and over which one."""

    def __init__(self, name: str, token: str, resumes: bool) -> None:
        self.name, self.token, self.resumes = name, token, resumes
        self.socket = ws_clients.Socket("/ws/operators/", token, "all")  # seqs, frames, other frames
        self.received_at = array("d")
        self.high = 0  # the highest seq held: from a snapshot or an event
        self.phase = 0.0  # seconds a resuming socket's first connection is held longer than the others
        self.connections: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.ready = asyncio.Event()

    def take(self, frame: bytes, reader: ws_clients.Reader) -> None:
        now = time.time()
        if frame.startswith(SNAPSHOT_FRAME):
            snapshot = json.loads(frame)
            self.snapshots.append(
                {
                    "seq": snapshot["seq"],
                    "high_before": self.high,
                    "orders": {str(order["id"]): order["seq"] for order in snapshot["orders"]},
                    "connection": len(self.connections) - 1,
                    "at": now,
                }
            )
            self.high = max(self.high, snapshot["seq"])
            self.ready.set()
            return
        before = len(self.socket.seqs)
        reader.take(self.socket, frame)
        new = self.socket.seqs[before:]
        if new:
            self.received_at.extend([now] * len(new))
            self.high = max(self.high, max(new))

    def result(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "resumes": self.resumes,
            "seqs": list(self.socket.seqs),
            "received_at": [round(at, 4) for at in self.received_at],
            "connections": self.connections,
            "snapshots": self.snapshots,
            "frames": self.socket.frames,
            "other_frames": self.socket.other_frames,
        }


class Finish:
    """Set by the driver through the stop file: read up to `target`, until `deadline` at the latest."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.target = 0
        self.deadline = 0.0

    def reached(self, stream: Stream) -> bool:
        return self.event.is_set() and (stream.high >= self.target or time.time() > self.deadline)

    async def wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), timeout=seconds)
        except TimeoutError:
            pass


async def connection(
    base: str, stream: Stream, reader: ws_clients.Reader, after: int | None, done: Callable[[], bool]
) -> None:
    """One connection: a snapshot (after None) or a resume, then every frame until `done()`."""
    query = "" if after is None else f"?after={after}"
    record: dict[str, Any] = {"after": after, "opened": time.time(), "first": len(stream.socket.seqs)}
    stream.connections.append(record)
    try:
        async with websockets.connect(
            f"{base}/ws/operators/{query}",
            additional_headers=common.authorization(stream.token),
            max_size=None,
            open_timeout=30,
            ping_interval=None,
        ) as ws:
            record["opened"] = time.time()
            while not done():
                try:
                    frame = await asyncio.wait_for(ws.recv(decode=False), timeout=0.05)
                except TimeoutError:
                    continue
                stream.take(frame, reader)
    except Exception as error:  # the server closed it or it never opened: a finding, and the stream goes on
        record["error"] = f"{type(error).__name__}: {error}"
    record["closed"] = time.time()
    record["count"] = len(stream.socket.seqs) - record["first"]
    stream.ready.set()


async def reference(base: str, stream: Stream, reader: ws_clients.Reader, finish: Finish) -> None:
    """Stays connected; should the server drop it, it resumes like any client (reported as an error)."""
    after = None
    while not finish.reached(stream):
        await connection(base, stream, reader, after, lambda: finish.reached(stream))
        after = stream.high
        if not finish.reached(stream):
            await finish.wait(0.5)


async def resumer(
    base: str, stream: Stream, reader: ws_clients.Reader, finish: Finish, hold: float, away: float
) -> None:
    """Connected `hold` s (the first time longer, to spread the sockets' phases), away `away` s, resume."""
    after = None
    first_hold = hold + stream.phase
    while True:
        ends = time.time() + (first_hold if after is None else hold)
        await connection(
            base,
            stream,
            reader,
            after,
            lambda: finish.reached(stream) if finish.event.is_set() else time.time() >= ends,  # noqa: B023
        )
        after = stream.high
        if finish.reached(stream):
            return
        if not finish.event.is_set():
            await finish.wait(away)  # the driver's finish cuts the time away short


async def watch_stop_file(path: Path, finish: Finish, final_timeout: float) -> None:
    while not path.exists():
        await asyncio.sleep(0.1)
    finish.target = json.loads(path.read_text())["target"]
    finish.deadline = time.time() + final_timeout
    finish.event.set()


async def run_clients(args: argparse.Namespace) -> None:
    live, resumed = ws_clients.Reader(), ws_clients.Reader()
    finish = Finish()
    streams = [Stream("reference", args.token, resumes=False)]
    tasks = [asyncio.create_task(reference(args.base, streams[0], live, finish))]
    cycle = args.connected + args.away
    for index in range(args.resumers):
        stream = Stream(f"resumer-{index + 1}", args.token, resumes=True)
        stream.phase = cycle * index / max(1, args.resumers)
        streams.append(stream)
        tasks.append(
            asyncio.create_task(resumer(args.base, stream, resumed, finish, args.connected, args.away))
        )
    await asyncio.gather(*(stream.ready.wait() for stream in streams))
    Path(args.ready_file).write_text(json.dumps({"connected_at": time.time()}))
    watcher = asyncio.create_task(watch_stop_file(Path(args.stop_file), finish, args.final_timeout))
    await asyncio.gather(*tasks)
    await watcher
    readers = {"live": live, "resumed": resumed}
    Path(args.out).write_text(
        json.dumps(
            {
                "streams": [stream.result() for stream in streams],
                "readers": {
                    name: {
                        "histogram": {str(ms): n for ms, n in enumerate(reader.histogram) if n},
                        "max_latency_s": reader.max_latency,
                        "parse_mismatches": reader.parse_mismatches,
                    }
                    for name, reader in readers.items()
                },
            }
        )
    )


def client_main(args: argparse.Namespace) -> None:
    asyncio.run(run_clients(args))


# --- the driver: the stack, the load, the checks --------------------------------------------------------


class Stack:
    """The processes of one run and the simulators; `stop_all` ends them all (SIGTERM, then kill)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.processes: dict[str, subprocess.Popen] = {}
        self.simulators: dict[str, Any] = {}

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.work / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                command, cwd=common.REPO, env=common.python_path_env(), stdout=log, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        return process

    def stop_all(self, timeout: float = 20) -> None:
        """SIGTERM to every process at once (a Celery worker's warm shutdown takes seconds), then waits
        for each up to `timeout` in all and kills what is left."""
        from simulators.testing import stop_simulator

        running = [process for process in self.processes.values() if process.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop on SIGTERM: killed", process.args[:6])
                process.kill()
                process.wait()
        for simulator in self.simulators.values():
            stop_simulator(simulator)

    def died(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is not None]

    def logs(self) -> list[Path]:
        return sorted(self.work.glob("*.log"))


def start_simulators(stack: Stack, args: argparse.Namespace, web_port: int) -> dict[str, str]:
    """The three simulators, Bueno pushing webhooks to the web process; their URLs as settings name them."""
    from django.conf import settings

    from simulators.testing import simulator_env, start_simulator

    for name in PROVIDERS:
        env = simulator_env(
            SIM_STEP_SECONDS=str(args.step_seconds), SIM_API_KEY=settings.PROVIDERS[name]["api_key"]
        )
        if name == "bueno":
            env.update(
                BUENO_WEBHOOK_URL=f"http://127.0.0.1:{web_port}/webhooks/bueno/",
                BUENO_WEBHOOK_SECRET=settings.PROVIDERS["bueno"]["webhook_secret"],
            )
        stack.simulators[name] = start_simulator(name, env, stack.work)
    return {f"{name.upper()}_URL": simulator.url for name, simulator in stack.simulators.items()}


def start_pipeline(stack: Stack, args: argparse.Namespace) -> None:
    """Workers and beat, as the Procfile starts them (not waited for here)."""
    celery = [sys.executable, "-m", "celery", "--app", "core"]
    for n in range(1, args.workers + 1):
        stack.spawn(
            f"worker-{n}",
            [
                *celery, "worker", "--loglevel", "WARNING", "--concurrency", str(args.concurrency),
                "--without-mingle", "--without-gossip", "--hostname", f"soak{n}@%h",
            ],
        )  # fmt: skip
    stack.spawn(
        "beat",
        [
            *celery, "beat", "--loglevel", "WARNING",
            "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
            "--pidfile=", "--schedule", str(stack.work / "beat-schedule"),
        ],
    )  # fmt: skip


def start_web_and_relay(stack: Stack, port: int, stats_file: Path) -> None:
    """The web process and the relay, started side by side (each takes seconds to import Django)."""

    def relay() -> subprocess.Popen:
        from django.db import connection

        try:
            return common.start_relay(stack.work / "relay.log", stats_file)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(2) as pool:
        futures = {
            # One operator's 1 + --resumers (21) sockets, which reconnect as soon as the driver has
            # finished (a place freed by a close may not be released yet): no per-user socket cap. One
            # customer creates --rate orders/s for minutes: no order rate limit. Bueno's webhooks (about
            # 9/s at 3 orders/s) stay under THROTTLE_WEBHOOK_PER_SOURCE as deployed.
            "web": pool.submit(
                common.start_web,
                port,
                stack.work / "web.log",
                **common.SOCKET_CAP_OFF,
                **common.ORDER_RATE_OFF,
            ),
            "relay": pool.submit(relay),
        }
        errors = []
        for name, future in futures.items():
            try:
                stack.processes[name] = future.result()
            except Exception as error:  # the other one is kept, so that it is stopped
                errors.append(error)
    if errors:
        raise errors[0]


def wait_for_workers(stack: Stack, count: int) -> None:
    from core.celery import app

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if stack.died():
            raise RuntimeError(f"{', '.join(stack.died())} exited while starting")
        if len(app.control.ping(timeout=0.5)) >= count:
            return
    raise RuntimeError(f"fewer than {count} Celery workers answered within {START_TIMEOUT_SECONDS} s")


def wait_for_file(path: Path, process: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}) before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout:.0f} s")
        time.sleep(0.1)


def order_bodies() -> list[dict[str, Any]]:
    """Two-restaurant orders on two kitchen providers: a Melange dish and a Bueno dish (cycled)."""
    from orders.models import Dish

    melange = list(Dish.objects.filter(restaurant__provider="melange", is_active=True).order_by("pk"))
    bueno = list(Dish.objects.filter(restaurant__provider="bueno", is_active=True).order_by("pk"))
    return [
        {
            "items": [{"dish": first.pk, "quantity": 1}, {"dish": second.pk, "quantity": 2}],
            "delivery_address": f"Khreshchatyk St, {n + 1}",
        }
        for n, (first, second) in enumerate(zip(melange * len(bueno), bueno * len(melange), strict=True))
    ]


def create_orders(base: str, token: str, rate: float, duration: float, stack: Stack) -> dict[str, Any]:
    """POST /api/orders/ `rate` times a second for `duration` seconds; the ids created and what failed."""
    from orders.relay import released_seq

    bodies = order_bodies()
    created: list[int] = []
    latencies: list[float] = []
    errors: Counter = Counter()
    started = time.monotonic()
    reported = started
    total = int(rate * duration)
    with httpx.Client(base_url=base, headers=common.authorization(token), timeout=30) as client:
        for n in range(total):
            time.sleep(max(0.0, started + n / rate - time.monotonic()))
            sent = time.perf_counter()
            try:
                response = client.post("/api/orders/", json=bodies[n % len(bodies)])
            except httpx.HTTPError as error:
                errors[type(error).__name__] += 1
                continue
            if response.status_code == 201:
                latencies.append(time.perf_counter() - sent)
                created.append(response.json()["id"])
            else:
                errors[str(response.status_code)] += 1
            if time.monotonic() - reported >= PROGRESS_SECONDS:
                reported = time.monotonic()
                logger.info(
                    "  %d/%d orders created, %d delivered, relay at #%d",
                    len(created),
                    total,
                    delivered_count(created),
                    released_seq(),
                )
                if stack.died():
                    raise RuntimeError(f"{', '.join(stack.died())} exited during the load")
    return {
        "created": created,
        "latencies": latencies,
        "errors": dict(errors),
        "load_s": time.monotonic() - started,
    }


def delivered_count(order_ids: list[int]) -> int:
    from orders.models import Order

    return Order.objects.filter(pk__in=order_ids, status="delivered").count()


def drain(order_ids: list[int], timeout: float) -> float:
    """Waits until every order is finished (delivered, failed or cancelled) or `timeout`; the seconds."""
    from orders.models import Order
    from orders.status import TERMINAL

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not Order.objects.filter(pk__in=order_ids).exclude(status__in=TERMINAL).exists():
            break
        time.sleep(0.5)
    return time.monotonic() - started


def relay_caught_up(timeout: float) -> int:
    """Waits until the relay has released the last event; the last seq (its mark when it has not)."""
    from django.db.models import Max

    from orders.models import OrderEvent
    from orders.relay import released_seq

    deadline = time.monotonic() + timeout
    latest = OrderEvent.objects.aggregate(latest=Max("seq"))["latest"] or 0
    while (mark := released_seq()) < latest and time.monotonic() < deadline:
        time.sleep(0.1)
    if mark < latest:
        logger.warning("the relay released up to #%d of #%d within %.0f s", mark, latest, timeout)
    return latest


def deadlocks() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    resolve(args)
    # SIGTERM (a CI timeout, `kill`) unwinds through the `finally` that stops every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    redis = urlsplit(os.environ["REDIS_URL"])
    common.setup_django(
        database_suffix="soak",
        CHANNEL_LAYER_PREFIX=f"bench-soak-{os.getpid()}",
        CELERY_BROKER_URL=urlunsplit(redis._replace(path=f"/{BROKER_DB}")),
        POLL_INTERVAL_SECONDS=str(args.poll_interval),  # the beat schedule is installed from it
        EMAIL_URL="console://",
    )
    from django.conf import settings

    customer_token = common.api_token("customer")
    operator_token = common.api_token("operator")  # every socket's, as one operator with many tabs
    common.purge_broker()
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    stack = Stack(work)
    stats_file = work / "relay-stats.json"
    relay_stats = None
    deadlocks_before = deadlocks()
    logger.info("soak in %s (logs there)", work)
    try:
        started = time.monotonic()
        port = common.free_port()
        os.environ.update(start_simulators(stack, args, port))
        start_pipeline(stack, args)
        start_web_and_relay(stack, port, stats_file)
        wait_for_workers(stack, args.workers)
        client = stack.spawn(
            "clients",
            [
                sys.executable, "-m", "bench.soak", "client",
                "--base", f"ws://127.0.0.1:{port}", "--token", operator_token,
                "--resumers", str(args.resumers), "--connected", str(args.connected),
                "--away", str(args.away), "--final-timeout", str(args.final_timeout),
                "--ready-file", str(work / "ready"), "--stop-file", str(work / "stop"),
                "--out", str(work / "clients.json"),
            ],
        )  # fmt: skip
        wait_for_file(work / "ready", client, START_TIMEOUT_SECONDS, "the socket clients")
        t0 = json.loads((work / "ready").read_text())["connected_at"]
        logger.info(
            "up in %.1f s, %d sockets connected; %g orders/s for %g s (%d workers x %d, steps of %g s, "
            "polls every %g s)",
            time.monotonic() - started,
            args.resumers + 1,
            args.rate,
            args.duration,
            args.workers,
            args.concurrency,
            args.step_seconds,
            args.poll_interval,
        )
        load = create_orders(f"http://127.0.0.1:{port}", customer_token, args.rate, args.duration, stack)
        logger.info("%d orders created; waiting for them to finish ...", len(load["created"]))
        drained = drain(load["created"], args.drain_timeout)
        target = relay_caught_up(RELAY_CATCH_UP_SECONDS)
        (work / "stop").write_text(json.dumps({"target": target}))
        logger.info("finished in %.1f s; sockets read up to #%d ...", drained, target)
        client.wait(timeout=args.final_timeout + args.connected + args.away + 30)
        relay_stats = common.stop_relay(stack.processes.pop("relay"), stats_file)
        webhooks = stack.simulators["bueno"].stats()
    finally:
        stack.stop_all()
        common.purge_broker()
    clients = json.loads((work / "clients.json").read_text())
    result = summarise(args, load, drained, clients, t0)
    result.update(
        webhooks_sent=webhooks.get("webhooks_sent"),
        webhooks_failed=webhooks.get("webhooks_failed"),
        relay=relay_stats,
        deadlocks=deadlocks() - deadlocks_before,
        deadlock_log_lines=deadlock_lines(stack.logs()),
        logged_errors=logged_errors(stack.logs()),
    )
    result["settings"]["gap_wait_ms"] = settings.REALTIME_GAP_WAIT_MS
    result["failures"] = failures(result)
    result["ok"] = not result["failures"]
    log_result(result)
    return result


def resolve(args: argparse.Namespace) -> None:
    """Flags not given take the defaults, or the quick ones with --quick."""
    for key, default in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK.get(key, default) if args.quick else default)


def logged_errors(logs: list[Path]) -> dict[str, dict[str, Any]]:
    """ERROR lines each process logged: how many, and the first one (reported; not a failure by itself)."""
    found: dict[str, dict[str, Any]] = {}
    for log in logs:
        lines = [line for line in log.read_text(errors="replace").splitlines() if ERROR.search(line)]
        if lines:
            found[log.stem] = {"count": len(lines), "first": lines[0].strip()[:300]}
    return found


def deadlock_lines(logs: list[Path]) -> list[str]:
    lines = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if DEADLOCK.search(line):
                lines.append(f"{log.stem}: {line.strip()[:300]}")
    return lines[:EVIDENCE_SAMPLES]


# --- the checks -----------------------------------------------------------------------------------------


def summarise(
    args: argparse.Namespace, load: dict[str, Any], drained: float, clients: dict[str, Any], t0: float
) -> dict[str, Any]:
    from orders.models import Order, OrderEvent

    events = {
        row["seq"]: row
        for row in OrderEvent.objects.values("seq", "order_id", "type", "from_status", "to_status", "source")
    }
    by_status = Counter(Order.objects.filter(pk__in=load["created"]).values_list("status", flat=True))
    streams = clients["streams"]
    reference = streams[0]
    reference_seqs = set(reference["seqs"])
    per_socket, evidence = [], {"missed": [], "inversions": [], "duplicates": []}
    missed_by_transition: Counter = Counter()
    connect_errors = []
    for stream in streams:
        expected = [seq for seq in sorted(events) if not covered(stream, seq, events[seq]["order_id"])]
        figures = ws_clients.check(array("q", stream["seqs"]), expected)
        missed = sorted(set(expected) - set(stream["seqs"]))
        missed_vs_reference = [seq for seq in missed if seq in reference_seqs]
        per_socket.append(
            {
                "name": stream["name"],
                "resumes": sum(1 for c in stream["connections"] if c["after"] is not None),
                "first_snapshot_seq": stream["snapshots"][0]["seq"] if stream["snapshots"] else None,
                "received": len(stream["seqs"]),
                "expected": len(expected),
                "missed": len(missed),
                "missed_vs_reference": len(missed_vs_reference),
                "duplicates": figures["duplicates"],
                "inversions": figures["inversions"],
                "unexpected": figures["unexpected"],
            }
        )
        for seq in missed:
            event = events[seq]
            missed_by_transition[f"{event['from_status'] or '-'} → {event['to_status'] or '-'}"] += 1
        evidence["missed"] += [miss_evidence(stream, reference, seq, events[seq], t0) for seq in missed]
        evidence["inversions"] += inversion_evidence(stream, events, t0)
        counts = Counter(stream["seqs"])
        evidence["duplicates"] += [
            {"socket": stream["name"], "seq": seq, "times": n} for seq, n in counts.items() if n > 1
        ]
        connect_errors += [f"{stream['name']}: {c['error']}" for c in stream["connections"] if c.get("error")]
    readers = clients["readers"]
    from bench.fanout import histogram_percentile

    live = {int(ms): n for ms, n in readers["live"]["histogram"].items()}
    resumed = {int(ms): n for ms, n in readers["resumed"]["histogram"].items()}
    totals = {
        key: sum(socket[key] for socket in per_socket)
        for key in ("missed", "missed_vs_reference", "duplicates", "inversions", "unexpected", "expected")
    }
    result: dict[str, Any] = {
        "settings": {
            "rate": args.rate,
            "duration_s": args.duration,
            "resumers": args.resumers,
            "connected_s": args.connected,
            "away_s": args.away,
            "step_seconds": args.step_seconds,
            "poll_interval_s": args.poll_interval,
            "workers": args.workers,
            "concurrency": args.concurrency,
        },
        "orders_created": len(load["created"]),
        "orders_delivered": by_status.get("delivered", 0),
        "orders_by_status": dict(by_status),
        "create_errors": load["errors"],
        "create_p50_ms": common.ms(common.percentile(load["latencies"], 0.5)),
        "create_p99_ms": common.ms(common.percentile(load["latencies"], 0.99)),
        "load_s": round(load["load_s"], 1),
        "drain_s": round(drained, 1),
        "events": len(events),
        "events_by_source": dict(Counter(row["source"] for row in events.values())),
        "sockets": len(streams),
        "resuming_sockets": sum(1 for stream in streams if stream["resumes"]),
        "resumes": sum(socket["resumes"] for socket in per_socket),
        "events_received": sum(len(stream["seqs"]) for stream in streams),
        **totals,
        "sockets_with_misses": sum(1 for socket in per_socket if socket["missed"]),
        "connect_errors": len(connect_errors),
        "error_samples": connect_errors[:5],
        "parse_mismatches": sum(reader["parse_mismatches"] for reader in readers.values()),
        "p50_ms": histogram_percentile(live, 0.5),
        "p99_ms": histogram_percentile(live, 0.99),
        "max_ms": common.ms(readers["live"]["max_latency_s"]),
        "resumed_p50_ms": histogram_percentile(resumed, 0.5),
        "resumed_p99_ms": histogram_percentile(resumed, 0.99),
        "per_socket": per_socket,
    }
    if any(evidence.values()):
        result["evidence"] = {
            key: samples[:EVIDENCE_SAMPLES] for key, samples in evidence.items() if samples
        } | {"missed_by_transition": dict(missed_by_transition.most_common())}
    return result


def covered(stream: dict[str, Any], seq: int, order_id: int) -> bool:
    """Whether a snapshot the socket took stands for this event: it was at or below the snapshot's seq (and
    above what the socket held before it), or the snapshot showed its order at or past this seq."""
    return any(
        snapshot["high_before"] < seq <= snapshot["seq"]
        or snapshot["seq"] < seq <= snapshot["orders"].get(str(order_id), 0)
        for snapshot in stream["snapshots"]
    )


def where(stream: dict[str, Any], at: float) -> tuple[int, dict[str, Any] | None]:
    """The connection open at `at` (index, record), or the one after the gap `at` fell in (index, None)."""
    for index, record in enumerate(stream["connections"]):
        if at < record["opened"]:
            return index, None
        if at <= record["closed"]:
            return index, record
    return len(stream["connections"]), None


def miss_evidence(
    stream: dict[str, Any], reference: dict[str, Any], seq: int, event: dict[str, Any], t0: float
) -> dict[str, Any]:
    """A missed seq: the event, when the reference got it, and what the socket was doing then."""
    found: dict[str, Any] = {
        "socket": stream["name"],
        "seq": seq,
        "order": event["order_id"],
        "event": f"{event['type']} {event['from_status'] or '-'} → {event['to_status'] or '-'}",
        "source": event["source"],
    }
    try:
        position = reference["seqs"].index(seq)
    except ValueError:
        return {**found, "reference": "missed it too"}
    at = reference["received_at"][position]
    higher_before = max(reference["seqs"][:position], default=0)
    index, record = where(stream, at)
    found.update(
        reference_received_s=round(at - t0, 3),
        reference_had_higher=higher_before if higher_before > seq else None,
    )
    if record is not None:
        found["socket_was"] = f"connected (connection {index}, after={record['after']})"
    else:
        previous = stream["connections"][index - 1] if index else None
        following = stream["connections"][index] if index < len(stream["connections"]) else None
        found["socket_was"] = (
            f"away since {round(previous['closed'] - t0, 3) if previous else '-'} s, "
            f"resumed at {round(following['opened'] - t0, 3) if following else '-'} s "
            f"with after={following['after'] if following else '-'}"
        )
    return found


def inversion_evidence(stream: dict[str, Any], events: dict[int, dict], t0: float) -> list[dict[str, Any]]:
    found, highest = [], 0
    starts = {record["first"]: n for n, record in enumerate(stream["connections"])}
    for position, seq in enumerate(stream["seqs"]):
        if seq < highest:
            event = events.get(seq, {})
            found.append(
                {
                    "socket": stream["name"],
                    "seq": seq,
                    "after_higher": highest,
                    "order": event.get("order_id"),
                    "event": f"{event.get('from_status') or '-'} → {event.get('to_status') or '-'}",
                    "received_s": round(stream["received_at"][position] - t0, 3),
                    "first_of_connection": starts.get(position),
                }
            )
        highest = max(highest, seq)
    return found


def failures(result: dict[str, Any]) -> list[str]:
    reasons = []
    for key in ("missed", "duplicates", "inversions", "connect_errors", "parse_mismatches", "deadlocks"):
        if result.get(key):
            reasons.append(f"{result[key]:,} {key.replace('_', ' ')}")
    undelivered = result["orders_created"] - result["orders_delivered"]
    if undelivered:
        reasons.append(f"{undelivered:,} of {result['orders_created']:,} orders not delivered")
    if result["create_errors"]:
        reasons.append(f"order creation errors {result['create_errors']}")
    if not result["orders_created"]:
        reasons.append("no order was created")
    if result["resuming_sockets"] and not result["resumes"]:
        reasons.append("no socket resumed")
    if result["relay"] is None:
        reasons.append("the relay wrote no stats")
    return reasons


def log_result(result: dict[str, Any]) -> None:
    relay = result["relay"] or {}
    logger.info(
        "%s: %d/%d orders delivered; %d resumes, %s events received, %d missed (%d seen by the reference), "
        "%d duplicates, %d inversions; p50 %s ms, p99 %s ms; relay gaps %s, rolled back %s, given up %s, "
        "late %s, held p99 %s ms; %d deadlocks",
        "ok" if result["ok"] else "FAILED (" + "; ".join(result["failures"]) + ")",
        result["orders_delivered"],
        result["orders_created"],
        result["resumes"],
        f"{result['events_received']:,}",
        result["missed"],
        result["missed_vs_reference"],
        result["duplicates"],
        result["inversions"],
        result["p50_ms"],
        result["p99_ms"],
        relay.get("gaps"),
        relay.get("rolled_back"),
        relay.get("given_up"),
        relay.get("late"),
        None if relay.get("held_ms_p99") is None else round(relay["held_ms_p99"], 1),
        result["deadlocks"],
    )


# --- command line ---------------------------------------------------------------------------------------


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help=f"CI size: {QUICK} unless given")
    flags = [
        ("--rate", float, "orders created per second"),
        ("--duration", float, "seconds of load"),
        ("--resumers", int, "sockets that disconnect and resume"),
        ("--connected", float, "seconds a resuming socket stays connected"),
        ("--away", float, "seconds it stays away before resuming"),
        ("--step-seconds", float, "SIM_STEP_SECONDS of the simulators"),
        ("--poll-interval", int, "POLL_INTERVAL_SECONDS (beat counts whole seconds)"),
        ("--workers", int, "Celery worker processes"),
        ("--concurrency", int, "each worker's concurrency"),
        ("--drain-timeout", float, "seconds to wait after the load for every order to finish"),
        ("--final-timeout", float, "seconds the sockets may take to read up to the last event"),
    ]
    for flag, kind, text in flags:
        key = flag[2:].replace("-", "_")
        parser.add_argument(flag, type=kind, help=f"{text} (default {DEFAULTS[key]})")


def _client_options(client: argparse.ArgumentParser) -> None:
    for name in ("base", "token", "ready-file", "stop-file", "out"):
        client.add_argument(f"--{name}", required=True)
    client.add_argument("--resumers", type=int, required=True)
    for name in ("connected", "away", "final-timeout"):
        client.add_argument(f"--{name}", type=float, required=True)


def main() -> None:
    common.main(__doc__, _options, measure, _client_options, client_main)


if __name__ == "__main__":
    main()
