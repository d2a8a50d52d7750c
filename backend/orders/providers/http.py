"""The one HTTP client the backend uses to call providers: a thin layer over aiohttp.

One ``aiohttp.ClientSession`` per process lives on a dedicated event loop in a daemon thread, so its
keep-alive connections (and their TLS sessions) serve one poll tick after another. The loop is uvloop's:
a poll tick makes thousands of small calls, and its C loop and transports cost less per call than
asyncio's. Sync code submits work with ``run(coroutine)``; inside it, ``call()`` makes one request and
returns an ``Answer`` whose body is already decoded, or raises ``TransportError`` / ``TransportTimeout``
with a readable message.

Two inputs, read at two moments:

- Django settings (``PROVIDER_CONCURRENCY`` per provider host, ``PROVIDER_TIMEOUT_SECONDS`` for the
  whole call, ``PROVIDER_MAX_ANSWER_BYTES`` for the decoded body) are read by every ``run()``, once
  rather than per call, and the first call after they changed builds a new session with them.
- The environment (``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY``, and the CA bundle of
  ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``) is read when the loop starts; ``close()`` makes the next
  ``run()`` read it again.

Proxies are resolved here, once per origin, instead of with ``trust_env=True``: with it aiohttp reads
``~/.netrc`` and the proxy variables again on every request, in two thread-pool hops that cost more CPU
than the rest of the call. ``~/.netrc`` is not wanted anyway: its Basic credentials would clash with the
providers' Authorization header.

Header lines and fields are bounded by aiohttp's own limits (``max_line_size`` / ``max_field_size``,
8190 bytes); an answer that breaks them is a ``TransportError`` like any other malformed answer.
"""

import asyncio
import atexit
import json as jsonlib
import logging
import os
import socket
import ssl
import threading
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import uvloop
from django.conf import settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Longer than the poll interval, so a tick finds the previous tick's connections still open.
KEEPALIVE_SECONDS = 30.0
SHUTDOWN_SECONDS = 5.0
DEFAULT_HEADERS = {"User-Agent": "liveops", "Accept-Encoding": "gzip, deflate"}
_dumps = partial(jsonlib.dumps, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's HTTP answer, whatever its status, with the body already decoded (gzip/deflate undone).

    ``content_type`` is the media type without parameters, lower-cased (aiohttp's reading of the
    header; ``application/octet-stream`` when the provider sent none).
    """

    status: int
    body: bytes
    content_type: str

    @property
    def text(self) -> str:
        """The body as UTF-8, undecodable bytes replaced: for messages and logs."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ValueError (JSONDecodeError or UnicodeDecodeError) when it is not JSON."""
        return jsonlib.loads(self.body)


class TransportError(Exception):
    """No usable HTTP answer: refused connection, reset, protocol violation, answer too large, bad
    encoding, a URL that is not http(s)."""


class TransportTimeout(TransportError):
    """No complete answer within PROVIDER_TIMEOUT_SECONDS."""


@dataclass(frozen=True, slots=True)
class _Config:
    """The settings a session is built with. run() reads them; a call that finds them changed builds a
    new session."""

    concurrency: int
    timeout: float
    max_answer_bytes: int

    @classmethod
    def from_settings(cls) -> "_Config":
        return cls(
            settings.PROVIDER_CONCURRENCY,
            settings.PROVIDER_TIMEOUT_SECONDS,
            settings.PROVIDER_MAX_ANSWER_BYTES,
        )


@dataclass(eq=False)
class _Runtime:
    """This process's provider loop, its thread, and (touched only on that loop) its session."""

    pid: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    tls: ssl.SSLContext
    proxies: dict[str, str]  # scheme -> proxy URL, from the environment
    wanted: _Config | None = None  # the settings of the latest run(); written from any thread
    session: aiohttp.ClientSession | None = None
    config: _Config | None = None  # the settings `session` was built with
    proxy_for_origin: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def start(cls) -> "_Runtime":
        loop = uvloop.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="provider-http", daemon=True)
        # Loading the CA bundle costs tens of milliseconds: here, in the caller's thread, not on the loop.
        tls = ssl.create_default_context()
        tls.set_alpn_protocols(["http/1.1"])
        proxies = {scheme: url for scheme, url in getproxies().items() if scheme in ("http", "https")}
        thread.start()
        return cls(os.getpid(), loop, thread, tls, proxies)

    def want(self, config: _Config) -> None:
        """Record the settings calls should use; an equal config keeps its identity (cheap to compare)."""
        if config != self.wanted:
            self.wanted = config

    async def current_session(self) -> tuple[aiohttp.ClientSession, _Config]:
        """The session for the wanted settings. A session built with other settings is closed, and
        calls still in flight on it fail: settings change in tests, not under load."""
        config = self.wanted
        assert config is not None, "run() records the settings before it submits any work"
        session = self.session
        if session is None or config is not self.config:
            old, session = session, _new_session(config, self.tls)
            self.session, self.config = session, config
            if old is not None:
                logger.info("Provider HTTP settings changed to %s: new session", config)
                await old.close()
        return session, config

    def proxy(self, url: str) -> str | None:
        """The proxy for `url` from the environment, resolved once per origin (NO_PROXY applied)."""
        if not self.proxies:
            return None
        start = url.find("://") + 3
        end = url.find("/", start)
        origin = url if end < 0 else url[:end]
        if origin not in self.proxy_for_origin:
            parts = urlsplit(origin)
            proxy = self.proxies.get(parts.scheme)
            if proxy and parts.hostname and proxy_bypass(parts.hostname):
                proxy = None
            self.proxy_for_origin[origin] = proxy
        return self.proxy_for_origin[origin]

    async def shutdown(self) -> None:
        """Cancel what still runs on the loop (its waiters get CancelledError), then close the session."""
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
            self.session = None


def _new_session(config: _Config, tls: ssl.SSLContext) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # the per-host limit bounds each provider; there are a handful of providers
        limit_per_host=config.concurrency,
        keepalive_timeout=KEEPALIVE_SECONDS,
        ssl=tls,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=config.timeout),
        headers=DEFAULT_HEADERS,
        json_serialize=_dumps,
        auto_decompress=True,
        trust_env=False,  # proxies come from _Runtime.proxy: see the module docstring
        cookie_jar=aiohttp.DummyCookieJar(),  # providers' cookies are no state of ours
        raise_for_status=False,
    )


_lock = threading.Lock()
_runtime: _Runtime | None = None
# A forked child keeps its parent's runtime referenced, unused: finalizers closing it would unregister
# the parent's sockets from the epoll instance that parent and child share.
_inherited: list[_Runtime] = []


def _reset_lock_in_child() -> None:
    """A lock held by a parent thread at fork time would stay held forever in the child."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def _started() -> _Runtime:
    """This process's runtime, started now if there is none or it belongs to the parent of a fork."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime.pid != os.getpid():
            _inherited.append(_runtime)
            _runtime = None
        if _runtime is None:
            _runtime = _Runtime.start()
        return _runtime


def _on_loop_thread(runtime: _Runtime | None) -> bool:
    return runtime is not None and runtime.pid == os.getpid() and runtime.thread is threading.current_thread()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on this process's provider event loop and wait for its result, from sync code
    (a Celery task, a Django view, a test).

    Works from any thread, one with a running event loop included (that loop is blocked meanwhile).
    Called from the provider loop's own thread it would wait for itself forever: RuntimeError instead.
    """
    if _on_loop_thread(_runtime):
        coroutine.close()
        raise RuntimeError("run() called on the provider loop's thread: await the coroutine instead")
    try:
        runtime = _started()
        runtime.want(_Config.from_settings())
    except BaseException:
        coroutine.close()
        raise
    future = asyncio.run_coroutine_threadsafe(coroutine, runtime.loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # the waiter was interrupted (a time limit, Ctrl-C): stop the work too
        raise


async def call(
    method: str, url: str, *, json: Any = None, headers: Mapping[str, str] | None = None
) -> Answer:
    """One request on this process's ClientSession. Must run on the provider loop (inside run()).

    `json` is sent compactly as application/json. Redirects are not followed: a provider that
    redirects answers the 3xx. Raises TransportTimeout when the whole call, body included, takes
    longer than PROVIDER_TIMEOUT_SECONDS, and TransportError for every other failure to get an answer.
    """
    runtime = _runtime
    if runtime is None or asyncio.get_running_loop() is not runtime.loop:
        raise RuntimeError("call() runs on the provider loop: use run(call(...))")
    session, config = await runtime.current_session()
    response: aiohttp.ClientResponse | None = None
    try:
        async with session.request(
            method, url, json=json, headers=headers, proxy=runtime.proxy(url), allow_redirects=False
        ) as response:
            body = await _read_body(response, config.max_answer_bytes)
            return Answer(response.status, body, response.content_type)
    except TimeoutError:
        raise TransportTimeout(f"no answer within {config.timeout:g}s") from None
    except (aiohttp.ClientError, OSError, ValueError) as error:
        raise TransportError(_describe(error, url, answered=response is not None)) from error


async def _read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The decoded body, read a buffer at a time so a small gzip bomb is refused, never inflated whole.

    (``read()`` would lift aiohttp's bound on how much one decompression step may inflate.)
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await response.content.readany():
        size += len(chunk)
        if size > limit:
            response.close()  # the rest is never read: the connection cannot be reused
            raise TransportError(f"answer larger than {limit} bytes")
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _describe(error: Exception, url: str, *, answered: bool) -> str:
    """A message a dispatcher can read, for an error aiohttp (or the socket below it) raised."""
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        where = _address(error.host, error.port)
        return f"TLS certificate of {where} not accepted: {error.certificate_error}"
    if isinstance(error, aiohttp.ClientConnectorError):
        where = _address(error.host, error.port)
        cause = error.os_error
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused to {where}"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {error.host}: {cause.strerror}"
        return f"cannot connect to {where}: {getattr(cause, 'strerror', None) or cause}"
    if isinstance(error, aiohttp.ClientHttpProxyError):
        return f"proxy answered {error.status} {error.message}"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        when = "in the middle of the answer" if answered else "without answering"
        return f"server closed the connection {when}"
    if isinstance(error, aiohttp.ClientOSError):
        return f"connection broken: {error.strerror or error}"
    if isinstance(error, aiohttp.ClientPayloadError):
        return f"bad answer body: {_first_line(error.__cause__ or error)}"
    if isinstance(error, aiohttp.NonHttpUrlClientError | aiohttp.InvalidURL):
        return f"cannot call {url!r}: not an absolute http(s) URL"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"bad HTTP answer: {_first_line(error.__cause__ or error.message)}"
    if isinstance(error, ValueError):
        return f"cannot send the request: {error}"
    return f"{type(error).__name__}: {error}"


def _address(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _first_line(what: BaseException | str) -> str:
    """aiohttp's parser errors (with a ``message``) draw the offending bytes below their first line: keep
    that line."""
    text = getattr(what, "message", what)
    lines = str(text).strip().splitlines()
    return lines[0].rstrip(": ") if lines else "no details"


def close() -> None:
    """Close the session and stop the loop (tests; worker shutdown). The next run() starts them again.

    Work still running on the loop is cancelled. In a forked child the parent's loop is left alone.
    """
    global _runtime
    with _lock:
        runtime = _runtime
        if runtime is None:
            return
        if _on_loop_thread(runtime):
            raise RuntimeError("close() called on the provider loop's thread")
        _runtime = None
    if runtime.pid != os.getpid():
        _inherited.append(runtime)
        return
    try:
        asyncio.run_coroutine_threadsafe(runtime.shutdown(), runtime.loop).result(SHUTDOWN_SECONDS)
    except Exception:
        logger.exception("Provider HTTP session did not close cleanly")
    finally:
        runtime.loop.call_soon_threadsafe(runtime.loop.stop)
        runtime.thread.join(SHUTDOWN_SECONDS)
        if runtime.thread.is_alive():
            logger.warning("Provider HTTP loop did not stop within %ss", SHUTDOWN_SECONDS)
        else:
            runtime.loop.close()


atexit.register(close)
