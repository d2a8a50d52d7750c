"""HEALTHCHECK of the liveops image: probe whatever process this container runs as PID 1.

    python /app/docker/healthcheck.py         exit 0 healthy, 1 unhealthy
    python /app/docker/healthcheck.py ROLE    check the heartbeat file of ROLE (worker, beat, relay)

- web (`python -m core.serve`, which is daphne, or daphne itself): GET /healthz?scope=process on its
  --port; healthy on 200. That scope checks PostgreSQL, Redis and the broker, so a web replica that lost
  an engine turns unhealthy and nginx's `depends_on` and operators see it; it leaves out beat and the
  workers (the full /healthz judges those), so their outage does not take the site off.
- a provider simulator (python -m simulators.NAME --port N): GET /_sim/health on that port.
- celery worker, celery beat, `manage.py relay_events`: the age of the heartbeat file the process
  refreshes while it works (core.liveness) in HEARTBEAT_DIR; healthy while it is younger than
  6 × HEARTBEAT_SECONDS (beat, which refreshes it when it sends a poll tick: and 3 × the tick interval).
  A wedged worker loop, a beat that stopped ticking or a relay stuck in a database outage turn unhealthy.
- anything else (the one-shot migrate, a shell): nothing to probe, so it reports healthy;
  docker-compose.yml disables the check for migrate.

The role is read from PID 1's command line (the entrypoint execs the process, so PID 1 is it) rather
than from a variable, so the image's HEALTHCHECK is right for any command, whoever starts the container.
Standard library only; it runs every 30 s, so it imports nothing heavy.
"""

import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

TIMEOUT_SECONDS = 4
HEARTBEAT_ROLES = ("worker", "beat", "relay")
REPO = Path(__file__).resolve().parents[1]  # a relative HEARTBEAT_DIR is relative to it, as in settings


class Probe(NamedTuple):
    url: str
    host: str


def _option(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in argv."""
    for index, arg in enumerate(argv):
        if arg == name and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def public_host(allowed_hosts: str) -> str:
    """A Host header Django accepts: the first ALLOWED_HOSTS entry (Django answers 400 to any other).

    ".example.com" allows example.com and its subdomains; "*" allows anything.
    """
    first = next((host.strip() for host in allowed_hosts.split(",") if host.strip()), "*")
    if first == "*":
        return "localhost"
    return first.lstrip(".")


def probe_for(argv: list[str], environ: dict[str, str]) -> Probe | None:
    """What to probe for a process started with argv; None when it has no HTTP endpoint."""
    names = [Path(arg).name for arg in argv]
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    if "daphne" in names or module == "core.serve":
        port = _option(argv, "--port") or _option(argv, "-p") or "8000"
        return Probe(
            f"http://127.0.0.1:{port}/healthz?scope=process", public_host(environ.get("ALLOWED_HOSTS", ""))
        )
    if module.startswith("simulators."):
        port = _option(argv, "--port")
        if port is None:
            return None  # the simulator chose its port from SIM_PORT or its default: not known here
        return Probe(f"http://127.0.0.1:{port}/_sim/health", "127.0.0.1")
    return None


def heartbeat_role(argv: list[str]) -> str | None:
    """worker, beat or relay when argv starts one of them (a celery command, `manage.py relay_events`)."""
    names = [Path(arg).name for arg in argv]
    if "celery" in names:
        return next((arg for arg in argv[names.index("celery") + 1 :] if arg in ("worker", "beat")), None)
    if "manage.py" in names and "relay_events" in argv:
        return "relay"
    return None


def _seconds(environ: dict[str, str], name: str, default: float) -> float:
    try:
        return float(environ.get(name) or default)
    except ValueError:
        return default


def max_heartbeat_age(role: str, environ: dict[str, str]) -> float:
    """How old the role's heartbeat file may be: 6 refreshes missed; beat's also waits 3 poll ticks."""
    age = 6 * _seconds(environ, "HEARTBEAT_SECONDS", 10)
    if role == "beat":
        tick = max(1, round(_seconds(environ, "POLL_INTERVAL_SECONDS", 2)))
        age = max(age, 3 * tick)
    return age


def check_heartbeat(role: str, environ: dict[str, str]) -> tuple[bool, str]:
    path = REPO / (environ.get("HEARTBEAT_DIR") or ".run/heartbeats") / role
    limit = max_heartbeat_age(role, environ)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError as error:
        return False, f"{path}: no heartbeat ({error.strerror})"
    return age <= limit, f"{path}: refreshed {age:.0f}s ago (at most {limit:.0f}s)"


def check(probe: Probe) -> tuple[bool, str]:
    request = urllib.request.Request(probe.url, headers={"Host": probe.host})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return response.status == 200, f"{probe.url}: {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"{probe.url}: {error.code} {error.read(300).decode(errors='replace')}"
    except (OSError, ValueError) as error:
        return False, f"{probe.url}: {error}"


def pid1_argv() -> list[str]:
    return Path("/proc/1/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]


def main(args: list[str]) -> int:
    environ = dict(os.environ)
    role = args[0] if args else heartbeat_role(pid1_argv())
    if role is not None:
        if role not in HEARTBEAT_ROLES:
            sys.stderr.write(f"usage: healthcheck.py [{'|'.join(HEARTBEAT_ROLES)}]\n")
            return 2
        healthy, detail = check_heartbeat(role, environ)
        sys.stdout.write(f"{'healthy' if healthy else 'unhealthy'}: {role} {detail}\n")
        return 0 if healthy else 1
    probe = probe_for(pid1_argv(), environ)
    if probe is None:
        sys.stdout.write("no HTTP endpoint to probe in this process: healthy while it runs\n")
        return 0
    healthy, detail = check(probe)
    sys.stdout.write(f"{'healthy' if healthy else 'unhealthy'}: {detail}\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
