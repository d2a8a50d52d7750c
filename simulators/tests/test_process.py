"""Start-up from the environment, auth, signals: each test runs its own simulator process."""

import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from simulators.tests.conftest import ROOT, Launch, free_port, simulator_env, stop_process, wait_until

ORDER = {"order": [{"dish": "borscht", "quantity": 1}]}


def test_faults_from_the_environment(launch: Launch) -> None:
    melange = launch("melange", SIM_DOWN="yes", SIM_ERROR_RATE="0.5", SIM_TIMEOUT_SECONDS="3")
    config = melange.admin("GET", "config")
    assert config["down"] is True
    assert config["error_rate"] == 0.5
    assert config["timeout_seconds"] == 3.0
    assert config["step_seconds"] == 0.1
    assert melange.client.post("/api/orders", json=ORDER).status_code == 503


def test_port_and_host_from_the_environment(launch: Launch) -> None:
    port = free_port()
    uklon = launch("uklon", args=[], port=port, SIM_PORT=str(port), SIM_HOST="127.0.0.1")
    assert uklon.client.get("/_sim/health").json() == {"ok": True, "provider": "uklon"}


@pytest.mark.parametrize(
    ("provider", "variable", "value"),
    [
        ("melange", "SIM_ERROR_RATE", "lots"),
        ("uklon", "SIM_STEP_SECONDS", "0"),
        ("melange", "SIM_PORT", "eighty"),
        ("uklon", "SIM_SEED", "x"),
        ("bueno", "SIM_WEBHOOK_OUT_OF_ORDER", "maybe"),
        ("bueno", "BUENO_WEBHOOK_URL", "ftp://example.invalid/hook"),
    ],
)
def test_a_bad_environment_value_stops_start_up_naming_the_variable(
    provider: str, variable: str, value: str
) -> None:
    port_args = [] if variable == "SIM_PORT" else ["--port", str(free_port())]
    result = subprocess.run(
        [sys.executable, "-m", f"simulators.{provider}", *port_args],
        cwd=ROOT,
        env=simulator_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode != 0
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_api_key_is_required_on_provider_endpoints_only(launch: Launch) -> None:
    melange = launch("melange", SIM_API_KEY="s3cret")
    missing = melange.client.post("/api/orders", json=ORDER)
    assert missing.status_code == 401
    assert missing.json()["error"]
    wrong = melange.client.post("/api/orders", json=ORDER, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    good = melange.client.post("/api/orders", json=ORDER, headers={"Authorization": "Bearer s3cret"})
    assert good.status_code == 201
    assert melange.client.get("/_sim/stats").status_code == 200


def test_sigterm_and_sigint_stop_cleanly(launch: Launch) -> None:
    for provider, signum in (("bueno", signal.SIGTERM), ("uklon", signal.SIGINT)):
        simulator = launch(provider)
        simulator.process.send_signal(signum)
        assert simulator.process.wait(timeout=5) == 0
        assert "stopped" in simulator.log_text()


def test_port_0_picks_a_free_port_and_logs_it(tmp_path) -> None:
    log_path = tmp_path / "melange.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "simulators.melange", "--port", "0"],
            cwd=ROOT,
            env=simulator_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        found = wait_until(lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)", log_path.read_text()))
        port = int(found.group(1))
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/_sim/health").json() == {"ok": True, "provider": "melange"}
    finally:
        stop_process(process)
    assert process.returncode == 0


def test_sigterm_does_not_wait_for_a_hanging_request(launch: Launch) -> None:
    melange = launch("melange", SIM_TIMEOUT_RATE="1", SIM_TIMEOUT_SECONDS="60")
    with pytest.raises(httpx.ReadTimeout):
        melange.client.get("/api/orders/x", timeout=0.3)
    started = time.monotonic()
    melange.process.send_signal(signal.SIGTERM)
    assert melange.process.wait(timeout=5) == 0
    assert time.monotonic() - started < 3


def test_same_seed_gives_the_same_faults(launch: Launch) -> None:
    def outcomes(seed: str) -> list[int]:
        melange = launch("melange", SIM_SEED=seed, SIM_ERROR_RATE="0.5")
        return [melange.client.get("/api/orders/x").status_code for _ in range(30)]

    first, second = outcomes("7"), outcomes("7")
    assert first == second
    assert set(first) == {404, 500}


def test_logs_one_line_per_request(launch: Launch) -> None:
    melange = launch("melange")
    melange.client.get("/api/orders/missing")
    line = wait_until(
        lambda: next((x for x in melange.log_text().splitlines() if "GET /api/orders/missing" in x), None)
    )
    assert "INFO" in line
    assert " 404 " in line
    assert line.endswith("ms")
