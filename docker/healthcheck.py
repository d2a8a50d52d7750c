"""HEALTHCHECK of the liveops image: probe whatever process this container runs as PID 1.

    python /app/docker/healthcheck.py        exit 0 healthy, 1 unhealthy

- web (`python -m core.serve`, which is daphne, or daphne itself): GET /healthz on its --port; healthy
  on 200. The view itself checks PostgreSQL, Redis and the broker, so a web replica that lost an engine
  turns unhealthy and nginx's `depends_on` and operators see it.
- a provider simulator (python -m simulators.NAME --port N): GET /_sim/health on that port.
- anything else (celery worker and beat, the one-shot migrate, a shell): there is no HTTP endpoint to
  probe, so it reports healthy; docker-compose.yml disables the check for those services.

The role is read from PID 1's command line (the entrypoint execs the process, so PID 1 is it) rather
than from a variable, so the image's HEALTHCHECK is right for any command, whoever starts the container.
Standard library only; it runs every 30 s, so it imports nothing heavy.
"""

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

TIMEOUT_SECONDS = 4


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
        return Probe(f"http://127.0.0.1:{port}/healthz", public_host(environ.get("ALLOWED_HOSTS", "")))
    if module.startswith("simulators."):
        port = _option(argv, "--port")
        if port is None:
            return None  # the simulator chose its port from SIM_PORT or its default: not known here
        return Probe(f"http://127.0.0.1:{port}/_sim/health", "127.0.0.1")
    return None


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


def main() -> int:
    probe = probe_for(pid1_argv(), dict(os.environ))
    if probe is None:
        sys.stdout.write("no HTTP endpoint to probe in this process: healthy while it runs\n")
        return 0
    healthy, detail = check(probe)
    sys.stdout.write(f"{'healthy' if healthy else 'unhealthy'}: {detail}\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
