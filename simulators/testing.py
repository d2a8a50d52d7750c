"""Run simulators as real processes and talk to them over real HTTP: shared by the simulators' own
tests and the backend's pipeline tests. Nothing here imports Django.
"""

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
FAST_STEP_SECONDS = 0.1
STARTUP_SECONDS = 10.0
WEBHOOK_SECRET = "test-webhook-secret"
PROVIDERS = ("melange", "bueno", "uklon", "raketa")
SIMULATORS = (*PROVIDERS, "nominatim")  # the providers and the geocoder
# Where a simulator that pushes webhooks sends them, and their key: never inherited from this process.
WEBHOOK_VARIABLES = frozenset(
    f"{provider.upper()}_WEBHOOK_{suffix}" for provider in PROVIDERS for suffix in ("URL", "SECRET")
)
T = TypeVar("T")


def wait_until(probe: Callable[[], T], timeout: float = 5.0, interval: float = 0.01) -> T:
    """Calls ``probe`` until it returns something truthy, which is returned; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value {value!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def simulator_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any simulator settings, with ``PYTHONPATH`` to find the
    simulators, plus ``overrides``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SIM_") and key not in WEBHOOK_VARIABLES
    }
    env["PYTHONPATH"] = python_path(env)
    return {**env, "PYTHONUNBUFFERED": "1", "SIM_STEP_SECONDS": str(FAST_STEP_SECONDS), **overrides}


def python_path(env: dict[str, str]) -> str:
    """``PYTHONPATH`` for a simulator process: the repo root first, then the other entries ``env`` had."""
    entries = [str(ROOT), *env.get("PYTHONPATH", "").split(os.pathsep)]
    return os.pathsep.join(dict.fromkeys(entry for entry in entries if entry))


@dataclass
class Simulator:
    """A running simulator process and an HTTP client pointed at it."""

    provider: str
    process: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client
    initial_config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.client.base_url)

    def admin(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        response = self.client.request(method, f"/_sim/{path}", json=payload)
        assert response.status_code == 200, response.text
        return response.json()

    def configure(self, **settings: Any) -> dict[str, Any]:
        return self.admin("POST", "config", settings)

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "stats")

    def advance(self, order_id: str, status: str) -> dict[str, Any]:
        return self.admin("POST", "advance", {"id": order_id, "status": status})

    def restore(self) -> None:
        """Back to a clean slate between tests: start-up config, no orders, zero stats."""
        self.admin("POST", "reset")
        self.configure(**self.initial_config)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_simulator(
    provider: str, env: dict[str, str], log_dir: Path, args: list[str] | None = None, port: int | None = None
) -> Simulator:
    """Starts ``python -m simulators.<provider>`` (one of SIMULATORS) and waits for ``/_sim/health``.

    With ``args`` None the port is passed as ``--port``; a port someone else grabbed is retried.
    """
    if provider not in SIMULATORS:
        raise ValueError(f"no simulator {provider!r}; there are {SIMULATORS}")
    for _ in range(3):
        chosen_port = port or free_port()
        command_args = ["--host", "127.0.0.1", "--port", str(chosen_port)] if args is None else args
        log_path = log_dir / f"{provider}-{chosen_port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", f"simulators.{provider}", *command_args],
                cwd=ROOT,
                env={**env, "PYTHONPATH": python_path(env)},
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        client = httpx.Client(base_url=f"http://127.0.0.1:{chosen_port}", timeout=5.0)
        if _wait_for_health(process, client, provider):
            simulator = Simulator(provider, process, log_path, client)
            simulator.initial_config = simulator.admin("GET", "config")
            return simulator
        client.close()
        stop_process(process)
    raise AssertionError(f"{provider} simulator did not start:\n{log_path.read_text(errors='replace')}")


def _wait_for_health(process: subprocess.Popen[bytes], client: httpx.Client, provider: str) -> bool:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            response = client.get("/_sim/health")
            if response.status_code == 200 and response.json() == {"ok": True, "provider": provider}:
                return True
        time.sleep(0.02)
    return False


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_simulator(simulator: Simulator) -> None:
    simulator.client.close()
    stop_process(simulator.process)


@contextlib.contextmanager
def running(provider: str, env: dict[str, str], log_dir: Path, **kwargs: Any) -> Iterator[Simulator]:
    simulator = start_simulator(provider, env, log_dir, **kwargs)
    try:
        yield simulator
    finally:
        stop_simulator(simulator)
