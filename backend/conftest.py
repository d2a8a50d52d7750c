"""Shared fixtures: real PostgreSQL (pytest-django's test database) and the real Redis of REDIS_URL."""

import socket
import uuid

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from orders.tests import factories


@pytest.fixture(autouse=True, scope="session")
def isolated_cache() -> None:
    """Cache keys of this test session never meet those of earlier sessions in the same Redis."""
    from django.conf import settings
    from django.test import override_settings

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    override_settings(CACHES={"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}}).enable()


@pytest.fixture
def demo(db: None) -> None:
    """The demo catalogue and users, exactly as `make run` seeds them."""
    call_command("seed_demo", verbosity=0)


@pytest.fixture
def customer(db: None):
    return factories.make_user("alice")


@pytest.fixture
def other_customer(db: None):
    return factories.make_user("bob")


@pytest.fixture
def operator(db: None):
    return factories.make_user("olena", is_staff=True)


@pytest.fixture
def restaurants(db: None):
    return factories.make_catalogue()


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def client_for():
    """An API client authenticated with the user's token, as a real client would be."""

    def build(user) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {factories.token_for(user)}")
        return client

    return build


@pytest.fixture
def unused_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
