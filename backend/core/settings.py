"""Settings: every value comes from the environment, read here and nowhere else.

Precedence: the process environment, then a local `.env` (git-ignored), then `.env.default`
(committed, documents every variable). A bad value stops start-up with a message naming the variable.
"""

import ipaddress
import math
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from dotenv import dotenv_values
from environs import Env, EnvError
from marshmallow import ValidationError
from marshmallow.validate import Length, OneOf, Range, Regexp

from core.logs import LOG_FORMATS, formatter_config
from core.observability import init_sentry

BASE_DIR = Path(__file__).resolve().parent.parent  # backend/
REPO_DIR = BASE_DIR.parent

env = Env()
env.read_env(REPO_DIR / ".env", recurse=False)
env.read_env(REPO_DIR / ".env.default", recurse=False)

REDIS_SCHEMES = {"redis", "rediss", "unix"}
BROKER_SCHEMES = REDIS_SCHEMES | {"amqp", "amqps", "sentinel"}
HTTP_SCHEMES = {"http", "https"}


def _is_blank(name: str) -> bool:
    return not env.str(name, "").strip()


def _url(name: str, *, default: str | None = None, schemes: set[str] | None = None) -> str:
    """A URL variable; an empty value takes `default` (an error when there is none)."""
    if _is_blank(name):
        if default is None:
            raise ImproperlyConfigured(f"Environment variable {name!r} must be set to a URL.")
        return default
    return env.url(name, schemes=schemes, require_tld=False).geturl()


def _ip_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """One TRUSTED_PROXIES entry: an address (10.0.0.5) or a network (172.30.0.0/24)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as error:
        raise ValidationError(str(error)) from None


def _tile_url(text: str) -> None:
    """MAP_TILE_URL: empty, or an http(s) template with {z}, {x} and {y}."""
    if not text:
        return
    if not re.match(r"^https?://[^/\s]+/", text) or not all(part in text for part in ("{z}", "{x}", "{y}")):
        raise ValidationError("must be an http(s) URL template with {z}, {x} and {y}, or empty")


def _tile_origin(template: str) -> list[str]:
    """The CSP img-src source of the tile server: its origin, {s} subdomains as a wildcard."""
    if not template:
        return []
    scheme, _, rest = template.partition("://")
    host = rest.split("/", 1)[0]
    return [f"{scheme}://{host.replace('{s}', '*')}"]


METRICS_TOKEN_MIN_LENGTH = 20


def _metrics_token(text: str) -> None:
    """METRICS_TOKEN: empty, or long enough not to be guessed by scraping."""
    if text.strip() and len(text.strip()) < METRICS_TOKEN_MIN_LENGTH:
        raise ValidationError(f"must be empty or at least {METRICS_TOKEN_MIN_LENGTH} characters")


def _provider_entry(text: str) -> tuple[str, str]:
    """One PROVIDERS entry → (name, module): `melange` is orders.providers.melange; `acme.couriers.fast`
    is that module, named `fast`."""
    module = text.strip() if "." in text else f"orders.providers.{text.strip()}"
    name = module.rpartition(".")[2]
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
        raise ImproperlyConfigured(
            f"PROVIDERS entry {text!r}: a provider name is lowercase letters, digits, _"
        )
    return name, module


try:
    DEBUG = env.bool("DEBUG")
    SECRET_KEY = env.str("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS")
    TIME_ZONE = env.str("TIME_ZONE")
    LOG_LEVEL = env.log_level("LOG_LEVEL")
    WEB_PORT = env.int("WEB_PORT", validate=Range(min=1, max=65535))
    # Connections the web process's listening socket queues before it accepts them (core.serve); the
    # kernel caps it at net.core.somaxconn
    WEB_LISTEN_BACKLOG = env.int("WEB_LISTEN_BACKLOG", validate=Range(min=1, max=65535))
    # Seconds a WebSocket may take to open (its consumer to accept) before daphne refuses it (core.serve)
    WEB_WEBSOCKET_CONNECT_TIMEOUT_SECONDS = env.int(
        "WEB_WEBSOCKET_CONNECT_TIMEOUT_SECONDS", validate=Range(min=1, max=300)
    )
    # Largest request body the web process accepts (core.asgi_limits, and core.serve inside daphne)
    MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", validate=Range(min=1024, max=64 * 1024 * 1024))
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (core.proxies); empty: nobody's
    TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", subcast=_ip_network)

    if _is_blank("DATABASE_URL"):
        raise ImproperlyConfigured(
            "DATABASE_URL is empty: start through `make run` / `make test`, which provide embedded "
            "PostgreSQL and Redis, or set DATABASE_URL and REDIS_URL."
        )
    DATABASES = {"default": env.dj_db_url("DATABASE_URL", conn_max_age=env.int("DB_CONN_MAX_AGE"))}
    # A kept connection is checked (SELECT 1) before a request or task uses it again: one that PostgreSQL
    # dropped meanwhile (a restart, a failover) is replaced instead of failing that request
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Threads the web process runs HTTP requests on (core.http), each keeping its database connection for
    # DB_CONN_MAX_AGE s as every thread of the workers, beat and the relay does
    WEB_HTTP_THREADS = env.int("WEB_HTTP_THREADS", validate=Range(min=1, max=256))

    REDIS_URL = _url("REDIS_URL", schemes=REDIS_SCHEMES)
    CACHE_URL = _url("CACHE_URL", default=REDIS_URL, schemes=REDIS_SCHEMES)
    CELERY_BROKER_URL = _url("CELERY_BROKER_URL", default=REDIS_URL, schemes=BROKER_SCHEMES)
    # The queue tasks go to and workers take from: deployments (or test runs) sharing a broker use their own
    CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", validate=Length(min=1, max=100))
    CHANNEL_LAYER_URL = _url("CHANNEL_LAYER_URL", default=REDIS_URL, schemes=REDIS_SCHEMES)
    CHANNEL_LAYER_PREFIX = env.str("CHANNEL_LAYER_PREFIX", validate=Length(min=1, max=64))

    # The providers: each entry names a module in orders/providers/ (or, with a dot, a module anywhere)
    # defining one Provider subclass, configured by <NAME>_URL, <NAME>_API_KEY and, when it pushes
    # webhooks, <NAME>_WEBHOOK_SECRET.
    PROVIDERS = {
        name: {
            "module": module,
            "url": _url(f"{name.upper()}_URL", schemes=HTTP_SCHEMES),
            "api_key": env.str(f"{name.upper()}_API_KEY", ""),
            "webhook_secret": env.str(f"{name.upper()}_WEBHOOK_SECRET", ""),
        }
        for name, module in map(_provider_entry, env.list("PROVIDERS", validate=Length(min=1)))
    }
    DELIVERY_PROVIDER = env.str("DELIVERY_PROVIDER", validate=OneOf(list(PROVIDERS)))
    _positive = Range(min=0, min_inclusive=False)
    PROVIDER_TIMEOUT_SECONDS = env.float("PROVIDER_TIMEOUT_SECONDS", validate=_positive)
    PROVIDER_CONCURRENCY = env.int("PROVIDER_CONCURRENCY", validate=Range(min=1, max=1000))
    PROVIDER_MAX_ANSWER_BYTES = env.int(
        "PROVIDER_MAX_ANSWER_BYTES", validate=Range(min=1024, max=64 * 1024 * 1024)
    )
    PROVIDER_MAX_BACKOFF_SECONDS = env.float("PROVIDER_MAX_BACKOFF_SECONDS", validate=_positive)
    PROVIDER_FAILURE_DEADLINE_SECONDS = env.float("PROVIDER_FAILURE_DEADLINE_SECONDS", validate=_positive)
    POLL_INTERVAL_SECONDS = env.float("POLL_INTERVAL_SECONDS", validate=Range(min=0.1))
    POLL_BATCH_SIZE = env.int("POLL_BATCH_SIZE", validate=Range(min=1, max=10000))
    POLL_TICK_BUDGET_SECONDS = env.float("POLL_TICK_BUDGET_SECONDS", validate=_positive)
    ORDER_LEAD_MINUTES = env.int("ORDER_LEAD_MINUTES", validate=Range(min=0))

    REALTIME_FLUSH_MS = env.int("REALTIME_FLUSH_MS", validate=Range(min=0, max=5000))
    REALTIME_GAP_WAIT_MS = env.int("REALTIME_GAP_WAIT_MS", validate=Range(min=0, max=60_000))
    REALTIME_RELAY_INTERVAL_MS = env.int("REALTIME_RELAY_INTERVAL_MS", validate=Range(min=1, max=5000))
    REALTIME_RELAY_BATCH = env.int("REALTIME_RELAY_BATCH", validate=Range(min=1, max=100_000))
    REALTIME_RESUME_LIMIT = env.int("REALTIME_RESUME_LIMIT", validate=Range(min=1))
    REALTIME_SNAPSHOT_SHARE_SECONDS = env.float("REALTIME_SNAPSHOT_SHARE_SECONDS", validate=Range(min=0))
    REALTIME_MAX_FRAME_BYTES = env.int("REALTIME_MAX_FRAME_BYTES", validate=Range(min=64))
    REALTIME_LOCATION_MIN_INTERVAL_SECONDS = env.float(
        "REALTIME_LOCATION_MIN_INTERVAL_SECONDS", validate=Range(min=0)
    )
    DASHBOARD_RECENT_HOURS = env.float("DASHBOARD_RECENT_HOURS", validate=Range(min=0))
    ALERT_LATE_MINUTES = env.int("ALERT_LATE_MINUTES", validate=Range(min=1))
    ALERT_STUCK_MINUTES = env.dict("ALERT_STUCK_MINUTES", subcast_values=int)
    ALERT_CHECK_SECONDS = env.int("ALERT_CHECK_SECONDS", validate=Range(min=1))

    _email = env.dj_email_url("EMAIL_URL")
    if "EMAIL_BACKEND" not in _email:
        raise ImproperlyConfigured(
            'Environment variable "EMAIL_URL" invalid: use console://, file://<dir>, memory:// or smtp://host:port.'
        )
    DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL")
    # Where customers reach this site: the start of the tracking links in emails
    PUBLIC_URL = _url("PUBLIC_URL", schemes=HTTP_SCHEMES).rstrip("/")

    # Sign-in tokens (django-rest-knox) and WebSocket tickets
    AUTH_TOKEN_TTL_HOURS = env.float("AUTH_TOKEN_TTL_HOURS", validate=Range(min=0, min_inclusive=False))
    AUTH_TOKEN_LIMIT_PER_USER = env.int("AUTH_TOKEN_LIMIT_PER_USER", validate=Range(min=1))
    REALTIME_TICKET_SECONDS = env.int("REALTIME_TICKET_SECONDS", validate=Range(min=1, max=600))
    # Shareable tracking links (/t/<token>/) stop working this many hours after they are made
    TRACKING_LINK_TTL_HOURS = env.float("TRACKING_LINK_TTL_HOURS", 72, validate=_positive)
    # Abuse limits: rates such as 10/minute or 5/15min (core.limits), kept in Redis
    _rate = Regexp(r"^\s*\d+\s*/\s*\d*\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$")
    THROTTLE_SIGNIN_PER_IP = env.str("THROTTLE_SIGNIN_PER_IP", validate=_rate)
    THROTTLE_SIGNIN_FAILURES_PER_USERNAME = env.str("THROTTLE_SIGNIN_FAILURES_PER_USERNAME", validate=_rate)
    THROTTLE_ORDER_CREATE_PER_USER = env.str("THROTTLE_ORDER_CREATE_PER_USER", validate=_rate)
    THROTTLE_TICKET_PER_USER = env.str("THROTTLE_TICKET_PER_USER", validate=_rate)
    THROTTLE_SHARE_PER_USER = env.str("THROTTLE_SHARE_PER_USER", validate=_rate)
    THROTTLE_WEBHOOK_PER_SOURCE = env.str("THROTTLE_WEBHOOK_PER_SOURCE", validate=_rate)
    REALTIME_FRAMES_PER_SECOND = env.float("REALTIME_FRAMES_PER_SECOND", validate=_positive)
    REALTIME_FRAME_BURST = env.int("REALTIME_FRAME_BURST", validate=Range(min=1))
    REALTIME_SOCKETS_PER_USER = env.int("REALTIME_SOCKETS_PER_USER", validate=Range(min=0))
    LIMITS_KEY_PREFIX = env.str("LIMITS_KEY_PREFIX", validate=Length(min=1, max=64))
    # The street map (Leaflet): a tile URL template ({z}/{x}/{y}, optional {s}) and the credit its
    # provider requires. Empty MAP_TILE_URL: no tiles, a plain background (tests, air-gapped demos).
    MAP_TILE_URL = env.str("MAP_TILE_URL", "", validate=_tile_url)
    MAP_TILE_ATTRIBUTION = env.str("MAP_TILE_ATTRIBUTION", "")
    # Delivery addresses become map points through a Nominatim-compatible /search (orders.geocoding).
    # Empty GEOCODER_URL: no lookups, orders stay without a point (and say so).
    GEOCODER_URL = "" if _is_blank("GEOCODER_URL") else _url("GEOCODER_URL", schemes=HTTP_SCHEMES)
    GEOCODER_USER_AGENT = env.str("GEOCODER_USER_AGENT", validate=Length(min=1, max=200))
    GEOCODER_COUNTRY_CODES = env.str("GEOCODER_COUNTRY_CODES", "")
    GEOCODER_RATE = env.str("GEOCODER_RATE", validate=_rate)
    GEOCODER_TIMEOUT_SECONDS = env.float("GEOCODER_TIMEOUT_SECONDS", validate=_positive)
    GEOCODER_CACHE_DAYS = env.float("GEOCODER_CACHE_DAYS", validate=Range(min=0))
    GEOCODER_RETRIES = env.int("GEOCODER_RETRIES", validate=Range(min=0, max=50))
    # Outgoing webhooks to partners (webhooks app): order events POSTed, signed, to their endpoints.
    # Endpoints whose address is loopback, private, link-local or cloud metadata are refused unless
    # WEBHOOKS_ALLOW_PRIVATE (they would reach inside the deployment). Empty WEBHOOKS_REQUIRE_HTTPS follows
    # DEBUG: production accepts only https:// endpoints.
    WEBHOOKS_ALLOW_PRIVATE = env.bool("WEBHOOKS_ALLOW_PRIVATE")
    WEBHOOKS_REQUIRE_HTTPS = (
        not DEBUG if _is_blank("WEBHOOKS_REQUIRE_HTTPS") else env.bool("WEBHOOKS_REQUIRE_HTTPS")
    )
    WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", validate=Range(min=0.1, max=60))
    # A delivery that keeps failing is tried again, backing off from WEBHOOK_BACKOFF_SECONDS up to
    # WEBHOOK_MAX_BACKOFF_SECONDS, for WEBHOOK_RETRY_HOURS; an endpoint failing that long is disabled.
    WEBHOOK_RETRY_HOURS = env.float("WEBHOOK_RETRY_HOURS", validate=_positive)
    WEBHOOK_BACKOFF_SECONDS = env.float("WEBHOOK_BACKOFF_SECONDS", validate=_positive)
    WEBHOOK_MAX_BACKOFF_SECONDS = env.float("WEBHOOK_MAX_BACKOFF_SECONDS", validate=_positive)
    # --- Logging and error tracking (core.logs, core.observability) ---
    # json: one object per line, for log collectors; text: the plain local format
    LOG_FORMAT = env.str("LOG_FORMAT", validate=OneOf(LOG_FORMATS))
    # Sentry: off while SENTRY_DSN is empty; an empty SENTRY_RELEASE lets sentry-sdk find one
    SENTRY_DSN = "" if _is_blank("SENTRY_DSN") else _url("SENTRY_DSN", schemes=HTTP_SCHEMES)
    SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", validate=Length(min=1, max=64))
    SENTRY_RELEASE = env.str("SENTRY_RELEASE", "").strip()
    SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", validate=Range(min=0, max=1))
    # --- Liveness (core.liveness, core.health, docker/healthcheck.py) ---
    # Heartbeat files the worker, beat and relay refresh every HEARTBEAT_SECONDS while they work; the
    # container health checks read their age. Relative to the repository, or absolute.
    HEARTBEAT_DIR = REPO_DIR / env.path("HEARTBEAT_DIR")
    HEARTBEAT_SECONDS = env.float("HEARTBEAT_SECONDS", validate=Range(min=0.1, max=600))
    # --- Metrics for Prometheus (core.metrics) ---
    # Bearer token of the web process's GET /metrics. Empty: /metrics answers only while DEBUG (404 else)
    METRICS_TOKEN = env.str("METRICS_TOKEN", "", validate=_metrics_token).strip()
    # The exporters of the Celery worker, beat and the relay listen on METRICS_HOST, each on its port
    # (0: that process exports nothing)
    METRICS_HOST = env.str("METRICS_HOST", validate=Length(min=1, max=255))
    METRICS_WORKER_PORT = env.int("METRICS_WORKER_PORT", validate=Range(min=0, max=65535))
    METRICS_BEAT_PORT = env.int("METRICS_BEAT_PORT", validate=Range(min=0, max=65535))
    METRICS_RELAY_PORT = env.int("METRICS_RELAY_PORT", validate=Range(min=0, max=65535))
    DEMO_PASSWORD = env.str("DEMO_PASSWORD")
    SERVE_STATIC = DEBUG if _is_blank("SERVE_STATIC") else env.bool("SERVE_STATIC")
except EnvError as error:
    raise ImproperlyConfigured(f"Invalid configuration: {error}") from error

# --- Going live: unsafe secrets refused, HTTPS only, security headers, Content-Security-Policy ------
# With DEBUG=false, start-up stops when a secret is empty or still the value published in .env.default,
# or when SECRET_KEY is guessable; one message names every such variable (never its value).
_shipped = dotenv_values(REPO_DIR / ".env.default")  # the published values: never secrets in production
SECRET_KEY_MIN_LENGTH = 50  # Django's own rule for check --deploy (security.W009), with 5 distinct characters
SECRET_KEY_MIN_UNIQUE_CHARACTERS = 5
SECRET_KEY_MIN_BITS = 128  # Shannon entropy of the key's characters x its length: a rough lower bound
HSTS_PRODUCTION_SECONDS = 365 * 24 * 3600  # a year: what browsers' preload lists ask for


def _secret_key_weakness(key: str) -> str | None:
    """Why `key` would be guessable, or None."""
    if key == _shipped.get("SECRET_KEY"):
        return "is the value shipped in .env.default"
    if key.startswith("django-insecure"):
        return "is a Django development key (django-insecure-...)"
    if len(key) < SECRET_KEY_MIN_LENGTH:
        return f"is {len(key)} characters long (at least {SECRET_KEY_MIN_LENGTH})"
    if len(set(key)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS:
        return f"has fewer than {SECRET_KEY_MIN_UNIQUE_CHARACTERS} distinct characters"
    bits = -sum(count * math.log2(count / len(key)) for count in Counter(key).values())
    if bits < SECRET_KEY_MIN_BITS:
        return f"is too repetitive (about {bits:.0f} bits of entropy, at least {SECRET_KEY_MIN_BITS})"
    return None


def _unsafe_production_settings() -> list[str]:
    problems = []
    if weakness := _secret_key_weakness(SECRET_KEY):
        problems.append(f"SECRET_KEY {weakness}")
    secrets = {}
    for name, config in PROVIDERS.items():
        secrets[f"{name.upper()}_API_KEY"] = config["api_key"]
        if config["webhook_secret"] or f"{name.upper()}_WEBHOOK_SECRET" in _shipped:
            secrets[f"{name.upper()}_WEBHOOK_SECRET"] = config["webhook_secret"]
    for name, value in secrets.items():
        if not value.strip():
            problems.append(f"{name} is empty")
        elif value == _shipped.get(name):
            problems.append(f"{name} is the value shipped in .env.default")
    # Empty means "no demo users here" (seed_demo then refuses to run); the published one would give
    # anyone the demo operator's staff account.
    if DEMO_PASSWORD and DEMO_PASSWORD == _shipped.get("DEMO_PASSWORD"):
        problems.append("DEMO_PASSWORD is the value shipped in .env.default (set a secret, or empty it)")
    return problems


if not DEBUG and (_unsafe := _unsafe_production_settings()):
    raise ImproperlyConfigured(
        f"DEBUG=false refuses unsafe settings: {'; '.join(_unsafe)}. Give each a random value, for "
        "example: python -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )


try:
    # Empty follows DEBUG: on in production. A plain-HTTP deployment (http://localhost) turns them off.
    SECURE_SSL_REDIRECT = not DEBUG if _is_blank("SECURE_SSL_REDIRECT") else env.bool("SECURE_SSL_REDIRECT")
    SECURE_HSTS_SECONDS = (
        (0 if DEBUG else HSTS_PRODUCTION_SECONDS)
        if _is_blank("SECURE_HSTS_SECONDS")
        else env.int("SECURE_HSTS_SECONDS", validate=Range(min=0))
    )
    SECURE_HSTS_INCLUDE_SUBDOMAINS = (
        not DEBUG
        if _is_blank("SECURE_HSTS_INCLUDE_SUBDOMAINS")
        else env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS")
    )
    SECURE_HSTS_PRELOAD = not DEBUG if _is_blank("SECURE_HSTS_PRELOAD") else env.bool("SECURE_HSTS_PRELOAD")
except EnvError as error:
    raise ImproperlyConfigured(f"Invalid configuration: {error}") from error
# Container health checks (docker/healthcheck.py) and Prometheus (/metrics) call daphne over plain HTTP,
# past the TLS proxy.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# django-csp (csp.middleware.CSPMiddleware) sends it on every response. Pages load scripts and styles
# from files only (page data travels in json_script, which is not executed); JS may still set
# element.style (CSSOM), which style-src does not govern. 'self' covers ws:/wss: to the same host
# (CSP Level 3). data: images: Swagger UI's icons. The Swagger UI is the split view (core/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:", *_tile_origin(MAP_TILE_URL)],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
# --- end of going live ------------------------------------------------------------------------------

EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"]
EMAIL_PORT = _email["EMAIL_PORT"]
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS = _email["EMAIL_USE_TLS"]
EMAIL_USE_SSL = _email["EMAIL_USE_SSL"]
EMAIL_FILE_PATH = str(REPO_DIR / (_email["EMAIL_FILE_PATH"] or ".run/mail"))

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "django_celery_beat",
    "channels",
    "core",
    "orders",
    "realtime",
    "webhooks",
]

MIDDLEWARE = [
    # First: its X-Request-ID reaches every response, and its id every log line of the request
    "core.request_ids.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Before CommonMiddleware's ALLOWED_HOSTS check: Prometheus scrapes each replica by its address
    "core.metrics_web.metrics_middleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "core.urls"
ASGI_APPLICATION = "core.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [REPO_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.map_config",
            ],
        },
    },
]

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CACHE_URL,
        "KEY_PREFIX": "liveops",
        "TIMEOUT": 3600,
    }
}

# Redis pub/sub layer, chosen by measurement (README, "Scaling out"): channels_redis' list-based
# RedisChannelLayer drops idle consumers with redis-py 8's 5 s socket timeout (channels_redis #422).
# Our subclass tells consumers when Redis dropped their subscription, so their clients resume.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "realtime.layers.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [CHANNEL_LAYER_URL], "prefix": CHANNEL_LAYER_PREFIX},
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Password sign-ins through any door (API, login page, admin) are limited (core.auth)
AUTHENTICATION_BACKENDS = ["core.auth.LimitedModelBackend"]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
LOCALE_PATHS = [BASE_DIR / "locale"]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("uk", "Українська")]
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = REPO_DIR / env.path("STATIC_ROOT")  # an absolute STATIC_ROOT replaces REPO_DIR
STATICFILES_DIRS = [path for path in [REPO_DIR / "frontend" / "static"] if path.is_dir()]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# No SECURE_PROXY_SSL_HEADER: core.proxies removes X-Forwarded-Proto from every request and sets the
# ASGI scheme from it only for TRUSTED_PROXIES, so request.is_secure() follows that scheme.
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
X_FRAME_OPTIONS = "DENY"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PageNumberPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # One JSON parser for the whole API: too deep a body is a 400, a body that is not JSON a 415
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Throttles identify clients by REMOTE_ADDR alone: core.proxies has already put the client's address
    # there (from a trusted proxy) and dropped X-Forwarded-For, which DRF would otherwise believe.
    "NUM_PROXIES": 0,
}

# Tokens are stored hashed, expire, and are revoked by logout (django-rest-knox)
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=AUTH_TOKEN_TTL_HOURS),
    "AUTH_HEADER_PREFIX": "Token",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Live order operations API",
    "DESCRIPTION": "Create and follow food-delivery orders that span restaurants and a courier provider.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two choice sets share the field name "kind": named here, not by a hash (check --deploy warns otherwise)
    "ENUM_NAME_OVERRIDES": {
        "LegKindEnum": "orders.models.Leg.Kind",
        "AlertKindEnum": "orders.models.Alert.Kind",
        "StatusEnum": "orders.status.OrderStatus",
        "WebhookDeliveryStatusEnum": "webhooks.models.WebhookDelivery.Status",
    },
}

CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# Celery workers and beat use it too (core.logs.connect_celery_signals). Every line carries the request,
# task, order and leg ids bound where it was logged (core.logs.ContextFilter).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"ids": {"()": "core.logs.ContextFilter"}},
    "formatters": {"default": formatter_config(LOG_FORMAT)},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["ids"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Without Django's own console handler (DEBUG only) its lines would come out twice, once unformatted
        "django": {"handlers": [], "level": "INFO"},
        "django.db.backends": {"level": "INFO"},
    },
}

# Error tracking, in every process that loads these settings (web, Celery worker and beat)
SENTRY_ENABLED = init_sentry(
    dsn=SENTRY_DSN,
    environment=SENTRY_ENVIRONMENT,
    release=SENTRY_RELEASE,
    traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
)
