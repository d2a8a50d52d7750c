"""Shared machinery of the provider simulators.

A provider module subclasses ``ProviderSimulator`` with its statuses, paths, input validation and
response shape (and, if it pushes webhooks, their body and signature); everything else lives here: the
``aiohttp.web`` application, settings from the environment and ``/_sim/config``, authentication, fault
injection, the in-memory store, the lazy time-based status progression, cancellation,
``Idempotency-Key`` handling, webhook delivery and the ``/_sim/`` admin endpoints.

Everything runs on one (uvloop) event loop, the webhook sender included, and no handler awaits while it reads
or changes the store, so the state needs no lock.
"""

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
ADMIN_PREFIX = "/_sim/"
MAX_BODY_BYTES = 1_000_000
TOO_LARGE = f"request body is larger than {MAX_BODY_BYTES} bytes"
MAX_LIST_LENGTH = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MIN_QUANTITY, MAX_QUANTITY = 1, 50
UNKNOWN_STATUS = "quantum"
CANCELLED = "cancelled"  # a cancelled order's status, whatever the provider
GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream hiccup</p></body></html>"
LISTEN_BACKLOG = 1024
IDLE_CONNECTION_SECONDS = 120
# On SIGTERM, requests in flight get this long to finish (twice: to answer, then once cancelled);
# a request hanging in a timeout fault is cut short.
SHUTDOWN_GRACE_SECONDS = 0.5

WEBHOOK_ATTEMPTS = 3
WEBHOOK_RETRY_DELAY_SECONDS = 0.2  # times the attempt number
WEBHOOK_TIMEOUT_SECONDS = 2.0
MAX_TICK_SECONDS = 0.25
MIN_TICK_SECONDS = 0.005


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
# Only for a provider that pushes webhooks.
WEBHOOK_SETTINGS: tuple[Setting, ...] = (
    Setting("webhook_duplicate_rate", "SIM_WEBHOOK_DUPLICATE_RATE", parse_rate, 0.0),
    Setting("webhook_out_of_order", "SIM_WEBHOOK_OUT_OF_ORDER", parse_bool, False),
    Setting("webhook_bad_signature_rate", "SIM_WEBHOOK_BAD_SIGNATURE_RATE", parse_rate, 0.0),
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


# --- Responses and input validation ------------------------------------------------------------


def json_response(status: int, payload: object, headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps(payload).encode("utf-8")
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return json_response(status, {"error": message}, headers)


async def read_json_object(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object; ``{}`` for an empty body when ``optional``."""
    body = await request.read()
    if optional and not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object")
    return payload


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


def optional_point(lat: object, lng: object, name: str) -> tuple[float, float] | None:
    """A stop's coordinates as sent (both null/absent: none), checked to be on the globe."""
    if lat is None and lng is None:
        return None
    numbers = all(isinstance(value, int | float) and not isinstance(value, bool) for value in (lat, lng))
    if not numbers or not (-90 <= lat <= 90 and -180 <= lng <= 180):  # type: ignore[operator]
        raise ApiError(400, f"{name} must be a latitude within [-90, 90] and a longitude within [-180, 180]")
    return (float(lat), float(lng))  # type: ignore[arg-type]


def require_object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{name} must be an object")
    return value


def parse_line_items(
    payload: Mapping[str, Any], list_key: str, name_key: str, quantity_key: str
) -> list[dict[str, Any]]:
    """A kitchen's list of ``{name_key: str, quantity_key: int}`` entries, validated and without extras."""
    items = []
    for position, entry in enumerate(require_list(payload.get(list_key), list_key)):
        where = f"{list_key}[{position}]"
        item = require_object(entry, where)
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


def stable_index(key: str, count: int) -> int:
    """An index below ``count`` picked by a hash of ``key``: always the same one for the same key."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % count


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


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


@dataclass(frozen=True)
class WebhookEvent:
    """A status an order reached (``snapshot`` as of that moment), or its cancellation."""

    snapshot: Snapshot
    final: bool  # nothing follows it, so webhook_out_of_order never holds it back
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)


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
    # A provider that pushes webhooks implements webhook_payload and webhook_headers; they go to
    # <NAME>_WEBHOOK_URL, signed with <NAME>_WEBHOOK_SECRET, and WEBHOOK_SETTINGS become settings.
    pushes_webhooks: ClassVar[bool] = False

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.log = logging.getLogger(f"simulators.{self.name}")
        self.settings = COMMON_SETTINGS + (WEBHOOK_SETTINGS if self.pushes_webhooks else ())
        self._config = settings_from_env(self.settings, environ)
        self._api_key = environ.get("SIM_API_KEY", "").strip() or None
        self._rng = random.Random(env_int(environ, "SIM_SEED", None, -(2**63), 2**63 - 1))
        self._orders: dict[str, SubOrder] = {}
        self._idempotency_keys: dict[str, str] = {}
        self._stats = Stats()
        self._webhook_url, self._webhook_secret = self._webhook_target(environ)
        self._notified: dict[str, int] = {}  # order id -> status index last turned into an event
        self._notified_cancel: dict[str, float] = {}  # order id -> the cancellation turned into an event
        self._held: dict[str, WebhookEvent] = {}  # order id -> event held back by webhook_out_of_order

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

    def webhook_payload(self, event: WebhookEvent) -> dict[str, Any]:
        """The JSON body of the webhook for ``event``."""
        raise NotImplementedError

    def webhook_headers(self, body: bytes, secret: str) -> dict[str, str]:
        """The headers that sign a webhook's raw ``body`` with ``secret``."""
        raise NotImplementedError

    # The application.

    def make_app(self) -> web.Application:
        """The provider endpoints and ``/_sim/`` admin endpoints, behind one middleware that logs each
        request, turns errors into JSON and injects the faults."""
        app = web.Application(middlewares=[self._middleware()], client_max_size=MAX_BODY_BYTES)
        routes = app.router
        self.add_admin_routes(routes)
        routes.add_route("POST", f"{ADMIN_PREFIX}advance", self._advance)
        item_path = self.collection_path.rstrip("/") + "/{order_id}"
        routes.add_route("POST", self.collection_path, self._create)
        routes.add_route("GET", item_path, self._get)
        routes.add_route("POST", f"{item_path}/cancel", self._cancel)
        if self.pushes_webhooks:
            app.cleanup_ctx.append(self._webhook_sender)
        return app

    def add_admin_routes(self, routes: web.UrlDispatcher) -> None:
        """``/_sim/health``, ``config`` (GET and POST), ``stats`` and ``reset``."""
        routes.add_route("GET", f"{ADMIN_PREFIX}health", self._health)
        routes.add_route("GET", f"{ADMIN_PREFIX}config", self._get_config)
        routes.add_route("POST", f"{ADMIN_PREFIX}config", self._update_config)
        routes.add_route("GET", f"{ADMIN_PREFIX}stats", self._get_stats)
        routes.add_route("POST", f"{ADMIN_PREFIX}reset", self._reset)

    def _middleware(self) -> Middleware:
        @web.middleware
        async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.monotonic()
            try:
                response = await self._respond(request, handler)
            except Exception:
                self.log.exception("failed to handle %s %s", request.method, request.raw_path)
                response = error_response(500, "internal simulator error")
            elapsed_ms = (time.monotonic() - started) * 1000
            self.log.info("%s %s %d %.1fms", request.method, request.raw_path, response.status, elapsed_ms)
            return response

        return serve

    async def _respond(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = await self._receive_body(request)
        if refused is not None:
            return refused
        try:
            if not request.path.startswith(ADMIN_PREFIX):
                faulted = await self._inject_faults(request)
                if faulted is not None:
                    return faulted
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except web.HTTPMethodNotAllowed as exc:
            allow = {"Allow": ", ".join(sorted(exc.allowed_methods))}
            return error_response(405, f"method {request.method} not allowed here", allow)
        except web.HTTPNotFound:
            return error_response(404, f"no endpoint at {request.path}")
        except web.HTTPException as exc:
            return error_response(exc.status, exc.reason)

    async def _receive_body(self, request: web.Request) -> web.Response | None:
        """Reads the body now, before any injected delay, so that a client that gives up meanwhile leaves
        it behind; an error answer when it is too large or does not arrive whole."""
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return error_response(413, TOO_LARGE)
        if request.body_exists:
            try:
                await request.read()
            except web.HTTPRequestEntityTooLarge:  # sent chunked, and grew too large while read
                return error_response(413, TOO_LARGE)
            except (ConnectionResetError, web.RequestPayloadError) as exc:
                self.log.debug("%s %s: body not received: %s", request.method, request.raw_path, exc)
                return error_response(400, "the request body did not arrive whole")
        return None

    @property
    def auth_required(self) -> bool:
        return self._api_key is not None

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def reset(self) -> None:
        """Forgets all orders, idempotency keys, stats and pending webhooks; the config stays."""
        self._orders.clear()
        self._idempotency_keys.clear()
        self._stats = Stats()
        self._notified.clear()
        self._notified_cancel.clear()
        self._held.clear()

    # Faults and auth, in front of every provider endpoint.

    async def _inject_faults(self, request: web.Request) -> web.Response | None:
        """An answer that replaces the real one, or None to handle the request normally."""
        config = self._config
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
            return web.Response(status=200, body=GARBAGE_BODY, content_type="text/html", charset="utf-8")
        return None

    def _check_auth(self, request: web.Request) -> None:
        if self._api_key is None:
            return
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self._api_key}".encode()):
            raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    # Provider endpoints.

    async def _create(self, request: web.Request) -> web.Response:
        data = self.parse_create(await read_json_object(request))
        key = request.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key.strip()) <= MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        now = time.monotonic()
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
        return json_response(status, self.describe_created(self._snapshot(order, now)))

    async def _get(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        config = self._config
        unknown = self._fault("unknown_status", config["unknown_status_rate"])
        backwards = not unknown and self._chance(config["backwards_rate"])
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

    async def _cancel(self, request: web.Request) -> web.Response:
        """Cancels an order that is not too far along; 409 once it is. Cancelling again answers 200."""
        order_id = request.match_info["order_id"]
        await read_json_object(request, optional=True)  # no fields yet, but a body must be JSON if sent
        now = time.monotonic()
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
            self.log.info("order %s cancelled", order_id)
        return json_response(200, self.describe(self._snapshot(order, now)))

    # Status progression.

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
        return rate > 0 and self._rng.random() < rate

    def _fault(self, kind: str, rate: float) -> bool:
        """Draws whether a fault of ``kind`` happens now and counts it when it does."""
        happens = self._chance(rate)
        if happens:
            self._count_fault(kind)
        return happens

    def _count_fault(self, kind: str) -> None:
        self._stats.faults[kind] += 1

    # Admin endpoints: no auth, no faults.

    async def _health(self, request: web.Request) -> web.Response:
        return json_response(200, {"ok": True, "provider": self.name})

    async def _get_config(self, request: web.Request) -> web.Response:
        return json_response(200, self.config)

    async def _update_config(self, request: web.Request) -> web.Response:
        update = await read_json_object(request)
        config = merge_settings(self.settings, self._config, update)
        if config["step_seconds"] != self._config["step_seconds"]:
            now = time.monotonic()
            for order in self._orders.values():
                self._rebase(order, now)
        self._config = config
        self.log.info("config updated: %s", update)
        return json_response(200, config)

    async def _get_stats(self, request: web.Request) -> web.Response:
        return json_response(200, self._stats.as_json())

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        self.log.info("orders and stats reset")
        return json_response(200, {"ok": True})

    async def _advance(self, request: web.Request) -> web.Response:
        payload = await read_json_object(request)
        order_id, status = payload.get("id"), payload.get("status")
        if status not in self.statuses:
            raise ApiError(400, f"status must be one of {list(self.statuses)}")
        order = self._orders.get(order_id) if isinstance(order_id, str) else None
        if order is None:
            raise ApiError(404, f"order {order_id!r} not found")
        order.base_index = self.statuses.index(status)
        order.anchor, order.anchor_wall = time.monotonic(), time.time()
        order.cancelled_at = None  # forced on: a cancelled order is no longer cancelled
        return json_response(200, self.describe(self._snapshot(order, order.anchor)))

    # Webhooks: a task on the server's loop looks for changes every tick and POSTs them one by one.

    def _webhook_target(self, environ: Mapping[str, str]) -> tuple[str | None, str]:
        """``<NAME>_WEBHOOK_URL`` (None: no webhooks) and ``<NAME>_WEBHOOK_SECRET``."""
        if not self.pushes_webhooks:
            return None, ""
        url_variable = f"{self.name.upper()}_WEBHOOK_URL"
        url = environ.get(url_variable, "").strip() or None
        if url and urlsplit(url).scheme not in {"http", "https"}:
            raise ConfigError(f"{url_variable}={url!r}: must be an http(s) URL")
        return url, environ.get(f"{self.name.upper()}_WEBHOOK_SECRET", "")

    async def _webhook_sender(self, app: web.Application) -> AsyncIterator[None]:
        """Runs the webhook task while the application runs (an ``aiohttp`` cleanup context)."""
        prefix = self.name.upper()
        if not self._webhook_url:
            self.log.info("%s_WEBHOOK_URL is not set: no webhooks", prefix)
            yield
            return
        if not self._webhook_secret:
            self.log.warning("%s_WEBHOOK_SECRET is empty: webhooks are signed with an empty key", prefix)
        task = asyncio.create_task(self._send_changes_forever(), name=f"{self.name}-webhooks")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _send_changes_forever(self) -> None:
        timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_SECONDS)
        headers = {"User-Agent": f"{self.name}-simulator"}
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            while True:
                await asyncio.sleep(self._tick_seconds())
                try:
                    for event in self._collect_changes():
                        await self._dispatch(session, event)
                except Exception:
                    self.log.exception("webhook tick failed; carrying on")

    def _tick_seconds(self) -> float:
        return max(min(self._config["step_seconds"] / 4, MAX_TICK_SECONDS), MIN_TICK_SECONDS)

    def _collect_changes(self) -> list[WebhookEvent]:
        """One event per status an order reached since the last tick (the new one if it was forced back),
        then one for its cancellation, if it was cancelled since."""
        now = time.monotonic()
        last = len(self.statuses) - 1
        events = []
        for order in self._orders.values():
            snapshot = self._snapshot(order, now)
            previous = self._notified.get(order.id, 0)
            if snapshot.index != previous:
                current = snapshot.index
                reached = range(previous + 1, current + 1) if current > previous else [current]
                for index in reached:
                    events.append(WebhookEvent(self._snapshot_at(order, index, 0.0), final=index == last))
                self._notified[order.id] = current
            cancelled_at = order.cancelled_at
            if cancelled_at is not None and self._notified_cancel.get(order.id) != cancelled_at:
                self._notified_cancel[order.id] = cancelled_at
                events.append(WebhookEvent(snapshot, final=True))
        return events

    async def _dispatch(self, session: aiohttp.ClientSession, event: WebhookEvent) -> None:
        """Sends ``event``; with webhook_out_of_order, holds a non-final one until the order's next."""
        order_id = event.snapshot.id
        if order_id not in self._orders:  # forgotten by a reset since it was collected
            return
        config = self.config
        held = self._held.pop(order_id, None)
        if held is None and config["webhook_out_of_order"] and not event.final:
            self._held[order_id] = event
            self._count_fault("webhook_out_of_order")
            return
        await self._deliver(session, event, config)
        if held is not None:
            await self._deliver(session, held, config)

    async def _deliver(
        self, session: aiohttp.ClientSession, event: WebhookEvent, config: Mapping[str, Any]
    ) -> None:
        body = json.dumps(self.webhook_payload(event)).encode("utf-8")
        secret = self._webhook_secret
        if self._fault("webhook_bad_signature", config["webhook_bad_signature_rate"]):
            secret += "-not-the-secret"
        headers = {"Content-Type": "application/json", **self.webhook_headers(body, secret)}
        copies = 2 if self._fault("webhook_duplicate", config["webhook_duplicate_rate"]) else 1
        for _ in range(copies):
            await self._post(session, event, body, headers)

    async def _post(
        self, session: aiohttp.ClientSession, event: WebhookEvent, body: bytes, headers: dict[str, str]
    ) -> None:
        """POSTs one webhook, retrying network errors, 429 and 5xx a couple of times."""
        assert self._webhook_url is not None
        order_id, status = event.snapshot.id, event.snapshot.status
        for attempt in range(1, WEBHOOK_ATTEMPTS + 1):
            try:
                async with session.post(self._webhook_url, data=body, headers=headers) as response:
                    await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem, retryable = f"{type(exc).__name__}: {exc}", True
            else:
                if 200 <= response.status < 300:
                    self._stats.webhooks_sent += 1
                    self.log.info("webhook %s %s -> %d", order_id, status, response.status)
                    return
                problem = f"HTTP {response.status}"
                retryable = response.status == 429 or response.status >= 500
            self.log.warning(
                "webhook %s %s attempt %d/%d failed: %s", order_id, status, attempt, WEBHOOK_ATTEMPTS, problem
            )
            if not retryable or attempt == WEBHOOK_ATTEMPTS:
                break
            await asyncio.sleep(WEBHOOK_RETRY_DELAY_SECONDS * attempt)
        self._stats.webhooks_failed += 1
        self.log.error("gave up on webhook %s for %s %s", event.event_id, order_id, status)


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
    return uvloop.run(_serve(simulator, host, port))


async def _serve(simulator: ProviderSimulator, host: str, port: int) -> int:
    # access_log=None: the middleware logs each request's line itself.
    runner = web.AppRunner(
        simulator.make_app(),
        access_log=None,
        keepalive_timeout=IDLE_CONNECTION_SECONDS,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG).start()
    except OSError as exc:
        simulator.log.error("cannot listen on %s:%s: %s", host, port, exc)
        await runner.cleanup()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, simulator, signum, stop)
    bound_host, bound_port = runner.addresses[0][:2]
    simulator.log.info(
        "listening on http://%s:%s, config %s, auth %s",
        bound_host,
        bound_port,
        simulator.config,
        "on" if simulator.auth_required else "off",
    )
    await stop.wait()
    await runner.cleanup()
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
