"""Shared machinery of the provider simulators.

A provider module subclasses ``ProviderSimulator`` with its statuses, paths, input validation and
response shape; everything else lives here: the threaded HTTP server, settings from the environment
and ``/_sim/config``, authentication, fault injection, the in-memory store, the lazy time-based
status progression, ``Idempotency-Key`` handling and the ``/_sim/`` admin endpoints.
"""

import argparse
import hmac
import json
import logging
import math
import os
import random
import re
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 1_000_000
MAX_LIST_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MIN_QUANTITY, MAX_QUANTITY = 1, 50
UNKNOWN_STATUS = "quantum"
GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"
IDLE_CONNECTION_SECONDS = 120


class ConfigError(Exception):
    """An environment variable has a value the simulator cannot start with."""


class ApiError(Exception):
    """Stops handling a request; answered as ``{"error": message}`` with the given status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# --- Settings ----------------------------------------------------------------------------------


def parse_rate(value: object) -> float:
    """A probability between 0 and 1."""
    number = _parse_number(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError("must be a number between 0 and 1")
    return number


def parse_non_negative(value: object) -> float:
    number = _parse_number(value)
    if number < 0:
        raise ValueError("must be a number >= 0")
    return number


def parse_positive(value: object) -> float:
    number = _parse_number(value)
    if number <= 0:
        raise ValueError("must be a number > 0")
    return number


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
    raise ValueError("must be true or false")


def _parse_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


@dataclass(frozen=True)
class Setting:
    """A runtime-changeable setting: its ``/_sim/config`` key, environment variable and parser."""

    key: str
    env: str
    parse: Callable[[object], Any]
    default: Any


COMMON_SETTINGS: tuple[Setting, ...] = (
    Setting("step_seconds", "SIM_STEP_SECONDS", parse_positive, 20.0),
    Setting("error_rate", "SIM_ERROR_RATE", parse_rate, 0.0),
    Setting("latency_ms", "SIM_LATENCY_MS", parse_non_negative, 0.0),
    Setting("timeout_rate", "SIM_TIMEOUT_RATE", parse_rate, 0.0),
    Setting("timeout_seconds", "SIM_TIMEOUT_SECONDS", parse_non_negative, 30.0),
    Setting("garbage_rate", "SIM_GARBAGE_RATE", parse_rate, 0.0),
    Setting("unknown_status_rate", "SIM_UNKNOWN_STATUS_RATE", parse_rate, 0.0),
    Setting("backwards_rate", "SIM_BACKWARDS_RATE", parse_rate, 0.0),
    Setting("down", "SIM_DOWN", parse_bool, False),
)


def settings_from_env(settings: Sequence[Setting], environ: Mapping[str, str]) -> dict[str, Any]:
    """Each setting's value from its environment variable, or its default when unset or blank."""
    config: dict[str, Any] = {}
    for setting in settings:
        raw = environ.get(setting.env, "").strip()
        try:
            config[setting.key] = setting.parse(raw) if raw else setting.default
        except ValueError as exc:
            raise ConfigError(f"{setting.env}={raw!r}: {exc}") from None
    return config


def merge_settings(
    settings: Sequence[Setting], current: Mapping[str, Any], update: Mapping[str, Any]
) -> dict[str, Any]:
    """``current`` with the keys of ``update`` parsed and replaced; ApiError 400 on a bad key or value."""
    by_key = {setting.key: setting for setting in settings}
    unknown = sorted(set(update) - set(by_key))
    if unknown:
        raise ApiError(400, f"unknown config keys {unknown}; known keys: {sorted(by_key)}")
    merged = dict(current)
    for key, value in update.items():
        try:
            merged[key] = by_key[key].parse(value)
        except ValueError as exc:
            raise ApiError(400, f"{key}: {exc}") from None
    return merged


def env_int(environ: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer environment variable within [low, high], or ``default`` when unset or blank."""
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be an integer") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={raw!r}: must be between {low} and {high}")
    return value


# --- Requests, responses, routing and input validation -----------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Message
    body: bytes

    def json_object(self, *, optional: bool = False) -> dict[str, Any]:
        """The body as a JSON object; ``{}`` for an empty body when ``optional``."""
        if optional and not self.body.strip():
            return {}
        try:
            payload = json.loads(self.body)
        except (ValueError, RecursionError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "request body must be a JSON object")
        return payload


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode("utf-8"), headers=dict(headers or {}))


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(status, {"error": message}, headers)


@dataclass(frozen=True)
class Route:
    """``handler(request, *groups)`` answers ``method`` on paths that fully match ``pattern``."""

    method: str
    pattern: re.Pattern[str]
    handler: Callable[..., Response]


def dispatch(routes: Sequence[Route], request: Request) -> Response:
    """Calls the handler of the matching route; ApiError 405 or 404 when there is none."""
    allowed = []
    for route in routes:
        match = route.pattern.fullmatch(request.path)
        if match is None:
            continue
        if route.method == request.method:
            return route.handler(request, *match.groups())
        allowed.append(route.method)
    if allowed:
        raise ApiError(405, f"method {request.method} not allowed here", {"Allow": ", ".join(allowed)})
    raise ApiError(404, f"no endpoint at {request.path}")


def require_text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string")
    return value


def require_list(value: object, name: str, *, min_length: int = 1) -> list[Any]:
    if not isinstance(value, list) or not min_length <= len(value) <= MAX_LIST_LENGTH:
        raise ApiError(400, f"{name} must be a list of {min_length} to {MAX_LIST_LENGTH} entries")
    return value


def require_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer from {low} to {high}")
    return value


def parse_line_items(
    payload: Mapping[str, Any], list_key: str, name_key: str, quantity_key: str
) -> list[dict[str, Any]]:
    """A kitchen's list of ``{name_key: str, quantity_key: int}`` entries, validated and without extras."""
    items = []
    for position, item in enumerate(require_list(payload.get(list_key), list_key)):
        where = f"{list_key}[{position}]"
        if not isinstance(item, dict):
            raise ApiError(400, f"{where} must be an object")
        items.append(
            {
                name_key: require_text(item.get(name_key), f"{where}.{name_key}"),
                quantity_key: require_int(
                    item.get(quantity_key), f"{where}.{quantity_key}", MIN_QUANTITY, MAX_QUANTITY
                ),
            }
        )
    return items


def iso_utc(timestamp: float) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2025-01-31T12:00:00.000Z``."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- State -------------------------------------------------------------------------------------


@dataclass
class SubOrder:
    """A stored order. Its status is derived: ``base_index`` was reached at ``anchor``, then one
    status per step follows. ``anchor`` is monotonic; ``anchor_wall`` is the same moment by the wall clock."""

    id: str
    data: dict[str, Any]
    anchor: float
    anchor_wall: float
    base_index: int = 0


@dataclass(frozen=True)
class Snapshot:
    """An order as seen at one moment; ``progress`` (0..1) is how far into its current status it is."""

    id: str
    data: Mapping[str, Any]
    index: int
    status: str
    progress: float
    updated_at: str


@dataclass
class Stats:
    requests: int = 0
    creates: int = 0
    idempotent_replays: int = 0
    gets: int = 0
    gets_by_id: Counter[str] = field(default_factory=Counter)
    webhooks_sent: int = 0
    webhooks_failed: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        return {**vars(self), "gets_by_id": dict(self.gets_by_id), "faults": dict(self.faults)}


class ProviderSimulator:
    """One provider's API. Subclasses set the class attributes and implement the hooks below."""

    name: ClassVar[str]
    default_port: ClassVar[int]
    statuses: ClassVar[tuple[str, ...]]
    collection_path: ClassVar[str]  # POST here creates; GET <collection>/<id> reads
    id_prefix: ClassVar[str]
    settings: ClassVar[tuple[Setting, ...]] = COMMON_SETTINGS

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.log = logging.getLogger(f"simulators.{self.name}")
        self._lock = threading.Lock()
        self._config = settings_from_env(self.settings, environ)
        self._api_key = environ.get("SIM_API_KEY", "").strip() or None
        self._rng = random.Random(env_int(environ, "SIM_SEED", None, -(2**63), 2**63 - 1))
        self._orders: dict[str, SubOrder] = {}
        self._idempotency_keys: dict[str, str] = {}
        self._stats = Stats()
        item_pattern = re.escape(self.collection_path.rstrip("/")) + "/([^/]+)"
        self._provider_routes = (
            Route("POST", re.compile(re.escape(self.collection_path)), self._create),
            Route("GET", re.compile(item_pattern), self._get),
        )
        self._admin_routes = (
            Route("GET", re.compile("/_sim/health"), self._health),
            Route("GET", re.compile("/_sim/config"), self._get_config),
            Route("POST", re.compile("/_sim/config"), self._update_config),
            Route("GET", re.compile("/_sim/stats"), self._get_stats),
            Route("POST", re.compile("/_sim/reset"), self._reset),
            Route("POST", re.compile("/_sim/advance"), self._advance),
        )

    # Hooks for the provider modules.

    def parse_create(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The order data to store from a create body; raises ApiError(400) on bad input."""
        raise NotImplementedError

    def describe(self, snapshot: Snapshot) -> dict[str, Any]:
        """The body of ``GET <collection>/<id>``."""
        raise NotImplementedError

    def describe_created(self, snapshot: Snapshot) -> dict[str, Any]:
        """The body answering a create."""
        return {"id": snapshot.id, "status": snapshot.status}

    def start_background(self) -> None:
        """Starts background work (Bueno's webhooks); called once the server listens."""

    def stop_background(self) -> None:
        """Stops what ``start_background`` started."""

    # Entry point of every request.

    def handle(self, request: Request) -> Response:
        try:
            if request.path.startswith("/_sim/"):
                return dispatch(self._admin_routes, request)
            return self._handle_provider(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.headers)

    @property
    def auth_required(self) -> bool:
        return self._api_key is not None

    @property
    def config(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._config)

    def reset(self) -> None:
        """Forgets all orders, idempotency keys and stats; the config stays."""
        with self._lock:
            self._orders.clear()
            self._idempotency_keys.clear()
            self._stats = Stats()

    # Provider endpoints, behind faults and auth.

    def _handle_provider(self, request: Request) -> Response:
        config = self.config
        with self._lock:
            self._stats.requests += 1
        if config["latency_ms"]:
            self._count_fault("latency")
            time.sleep(config["latency_ms"] / 1000)
        if config["down"]:
            self._count_fault("down")
            return error_response(503, f"{self.name} is down (simulated)")
        self._check_auth(request)
        if self._fault("timeout", config["timeout_rate"]):
            # Hang, then carry on: the caller has given up, but a create still happens.
            time.sleep(config["timeout_seconds"])
        if self._fault("error", config["error_rate"]):
            return error_response(500, "simulated internal error")
        if self._fault("garbage", config["garbage_rate"]):
            return Response(200, GARBAGE_BODY, "text/html; charset=utf-8")
        return dispatch(self._provider_routes, request)

    def _check_auth(self, request: Request) -> None:
        if self._api_key is None:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._api_key}".encode()):
            raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    def _create(self, request: Request) -> Response:
        data = self.parse_create(request.json_object())
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key.strip()) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        now = time.monotonic()
        with self._lock:
            existing_id = self._idempotency_keys.get(key) if key else None
            if existing_id is not None:
                order = self._orders[existing_id]
                if order.data != data:
                    raise ApiError(409, "Idempotency-Key was already used with a different body")
                self._stats.idempotent_replays += 1
                status = 200
            else:
                order = SubOrder(f"{self.id_prefix}{uuid.uuid4().hex[:16]}", data, now, time.time())
                self._orders[order.id] = order
                if key:
                    self._idempotency_keys[key] = order.id
                self._stats.creates += 1
                status = 201
            snapshot = self._snapshot(order, now)
        return json_response(status, self.describe_created(snapshot))

    def _get(self, request: Request, order_id: str) -> Response:
        config = self.config
        unknown = self._fault("unknown_status", config["unknown_status_rate"])
        backwards = not unknown and self._chance(config["backwards_rate"])
        with self._lock:
            self._stats.gets += 1
            order = self._orders.get(order_id)
            if order is None:
                raise ApiError(404, f"order {order_id!r} not found")
            self._stats.gets_by_id[order_id] += 1
            snapshot = self._snapshot(order, time.monotonic())
            if backwards and snapshot.index > 0:
                self._stats.faults["backwards"] += 1
                snapshot = self._snapshot_at(order, snapshot.index - 1, progress=1.0)
        if unknown:
            snapshot = replace(snapshot, status=UNKNOWN_STATUS)
        return json_response(200, self.describe(snapshot))

    # Status progression; callers hold the lock.

    def _snapshot(self, order: SubOrder, now: float) -> Snapshot:
        step = self._config["step_seconds"]
        last = len(self.statuses) - 1
        index = min(order.base_index + int(max(now - order.anchor, 0.0) / step), last)
        reached = order.anchor + (index - order.base_index) * step
        progress = 1.0 if index == last else min((now - reached) / step, 1.0)
        return self._snapshot_at(order, index, progress)

    def _snapshot_at(self, order: SubOrder, index: int, progress: float) -> Snapshot:
        updated_at = iso_utc(self._reached_wall(order, index))
        return Snapshot(order.id, order.data, index, self.statuses[index], progress, updated_at)

    def _reached_wall(self, order: SubOrder, index: int) -> float:
        """Wall-clock time at which ``order`` reached status ``index``."""
        return order.anchor_wall + max(index - order.base_index, 0) * self._config["step_seconds"]

    def _rebase(self, order: SubOrder, now: float) -> None:
        """Pins ``order`` to its current status, so that a new step length cannot move it back."""
        index = self._snapshot(order, now).index
        reached = order.anchor + (index - order.base_index) * self._config["step_seconds"]
        order.anchor_wall += reached - order.anchor
        order.anchor = reached
        order.base_index = index

    # Randomness.

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def _fault(self, kind: str, rate: float) -> bool:
        """Draws whether a fault of ``kind`` happens now and counts it when it does."""
        happens = self._chance(rate)
        if happens:
            self._count_fault(kind)
        return happens

    def _count_fault(self, kind: str) -> None:
        with self._lock:
            self._stats.faults[kind] += 1

    # Admin endpoints: no auth, no faults.

    def _health(self, request: Request) -> Response:
        return json_response(200, {"ok": True, "provider": self.name})

    def _get_config(self, request: Request) -> Response:
        return json_response(200, self.config)

    def _update_config(self, request: Request) -> Response:
        update = request.json_object()
        with self._lock:
            config = merge_settings(self.settings, self._config, update)
            if config["step_seconds"] != self._config["step_seconds"]:
                now = time.monotonic()
                for order in self._orders.values():
                    self._rebase(order, now)
            self._config = config
        self.log.info("config updated: %s", update)
        return json_response(200, config)

    def _get_stats(self, request: Request) -> Response:
        with self._lock:
            return json_response(200, self._stats.as_json())

    def _reset(self, request: Request) -> Response:
        self.reset()
        self.log.info("orders and stats reset")
        return json_response(200, {"ok": True})

    def _advance(self, request: Request) -> Response:
        payload = request.json_object()
        order_id, status = payload.get("id"), payload.get("status")
        if status not in self.statuses:
            raise ApiError(400, f"status must be one of {list(self.statuses)}")
        with self._lock:
            order = self._orders.get(order_id) if isinstance(order_id, str) else None
            if order is None:
                raise ApiError(404, f"order {order_id!r} not found")
            order.base_index = self.statuses.index(status)
            order.anchor, order.anchor_wall = time.monotonic(), time.time()
            snapshot = self._snapshot(order, order.anchor)
        return json_response(200, self.describe(snapshot))


# --- HTTP server -------------------------------------------------------------------------------


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: ProviderSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, SimulatorRequestHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("client %s went away", client_address)
        else:
            log.error("error while serving %s", client_address, exc_info=error)


class SimulatorRequestHandler(BaseHTTPRequestHandler):
    """Reads the request, lets the simulator answer it, writes the answer and logs one line."""

    protocol_version = "HTTP/1.1"
    timeout = IDLE_CONNECTION_SECONDS
    disable_nagle_algorithm = True  # headers and body are separate writes: don't let them wait for ACKs
    server: SimulatorServer

    def _handle(self) -> None:
        started = time.monotonic()
        simulator = self.server.simulator
        try:
            request = Request(self.command, urlsplit(self.path).path, self.headers, self._read_body())
            response = simulator.handle(request)
        except ApiError as exc:  # the body could not be read: this connection cannot go on
            self.close_connection = True
            response = error_response(exc.status, exc.message, exc.headers)
        except Exception:
            simulator.log.exception("failed to handle %s %s", self.command, self.path)
            response = error_response(500, "internal simulator error")
        self._send(response)
        elapsed_ms = (time.monotonic() - started) * 1000
        simulator.log.info("%s %s %d %.1fms", self.command, self.path, response.status, elapsed_ms)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "chunked bodies are not supported: send Content-Length")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise ApiError(400, "invalid Content-Length") from None
        if length < 0:
            raise ApiError(400, "invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise ApiError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
        except ConnectionError:
            self.close_connection = True
            log.debug("client went away before the answer to %s %s", self.command, self.path)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors found by http.server itself (bad request line, unsupported method) as JSON."""
        self.close_connection = True
        self._send(error_response(code, message or HTTPStatus(code).phrase))
        log.warning("%r answered %d %s", getattr(self, "requestline", ""), code, message or "")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug(format, *args)


# --- Process entry point -----------------------------------------------------------------------


def run(simulator_class: type[ProviderSimulator], argv: Sequence[str] | None = None) -> int:
    """Runs one simulator until SIGTERM or SIGINT; returns the process exit code."""
    name = simulator_class.name
    parser = argparse.ArgumentParser(
        prog=f"python -m simulators.{name}", description=f"{name.title()} provider API simulator"
    )
    parser.add_argument("--host", help=f"address to listen on (env SIM_HOST, default {DEFAULT_HOST})")
    parser.add_argument(
        "--port", type=int, help=f"port to listen on (env SIM_PORT, default {simulator_class.default_port})"
    )
    args = parser.parse_args(argv)
    environ = os.environ
    try:
        _configure_logging(environ.get("SIM_LOG_LEVEL", "INFO"))
        host = args.host or environ.get("SIM_HOST", "").strip() or DEFAULT_HOST
        port = args.port
        if port is None:
            port = env_int(environ, "SIM_PORT", simulator_class.default_port, 0, 65535)
        simulator = simulator_class(environ)
    except ConfigError as exc:
        logging.getLogger(f"simulators.{name}").error("cannot start: %s", exc)
        return 2
    try:
        server = SimulatorServer((host, port), simulator)
    except OSError as exc:
        simulator.log.error("cannot listen on %s:%s: %s", host, port, exc)
        return 1

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        simulator.log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"{name}-http", daemon=True
    ).start()
    simulator.start_background()
    bound_host, bound_port = server.server_address[:2]
    simulator.log.info(
        "listening on http://%s:%s, config %s, auth %s",
        bound_host,
        bound_port,
        simulator.config,
        "on" if simulator.auth_required else "off",
    )
    stop.wait()
    server.shutdown()
    server.server_close()
    simulator.stop_background()
    simulator.log.info("stopped")
    return 0


def _configure_logging(level_name: str) -> None:
    level = logging.getLevelName(level_name.strip().upper())
    if not isinstance(level, int):
        raise ConfigError(f"SIM_LOG_LEVEL={level_name!r}: must be DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))  # Bueno logs its own webhook lines
