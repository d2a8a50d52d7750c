"""Shared machinery of the provider simulators.

A provider module subclasses ``ProviderSimulator`` with its statuses, paths, input validation and
response shape; everything else lives here: the asyncio HTTP/1.1 server, settings from the environment
and ``/_sim/config``, authentication, fault injection, the in-memory store, the lazy time-based
status progression, cancellation, ``Idempotency-Key`` handling and the ``/_sim/`` admin endpoints.
"""

import argparse
import asyncio
import hmac
import json
import logging
import math
import os
import random
import re
import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
MAX_BODY_BYTES = 1_000_000
MAX_LIST_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MIN_QUANTITY, MAX_QUANTITY = 1, 50
UNKNOWN_STATUS = "quantum"
CANCELLED = "cancelled"  # a cancelled order's status, whatever the provider
GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"
IDLE_CONNECTION_SECONDS = 120
MAX_HEAD_BYTES = 65_536  # request line and headers, as http.server allowed
MAX_HEADERS = 100
SERVED_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


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


class Headers(dict[str, str]):
    """Request headers by lower-cased name; ``get`` ignores case. The first of repeated headers wins."""

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(name.lower(), default)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Headers
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
    status per step follows. ``anchor`` is monotonic; ``anchor_wall`` is the same moment by the wall clock.
    A cancelled order (``cancelled_at``, wall clock) stays where it was, at ``cancelled_progress``."""

    id: str
    data: dict[str, Any]
    anchor: float
    anchor_wall: float
    base_index: int = 0
    cancelled_at: float | None = None
    cancelled_progress: float = 0.0


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
    cancels: int = 0
    cancel_replays: int = 0
    cancels_refused: int = 0
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
    # POST <collection>/<id>/cancel is refused (409) from this status on: the food is cooked, the parcel
    # delivered
    cancel_refused_from: ClassVar[str]
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
            Route("POST", re.compile(item_pattern + "/cancel"), self._cancel),
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

    # Entry point of every request. Async only so that injected delays wait without blocking the
    # server's other connections; everything else is quick and synchronous.

    async def handle(self, request: Request) -> Response:
        try:
            if request.path.startswith("/_sim/"):
                return dispatch(self._admin_routes, request)
            return await self._handle_provider(request)
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

    async def _handle_provider(self, request: Request) -> Response:
        config = self.config
        with self._lock:
            self._stats.requests += 1
        if config["latency_ms"]:
            self._count_fault("latency")
            await asyncio.sleep(config["latency_ms"] / 1000)
        if config["down"]:
            self._count_fault("down")
            return error_response(503, f"{self.name} is down (simulated)")
        self._check_auth(request)
        if self._fault("timeout", config["timeout_rate"]):
            # Hang, then carry on: the caller has given up, but a create still happens.
            await asyncio.sleep(config["timeout_seconds"])
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

    def _cancel(self, request: Request, order_id: str) -> Response:
        """Cancels an order that is not too far along; 409 once it is. Cancelling again answers 200."""
        request.json_object(optional=True)  # no fields yet, but a body must be JSON if there is one
        now = time.monotonic()
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                raise ApiError(404, f"order {order_id!r} not found")
            if order.cancelled_at is not None:
                self._stats.cancel_replays += 1
            else:
                snapshot = self._snapshot(order, now)
                if snapshot.index >= self.statuses.index(self.cancel_refused_from):
                    self._stats.cancels_refused += 1
                    raise ApiError(409, f"already {snapshot.status}")
                self._rebase(order, now)  # pin it where it is: it advances no more
                order.cancelled_at, order.cancelled_progress = time.time(), snapshot.progress
                self._stats.cancels += 1
            snapshot = self._snapshot(order, now)
        self.log.info("order %s cancelled", order_id)
        return json_response(200, self.describe(snapshot))

    # Status progression; callers hold the lock.

    def _snapshot(self, order: SubOrder, now: float) -> Snapshot:
        if order.cancelled_at is not None:
            updated_at = iso_utc(order.cancelled_at)
            return Snapshot(
                order.id, order.data, order.base_index, CANCELLED, order.cancelled_progress, updated_at
            )
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
            order.cancelled_at = None  # forced on: a cancelled order is no longer cancelled
            snapshot = self._snapshot(order, order.anchor)
        return json_response(200, self.describe(snapshot))


# --- HTTP server -------------------------------------------------------------------------------


class BadRequest(Exception):
    """The request itself (line, headers or body framing) is unusable: answer and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RequestHead:
    method: str
    target: str
    keep_alive: bool
    headers: Headers


class SimulatorServer:
    """HTTP/1.1 with keep-alive, every connection a coroutine on one event loop.

    One loop instead of a thread per connection: a request costs a fraction of the CPU (no GIL
    hand-offs between threads), and injected delays (latency, timeout faults) are timers, so hundreds
    of connections can wait at once. Only what the simulators need: Content-Length bodies (chunked
    ones are refused with 411), ``Expect: 100-continue``, errors as JSON.
    """

    def __init__(self, simulator: ProviderSimulator) -> None:
        self.simulator = simulator
        self._connections: set[asyncio.Task[None]] = set()
        self._date = (0, "")

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # headers and body go out in one write, but don't let a later small answer wait for ACKs
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("client %s went away", writer.get_extra_info("peername"))
        except asyncio.CancelledError:
            pass  # shutting down
        except Exception:
            log.exception("error while serving %s", writer.get_extra_info("peername"))
        finally:
            self._connections.discard(task)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads one request and answers it. False when the connection is to be closed."""
        try:
            async with asyncio.timeout(IDLE_CONNECTION_SECONDS):
                raw_head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError):
            return False  # idle, or closed between requests
        except asyncio.LimitOverrunError:
            await self._send_error(writer, "", BadRequest(431, "request line and headers are too long"))
            return False
        started = time.monotonic()
        simulator = self.simulator
        try:
            head = parse_request_head(raw_head)
        except BadRequest as exc:
            await self._send_error(writer, raw_head.split(b"\r\n", 1)[0].decode("latin-1"), exc)
            return False
        keep_alive = head.keep_alive
        try:
            if head.method not in SERVED_METHODS:
                raise BadRequest(501, f"Unsupported method ({head.method!r})")
            body = await self._read_body(reader, writer, head.headers)
            request = Request(head.method, urlsplit(head.target).path, head.headers, body)
        except BadRequest as exc:
            keep_alive = False
            response = error_response(exc.status, exc.message)
        else:
            try:
                response = await simulator.handle(request)
            except Exception:
                simulator.log.exception("failed to handle %s %s", head.method, head.target)
                response = error_response(500, "internal simulator error")
        writer.write(self._encode(response, keep_alive, with_body=head.method != "HEAD"))
        await writer.drain()
        elapsed_ms = (time.monotonic() - started) * 1000
        simulator.log.info("%s %s %d %.1fms", head.method, head.target, response.status, elapsed_ms)
        return keep_alive

    async def _read_body(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: Headers
    ) -> bytes:
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            raise BadRequest(411, "chunked bodies are not supported: send Content-Length")
        raw_length = headers.get("Content-Length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise BadRequest(400, "invalid Content-Length") from None
        if length < 0:
            raise BadRequest(400, "invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise BadRequest(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
        if headers.get("Expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return await reader.readexactly(length)

    async def _send_error(self, writer: asyncio.StreamWriter, request_line: str, exc: BadRequest) -> None:
        """Errors in the request's framing, answered as JSON on a connection that then closes."""
        writer.write(self._encode(error_response(exc.status, exc.message), keep_alive=False, with_body=True))
        await writer.drain()
        log.warning("%r answered %d %s", request_line, exc.status, exc.message)

    def _encode(self, response: Response, keep_alive: bool, *, with_body: bool) -> bytes:
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Server: {self.simulator.name}-simulator",
            f"Date: {self._http_date()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        lines.extend(f"{name}: {value}" for name, value in response.headers.items())
        if not keep_alive:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head + response.body if with_body else head

    def _http_date(self) -> str:
        """The Date header, formatted once a second rather than once a request."""
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True))
        return self._date[1]

    async def close_connections(self) -> None:
        """Cancels every open connection, including requests still waiting out an injected delay."""
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def parse_request_head(raw: bytes) -> RequestHead:
    """The request line and headers (``raw`` ends with the blank line); BadRequest when malformed."""
    lines = raw[:-4].decode("latin-1").split("\r\n")
    words = lines[0].split()
    if len(words) != 3:
        raise BadRequest(400, f"Bad request syntax ({lines[0]!r})")
    method, target, version = words
    try:
        if not version.startswith("HTTP/"):
            raise ValueError(version)
        major, minor = (int(part) for part in version[5:].split("."))
    except ValueError:
        raise BadRequest(400, f"Bad request version ({version!r})") from None
    if major != 1:
        raise BadRequest(505, f"Invalid HTTP version ({version})")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(431, "Too many headers")
    headers = Headers()
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(400, f"Bad header line ({line[:80]!r})")
        headers.setdefault(name.lower(), value.strip())
    connection = headers.get("Connection", "").lower()
    keep_alive = minor >= 1 if connection not in {"close", "keep-alive"} else connection == "keep-alive"
    return RequestHead(method, target, keep_alive, headers)


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
    return asyncio.run(_serve(simulator, host, port))


async def _serve(simulator: ProviderSimulator, host: str, port: int) -> int:
    server = SimulatorServer(simulator)
    try:
        listener = await asyncio.start_server(
            server.serve_connection, host, port, backlog=1024, limit=MAX_HEAD_BYTES
        )
    except OSError as exc:
        simulator.log.error("cannot listen on %s:%s: %s", host, port, exc)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, simulator, signum, stop)
    simulator.start_background()
    bound_host, bound_port = listener.sockets[0].getsockname()[:2]
    simulator.log.info(
        "listening on http://%s:%s, config %s, auth %s",
        bound_host,
        bound_port,
        simulator.config,
        "on" if simulator.auth_required else "off",
    )
    await stop.wait()
    listener.close()
    await server.close_connections()
    await listener.wait_closed()
    simulator.stop_background()
    simulator.log.info("stopped")
    return 0


def _on_signal(simulator: ProviderSimulator, signum: int, stop: asyncio.Event) -> None:
    simulator.log.info("received %s, shutting down", signal.Signals(signum).name)
    stop.set()


def _configure_logging(level_name: str) -> None:
    level = logging.getLevelName(level_name.strip().upper())
    if not isinstance(level, int):
        raise ConfigError(f"SIM_LOG_LEVEL={level_name!r}: must be DEBUG, INFO, WARNING or ERROR")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))  # Bueno logs its own webhook lines
