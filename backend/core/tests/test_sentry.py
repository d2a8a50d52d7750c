"""Error tracking (core.observability): off without SENTRY_DSN; on, a failing request reaches the DSN's
server with its environment, release and exception, and without cookies, tokens or user details.

The Sentry server is a local HTTP server that records the envelopes sentry-sdk posts to it."""

import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import sentry_sdk
from django.test import Client

from core.observability import init_sentry, scrub_event
from core.tests.error_urls import FAILURE_MESSAGE
from core.tests.test_settings import load_settings
from orders.tests import factories

BACKEND = Path(__file__).resolve().parents[2]


class EnvelopeServer(http.server.ThreadingHTTPServer):
    """Stands in for sentry.io: keeps the body of every envelope posted to it, decompressed."""

    daemon_threads = True

    def __init__(self) -> None:
        self.envelopes: list[bytes] = []
        super().__init__(("127.0.0.1", 0), EnvelopeHandler)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server_address[1]}/1"

    def events(self) -> list[dict]:
        """The `event` items of every envelope received."""
        return [
            payload
            for envelope in self.envelopes
            for kind, payload in parse_envelope(envelope)
            if kind == "event"
        ]


class EnvelopeHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        else:
            assert not encoding, f"unexpected Content-Encoding {encoding}"
        self.server.envelopes.append(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def parse_envelope(body: bytes) -> list[tuple[str, dict]]:
    """(item type, JSON payload) of each item: a header line, then per item a header line and a payload of
    `length` bytes (or up to the next newline)."""
    _, _, rest = body.partition(b"\n")
    items = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        header = json.loads(header_line)
        if "length" in header:
            payload, rest = rest[: header["length"]], rest[header["length"] :].removeprefix(b"\n")
        else:
            payload, _, rest = rest.partition(b"\n")
        try:
            items.append((header["type"], json.loads(payload)))
        except ValueError:
            items.append((header["type"], {}))
    return items


@pytest.fixture
def sentry_server() -> Iterator[EnvelopeServer]:
    server = EnvelopeServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture
def sentry_on(sentry_server) -> Iterator[EnvelopeServer]:
    """Sentry reporting to the local server, as settings would start it; off again afterwards."""
    assert not sentry_sdk.get_client().is_active(), "the test settings leave Sentry off"
    assert init_sentry(
        dsn=sentry_server.dsn, environment="staging-test", release="liveops@1.2.3", traces_sample_rate=0
    )
    assert not sentry_sdk.get_client().should_send_default_pii()
    yield sentry_server
    client = sentry_sdk.get_client()
    client.close(timeout=5)
    sentry_sdk.get_global_scope().set_client(None)


@pytest.mark.urls("core.tests.error_urls")
def test_a_failing_request_is_reported_without_personal_data(sentry_on, db):
    user = factories.make_user("reporter")
    user.email = "reporter@example.com"
    user.save()
    client = Client(raise_request_exception=False)
    client.force_login(user)
    session_cookie = client.cookies["sessionid"].value
    response = client.get(
        "/fail/?page=1",
        headers={"Authorization": "Token very-secret-token", "X-Request-ID": "sentry-req-1"},
    )
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)

    (event,) = sentry_on.events()
    assert event["environment"] == "staging-test"
    assert event["release"] == "liveops@1.2.3"
    (exception,) = event["exception"]["values"]
    assert (exception["type"], exception["value"]) == ("RuntimeError", FAILURE_MESSAGE)
    assert event["tags"]["request_id"] == "sentry-req-1", "the report names the request's log lines"
    headers = {name.lower() for name in event["request"].get("headers", {})}
    assert not headers & {"cookie", "authorization"}
    assert "cookies" not in event["request"]
    assert "REMOTE_ADDR" not in event["request"].get("env", {})
    assert not {"email", "ip_address", "username"} & set(event.get("user", {}))
    raw = b"".join(sentry_on.envelopes)
    for secret in (b"very-secret-token", session_cookie.encode(), b"reporter@example.com"):
        assert secret not in raw


def test_scrub_event_removes_what_identifies_a_person():
    """before_send itself: should an integration (or send_default_pii) put them in, they still go."""
    event = {
        "request": {
            "url": "https://ops.example.com/api/orders/",
            "cookies": {"sessionid": "abc"},
            "headers": {"Cookie": "sessionid=abc", "authorization": "Token t", "User-Agent": "curl"},
            "env": {"REMOTE_ADDR": "203.0.113.9", "SERVER_NAME": "web"},
        },
        "user": {"id": "17", "email": "a@example.com", "ip_address": "203.0.113.9", "username": "alice"},
    }
    scrubbed = scrub_event(event, {})
    assert scrubbed["request"]["headers"] == {"User-Agent": "curl"}
    assert "cookies" not in scrubbed["request"]
    assert scrubbed["request"]["env"] == {"SERVER_NAME": "web"}
    assert scrubbed["user"] == {"id": "17"}
    assert "user" not in scrub_event({"user": {"email": "a@example.com"}}, {})


CLIENT_STATE = (
    "import sentry_sdk; from django.conf import settings; settings.INSTALLED_APPS; "
    "client = sentry_sdk.get_client(); "
    "print(client.is_active(), client.options['environment'], client.options['release'], "
    "settings.SENTRY_ENABLED)"
)


def client_state(**environment: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_STATE],
        cwd=BACKEND,
        env={**os.environ, **environment, "DJANGO_SETTINGS_MODULE": "core.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_sentry_stays_off_without_a_dsn():
    active, *_, enabled = client_state(SENTRY_DSN="")
    assert (active, enabled) == ("False", "False")


def test_loading_the_settings_turns_sentry_on_in_every_process():
    """Web, worker and beat all load the settings: each reports with the configured environment."""
    state = client_state(
        SENTRY_DSN="http://public@127.0.0.1:9/1", SENTRY_ENVIRONMENT="production", SENTRY_RELEASE="v9"
    )
    assert state == ["True", "production", "v9", "True"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SENTRY_DSN", "not a dsn"), ("SENTRY_TRACES_SAMPLE_RATE", "2"), ("SENTRY_ENVIRONMENT", "")],
)
def test_bad_sentry_settings_name_the_variable(variable, value):
    result = load_settings(**{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr.splitlines()[-1]
