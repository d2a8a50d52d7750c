"""What every benchmark needs: its own database, Django set up in the driving process, a web process
and the event relay.

Benchmarks never touch real data: they work in `<name>_bench` next to DATABASE_URL's database (emptied
and re-seeded each run) and send Celery tasks to Redis database 15 (BENCH_BROKER_DB), which nothing
consumes here. Their rate-limit counters and socket leases live under a Redis key prefix of their own
(LIMITS_KEY_PREFIX).

The abuse limits (.env.default, "Sign-in and abuse limits") stay as deployed, except those a benchmark's
load trips by design, which it lifts in the web process it starts and only there (SOCKET_CAP_OFF,
ORDER_RATE_OFF below; bench/report.py lists them in docs/benchmarks.md).
"""

import argparse
import json
import logging
import math
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
from dotenv import dotenv_values

logger = logging.getLogger("bench")
REPO = Path(__file__).resolve().parent.parent
# Redis database of the Celery tasks a benchmark queues for nobody; BENCH_BROKER_DB gives runs that share a
# Redis server at the same time databases of their own (each run purges its own at the end).
BROKER_DB = int(os.environ.get("BENCH_BROKER_DB", "15"))
WEB_START_TIMEOUT_SECONDS = 60

# Limits a benchmark's load trips by design, to pass to start_web(**...) by the benchmarks that need them:
# hundreds of sockets of one operator (fan-out, idle, the soak's 21) over REALTIME_SOCKETS_PER_USER ...
SOCKET_CAP_OFF = {"REALTIME_SOCKETS_PER_USER": "0"}
# ... and one customer's clients creating orders as fast as they can (REST creation) or at --rate for
# minutes (soak), over THROTTLE_ORDER_CREATE_PER_USER.
ORDER_RATE_OFF = {"THROTTLE_ORDER_CREATE_PER_USER": "1000000/minute"}


def bench_database_url(suffix: str = "bench") -> str:
    """DATABASE_URL's database renamed `<name>_<suffix>`."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    name = parts.path.lstrip("/") or "liveops"
    return urlunsplit(parts._replace(path=f"/{name}_{suffix}"))


def ensure_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = psycopg.connect(urlunsplit(parts._replace(path="/postgres")), autocommit=True)
    with admin.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def setup_django(database_suffix: str = "bench", **env: str) -> None:
    """Points this process (and the processes it starts) at the bench database (`<name>_<database_suffix>`)
    with production settings, sets Django up, migrates, empties and seeds it."""
    os.environ["DATABASE_URL"] = bench_database_url(database_suffix)
    redis = urlsplit(os.environ["REDIS_URL"])
    os.environ["CELERY_BROKER_URL"] = urlunsplit(redis._replace(path=f"/{BROKER_DB}"))
    os.environ["LOG_LEVEL"] = "WARNING"
    # Production settings: DEBUG off (no query log, no debug cursor), so real secrets (core/settings.py
    # refuses .env.default's), and no redirect to https:// (the processes speak plain HTTP).
    shipped = dotenv_values(REPO / ".env.default")
    for name in ["SECRET_KEY"] + [key for key in shipped if key.endswith(("_API_KEY", "_WEBHOOK_SECRET"))]:
        os.environ[name] = secrets.token_urlsafe(50)
    os.environ["DEMO_PASSWORD"] = secrets.token_urlsafe(16)
    os.environ.update(DEBUG="false", SECURE_SSL_REDIRECT="false", ALLOWED_HOSTS="127.0.0.1,localhost")
    os.environ["LIMITS_KEY_PREFIX"] = f"bench-limits-{os.getpid()}"  # meets no other run's counters
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    logging.getLogger("bench").setLevel(logging.INFO)  # Django's LOGGING just set the root to WARNING
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    call_command("seed_demo", verbosity=0)


def purge_broker() -> None:
    """Drops the Celery tasks a benchmark queued for nobody."""
    import redis

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()


def python_path_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "backend"), str(REPO)])
    return env


def start_web(port: int, log: Path, **env: str) -> subprocess.Popen:
    """One web process (core.serve: daphne with its body limit), as the Procfile starts it, answering
    /healthz."""
    with open(log, "wb") as out:
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.serve",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "core.asgi:application",
            ],
            cwd=REPO,
            env=python_path_env(WEB_PORT=str(port), **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + WEB_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if web.poll() is not None:
            break
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz?scope=process", timeout=2).status_code == 200:
                return web
        except httpx.HTTPError:
            time.sleep(0.2)
    web.kill()
    raise RuntimeError(f"web process did not start: {log.read_text()[-2000:]}")


def start_relay(log: Path, stats_file: Path, **env: str) -> subprocess.Popen:
    """The event relay (`manage.py relay_events`), as the Procfile starts it, on the bench database and
    with this process's environment (channel-layer prefix included) plus `env`. Returns once it leads
    (holds orders.relay.LEADER_LOCK); refuses to start while another relay leads on the bench database,
    since ours would only stand by. `stop_relay` stops it and reads the counters it writes to `stats_file`.
    """
    if _relay_leading():
        raise RuntimeError("another relay is releasing events on the bench database; stop it first")
    with open(log, "wb") as out:
        relay = subprocess.Popen(
            [sys.executable, "backend/manage.py", "relay_events", "--stats-file", str(stats_file)],
            cwd=REPO,
            env=python_path_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + WEB_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline and relay.poll() is None:
        if _relay_leading():
            return relay
        time.sleep(0.2)
    stop(relay)
    raise RuntimeError(f"relay did not start: {log.read_text()[-2000:]}")


def stop_relay(relay: subprocess.Popen, stats_file: Path) -> dict | None:
    """SIGTERM, as a deploy stops it; the relay's counters (orders.relay.RelayStats), or None."""
    stop(relay, timeout=30)
    try:
        return json.loads(stats_file.read_text())
    except (OSError, ValueError):
        logger.warning("the relay wrote no stats (exit code %s)", relay.returncode)
        return None


def _relay_leading() -> bool:
    """Whether a relay holds the leader lock in this process's database (an advisory lock on a bigint
    key shows in pg_locks as its high and low 32 bits)."""
    from django.db import connection

    from orders.relay import LEADER_LOCK

    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
                 AND classid::bigint * 4294967296 + objid::bigint = %s
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))""",
            [LEADER_LOCK],
        )
        return cursor.fetchone()[0]


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def profile(pid: int, seconds: float, out: Path) -> str:
    """Samples `pid` with py-spy for `seconds`; returns the top functions by own time, or why not."""
    command = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(seconds))),
        "--format",
        "raw",
        "--output",
        str(out),
        "--nonblocking",
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=seconds + 30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"no profile: {error}"
    return top_frames(out)


def top_frames(raw: Path, count: int = 8) -> str:
    """Summarises py-spy's collapsed stacks: the functions most often on top of the stack."""
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        leaf = stack.split(";")[-1]
        name = leaf.split(" (")[0] + " (" + leaf.split(" (")[-1].split("/")[-1] if " (" in leaf else leaf
        own[name] = own.get(name, 0) + int(samples)
        total += int(samples)
    if not total:
        return "no samples"
    ranked = sorted(own.items(), key=lambda item: item[1], reverse=True)[:count]
    return "; ".join(f"{name} {100 * samples / total:.0f}%" for name, samples in ranked)


def machine() -> dict:
    """The machine and the versions a figure depends on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    packages = [
        "django",
        "channels",
        "channels-redis",
        "daphne",
        "celery",
        "redis",
        "psycopg",
        "aiohttp",
    ]
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": _server_version("postgresql"),
        "redis_server": _server_version("redis"),
        "versions": versions,
    }


def _server_version(kind: str) -> str | None:
    try:
        if kind == "postgresql":
            import psycopg

            connection = psycopg.connect(os.environ["DATABASE_URL"])
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                version = cursor.fetchone()[0]
            connection.close()
            return version
        import redis

        return redis.Redis.from_url(os.environ["REDIS_URL"]).info("server")["redis_version"]
    except Exception as error:  # a missing version is not worth failing a benchmark for
        logger.warning("could not read the %s version: %s", kind, error)
        return None


def write_json(path: Path | None, result: dict) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)


def main(
    doc: str,
    options: Callable[[argparse.ArgumentParser], None],
    measure: Callable[[argparse.Namespace], dict],
    client_options: Callable[[argparse.ArgumentParser], None],
    client: Callable[[argparse.Namespace], None],
) -> None:
    """A benchmark's command line: `measure` writes JSON (`--json`) and exits 1 unless the result is ok;
    the `client` subcommand is the load process the benchmark starts itself."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    client_options(
        parser.add_subparsers(dest="command").add_parser("client", help="internal: a load process")
    )
    options(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.command == "client":
        client(args)
        return
    configure_logging()
    result = measure(args)
    write_json(args.json, result)
    sys.exit(0 if result["ok"] else 1)


def api_token(username: str) -> str:
    """A new API token of `username` (django-rest-knox stores only its hash: this is the one chance to
    read it). For the REST and WebSocket clients, which send it as `Authorization: Token <token>`."""
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    return AuthToken.objects.create(user=get_user_model().objects.get(username=username))[1]


def authorization(token: str) -> dict[str, str]:
    """The header that signs a client in: REST (httpx `headers=`) and WebSocket (websockets.connect's
    `additional_headers=`) alike. A token in a WebSocket URL is refused."""
    return {"Authorization": f"Token {token}"}
