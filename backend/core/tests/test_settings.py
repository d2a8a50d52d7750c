"""Configuration errors stop start-up with a message that names the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BACKEND = Path(__file__).resolve().parents[2]


def load_settings(**overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **overrides, "DJANGO_SETTINGS_MODULE": "core.settings"}
    return subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; settings.INSTALLED_APPS"],
        cwd=BACKEND,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_environment_loads():
    assert load_settings().returncode == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WEB_PORT", "eighty"),
        ("WEB_PORT", "70000"),
        ("DEBUG", "maybe"),
        ("DATABASE_URL", "not a url"),
        ("REDIS_URL", "http://127.0.0.1:6379"),
        ("CHANNEL_LAYER_URL", "redis//broken"),
        ("MELANGE_URL", "no-scheme"),
        ("PROVIDER_TIMEOUT_SECONDS", "-1"),
        ("POLL_INTERVAL_SECONDS", "soon"),
        ("EMAIL_URL", "pigeon://coop"),
        ("LOG_LEVEL", "LOUD"),
        ("MAX_REQUEST_BYTES", "100"),
        ("TRUSTED_PROXIES", "172.30.80.10,nginx"),
        ("MAP_TILE_URL", "https://tiles.example.com/tile.png"),
        ("MAP_TILE_URL", "javascript:alert(1)//{z}/{x}/{y}"),
        ("GEOCODER_URL", "nominatim.example.com"),
        ("GEOCODER_RATE", "fast"),
        ("GEOCODER_USER_AGENT", ""),
        ("PUBLIC_URL", "ftp://example.com"),
    ],
)
def test_bad_value_names_the_variable(variable, value):
    result = load_settings(**{variable: value})
    assert result.returncode != 0
    assert variable in result.stderr.splitlines()[-1]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15"),
        ("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
        ("CACHE_URL", "redis://cache:6379/1"),
        ("CHANNEL_LAYER_URL", "rediss://user:secret@redis.example:6380/0"),
        ("MELANGE_URL", "https://api.melange.example"),
    ],
)
def test_separate_engine_urls_are_accepted(variable, value):
    assert load_settings(**{variable: value}).returncode == 0


def test_empty_database_url_explains_embedded_mode():
    result = load_settings(DATABASE_URL="")
    assert result.returncode != 0
    assert "DATABASE_URL is empty" in result.stderr


# Production (DEBUG=false) refusals of unsafe secrets: test_security_settings.py


def csp_of(**overrides: str) -> str:
    env = {**os.environ, **overrides, "DJANGO_SETTINGS_MODULE": "core.settings"}
    code = "from django.conf import settings as s; print(s.CONTENT_SECURITY_POLICY['DIRECTIVES']['img-src'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=BACKEND, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    ("template", "source"),
    [
        ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", "https://tile.openstreetmap.org"),
        ("https://{s}.tiles.example.com/{z}/{x}/{y}.png", "https://*.tiles.example.com"),
        ("http://10.0.0.7:8080/styles/basic/{z}/{x}/{y}.png", "http://10.0.0.7:8080"),
    ],
)
def test_the_tile_server_may_serve_images_and_nothing_else(template, source):
    img_src = csp_of(MAP_TILE_URL=template)
    assert f"'{source}'" in img_src
    assert csp_of(MAP_TILE_URL="").count("http") == 0  # tiles off: no outside image source
