"""Reconnect storm: every operator socket of one web process dropped and reconnecting at once.

    PYTHONPATH=backend:. python -m bench.reconnect --sockets 1000 --rate 100 --warmup 10 --after-drop 20

Needs DATABASE_URL and REDIS_URL (`make bench` provides embedded ones); works in `<name>_bench` and a
channel-layer prefix of its own. Celery tasks go to Redis database 15 unless CELERY_BROKER_URL is set.

What a deploy or a network blip does to a busy board: `--sockets` operator sockets, held by client
processes of their own (at most bench.fanout.SOCKETS_PER_CLIENT_PROCESS each), connect to one web
process and take their snapshot; writers then change statuses at `--rate` per second (bench.fanout's
bulk writers: real events, released by the real relay, `manage.py relay_events`). `--warmup` seconds
in, every socket is closed at the same instant and reconnects at once, no waves, with
`?after=<highest seq it received>`, as the dashboard does (frontend/static/liveops/live.js); a
handshake that fails, or a socket closed before its first frame, is retried with the dashboard's
backoff (0.5 s doubling, with jitter), and counted. The writers keep going for `--after-drop` seconds.

A socket has caught up when it holds every event up to the head at the drop (the highest seq committed
at that instant): events reach a socket in seq order, so that is the first frame after which its
highest seq is at or above the head. `caught_up_s` is the drop to the last socket caught up; target
under 10 s. Each socket's whole life, before and after the storm, is checked against every event the
writers made (bench.ws_clients.check): nothing missing, no gap, no duplicate, no inversion.

Throughout, this process asks the web process for `/healthz?scope=process` and then `/healthz` every
200 ms, with docker/healthcheck.py's 4 s timeout. A check that fails, times out or answers other than
200 fails the run; for `/healthz` the engines' checks must pass (no beat or worker runs here, so its
beat and workers verdicts are not judged).

The run fails (`ok: false`, exit 1) on any socket that did not connect or reconnect, any missing event,
gap, duplicate or inversion, a frame the clients' parser misread, a socket that never caught up, a failed
health check, or a relay that wrote no counters. Missing the 10 s target is reported as missed.

JSON (`--json PATH`); keys are stable, bench/report.py reads them:
  ok, failures          passed; why not
  sockets, connected, reconnected
                        operator sockets asked for; connected with a snapshot; reconnected after the drop
  client_processes      processes holding them
  target_rate, changes, changes_per_s, duration_s, warmup_s
                        changes/s asked for, made, achieved; seconds driven; seconds before the drop
  head_at_drop          the highest seq committed when the sockets were dropped
  caught_up_s, caught_up_p50_s, caught_up_p99_s
                        from the drop to the last socket caught up; the median and 99th percentile socket
  not_caught_up         sockets that never caught up
  reconnect_p50_s, reconnect_p99_s, reconnect_max_s
                        from the drop to a socket's handshake completing again (retries included)
  retries               reconnections that failed and were retried (connect_retries: the same before
                        the drop, while the sockets first connect); resnapshots: sockets that got a
                        snapshot instead of a replay on resume (over REALTIME_RESUME_LIMIT behind)
  replayed_events       events with seqs up to the head that sockets received after reconnecting
  expected, received, missing, gaps, duplicates, inversions, unexpected, errors, error_samples,
  parse_mismatches      as in bench.fanout, over each socket's whole life
  health                probes, failures, failure_samples, and per scope (`process`, `full`): count,
                        p50_ms, p99_ms, worst_ms, worst_in_storm_ms (from the drop to the last socket
                        caught up)
  web_cpu_percent, web_peak_rss_mb, relay_cpu_percent, clients_cpu_percent,
  clients_max_process_cpu_percent, postgres_cpu_percent, redis_cpu_percent
                        while driving, as in bench.fanout
  profile, relay_profile, limits
                        py-spy of the web and relay processes from the drop on (`--after-drop` seconds);
                        limits: both in one line
  relay                 the relay's counters (orders.relay.RelayStats)
"""

import argparse
import asyncio
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import httpx
import psutil
import websockets

from bench import common, fanout, ws_clients

logger = logging.getLogger("bench.reconnect")
HEALTH_EVERY_SECONDS = 0.2
HEALTH_TIMEOUT_SECONDS = 4  # docker/healthcheck.py's
BACKOFF_FIRST_SECONDS = 0.5  # live.js's BACKOFF_FIRST_MS and BACKOFF_MAX_MS
BACKOFF_MAX_SECONDS = 10.0
MAX_ATTEMPTS = 20
CONNECT_TIMEOUT_SECONDS = 30  # for the handshake, and again for the first frame
ABANDON_AFTER_SECONDS = 30  # past the end time, sockets still connecting are given up (and reported)
# A dropped client does not wait long for the server's closing handshake before it reconnects.
CLOSE_TIMEOUT_SECONDS = 1


# --- the client processes ---------------------------------------------------------------------------------


class StormSocket(ws_clients.Socket):
    """A socket's life across the drop: what it received before and after, and when."""

    def __init__(self, token: str) -> None:
        super().__init__("/ws/operators/", token, "all")
        self.ws: Any = None
        self.dropped = False
        self.reconnected_at: float | None = None
        self.connect_retries = 0  # failed attempts before the first connection (not measured)
        self.retries = 0  # failed attempts to reconnect after the drop
        self.resnapshot = False
        self.high = 0  # the highest seq received
        self.high_at_drop = 0
        self.after_drop_at = array("d")  # each frame received after the drop: when, and the highest seq then
        self.after_drop_high = array("q")


async def _open(base: str, sock: StormSocket, query: str) -> Any:
    return await websockets.connect(
        f"{base}{sock.path}{query}",
        additional_headers=common.authorization(sock.token),  # never in the URL: refused there
        max_size=None,
        open_timeout=CONNECT_TIMEOUT_SECONDS,
        close_timeout=CLOSE_TIMEOUT_SECONDS,
        ping_interval=None,
    )


async def _read(sock: StormSocket, reader: ws_clients.Reader, stop_at: dict[str, float]) -> None:
    """Frames until the socket holds all it should, the end time, or the socket closes."""
    while not sock.done and time.time() < stop_at["t"]:
        try:
            frame = await asyncio.wait_for(sock.ws.recv(decode=False), timeout=1.0)
        except TimeoutError:
            continue
        _take(sock, reader, frame)


def _take(sock: StormSocket, reader: ws_clients.Reader, frame: bytes) -> None:
    """Record a frame; after the reconnect also when it came and the highest seq the socket then held."""
    before = len(sock.seqs)
    reader.take(sock, frame)
    if len(sock.seqs) > before:
        sock.high = max(sock.high, max(sock.seqs[before:]))
    if sock.reconnected_at is not None:
        if frame.startswith(b'{"type":"snapshot"'):
            sock.resnapshot = True
        sock.after_drop_at.append(time.time())
        sock.after_drop_high.append(sock.high)


async def _connect(base: str, sock: StormSocket, query: str, stop_at: dict[str, float]) -> bytes:
    """Open the socket and read its first frame, as the dashboard does: a handshake that fails, or a socket
    closed before its first frame (4503, or a handshake the server gave up on), is tried again with
    live.js's backoff until the end time, each failed attempt counted (`retries` once dropped, else
    `connect_retries`). Returns the first frame."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            sock.ws = await _open(base, sock, query)
            return await asyncio.wait_for(sock.ws.recv(decode=False), CONNECT_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.ConnectionClosed) as error:
            if sock.dropped:
                sock.retries += 1
            else:
                sock.connect_retries += 1
            if attempt == MAX_ATTEMPTS or time.time() > stop_at["t"]:
                raise
            ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1))
            logger.debug("connecting failed (%s); retrying", error)
            await asyncio.sleep(ceiling / 2 + random.random() * ceiling / 2)
    raise AssertionError("unreachable")


async def live(
    base: str,
    sock: StormSocket,
    reader: ws_clients.Reader,
    ready: asyncio.Event,
    drop_at: dict[str, float],
    stop_at: dict[str, float],
) -> None:
    """Connect and take the snapshot; read until the drop closes the socket; reconnect with `?after=`
    and read until complete or the end time. A socket closed after its first frame is a finding."""
    try:
        first = await _connect(base, sock, "", stop_at)
        if not first.startswith(b'{"type":"snapshot"'):
            raise RuntimeError(f"first frame is not a snapshot: {first[:80]!r}")
        ready.set()
        try:
            await _read(sock, reader, stop_at)
        except websockets.ConnectionClosed:
            if not sock.dropped:
                raise
        if not sock.dropped:
            return  # complete or out of time before any drop
        await sock.ws.wait_closed()
        sock.high_at_drop = sock.high
        first = await _connect(base, sock, f"?after={sock.high_at_drop}", stop_at)
        sock.reconnected_at = time.time()
        async with sock.ws:
            _take(sock, reader, first)
            await _read(sock, reader, stop_at)
    except Exception as error:  # a failed socket is a finding, reported per socket
        sock.error = f"{type(error).__name__}: {error}"
        ready.set()


async def drop_all(sockets: list[StormSocket], drop_file: Path, drop_at: dict[str, float]) -> None:
    """At the drop time the coordinator names, close every socket of this process at once."""
    while not drop_file.exists():
        await asyncio.sleep(0.05)
    drop_at["t"] = float(drop_file.read_text())
    await asyncio.sleep(max(0.0, drop_at["t"] - time.time()))
    open_sockets = [sock for sock in sockets if sock.ws is not None and not sock.error and not sock.done]
    for sock in open_sockets:
        sock.dropped = True
    await asyncio.gather(*(sock.ws.close() for sock in open_sockets), return_exceptions=True)


async def _clients(args: argparse.Namespace) -> dict[str, Any]:
    sockets = [StormSocket(args.token) for _ in range(args.count)]
    reader = ws_clients.Reader()
    readies = [asyncio.Event() for _ in sockets]
    drop_at: dict[str, float] = {"t": 0.0}
    stop_at = {"t": time.time() + 7200}
    tasks = []
    for start in range(0, len(sockets), ws_clients.WAVE):  # the first connections in waves, as fan-out's
        for index in range(start, min(start + ws_clients.WAVE, len(sockets))):
            tasks.append(
                asyncio.create_task(live(args.base, sockets[index], reader, readies[index], drop_at, stop_at))
            )
        await asyncio.gather(*(ready.wait() for ready in readies[start : start + ws_clients.WAVE]))
    Path(args.ready_file).write_text(str(sum(1 for sock in sockets if not sock.error)))
    dropper = asyncio.create_task(drop_all(sockets, Path(args.drop_file), drop_at))
    watcher = asyncio.create_task(
        ws_clients.watch_driver(Path(args.until_file), Path(args.expected_file), sockets, stop_at)
    )
    await watcher
    _, pending = await asyncio.wait(
        tasks, timeout=max(0.0, stop_at["t"] + ABANDON_AFTER_SECONDS - time.time())
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for sock in sockets:
        if sock.reconnected_at is None and sock.dropped and not sock.error:
            sock.error = "still reconnecting at the end"
    dropper.cancel()
    expected = json.loads(Path(args.expected_file).read_text())
    return summarise_process(sockets, reader, expected, drop_at["t"])


def summarise_process(
    sockets: list[StormSocket], reader: ws_clients.Reader, expected: dict[str, Any], drop_at: float
) -> dict[str, Any]:
    """This process's sockets: each one's checks, when it reconnected and when it caught up."""
    head = expected["head_at_drop"]
    per_socket = []
    for sock in sockets:
        if sock.error:
            continue
        figures = ws_clients.check(sock.seqs, expected["all"])
        caught = next(
            (at for at, high in zip(sock.after_drop_at, sock.after_drop_high, strict=True) if high >= head),
            None,
        )
        figures.update(
            dropped=sock.dropped,
            reconnect_s=None if sock.reconnected_at is None else sock.reconnected_at - drop_at,
            caught_up_s=None if caught is None else caught - drop_at,
            resnapshot=sock.resnapshot,
            replayed=sum(1 for seq in sock.seqs if sock.high_at_drop < seq <= head) if sock.dropped else 0,
        )
        per_socket.append(figures)
    return {
        "sockets": len(sockets),
        "errors": [sock.error for sock in sockets if sock.error],
        "parse_mismatches": reader.parse_mismatches,
        "retries": sum(sock.retries for sock in sockets),  # failed sockets' attempts included
        "connect_retries": sum(sock.connect_retries for sock in sockets),
        "per_socket": per_socket,
    }


def client_main(args: argparse.Namespace) -> None:
    Path(args.out).write_text(json.dumps(asyncio.run(_clients(args))))


# --- the coordinator --------------------------------------------------------------------------------------


class HealthProbe:
    """Asks the web process for /healthz?scope=process and /healthz every HEALTH_EVERY_SECONDS, in a
    thread; keeps each answer's time, latency and verdict."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.probes: list[tuple[float, str, float, str | None]] = []  # (at, scope, seconds, failure)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(HEALTH_TIMEOUT_SECONDS * 3)

    def _run(self) -> None:
        with httpx.Client(timeout=HEALTH_TIMEOUT_SECONDS) as client:
            while not self.stopping.is_set():
                started = time.monotonic()
                for scope, path in (("process", "/healthz?scope=process"), ("full", "/healthz")):
                    self.probes.append(self._probe(client, scope, path))
                self.stopping.wait(max(0.0, HEALTH_EVERY_SECONDS - (time.monotonic() - started)))

    def _probe(self, client: httpx.Client, scope: str, path: str) -> tuple[float, str, float, str | None]:
        at, started = time.time(), time.perf_counter()
        failure = None
        try:
            response = client.get(self.base + path)
            body = response.json()
            if scope == "process" and response.status_code != 200:
                failure = f"{path}: {response.status_code} {body.get('problems')}"
            elif scope == "full" and not all(check.get("ok") for check in body.get("checks", {}).values()):
                failure = f"{path}: {response.status_code} {body.get('problems')}"
        except (httpx.HTTPError, ValueError) as error:
            failure = f"{path}: {type(error).__name__}: {error}"
        return at, scope, time.perf_counter() - started, failure

    def summary(self, storm: tuple[float, float]) -> dict[str, Any]:
        failures = [
            f"{at - storm[0]:+.1f} s from the drop, after {seconds:.1f} s: {failure}"
            for at, _, seconds, failure in self.probes
            if failure
        ]
        result: dict[str, Any] = {
            "probes": len(self.probes),
            "failures": len(failures),
            "failure_samples": failures[:5],
        }
        for scope in ("process", "full"):
            seconds = [s for _, kind, s, _ in self.probes if kind == scope]
            in_storm = [s for at, kind, s, _ in self.probes if kind == scope and storm[0] <= at <= storm[1]]
            result[scope] = {
                "count": len(seconds),
                "p50_ms": common.ms(common.percentile(seconds, 0.5)),
                "p99_ms": common.ms(common.percentile(seconds, 0.99)),
                "worst_ms": common.ms(max(seconds, default=None)),
                "worst_in_storm_ms": common.ms(max(in_storm, default=None)),
            }
        return result


def start_clients(port: int, token: str, sockets: int, work: Path) -> list[subprocess.Popen]:
    per = fanout.SOCKETS_PER_CLIENT_PROCESS
    clients = []
    for index, start in enumerate(range(0, sockets, per)):
        command = [sys.executable, "-m", "bench.reconnect", "client", "--base", f"ws://127.0.0.1:{port}"]
        command += ["--token", token, "--count", str(min(per, sockets - start))]
        command += ["--ready-file", str(work / f"ready-{index}"), "--out", str(work / f"out-{index}")]
        command += ["--drop-file", str(work / "drop"), "--until-file", str(work / "until")]
        command += ["--expected-file", str(work / "expected.json")]
        clients.append(subprocess.Popen(command, cwd=common.REPO, env=common.python_path_env()))
    return clients


def head_seq() -> int:
    """The highest seq committed now (in a thread of its own: its own connection, closed after)."""
    from django.db import connection
    from django.db.models import Max

    from orders.models import OrderEvent

    try:
        return OrderEvent.objects.aggregate(head=Max("seq"))["head"] or 0
    finally:
        connection.close()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    broker = os.environ.get("CELERY_BROKER_URL")
    env = {"CHANNEL_LAYER_PREFIX": f"bench-reconnect-{os.getpid()}"}
    if broker:
        env["CELERY_BROKER_URL"] = broker
    common.setup_django(**env)
    try:
        return _measure(args)
    finally:
        common.purge_broker()


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    token, _ = fanout.prepare_couriers(0)
    window = max(1, args.orders // args.writers)
    tag = f"reconnect-{os.getpid()}"
    driver = fanout.Writers([fanout.BulkDriver([], window, f"{tag}-w{n}") for n in range(args.writers)])
    work = Path(tempfile.mkdtemp(prefix="bench-reconnect-"))
    port = common.free_port()
    # --sockets (1,000) sockets of one operator user: no per-user socket cap
    web = common.start_web(port, work / "web.log", **common.SOCKET_CAP_OFF)
    relay: subprocess.Popen | None = None
    relay_stats: dict | None = None
    clients: list[subprocess.Popen] = []
    health = HealthProbe(port)
    drop: dict[str, Any] = {}
    profiles: dict[str, str] = {}
    try:
        relay = common.start_relay(work / "relay.log", work / "relay.json")
        clients = start_clients(port, token, args.sockets, work)
        logger.info("connecting %d operator sockets from %d client processes ...", args.sockets, len(clients))
        connected = fanout.wait_connected(clients, work)
        logger.info(
            "%d/%d connected; %d changes/s, all dropped at %g s and reconnecting at once, then %g s more",
            connected,
            args.sockets,
            args.rate,
            args.warmup,
            args.after_drop,
        )
        sampler = fanout.Sampler(
            [psutil.Process(web.pid)], psutil.Process(relay.pid), [psutil.Process(c.pid) for c in clients]
        )
        drop["at"] = time.time() + args.warmup
        (work / "drop").write_text(repr(drop["at"]))

        def at_drop() -> None:
            """The head at the drop, then py-spy over what follows."""
            time.sleep(max(0.0, drop["at"] - time.time()))
            drop["head"] = head_seq()
            if args.profile:
                samplers = [
                    threading.Thread(
                        target=lambda key=key, pid=pid: profiles.update(
                            {key: common.profile(pid, args.after_drop, work / f"{key}.pyspy")}
                        ),
                        daemon=True,
                    )
                    for key, pid in (("profile", web.pid), ("relay_profile", relay.pid))
                ]
                for thread in samplers:
                    thread.start()
                for thread in samplers:
                    thread.join()

        dropper = threading.Thread(target=at_drop, daemon=True)
        health.start()
        dropper.start()
        with sampler.measuring() as usage:
            driven = driver.run(args.rate, args.warmup + args.after_drop)
        dropper.join()
        if usage["driver_cpu_percent"] is not None:
            usage["driver_cpu_percent"] += fanout._percent(driver.cpu_seconds, sampler.elapsed)
        expected = {"all": [seq for seq, _, _ in driver.produced], "head_at_drop": drop["head"]}
        (work / "expected.json").write_text(json.dumps(expected))
        (work / "until").write_text(str(time.time() + args.grace))
        logger.info(
            "%d changes in %.1f s; clients read until complete or %g s ...",
            len(expected["all"]),
            driven,
            args.grace,
        )
        for client in clients:
            client.wait(timeout=args.grace + 120)
        health.stop()
    finally:
        health.stopping.set()
        for client in clients:
            common.stop(client)
        if relay is not None:
            relay_stats = common.stop_relay(relay, work / "relay.json")
        common.stop(web)
    outs = [json.loads((work / f"out-{i}").read_text()) for i in range(len(clients))]
    result = summarise(outs, drop, health, args)
    result.update(
        connected=connected,
        client_processes=len(clients),
        target_rate=args.rate,
        changes=len(driver.produced),
        changes_per_s=round(len(driver.produced) / driven, 1),
        duration_s=round(driven, 1),
        warmup_s=args.warmup,
        **{key: usage.get(key) for key in USAGE_KEYS},
        **profiles,
        relay=relay_stats and {k: round(v, 1) if isinstance(v, float) else v for k, v in relay_stats.items()},
    )
    if result.get("profile"):
        result["limits"] = f"web process: {result['profile']}"
        if result.get("relay_profile"):
            result["limits"] += f"; relay process: {result['relay_profile']}"
    result["failures"] = failures(result)
    result["ok"] = not result["failures"]
    logger.info(
        "%s: %d/%d reconnected, all caught up in %s s (p50 %s s), %s retries, %s missing, %s duplicates, "
        "%s inversions; health checks: %s failed, worst %s ms (process) / %s ms (full); web CPU %s%%",
        "ok" if result["ok"] else "FAILED (" + "; ".join(result["failures"]) + ")",
        result["reconnected"],
        result["sockets"],
        result["caught_up_s"],
        result["caught_up_p50_s"],
        result["retries"],
        result["missing"],
        result["duplicates"],
        result["inversions"],
        result["health"]["failures"],
        result["health"]["process"]["worst_ms"],
        result["health"]["full"]["worst_ms"],
        result["web_cpu_percent"],
    )
    return result


USAGE_KEYS = (
    "web_cpu_percent",
    "web_peak_rss_mb",
    "relay_cpu_percent",
    "driver_cpu_percent",
    "clients_cpu_percent",
    "clients_max_process_cpu_percent",
    "postgres_cpu_percent",
    "redis_cpu_percent",
)


def summarise(outs: list[dict], drop: dict[str, Any], health: HealthProbe, args: argparse.Namespace) -> dict:
    sockets = [figures for out in outs for figures in out["per_socket"]]
    errors = [error for out in outs for error in out["errors"]]
    caught = [s["caught_up_s"] for s in sockets if s["caught_up_s"] is not None]
    reconnects = [s["reconnect_s"] for s in sockets if s["reconnect_s"] is not None]
    caught_up = None if len(caught) < len(sockets) or not sockets else round(max(caught), 2)
    return {
        "sockets": args.sockets,
        "reconnected": len(reconnects),
        "head_at_drop": drop.get("head"),
        "caught_up_s": caught_up,
        "caught_up_p50_s": _round(common.percentile(caught, 0.5)),
        "caught_up_p99_s": _round(common.percentile(caught, 0.99)),
        "not_caught_up": len(sockets) - len(caught),
        "reconnect_p50_s": _round(common.percentile(reconnects, 0.5)),
        "reconnect_p99_s": _round(common.percentile(reconnects, 0.99)),
        "reconnect_max_s": _round(max(reconnects, default=None)),
        "retries": sum(out["retries"] for out in outs),
        "connect_retries": sum(out["connect_retries"] for out in outs),
        "resnapshots": sum(1 for s in sockets if s["resnapshot"]),
        "replayed_events": sum(s["replayed"] for s in sockets),
        "expected": sum(s["expected"] for s in sockets),
        "received": sum(s["received"] for s in sockets),
        **{
            key: sum(s[key] for s in sockets)
            for key in ("missing", "gaps", "duplicates", "inversions", "unexpected")
        },
        "errors": len(errors),
        "error_samples": errors[:5],
        "parse_mismatches": sum(out["parse_mismatches"] for out in outs),
        "health": health.summary((drop.get("at", 0.0), drop.get("at", 0.0) + max(caught, default=0.0))),
    }


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


def failures(result: dict[str, Any]) -> list[str]:
    reasons = []
    if result["connected"] < result["sockets"] or result["errors"]:
        reasons.append(f"{result['sockets'] - result['connected']} not connected, {result['errors']} errored")
    if result["reconnected"] < result["connected"]:
        reasons.append(f"{result['connected'] - result['reconnected']} did not reconnect")
    if result["not_caught_up"]:
        reasons.append(f"{result['not_caught_up']} never caught up")
    for key in ("missing", "gaps", "duplicates", "inversions", "parse_mismatches"):
        if result[key]:
            reasons.append(f"{result[key]:,} {key.replace('_', ' ')}")
    if result["health"]["failures"]:
        reasons.append(f"{result['health']['failures']} health checks failed")
    if result["relay"] is None:
        reasons.append("the relay wrote no counters")
    if result["changes"] == 0:
        reasons.append("no change was made")
    return reasons


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sockets", type=int, default=1000, help="operator sockets on the web process")
    parser.add_argument("--rate", type=int, default=100, help="status changes per second, throughout")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of changes before the drop")
    parser.add_argument("--after-drop", type=float, default=20, help="seconds of changes after the drop")
    parser.add_argument("--orders", type=int, default=300, help="active orders on the board at once")
    parser.add_argument("--writers", type=int, default=2, help="processes applying changes")
    parser.add_argument(
        "--grace", type=float, default=30.0, help="seconds clients may still read after the last change"
    )
    parser.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip py-spy (web and relay processes)"
    )


def _client_options(client: argparse.ArgumentParser) -> None:
    for name in ("base", "token", "ready-file", "drop-file", "until-file", "expected-file", "out"):
        client.add_argument(f"--{name}", required=True)
    client.add_argument("--count", type=int, required=True)


def main() -> None:
    common.main(__doc__, _options, measure, _client_options, client_main)


if __name__ == "__main__":
    main()
