"""Fan-out: operator and courier sockets on one web process (or several) while the pipeline changes
statuses.

    PYTHONPATH=backend:. python -m bench.fanout --operators 500 --couriers 100 --rate 300 --duration 60
    PYTHONPATH=backend:. python -m bench.fanout --web-processes 2 --operators 1000 --couriers 200 \
        --rate 300 --duration 60 --skip-uncoalesced                    # the scale-out proof

`--web-processes N` starts N web processes on one Redis and one relay, as more web processes behind
nginx would run; the sockets are dealt to them in turn. The clients are processes of their own, at most
150 sockets each (each an event loop on one core), so they do not set the pace.

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones). Works in a database of its own
(`<name>_bench`, emptied first) and a channel-layer prefix of its own, so it never touches real data and
other processes on the same Redis neither see its messages nor send it theirs. Celery tasks go to Redis
database 15 (nothing consumes them; purged at the end) unless CELERY_BROKER_URL is set.

The writers only write, as the services do; events reach the sockets the production way: one relay
process (`manage.py relay_events`, started fresh for each run with the web process's environment and
stopped with SIGTERM at its end) reads the committed events in seq order up to its high-water mark and
publishes them through realtime.broadcast.publish_released, one message per group per batch it
releases; the web process sends each group's events of one REALTIME_FLUSH_MS interval as one frame.

One invocation makes two runs, each on a freshly emptied database with fresh web and relay processes,
the same number of sockets and the same load:
- `coalesced`: as in production: the web process flushes every `--flush-ms` (default 100) and the relay
  reads every REALTIME_RELAY_INTERVAL_MS (`--relay-interval-ms`; default: the product's setting).
- `uncoalesced`: coalescing switched off as far as the relay allows: the web process runs with
  REALTIME_FLUSH_MS=0 (a frame leaves on the next turn of its event loop; it still merges what had
  already arrived together, it never waits for more) and the relay reads every 1 ms. Writers never
  publish: the relay publishes what committed since its last read, at 1 ms mostly one writer
  transaction per message.
`--skip-uncoalesced` makes the first run only; `--no-coalesce` the second only.

The writers (`--writers`, processes, like several Celery workers, on their own orders) use
`--driver bulk` by default: each 100 ms tick's changes go into one transaction, real OrderEvent rows and
order statuses, as a poll tick writes them. `--driver service` calls `leg_apply_status` per change
instead (one transaction each): about 5 ms of ORM CPU each, which at 300/s would take the cores the web
process and the clients need on a small machine. Writers stop after `--duration` seconds, so a writer
that lags shows as a lower `changes_per_s`. They commit as production does (synchronous_commit on, the
event INSERT last, as in the services), and their transactions overlap, so seqs may commit out of
order: the relay holds an event while a lower seq's transaction is still open (`relay.held_ms_*`).
The mark's whole latency cost is that hold, the wait for the relay's next read and its own work.

Every client checks it received every event it may see (operators: all; a courier: its orders), with no
duplicate and no gap, and that its socket received them in seq order: an event whose seq is below the
highest that socket received before is an inversion. Latency runs from the event's `at`, taken in the
writing transaction just before commit, to the moment the client read the frame: it includes the wait
for the relay's next read, any time held behind a missing seq, and publishing. A run fails (`ok:
false`) on any socket that did not connect or errored, any missing event (completeness under 100%),
any gap, duplicate or inversion, a frame the clients' cheap parser misread, or a relay that wrote no
counters. The exit code (and the top-level `ok`) follows the coalesced run, the production
configuration; the uncoalesced run is the comparison, and what it fails to deliver within `--grace` is
reported as its finding.

JSON (`--json PATH`); keys are stable, bench/report.py reads them:
  ok                    the coalesced run passed (the uncoalesced one when it ran alone)
  coalesced, uncoalesced
                        one run each (absent when skipped), with:
    ok, failures        passed; why not (list of short reasons)
    mode, flush_ms      "coalesced" / "uncoalesced"; the web process's REALTIME_FLUSH_MS
    web_processes, client_processes
                        web processes the sockets were dealt to; client processes holding them
    relay_interval_ms   the relay's REALTIME_RELAY_INTERVAL_MS
    operators, couriers, sockets, connected
                        sockets asked for, and connected with a snapshot
    target_rate, changes_per_s, changes, duration_s
                        changes/s asked for and achieved by the driver, changes made, seconds driven
    expected, received  (socket, event) deliveries due and received, summed over the sockets
    completeness_min    the lowest received/expected of any socket (1.0 = all)
    completeness_total  received / expected
    incomplete_sockets  sockets that missed anything
    missing, gaps, duplicates, inversions, unexpected
                        summed over sockets: events due but not received; runs of consecutive missing
                        seqs; seqs received twice; seqs below the highest the socket had received
                        before; seqs not due
    inversion_sockets   sockets with at least one inversion; inversion_samples: the first few, each
                        [seq, highest seq the socket had before it]
    errors              sockets that failed (count); error_samples: the first few messages
    other_frames        frames that were neither events nor the first snapshot, by type
    parse_mismatches    sampled frames where the clients' regex and json.loads disagreed
    max_frame_kb        the largest frame a client received after its snapshot (daphne does not send
                        a message over 1 MiB: a larger frame never arrives, its events go missing)
    p50_ms, p99_ms, max_ms
                        latency from the event's commit to a client reading it, over every delivery
    published_p50_ms, published_p99_ms, published_max_ms
                        the relay's share: from the event's commit to its message reaching a
                        subscriber of the operators group (a probe in this process, as a web process
                        subscribes); the rest of p50_ms is the web process's flush, sending and reading
    events_per_s, frames_per_s
                        events and frames received per second of driving, all sockets together
    avg_event_bytes, avg_frame_bytes, wire_mb_per_s
                        the events frames' WebSocket payload per event received and per frame, and in
                        MB per second of driving, all sockets together (framing bytes not counted)
    per_web             each web process's share: sockets, expected, received, missing, gaps,
                        duplicates, inversions, errors, p50_ms, p99_ms, max_ms, events_per_s,
                        frames_per_s, web_cpu_percent
    web_cpu_percent, relay_cpu_percent
                        the web processes' CPU (together; web_cpu_percent_each: each) and the relay's
                        while driving (100 = one core)
    postgres_cpu_percent, redis_cpu_percent
                        every PostgreSQL and Redis process on the machine, while driving
    web_rss_mb, web_peak_rss_mb
                        the web processes' memory (together) when driving began, and its peak
    driver_cpu_percent, clients_cpu_percent
                        the writer processes (and this one, which forks them), and the client processes
    clients_max_process_cpu_percent
                        the busiest client process (near 100 the clients would set the pace)
    load_average        the machine's 1-minute load average before and after driving
    relay               the relay's counters over the run (orders.relay.RelayStats): released, batches,
                        gaps (missing seqs seen), rolled_back, given_up (writer still running after
                        REALTIME_GAP_WAIT_MS), late (released after a higher seq), held_events (events
                        that waited behind a missing seq), held_ms_p50/p99/max (how long they waited)
    profile, relay_profile
                        py-spy of the (first) web and the relay process while driving: top functions by
                        own samples; web_profiles: each web process's, when there are several
  ratio                 one line: coalesced against uncoalesced (absent when either is)
  ratios                the same as numbers: frames_per_s (uncoalesced/coalesced), p99_ms, p50_ms,
                        web_cpu_percent (uncoalesced/coalesced: above 1 means coalescing saves that
                        much), events_per_s (coalesced/uncoalesced)
  limits                what bounds the coalesced run, from its profiles
"""

import argparse
import asyncio
import json
import logging
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from bench import common, ws_clients

logger = logging.getLogger("bench.fanout")
# Each client process is one event loop on one core: at 150 sockets a process stays well under a core at
# 300 changes/s, so the clients never set the pace (`clients_max_process_cpu_percent` shows it).
SOCKETS_PER_CLIENT_PROCESS = 150
KITCHEN_STEPS = ["not started", "cooking", "cooked"]
DELIVERY_STEPS = ["not started", "delivery", "delivered"]
STEPS = len(KITCHEN_STEPS) + len(DELIVERY_STEPS)
TICK_SECONDS = 0.1
PROGRESS_SECONDS = 10
UNCOALESCED_RELAY_MS = 1  # REALTIME_RELAY_INTERVAL_MS of the uncoalesced run: read as soon as committed


def prepare_couriers(count: int) -> tuple[str, list[tuple[int, str]]]:
    """The operator's token and (courier id, token) pairs."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from knox.models import AuthToken

    from orders.models import Courier

    users = get_user_model().objects
    operator_token = common.api_token("operator")  # all --operators sockets sign in with it
    with transaction.atomic():
        courier_users = users.bulk_create([users.model(username=f"bench-courier-{n}") for n in range(count)])
        fleet = Courier.objects.bulk_create(
            [Courier(user=user, name=f"Bench courier {n}") for n, user in enumerate(courier_users)]
        )
        # knox keeps only a hash of each token: create() is the one place its plain text is known
        tokens = [AuthToken.objects.create(user=user)[1] for user in courier_users]
    return operator_token, [(courier.pk, token) for courier, token in zip(fleet, tokens, strict=True)]


def prepare_orders(count: int, courier_ids: list[int], tag: str, offset: int = 0) -> list[tuple[int, int]]:
    """(order id, courier id) pairs: fresh submitted orders with one Melange kitchen leg each."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from orders.models import Dish, Leg, Order, OrderItem

    customer = get_user_model().objects.get(username="customer")
    dish = Dish.objects.filter(restaurant__provider="melange").first()
    with transaction.atomic():
        made = Order.objects.bulk_create(
            [
                Order(
                    customer=customer,
                    delivery_address=f"Bench St, {n}",
                    total=dish.price,
                    courier_id=courier_ids[(offset + n) % len(courier_ids)] if courier_ids else None,
                )
                for n in range(count)
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
                    external_id=f"{tag}-{o.pk}",
                )
                for o in made
            ]
        )
    return [(order.pk, order.courier_id) for order in made]


class Driver:
    """Moves orders one provider status at a time, `rate` changes per second, in 100 ms ticks.

    It works on a window of `window` orders at once, round robin, and replaces each finished order by a
    new one (created in chunks between ticks), so the board that sockets snapshot on connect holds a
    realistic number of active orders rather than every order the run will ever move.
    """

    def __init__(self, couriers: list[int], window: int, tag: str) -> None:
        self.couriers, self.window, self.tag = couriers, window, tag
        self.active: list[dict[str, Any]] = []
        self.spare: list[dict[str, Any]] = []
        self.made = 0
        self.produced: list[tuple[int, int | None, int]] = []  # (seq, courier id, order id)
        self.refill(window)

    def refill(self, count: int) -> None:
        from orders.models import Leg

        orders = prepare_orders(count, self.couriers, f"{self.tag}-{self.made}", offset=self.made)
        self.made += count
        legs = dict(Leg.objects.filter(order_id__in=[o for o, _ in orders]).values_list("order_id", "id"))
        self.spare += [{"order": o, "courier": c, "leg": legs[o], "step": 0} for o, c in orders]

    def _advance(self, slot: int) -> None:
        from orders import services
        from orders.models import Leg

        state = self.active[slot]
        if state["step"] == len(KITCHEN_STEPS):
            state["leg"] = Leg.objects.get(order_id=state["order"], kind="delivery").pk
        status = (KITCHEN_STEPS + DELIVERY_STEPS)[state["step"]]
        event = services.leg_apply_status(leg_id=state["leg"], provider_status=status, source="poll")
        state["step"] += 1
        if event is not None:
            self.produced.append((event.seq, state["courier"], state["order"]))
        if state["step"] == STEPS:
            self.active[slot] = self.spare.pop()

    def start(self) -> None:
        self.active, self.spare = self.spare[: self.window], self.spare[self.window :]
        self.cursor = 0

    def tick(self, changes: int, refill: int) -> None:
        """One poll tick's worth of changes, each in its own transaction; the relay publishes them."""
        if len(self.spare) < changes:
            self.refill(max(changes, refill))  # about a second's worth of new orders, between ticks
        for _ in range(changes):
            self._advance(self.cursor % len(self.active))
            self.cursor += 1

    def run(self, rate: float, duration: float, report: bool) -> float:
        """Up to `rate * duration` changes in 100 ms ticks, for `duration` seconds; returns the seconds."""
        self.start()
        per_tick = max(1, round(rate * TICK_SECONDS))
        total = int(rate * duration)
        started = time.monotonic()
        done, tick, reported = 0, 0, started
        while done < total and time.monotonic() - started < duration:  # a lagging writer stops on time
            changes = min(per_tick, total - done)
            self.tick(changes, refill=max(per_tick, round(rate)))
            done += changes
            tick += 1
            now = time.monotonic()
            if report and now - reported >= PROGRESS_SECONDS:
                reported = now
                logger.info("  writer 1: %d/%d changes, %.0f/s so far", done, total, done / (now - started))
            time.sleep(max(0.0, started + tick * TICK_SECONDS - now))
        return time.monotonic() - started


BULK_STATUSES = ["submitted", "cooking", "ready", "courier_search", "delivering", "delivered"]


class BulkDriver(Driver):
    """Writes each tick's changes in one transaction: real OrderEvent rows (real seqs, real commits) and
    order statuses, as a poll tick does; the relay publishes them exactly as it publishes the services'.

    What it skips is the per-change service logic (locks, leg bookkeeping, the status machine), about
    5 ms of ORM CPU per change: at 300 changes/s that alone would take most of this machine's two cores,
    which the web process and the 600 sockets' clients need. `--driver service` uses the real service.
    """

    def tick(self, changes: int, refill: int) -> None:
        from django.db import transaction
        from django.utils import timezone

        from orders.models import Order, OrderEvent

        if len(self.spare) < changes:
            self.refill(max(changes, refill))
        slots = [(self.cursor + k) % len(self.active) for k in range(changes)]
        self.cursor += changes
        states = [self.active[slot] for slot in slots]
        with transaction.atomic():
            moved: dict[str, list[int]] = {}
            events = []
            for state in states:
                before, after = BULK_STATUSES[state["step"]], BULK_STATUSES[state["step"] + 1]
                moved.setdefault(after, []).append(state["order"])
                events.append(
                    OrderEvent(
                        order_id=state["order"],
                        type=OrderEvent.Type.STATUS,
                        from_status=before,
                        to_status=after,
                        source=OrderEvent.Source.POLL,
                        at=timezone.now(),
                    )
                )
            for status, order_ids in moved.items():
                Order.objects.filter(pk__in=order_ids).update(status=status, updated_at=timezone.now())
            for event in OrderEvent.objects.bulk_create(events):
                self.produced.append((event.seq, self._courier_of[event.order_id], event.order_id))
        for slot, state in zip(slots, states, strict=True):
            state["step"] += 1
            if state["step"] == len(BULK_STATUSES) - 1:
                self.active[slot] = self.spare.pop()

    def refill(self, count: int) -> None:
        super().refill(count)
        self._courier_of = {state["order"]: state["courier"] for state in self.active + self.spare}


def _write(driver: Driver, rate: float, duration: float, report: bool, results: Connection) -> None:
    """A writer process (forked, like a Celery worker) with its own database connection."""
    from django.db import connections

    connections.close_all()  # the parent's sockets stay the parent's
    cpu = time.process_time()
    seconds = driver.run(rate, duration, report)
    connections.close_all()
    results.send((driver.produced, seconds, time.process_time() - cpu))


class Writers:
    """Several drivers, each its own process on its own orders, as several Celery workers are.

    Python runs one writer's ORM work at about 150-200 changes/s here, so 300/s takes more than one
    process, as it would in production. Their transactions overlap, so seqs commit out of seq order;
    the relay must still hand them to every socket in seq order (ws_clients.check).
    """

    def __init__(self, drivers: list[Driver]) -> None:
        self.drivers = drivers
        self.produced: list[tuple[int, int | None, int]] = []
        self.cpu_seconds = 0.0

    def run(self, rate: int, duration: float) -> float:
        """Drives `rate * duration` changes across the writers; returns the slowest writer's seconds."""
        from django.db import connections

        connections.close_all()
        context = multiprocessing.get_context("fork")
        pipes, processes = [], []
        for index, driver in enumerate(self.drivers):
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_write, args=(driver, rate / len(self.drivers), duration, index == 0, send)
            )
            process.start()
            pipes.append(receive)
            processes.append(process)
        results = [pipe.recv() for pipe in pipes]
        for process in processes:
            process.join()
        self.produced = sorted(item for produced, _, _ in results for item in produced)
        self.cpu_seconds = sum(cpu for _, _, cpu in results)
        return max(seconds for _, seconds, _ in results)


class PublishedProbe:
    """Listens to the operators group as a web process does and times every event from its `at` to the
    moment its message arrives: the relay's share of the latency (the wait for its next read, any hold
    behind a missing seq, its work, Redis), against which the end-to-end figures add the web process's
    flush interval, its sending and the clients' reading. Channels' public layer API, in a thread."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ready, self.stopping = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("could not subscribe to the operators group")

    def stop(self) -> dict[str, float | None]:
        self.stopping.set()
        self.thread.join(30)
        return {
            "published_p50_ms": common.ms(common.percentile(self.latencies, 0.5)),
            "published_p99_ms": common.ms(common.percentile(self.latencies, 0.99)),
            "published_max_ms": common.ms(max(self.latencies, default=None)),
        }

    async def _listen(self) -> None:
        from channels.layers import get_channel_layer

        from realtime.broadcast import OPERATORS

        layer = get_channel_layer()
        channel = await layer.new_channel("bench.")
        await layer.group_add(OPERATORS, channel)
        self.ready.set()
        # Not wait_for: cancelling a receive unsubscribes the channel (channels_redis' pub/sub layer).
        receiving = asyncio.create_task(self._receive(layer, channel))
        await asyncio.get_running_loop().run_in_executor(None, self.stopping.wait)
        receiving.cancel()
        with suppress(asyncio.CancelledError):
            await receiving  # it unsubscribes as it ends
        await layer.flush()  # closes this loop's Redis connections before the loop ends

    async def _receive(self, layer: Any, channel: str) -> None:
        while True:
            message = await layer.receive(channel)
            now = time.time()
            for _, _, text in message.get("events", []):
                match = ws_clients.EVENT.match(text.encode())
                if match:
                    self.latencies.append(now - datetime.fromisoformat(match[2].decode()).timestamp())


class Sampler:
    """CPU and memory of the web, relay, driver, client and engine processes while driving."""

    def __init__(
        self, webs: list[psutil.Process], relay: psutil.Process, clients: list[psutil.Process]
    ) -> None:
        self.webs, self.relay, self.clients, self.me = webs, relay, clients, psutil.Process()
        self.engines = EngineCpu()
        self.rss = [self._web_rss()]
        self.stopped = threading.Event()
        self.elapsed = 0.0

    @contextmanager
    def measuring(self) -> Iterator[dict[str, float]]:
        figures: dict[str, float] = {}
        processes = [self.relay, self.me, *self.webs, *self.clients]
        cpu = [_cpu_seconds(process) for process in processes]
        self.engines.sample(first=True)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield figures
        finally:
            elapsed = self.elapsed = time.monotonic() - started
            self.stopped.set()
            thread.join()
            self.engines.sample()
            used = [_cpu_seconds(process) - before for process, before in zip(processes, cpu, strict=True)]
            webs, clients = used[2 : 2 + len(self.webs)], used[2 + len(self.webs) :]
            figures["web_cpu_percent"] = _percent(sum(webs), elapsed)  # all web processes together
            figures["web_cpu_percent_each"] = [_percent(seconds, elapsed) for seconds in webs]
            figures["relay_cpu_percent"] = _percent(used[0], elapsed)
            figures["driver_cpu_percent"] = _percent(used[1], elapsed)
            figures["clients_cpu_percent"] = _percent(sum(clients), elapsed)
            # the busiest client process: near 100 it would be the clients, not the server, setting the pace
            figures["clients_max_process_cpu_percent"] = max(
                (_percent(seconds, elapsed) or 0 for seconds in clients), default=None
            )
            for engine, seconds in self.engines.used().items():
                figures[f"{engine}_cpu_percent"] = _percent(seconds, elapsed)
            figures["web_rss_mb"] = round(self.rss[0] / 2**20, 1)
            figures["web_peak_rss_mb"] = round(max(self.rss) / 2**20, 1)
            figures["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]

    def _sample(self) -> None:
        while not self.stopped.wait(0.5):
            self.engines.sample()
            try:
                self.rss.append(self._web_rss())
            except psutil.Error:
                return

    def _web_rss(self) -> int:
        """The web processes' resident memory together."""
        return sum(web.memory_info().rss for web in self.webs)


class EngineCpu:
    """CPU of every PostgreSQL and Redis process on the machine, sampled: backends come and go (each
    writer connects after driving begins), so each process counts from when it was first seen, or from
    zero when it appeared while driving, to when it was last seen."""

    NAMES = {"postgres": "postgres", "redis-server": "redis"}

    def __init__(self) -> None:
        self.seen: dict[int, list[Any]] = {}  # pid: [engine, CPU seconds first seen, last seen]

    def sample(self, first: bool = False) -> None:
        if first:
            self.seen.clear()
        for process in psutil.process_iter(["name", "cpu_times"]):
            engine = self.NAMES.get(process.info["name"] or "")
            times = process.info["cpu_times"]
            if engine is None or times is None:
                continue
            seconds = times.user + times.system
            entry = self.seen.setdefault(process.pid, [engine, seconds if first else 0.0, seconds])
            entry[2] = seconds

    def used(self) -> dict[str, float]:
        totals = dict.fromkeys(self.NAMES.values(), 0.0)
        for engine, start, last in self.seen.values():
            totals[engine] += last - start
        return totals


def _cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
    except psutil.Error:  # it ended: its figure is unknown, not zero
        return math.nan
    return times.user + times.system


def _percent(seconds: float, elapsed: float) -> int | None:
    return None if math.isnan(seconds) else round(100 * seconds / elapsed)


def start_clients(
    ports: list[int], specs: list[dict[str, str]], work: Path
) -> tuple[list[subprocess.Popen], list[int]]:
    """Client processes of at most SOCKETS_PER_CLIENT_PROCESS sockets, each connected to one web process;
    the sockets are dealt to the web processes in turn, so each gets its share of operators and couriers.
    Returns the processes and, for each, the index of its web process."""
    chunks: list[list[dict[str, str]]] = []
    webs: list[int] = []
    for web in range(len(ports)):
        share = specs[web :: len(ports)]
        for i in range(0, len(share), SOCKETS_PER_CLIENT_PROCESS):
            chunks.append(share[i : i + SOCKETS_PER_CLIENT_PROCESS])
            webs.append(web)
    clients = []
    for index, chunk in enumerate(chunks):
        port = ports[webs[index]]
        (work / f"spec-{index}.json").write_text(json.dumps(chunk))
        files = {name: str(work / f"{name}-{index}") for name in ("ready", "out")}
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
                    files["ready"],
                    "--until-file",
                    str(work / "until"),
                    "--expected-file",
                    str(work / "expected.json"),
                    "--out",
                    files["out"],
                ],
                cwd=common.REPO,
                env=common.python_path_env(),
            )
        )
    return clients, webs


def wait_connected(clients: list[subprocess.Popen], work: Path) -> int:
    ready = [work / f"ready-{i}" for i in range(len(clients))]
    while not all(path.exists() for path in ready):
        if any(client.poll() is not None for client in clients):
            raise RuntimeError("a client process died while connecting")
        time.sleep(0.2)
    return sum(int(path.read_text()) for path in ready)


def one_run(
    args: argparse.Namespace, coalesce: bool, operator_token: str, couriers: list[tuple[int, str]]
) -> dict:
    from django.conf import settings

    mode = "coalesced" if coalesce else "uncoalesced"
    flush_ms = args.flush_ms if coalesce else 0
    relay_ms = UNCOALESCED_RELAY_MS
    if coalesce:
        relay_ms = args.relay_interval_ms or settings.REALTIME_RELAY_INTERVAL_MS
    fleet = [cid for cid, _ in couriers]
    window = max(1, args.orders // args.writers)
    kind = BulkDriver if args.driver == "bulk" else Driver
    driver = Writers([kind(fleet, window, f"{mode}-{os.getpid()}-w{n}") for n in range(args.writers)])
    work = Path(tempfile.mkdtemp(prefix=f"bench-fanout-{mode}-"))
    ports = [common.free_port() for _ in range(args.web_processes)]
    webs: list[subprocess.Popen] = []
    relay: subprocess.Popen | None = None
    relay_stats: dict | None = None
    clients: list[subprocess.Popen] = []
    try:
        for index, port in enumerate(ports):
            # --operators sockets (500) of one operator user: no per-user socket cap
            webs.append(
                common.start_web(
                    port,
                    work / f"web-{index + 1}.log",
                    REALTIME_FLUSH_MS=str(flush_ms),
                    **common.SOCKET_CAP_OFF,
                )
            )
        relay = common.start_relay(
            work / "relay.log", work / "relay.json", REALTIME_RELAY_INTERVAL_MS=str(relay_ms)
        )
        specs = [{"path": "/ws/operators/", "token": operator_token, "expects": "all"}] * args.operators
        specs += [{"path": "/ws/couriers/", "token": token, "expects": str(cid)} for cid, token in couriers]
        clients, client_webs = start_clients(ports, specs, work)
        logger.info(
            "[%s] connecting %d sockets over %d web process(es) in %d client processes "
            "(flush %d ms, relay every %d ms) ...",
            mode,
            len(specs),
            len(webs),
            len(clients),
            flush_ms,
            relay_ms,
        )
        connect_started = time.monotonic()
        connected = wait_connected(clients, work)
        logger.info(
            "[%s] %d/%d sockets connected in %.1f s; driving %d changes/s for %g s ...",
            mode,
            connected,
            len(specs),
            time.monotonic() - connect_started,
            args.rate,
            args.duration,
        )
        sampler = Sampler(
            [psutil.Process(web.pid) for web in webs],
            psutil.Process(relay.pid),
            [psutil.Process(c.pid) for c in clients],
        )
        profiles: dict[str, str] = {}
        profilers = []
        if args.profile:
            seconds = max(2.0, args.duration * 0.8)
            # the first web process's profile is `profile`; with several, `web_profiles` holds each one's
            targets = [(f"web_profile_{n}", web.pid) for n, web in enumerate(webs, start=1)]
            for key, pid in [*targets, ("relay_profile", relay.pid)]:
                profilers.append(
                    threading.Thread(
                        target=lambda key=key, pid=pid: profiles.update(
                            {key: common.profile(pid, seconds, work / f"{key}.pyspy")}
                        ),
                        daemon=True,
                    )
                )
        probe = PublishedProbe()
        probe.start()
        with sampler.measuring() as usage:
            for profiler in profilers:
                profiler.start()
            driven = driver.run(args.rate, args.duration)
        if usage["driver_cpu_percent"] is not None:
            usage["driver_cpu_percent"] += _percent(driver.cpu_seconds, sampler.elapsed)
        produced = driver.produced
        expected: dict[str, Any] = {"all": [seq for seq, _, _ in produced]}
        for seq, courier_id, _ in produced:
            expected.setdefault(str(courier_id), []).append(seq)
        (work / "expected.json").write_text(json.dumps(expected))
        (work / "until").write_text(str(time.time() + args.grace))
        logger.info(
            "[%s] %d changes in %.1f s (%.0f/s); clients read until complete or %g s ...",
            mode,
            len(driver.produced),
            driven,
            len(driver.produced) / driven,
            args.grace,
        )
        for client in clients:
            client.wait(timeout=args.grace + 120)
        usage.update(probe.stop())
        for profiler in profilers:
            profiler.join()
    finally:
        for client in clients:
            common.stop(client)
        if relay is not None:
            relay_stats = common.stop_relay(relay, work / "relay.json")
        for web in webs:
            common.stop(web)
    outs = [json.loads((work / f"out-{i}").read_text()) for i in range(len(clients))]
    result = summarise(outs, usage, driven, len(driver.produced))
    result["per_web"] = [
        per_web([out for out, web in zip(outs, client_webs, strict=True) if web == index], driven)
        | {"web_cpu_percent": (usage.get("web_cpu_percent_each") or [None] * len(webs))[index]}
        for index in range(len(webs))
    ]
    web_profiles = [profiles.pop(f"web_profile_{n}", None) for n in range(1, len(webs) + 1)]
    if web_profiles[0]:
        profiles["profile"] = web_profiles[0]
    if len(webs) > 1:
        profiles["web_profiles"] = web_profiles
    result.update(
        mode=mode,
        web_processes=len(webs),
        client_processes=len(clients),
        driver=args.driver,
        writers=args.writers,
        flush_ms=flush_ms,
        relay_interval_ms=relay_ms,
        operators=args.operators,
        couriers=len(couriers),
        sockets=len(specs),
        connected=connected,
        target_rate=args.rate,
        relay=relay_stats and {k: round(v, 1) if isinstance(v, float) else v for k, v in relay_stats.items()},
    )
    result.update(profiles)
    result["failures"] = failures(result)
    result["ok"] = not result["failures"]
    held = result["relay"] or {}
    logger.info(
        "[%s] %s: %s/%s delivered, %s inversions, p50 %s ms, p99 %s ms, max %s ms, %s frames/s; "
        "published p50 %s ms p99 %s ms; relay held %s events p50 %s ms p99 %s ms max %s ms; "
        "CPU web %s%%, relay %s%%, PostgreSQL %s%%",
        mode,
        "ok" if result["ok"] else "FAILED (" + "; ".join(result["failures"]) + ")",
        f"{result['received']:,}",
        f"{result['expected']:,}",
        result["inversions"],
        result["p50_ms"],
        result["p99_ms"],
        result["max_ms"],
        result["frames_per_s"],
        result["published_p50_ms"],
        result["published_p99_ms"],
        held.get("held_events"),
        held.get("held_ms_p50"),
        held.get("held_ms_p99"),
        held.get("held_ms_max"),
        result["web_cpu_percent"],
        result["relay_cpu_percent"],
        result["postgres_cpu_percent"],
    )
    return result


def summarise(outs: list[dict], usage: dict[str, float], driven: float, changes: int) -> dict[str, Any]:
    sockets = [figures for out in outs for figures in out["per_socket"]]
    histogram: dict[int, int] = {}
    for out in outs:
        for ms, count in out["histogram"].items():
            histogram[int(ms)] = histogram.get(int(ms), 0) + count
    other: dict[str, int] = {}
    for out in outs:
        for kind, count in out["other_frames"].items():
            other[kind] = other.get(kind, 0) + count
    expected = sum(s["expected"] for s in sockets)
    received = sum(s["received"] for s in sockets)
    errors = [error for out in outs for error in out["errors"]]
    events = sum(out["events"] for out in outs)
    event_frames = sum(out.get("event_frames", 0) for out in outs)
    event_bytes = sum(out.get("event_frame_bytes", 0) for out in outs)
    return {
        "changes": changes,
        "changes_per_s": round(changes / driven, 1),
        "duration_s": round(driven, 1),
        "expected": expected,
        "received": received,
        "completeness_min": round(
            min((s["received"] / s["expected"] for s in sockets if s["expected"]), default=1.0), 4
        ),
        "completeness_total": round(received / expected, 4) if expected else 1.0,
        "incomplete_sockets": sum(1 for s in sockets if s["missing"]),
        **{
            key: sum(s[key] for s in sockets)
            for key in ("missing", "gaps", "duplicates", "inversions", "unexpected")
        },
        "inversion_sockets": sum(1 for s in sockets if s["inversions"]),
        "inversion_samples": [s["first_inversion"] for s in sockets if s["first_inversion"]][:5],
        "errors": len(errors),
        "error_samples": errors[:5],
        "other_frames": other,
        "parse_mismatches": sum(out["parse_mismatches"] for out in outs),
        "max_frame_kb": round(max((out["max_frame_bytes"] for out in outs), default=0) / 1024),
        "p50_ms": histogram_percentile(histogram, 0.5),
        "p99_ms": histogram_percentile(histogram, 0.99),
        "max_ms": common.ms(max((out["max_latency_s"] for out in outs), default=None)),
        "events_per_s": round(events / driven),
        "frames_per_s": round(sum(out["frames"] for out in outs) / driven),
        # the WebSocket payload of the events frames (not the few bytes of framing each adds)
        "avg_event_bytes": round(event_bytes / events) if events else None,
        "avg_frame_bytes": round(event_bytes / event_frames) if event_frames else None,
        "wire_mb_per_s": round(event_bytes / driven / 1e6, 1),
        **usage,
    }


def per_web(outs: list[dict], driven: float) -> dict[str, Any]:
    """One web process's share: what the clients connected to it received, and how fast."""
    figures = summarise(outs, {}, driven, 0)
    keys = ("expected", "received", "missing", "gaps", "duplicates", "inversions", "errors")
    keys += ("p50_ms", "p99_ms", "max_ms", "events_per_s", "frames_per_s")
    return {"sockets": sum(out["sockets"] for out in outs)} | {key: figures[key] for key in keys}


def histogram_percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """Nearest rank over 1 ms buckets; a bucket's upper edge, so it never flatters."""
    total = sum(histogram.values())
    if not total:
        return None
    rank, seen = max(1, math.ceil(fraction * total)), 0
    for ms in sorted(histogram):
        seen += histogram[ms]
        if seen >= rank:
            return float(ms + 1)
    return None


def failures(result: dict[str, Any]) -> list[str]:
    reasons = []
    if result["connected"] < result["sockets"] or result["errors"]:
        reasons.append(f"{result['sockets'] - result['connected']} not connected, {result['errors']} errored")
    if result["completeness_min"] < 1 or result["missing"]:
        reasons.append(f"{result['missing']:,} missing on {result['incomplete_sockets']} sockets")
    for key in ("gaps", "duplicates", "parse_mismatches"):
        if result[key]:
            reasons.append(f"{result[key]:,} {key.replace('_', ' ')}")
    if result["inversions"]:
        reasons.append(f"{result['inversions']:,} inversions on {result['inversion_sockets']} sockets")
    if result["relay"] is None:
        reasons.append("the relay wrote no counters")
    if result["changes"] == 0:
        reasons.append("no change was made")
    return reasons


def compare(coalesced: dict[str, Any], uncoalesced: dict[str, Any]) -> tuple[dict[str, float | None], str]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    ratios = {
        "frames_per_s": ratio(uncoalesced["frames_per_s"], coalesced["frames_per_s"]),
        "p50_ms": ratio(uncoalesced["p50_ms"], coalesced["p50_ms"]),
        "p99_ms": ratio(uncoalesced["p99_ms"], coalesced["p99_ms"]),
        "web_cpu_percent": ratio(uncoalesced["web_cpu_percent"], coalesced["web_cpu_percent"]),
        "events_per_s": ratio(coalesced["events_per_s"], uncoalesced["events_per_s"]),
    }
    text = (
        f"uncoalesced sends {ratios['frames_per_s']}x the frames, its p99 is {ratios['p99_ms']}x "
        f"({uncoalesced['p99_ms']} vs {coalesced['p99_ms']} ms), its web CPU {ratios['web_cpu_percent']}x; "
        f"coalesced delivers {ratios['events_per_s']}x the events/s"
    )
    return ratios, text


def fresh_database() -> None:
    """Empties and re-seeds the bench database, so that every run starts from the same board: the
    operators' snapshot holds the recently finished orders too, and a run finishes thousands."""
    from django.core.management import call_command

    call_command("flush", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0)


def run(args: argparse.Namespace) -> dict[str, Any]:
    broker = os.environ.get("CELERY_BROKER_URL")
    env = {"CHANNEL_LAYER_PREFIX": f"bench-fanout-{os.getpid()}"}  # production settings: common.setup_django
    if broker:
        env["CELERY_BROKER_URL"] = broker
    common.setup_django(**env)
    result: dict[str, Any] = {}
    try:
        for coalesce in (True, False):
            if (coalesce and not args.coalesced) or (not coalesce and not args.uncoalesced):
                continue
            if result:
                fresh_database()
            operator_token, couriers = prepare_couriers(args.couriers)
            run_result = one_run(args, coalesce, operator_token, couriers)
            result[run_result["mode"]] = run_result
    finally:
        common.purge_broker()
    if "coalesced" in result and "uncoalesced" in result:
        result["ratios"], result["ratio"] = compare(result["coalesced"], result["uncoalesced"])
        logger.info("Coalescing: %s", result["ratio"])
    coalesced = result.get("coalesced", {})
    if coalesced.get("profile"):
        result["limits"] = f"coalesced run, web process: {coalesced['profile']}"
        if coalesced.get("relay_profile"):
            result["limits"] += f"; relay process: {coalesced['relay_profile']}"
    # Coalescing is the production configuration: it must deliver everything. The uncoalesced run is the
    # comparison; what it fails to deliver within the grace period is its finding, reported, not hidden.
    judged = result.get("coalesced") or result.get("uncoalesced")
    result["ok"] = bool(judged) and judged["ok"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--operators", type=int, default=500)
    parser.add_argument("--couriers", type=int, default=100)
    parser.add_argument("--rate", type=int, default=300, help="status changes per second")
    parser.add_argument("--duration", type=float, default=60, help="seconds of changes")
    parser.add_argument("--orders", type=int, default=300, help="active orders on the board at once")
    parser.add_argument(
        "--driver",
        choices=["bulk", "service"],
        default="bulk",
        help="bulk: each tick's events in one transaction; service: one leg_apply_status per change",
    )
    parser.add_argument(
        "--writers", type=int, default=2, help="processes applying changes, each on its own orders (workers)"
    )
    parser.add_argument(
        "--web-processes",
        type=int,
        default=1,
        help="web processes (one Redis, one relay); the sockets are dealt to them in turn",
    )
    parser.add_argument("--flush-ms", type=int, default=100, help="REALTIME_FLUSH_MS of the coalesced run")
    parser.add_argument(
        "--relay-interval-ms",
        type=int,
        help="REALTIME_RELAY_INTERVAL_MS of the coalesced run's relay (default: the product's setting)",
    )
    parser.add_argument(
        "--skip-uncoalesced", dest="uncoalesced", action="store_false", help="coalesced run only"
    )
    parser.add_argument("--no-coalesce", dest="coalesced", action="store_false", help="uncoalesced run only")
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip py-spy (web and relay processes)"
    )
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds clients may still read after the last change"
    )
    parser.add_argument("--json", type=Path, help="write the result here too")
    args = parser.parse_args()
    common.configure_logging()
    result = run(args)
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    common.write_json(args.json, result)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
