"""The Docker deployment, end to end on a real engine: `make docker-smoke` (docs/docker.md, "Smoke test").

Builds the images with the offline kit (cached), starts the stack under its own compose project
(`liveops-smoke`) with its own env file in a temporary directory, then drives it through nginx only:
demo data, sign-in, an order followed on the operators' WebSocket to `delivered`, its email in the mail
catcher, a web restart with the socket resumed by `?after=`, two workers, and the data kept across
`down`/`up`. Everything it created (containers, network, volumes, env file) is removed at the end, on
failure too. The repository's own `.env` is never read or written.

Run with the project's virtualenv (httpx, websockets, pyyaml): `.venv/bin/python docker/smoke.py`.
"""

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import websockets
import yaml

REPO = Path(__file__).resolve().parent.parent
DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
COMPOSE = os.environ.get("COMPOSE", "docker-compose")
PROJECT = os.environ.get("SMOKE_PROJECT", "liveops-smoke")
SIM_STEP_SECONDS = "0.5"
# The compose profiles started: the stand-ins, never `monitoring` (its images have no offline stand-in).
PROFILES = "demo"
START_TIMEOUT = 240  # seconds for every service to turn healthy (or, for migrate, to exit 0)
DELIVERY_TIMEOUT = 90  # seconds for an order to reach `delivered` with SIM_STEP_SECONDS above
ADDRESS = "Khreshchatyk St, 1"
TERMINAL = {"delivered", "failed", "cancelled"}


class SmokeError(Exception):
    """A check failed; the message says what was expected and what was seen."""


def say(line: str) -> None:
    """One line of the report, at once (make and CI logs buffer otherwise)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args: list[str], *, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        raise SmokeError(f"`{' '.join(args)}` exited {result.returncode}:\n  " + "\n  ".join(output[-25:]))
    return result


def wait_for(what: str, probe: Callable[[], object], timeout: float, interval: float = 1.0) -> object:
    """probe() until it returns something truthy; SmokeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except (httpx.HTTPError, SmokeError) as error:
            last_error = error
        time.sleep(interval)
    raise SmokeError(
        f"{what}: not within {timeout:.0f} s" + (f" (last error: {last_error})" if last_error else "")
    )


class Smoke:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.env_file = workdir / ".env"
        self.port = free_port()
        self.mail_port = free_port()
        self.base = f"http://localhost:{self.port}"
        self.http = httpx.Client(base_url=self.base, timeout=15)
        self.mail = httpx.Client(base_url=f"http://127.0.0.1:{self.mail_port}", timeout=10)
        self.password = ""
        self.tokens: dict[str, str] = {}
        self.dishes: list[list[int]] = []  # dish ids per restaurant
        self.orders: list[int] = []
        self.high_seq = 0
        self.results: list[tuple[str, float, str]] = []

    # --- plumbing ---------------------------------------------------------------------------------

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        # --project-directory: compose reads this directory's .env, for `${...}` and for `env_file: .env`.
        base = [COMPOSE, "--project-name", PROJECT, "--project-directory", str(self.workdir)]
        return run([*base, "--file", str(REPO / "docker-compose.yml"), *args], timeout=timeout, check=check)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        except Exception as error:
            elapsed = time.monotonic() - started
            self.results.append((name, elapsed, "FAIL"))
            say(f"FAIL  {name}  ({elapsed:.1f} s)")
            raise SmokeError(f"step '{name}' failed: {error}") from error
        elapsed = time.monotonic() - started
        self.results.append((name, elapsed, "ok"))
        say(f"ok    {name}  ({elapsed:.1f} s)")

    def api(self, method: str, path: str, user: str, **kwargs: object) -> object:
        response = self.http.request(
            method, path, headers={"Authorization": f"Token {self.tokens[user]}"}, **kwargs
        )
        if response.status_code >= 400:
            raise SmokeError(f"{method} {path} as {user}: {response.status_code} {response.text[:300]}")
        return response.json()

    def containers(self) -> list[dict]:
        ids = self.compose("ps", "--all", "-q").stdout.split()
        if not ids:
            return []
        return json.loads(run([DOCKER, "inspect", *ids]).stdout)

    def logs(self, service: str, lines: int = 20) -> str:
        return self.compose("logs", "--no-color", "--tail", str(lines), service, check=False).stdout.strip()

    def wait_healthy(self, workers: int = 1) -> None:
        """Every service healthy (running, for those without a check), migrate exited 0; bounded."""
        # docker-compose 1.x's `config --services` lists every profile's services: keep those PROFILES starts.
        config = yaml.safe_load(self.compose("config").stdout)
        services = [
            name
            for name, service in config["services"].items()
            if not service.get("profiles") or set(service["profiles"]) & set(PROFILES.split(","))
        ]
        expected = {service: 1 for service in services} | {"worker": workers}
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            waiting: dict[str, str] = {}
            seen: dict[str, int] = {}
            for container in self.containers():
                service = container["Config"]["Labels"]["com.docker.compose.service"]
                state = container["State"]
                if service == "migrate":
                    if state["Status"] == "exited" and state["ExitCode"] != 0:
                        raise SmokeError(f"migrate exited {state['ExitCode']}:\n{self.logs('migrate')}")
                    ready = state["Status"] == "exited"
                else:
                    health = state.get("Health", {}).get("Status")
                    ready = state["Status"] == "running" and health in (None, "healthy")
                    if not ready:
                        waiting[service] = f"{state['Status']}{f' ({health})' if health else ''}"
                seen[service] = seen.get(service, 0) + ready
            for service, count in expected.items():
                if seen.get(service, 0) < count and service not in waiting:
                    waiting[service] = f"{seen.get(service, 0)} of {count} ready"
            if not waiting:
                return
            if time.monotonic() > deadline:
                details = "\n".join(
                    f"{service}: {status}; its last log lines:\n{self.logs(service)}"
                    for service, status in sorted(waiting.items())
                )
                raise SmokeError(
                    f"not ready after {START_TIMEOUT} s: {', '.join(sorted(waiting))}\n{details}"
                )
            time.sleep(2)

    def sign_in(self, user: str) -> None:
        response = self.http.post("/api/auth/token/", json={"username": user, "password": self.password})
        if response.status_code != 200:
            raise SmokeError(f"sign-in as {user}: {response.status_code} {response.text[:300]}")
        self.tokens[user] = response.json()["token"]

    def create_order(self, restaurants: int = 2) -> int:
        items = [{"dish": dishes[0], "quantity": 1} for dishes in self.dishes[:restaurants]]
        order = self.api(
            "POST", "/api/orders/", "customer", json={"items": items, "delivery_address": ADDRESS}
        )
        self.orders.append(order["id"])
        return order["id"]

    def socket_url(self, after: int | None = None) -> str:
        return f"ws://localhost:{self.port}/ws/operators/" + (f"?after={after}" if after is not None else "")

    async def follow(
        self, after: int | None, until: Callable[[dict[int, str]], bool], setup=None
    ) -> list[dict]:
        """Events on the operators' socket until `until(statuses)`; a snapshot is refused after `after`."""
        headers = {"Authorization": f"Token {self.tokens['operator']}"}
        events: list[dict] = []
        statuses: dict[int, str] = {}
        async with websockets.connect(
            self.socket_url(after), additional_headers=headers, open_timeout=15
        ) as ws:
            if setup:
                await asyncio.to_thread(setup)
            deadline = time.monotonic() + DELIVERY_TIMEOUT
            while not until(statuses):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SmokeError(f"orders not finished on the socket in {DELIVERY_TIMEOUT} s: {statuses}")
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), remaining))
                except TimeoutError:
                    continue
                if frame["type"] == "snapshot":
                    if after is not None:
                        raise SmokeError(f"resuming after seq {after} got a snapshot instead of the events")
                    self.high_seq = max(self.high_seq, frame["seq"])
                    statuses.update({order["id"]: order["status"] for order in frame["orders"]})
                elif frame["type"] == "events":
                    for event in frame["events"]:
                        events.append(event)
                        self.high_seq = max(self.high_seq, event["seq"])
                        # protocol v2: `to` is the order's status once the event applies
                        order_id = event["order"]["id"]
                        statuses[order_id] = event.get("to") or statuses.get(order_id, "")
                elif frame["type"] == "error":
                    raise SmokeError(f"socket error frame: {frame}")
        return events

    def order_detail(self, order_id: int) -> dict:
        return self.api("GET", f"/api/orders/{order_id}/", "operator")

    def check_no_duplicate_transitions(self, order_id: int) -> None:
        detail = self.order_detail(order_id)
        if detail["status"] != "delivered":
            raise SmokeError(f"order {order_id} is {detail['status']}, not delivered")
        # A provider status applied to a leg is recorded once: as `order.status` when it moved the order,
        # else as `leg.status`; both carry the leg and its provider status (orders.services.leg_apply_status).
        transitions: dict[str, list[str]] = {}
        for event in detail["events"]:
            if event["type"] in ("leg.status", "order.status") and event["leg"] and event["provider_status"]:
                transitions.setdefault(f"leg {event['leg']}", []).append(event["provider_status"])
            if event["type"] == "order.status":
                transitions.setdefault("order", []).append(event["to"])
        for leg in detail["legs"]:
            recorded = transitions.get(f"leg {leg['id']}", [])
            if leg["provider_status"] not in recorded:
                raise SmokeError(
                    f"order {order_id}: leg {leg['id']} ({leg['kind']}) is {leg['provider_status']!r} "
                    f"with no event recording it: {recorded}"
                )
        for owner, statuses in transitions.items():
            if len(statuses) != len(set(statuses)):
                raise SmokeError(f"order {order_id}: {owner} has a duplicate transition: {statuses}")

    # --- the steps --------------------------------------------------------------------------------

    def ensure_images(self) -> None:
        run(["tools/ensure-debian-tools", "--docker"], timeout=900)
        run(["docker/offline/build-images"], timeout=1800)

    def write_env(self) -> None:
        run([sys.executable, "docker/make_env.py", "--output", str(self.env_file), "--public-url", self.base])
        overrides = {
            "COMPOSE_PROJECT_NAME": PROJECT,
            "COMPOSE_PROFILES": PROFILES,
            "NGINX_PORT": str(self.port),
            "MAILPIT_UI_PORT": str(self.mail_port),
            "SIM_STEP_SECONDS": SIM_STEP_SECONDS,
        }
        lines = []
        for line in self.env_file.read_text().splitlines():
            name = line.split("=", 1)[0]
            lines.append(f"{name}={overrides[name]}" if "=" in line and name in overrides else line)
        self.env_file.write_text("\n".join(lines) + "\n")
        run([sys.executable, "docker/make_env.py", "--check", str(self.env_file)])
        for line in lines:
            if line.startswith("DEMO_PASSWORD="):
                self.password = line.split("=", 1)[1]

    def start(self, workers: int = 1) -> None:
        self.compose("up", "-d", "--no-build", "--scale", f"worker={workers}", timeout=600)
        self.wait_healthy(workers)
        wait_for("/healthz 200 through nginx", lambda: self.http.get("/healthz").status_code == 200, 60)
        static = self.http.get("/static/liveops/liveops.css")  # nginx serves what the image collected
        if static.status_code != 200 or b"{" not in static.content:
            raise SmokeError(f"/static/liveops/liveops.css answered {static.status_code}")

    def seed_and_sign_in(self) -> None:
        self.compose("exec", "-T", "web", "python", "backend/manage.py", "seed_demo", timeout=120)
        self.sign_in("customer")
        self.sign_in("operator")
        restaurants = self.api("GET", "/api/restaurants/", "customer")
        self.dishes = [[dish["id"] for dish in restaurant["dishes"]] for restaurant in restaurants]
        if len(self.dishes) < 2 or not all(self.dishes[:2]):
            raise SmokeError(f"expected two restaurants with dishes, got {len(self.dishes)}")

    def first_order(self) -> None:
        created: list[int] = []
        asyncio.run(
            self.follow(
                None,
                lambda statuses: bool(created) and statuses.get(created[0]) in TERMINAL,
                setup=lambda: created.append(self.create_order()),
            )
        )
        status = self.order_detail(created[0])["status"]
        if status != "delivered":
            raise SmokeError(f"order {created[0]} ended {status}")
        say(f"      order {created[0]} delivered; highest seq {self.high_seq}")

    def email(self) -> None:
        order_id = self.orders[0]

        def delivered_mail() -> bool:
            messages = self.mail.get("/api/v1/messages").json()["messages"]
            return any(
                any(to["Address"] == "customer@example.com" for to in message["To"])
                and str(order_id) in message["Subject"]
                for message in messages
            )

        wait_for(f"an email to customer@example.com about order {order_id}", delivered_mail, 30)

    def restart_and_resume(self) -> None:
        after = self.high_seq
        restart = subprocess.Popen(
            [COMPOSE, "--project-name", PROJECT, "--project-directory", str(self.workdir),
             "--file", str(REPO / "docker-compose.yml"), "restart", "web"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            time.sleep(1)  # web is stopping: the order is taken once it answers again
            refused = []

            def order_while_restarting() -> int:
                try:
                    return self.create_order()
                except (httpx.HTTPError, SmokeError) as error:
                    refused.append(error)
                    raise

            second = wait_for("creating an order while web restarts", order_while_restarting, 90)
        finally:
            output, _ = restart.communicate(timeout=120)
        if restart.returncode != 0:
            raise SmokeError(f"docker-compose restart web exited {restart.returncode}: {output}")
        self.wait_healthy()
        targets = [self.orders[0], second]
        events = asyncio.run(self.follow(after, lambda statuses: statuses.get(second) in TERMINAL))
        seqs = [event["seq"] for event in events]
        if seqs != sorted(seqs) or len(seqs) != len(set(seqs)):
            raise SmokeError(f"events after {after} not in strictly ascending seq order: {seqs}")
        if any(seq <= after for seq in seqs):
            raise SmokeError(f"resume after {after} replayed older events: {seqs}")
        for order_id in targets:
            expected = [
                event["seq"] for event in self.order_detail(order_id)["events"] if event["seq"] > after
            ]
            expected = [seq for seq in expected if seq <= max(seqs, default=after)]
            got = [event["seq"] for event in events if event["order"]["id"] == order_id]
            if got != expected:
                raise SmokeError(f"order {order_id}: events on the socket {got}, in the database {expected}")
        say(
            f"      order {second} taken after {len(refused)} refused attempts during the restart; "
            f"resumed after seq {after}: {len(events)} events, every one once and in order"
        )

    def two_workers(self) -> None:
        self.start(workers=2)
        new = [self.create_order(restaurants=2 if index % 2 == 0 else 1) for index in range(4)]

        def all_finished() -> bool:
            return all(self.order_detail(order_id)["status"] in TERMINAL for order_id in new)

        wait_for(f"orders {new} finished", all_finished, DELIVERY_TIMEOUT, interval=2)
        for order_id in self.orders:
            self.check_no_duplicate_transitions(order_id)
        tasks = {}
        for container in self.containers():
            if container["Config"]["Labels"]["com.docker.compose.service"] == "worker":
                log = (
                    run([DOCKER, "logs", container["Id"]]).stderr
                    + run([DOCKER, "logs", container["Id"]]).stdout
                )
                tasks[container["Name"].lstrip("/")] = log.count(" succeeded in ")
        say(f"      orders {new} delivered, no duplicate transition; tasks per worker: {tasks}")

    def survives_restart(self) -> None:
        self.compose("down", timeout=180)
        self.start()
        self.sign_in("operator")
        for order_id in self.orders:
            status = self.order_detail(order_id)["status"]
            if status != "delivered":
                raise SmokeError(f"order {order_id} after down/up: {status}")

    def cleanup(self) -> None:
        self.http.close()
        self.mail.close()
        if self.env_file.exists():
            self.compose("down", "-v", "--remove-orphans", timeout=180, check=False)


def main() -> int:
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="liveops-smoke-"))
    smoke = Smoke(workdir)
    failure = None
    try:
        with smoke.step(
            "engine and images (tools/ensure-debian-tools --docker, docker/offline/build-images)"
        ):
            smoke.ensure_images()
        with smoke.step(f"env file in {workdir} (site on port {smoke.port}, mail UI {smoke.mail_port})"):
            smoke.write_env()
        with smoke.step("up -d --no-build: every service healthy, migrate exited 0, /healthz 200"):
            smoke.start()
        with smoke.step("seed_demo, sign in as customer and operator, two restaurants"):
            smoke.seed_and_sign_in()
        with smoke.step("two-restaurant order followed on /ws/operators/ to delivered"):
            smoke.first_order()
        with smoke.step("delivery email in the mail catcher"):
            smoke.email()
        with smoke.step("restart web, order meanwhile, resume ?after=seq: every event once, in order"):
            smoke.restart_and_resume()
        with smoke.step("--scale worker=2: four orders delivered, no duplicate leg/order transition"):
            smoke.two_workers()
        with smoke.step("down (volumes kept), up: every order still there"):
            smoke.survives_restart()
    except SmokeError as error:
        failure = error
    except Exception as error:  # noqa: BLE001 - report it as the failing step, after cleanup
        failure = SmokeError(f"{type(error).__name__}: {error}")
    finally:
        try:
            with smoke.step("down -v, env file removed"):
                smoke.cleanup()
                for path in workdir.iterdir():
                    path.unlink()
                workdir.rmdir()
        except SmokeError as error:
            failure = failure or error
    total = time.monotonic() - started
    passed = sum(status == "ok" for _, _, status in smoke.results)
    say(f"\n{passed} of {len(smoke.results)} steps ok, {len(smoke.orders)} orders, {total:.0f} s in all")
    if failure:
        sys.stderr.write(f"FAILED: {failure}\n")
        return 1
    say("docker-smoke passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
