"""Going live: production refuses unsafe secrets, `check --deploy` is clean, every page sends the CSP.

Start-up is tested in subprocesses (settings are read once per process), each with this process's
environment less or plus the variables under test; what a page sends is tested in process.
"""

import os
import secrets
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from dotenv import dotenv_values

from orders.tests import factories

REPO = Path(__file__).resolve().parents[3]
SHIPPED = dotenv_values(REPO / ".env.default")
SECRETS = (
    "SECRET_KEY",
    "MELANGE_API_KEY",
    "BUENO_API_KEY",
    "UKLON_API_KEY",
    "RAKETA_API_KEY",
    "BUENO_WEBHOOK_SECRET",
    "RAKETA_WEBHOOK_SECRET",
)
HTTPS = (
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
)


def production_values() -> dict[str, str]:
    """The production values of the README's checklist, with fresh secrets."""
    return {
        "DEBUG": "false",
        **{name: secrets.token_urlsafe(50) for name in SECRETS},
        "DEMO_PASSWORD": "",  # no demo users in production
        "ALLOWED_HOSTS": "ops.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://ops.example.com",
        "SECURE_SSL_REDIRECT": "true",
        "SECURE_HSTS_SECONDS": "31536000",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
        "SECURE_HSTS_PRELOAD": "true",
        "WEBHOOKS_ALLOW_PRIVATE": "false",  # partners' endpoints never inside the deployment
    }


def run(code_or_args: str | list[str], *, unset=(), **values: str) -> subprocess.CompletedProcess:
    """Python code (or manage.py arguments) in a process whose environment is this one's without `unset`
    (so .env.default's value applies) and with `values`."""
    env = {name: value for name, value in os.environ.items() if name not in unset}
    env |= values | {
        "DJANGO_SETTINGS_MODULE": "core.settings",
        "PYTHONPATH": os.pathsep.join([str(REPO / "backend"), str(REPO)]),
    }
    if isinstance(code_or_args, str):
        command = [sys.executable, "-c", code_or_args]
    else:
        command = [sys.executable, str(REPO / "backend" / "manage.py"), *code_or_args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


LOAD = "from django.conf import settings; settings.INSTALLED_APPS"
HTTPS_SETTINGS = f"from django.conf import settings; print(*(getattr(settings, name) for name in {HTTPS}))"


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, "start-up was not refused"
    return result.stderr.strip().splitlines()[-1]


# --- production refuses unsafe settings ---------------------------------------------------------------


def test_production_starts_with_random_secrets():
    result = run(LOAD, **production_values())
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECRET_KEY", SHIPPED["SECRET_KEY"]),
        ("SECRET_KEY", "a" * 32),
        ("SECRET_KEY", "Xq7-Lm2pZr9_Wk4vTn8sYb3cHf6jGd1eRa5uQo0i"),  # random-looking, but 40 characters
        ("SECRET_KEY", "ab" * 30),  # fewer than 5 distinct characters
        ("SECRET_KEY", "abcde" * 10),  # 50 characters, 5 distinct: about 116 bits
        ("SECRET_KEY", "django-insecure-Xq7-Lm2pZr9_Wk4vTn8sYb3cHf6jGd1eRa5uQo0iXq7-Lm2pZr9_Wk4vTn8s"),
        ("MELANGE_API_KEY", ""),
        ("MELANGE_API_KEY", SHIPPED["MELANGE_API_KEY"]),
        ("BUENO_API_KEY", SHIPPED["BUENO_API_KEY"]),
        ("UKLON_API_KEY", "  "),
        ("UKLON_API_KEY", SHIPPED["UKLON_API_KEY"]),
        ("BUENO_WEBHOOK_SECRET", ""),
        ("BUENO_WEBHOOK_SECRET", SHIPPED["BUENO_WEBHOOK_SECRET"]),
        ("RAKETA_API_KEY", SHIPPED["RAKETA_API_KEY"]),
        ("RAKETA_WEBHOOK_SECRET", ""),
        ("RAKETA_WEBHOOK_SECRET", SHIPPED["RAKETA_WEBHOOK_SECRET"]),
        ("DEMO_PASSWORD", SHIPPED["DEMO_PASSWORD"]),
    ],
)
def test_production_refuses_an_unsafe_value_and_names_its_variable(variable, value):
    message = refusal(run(LOAD, **(production_values() | {variable: value})))
    assert variable in message
    others = set(SECRETS) | {"DEMO_PASSWORD"}
    assert not [name for name in others - {variable} if name in message], message
    if len(value.strip()) >= 8:
        assert value not in message, "the message must not print the secret"


def test_production_names_every_unsafe_variable_in_one_message():
    """With nothing set, every secret is .env.default's: all of them are named at once."""
    message = refusal(run(LOAD, unset=[*SECRETS, "DEMO_PASSWORD"], DEBUG="false"))
    for name in [*SECRETS, "DEMO_PASSWORD"]:
        assert name in message


def test_debug_mode_accepts_the_shipped_values():
    result = run(LOAD, unset=[*SECRETS, "DEMO_PASSWORD"], DEBUG="true")
    assert result.returncode == 0, result.stderr[-3000:]


# --- HTTPS settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"DEBUG": "false"}, "True 31536000 True True"),  # on in production when left empty
        ({"DEBUG": "true"}, "False 0 False False"),
        ({"DEBUG": "false", "SECURE_SSL_REDIRECT": "false", "SECURE_HSTS_SECONDS": "0"}, "False 0 True True"),
        (
            {"DEBUG": "false", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "no", "SECURE_HSTS_PRELOAD": "0"},
            "True 31536000 False False",
        ),
    ],
)
def test_https_settings_default_on_in_production_and_follow_the_environment(values, expected):
    production = {name: value for name, value in production_values().items() if name not in HTTPS}
    result = run(HTTPS_SETTINGS, unset=HTTPS, **(production | values))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == expected


@pytest.mark.parametrize(
    ("variable", "value"), [("SECURE_HSTS_SECONDS", "-1"), ("SECURE_SSL_REDIRECT", "maybe")]
)
def test_bad_https_value_names_the_variable(variable, value):
    assert variable in refusal(run(LOAD, **(production_values() | {variable: value})))


# --- manage.py check --deploy ------------------------------------------------------------------------


@pytest.mark.parametrize("https", ["explicit", "left empty"])
def test_check_deploy_is_clean_with_the_production_values(https):
    values = production_values()
    unset = HTTPS if https == "left empty" else ()
    values = {name: value for name, value in values.items() if name not in unset}
    result = run(["check", "--deploy", "--fail-level", "WARNING"], unset=unset, **values)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "no issues" in result.stdout, result.stdout


def test_check_deploy_warns_when_webhooks_may_reach_private_addresses():
    result = run(["check", "--deploy"], **(production_values() | {"WEBHOOKS_ALLOW_PRIVATE": "true"}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "webhooks.W001" in result.stderr, result.stderr


def test_check_deploy_on_plain_http_reports_only_the_missing_https():
    """A plain-HTTP site (http://localhost) turns the redirect and HSTS off; check --deploy says so."""
    values = production_values() | {"SECURE_SSL_REDIRECT": "false", "SECURE_HSTS_SECONDS": "0"}
    result = run(["check", "--deploy"], **values)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = {word.strip("():") for word in result.stderr.split() if word.startswith("(security.")}
    assert reported == {"security.W004", "security.W008"}, result.stderr


# --- what the pages send ----------------------------------------------------------------------------


def policy_of(response) -> dict[str, list[str]]:
    header = response.headers["Content-Security-Policy"]
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


class InlineCode(HTMLParser):
    """Collects what a strict CSP would refuse: inline scripts, <style> elements, style and on* attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and "src" not in attributes and attributes.get("type") != "application/json":
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        self.found += [f"{tag} {name}=" for name in attributes if name == "style" or name.startswith("on")]


@pytest.fixture
def pages(client, operator, customer, restaurants) -> list[str]:
    """Every kind of page, for a signed-in operator (staff, superuser for the admin's model pages); the
    tests add the sign-in page, signed out."""
    operator.is_superuser = True
    operator.save(update_fields=["is_superuser"])
    order = factories.make_order(customer, restaurants["melange"])
    client.force_login(operator)
    return [
        "/",
        f"/orders/{order.pk}/track/",
        "/admin/",
        "/admin/orders/order/",
        f"/admin/orders/order/{order.pk}/change/",
        "/api/docs/",
    ]


def test_every_page_sends_a_strict_content_security_policy(client, pages):
    for path in [*pages, "logout", "/login/"]:
        if path == "logout":
            client.logout()
            continue
        response = client.get(path)
        policy = policy_of(response)
        for name in ("default-src", "script-src", "style-src", "connect-src", "base-uri", "form-action"):
            assert policy[name] == ["'self'"], (path, name, policy)
        assert policy["object-src"] == policy["frame-ancestors"] == ["'none'"], (path, policy)
        assert not [s for sources in policy.values() for s in sources if s.startswith("'unsafe-")], path


def test_pages_hold_no_inline_code_the_policy_would_refuse(client, pages):
    for path in [*pages, "logout", "/login/"]:
        if path == "logout":
            client.logout()
            continue
        response = client.get(path)
        assert response.status_code == 200, path
        parser = InlineCode()
        parser.feed(response.content.decode())
        assert parser.found == [], path


def test_plain_http_is_redirected_except_the_health_check(client, settings, db):
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/login/")
    assert response.status_code == 301 and response.headers["Location"] == "https://testserver/login/"
    assert client.get("/healthz").status_code in (200, 503)  # answered, whatever the engines say
    response = client.get("/login/", secure=True)
    assert response.status_code == 200


def test_https_responses_carry_the_security_headers(client, settings, db):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = settings.SECURE_HSTS_PRELOAD = True
    response = client.get("/login/", secure=True)
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.cookies["csrftoken"] and client.cookies  # the CSRF cookie is set on the login form
    assert "Strict-Transport-Security" not in client.get("/login/").headers  # never over plain HTTP
