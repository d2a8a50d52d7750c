"""Small builders for test data; orders are created through the real service."""

import functools
import hashlib
import hmac
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import AbstractBaseUser
from knox.models import AuthToken

from orders import services, tasks
from orders.models import Courier, Dish, Order, OrderEvent, Restaurant

PASSWORD = "test-pass-2026"


@functools.cache
def password_hash() -> str:
    """PASSWORD hashed once per test process: a real PBKDF2 hash (daphne processes sign users in with
    it), without the ~0.3 s of hashing for every user a test makes."""
    return make_password(PASSWORD)


def make_user(username: str, *, is_staff: bool = False) -> AbstractBaseUser:
    return get_user_model().objects.create(username=username, password=password_hash(), is_staff=is_staff)


def token_for(user: AbstractBaseUser) -> str:
    """A new API token for `user` (knox keeps only its hash: this is the one chance to read it)."""
    return AuthToken.objects.create(user=user)[1]


def make_courier(username: str = "courier") -> Courier:
    return Courier.objects.create(user=make_user(username), name=username.title())


def make_catalogue() -> dict[str, Restaurant]:
    """Two restaurants on different providers, three active dishes each and one inactive."""
    catalogue = {
        "melange": Restaurant.objects.create(
            name="Melange", provider="melange", address="Khreshchatyk 22", lat=50.447731, lng=30.522507
        ),
        "bueno": Restaurant.objects.create(
            name="Bueno", provider="bueno", address="Vasylkivska 72", lat=50.42947, lng=30.51618
        ),
    }
    for restaurant in catalogue.values():
        for index, price in enumerate([10000, 15000, 20000]):
            Dish.objects.create(restaurant=restaurant, name=f"{restaurant.name} dish {index}", price=price)
        Dish.objects.create(
            restaurant=restaurant, name=f"{restaurant.name} retired", price=999, is_active=False
        )
    return catalogue


def dish(restaurant: Restaurant, index: int = 0) -> Dish:
    return restaurant.dishes.filter(is_active=True).order_by("price")[index]


def make_order(customer: AbstractBaseUser, *restaurants: Restaurant, quantity: int = 1) -> Order:
    return services.order_create(
        customer=customer,
        items=[services.ItemInput(dish=dish(restaurant), quantity=quantity) for restaurant in restaurants],
        delivery_address="Sahaidachnoho St, 10, Kyiv",
    )


def release(order: Order) -> Order:
    """Send a new order's follow-ups (its email, geocoding, first submission) as the relay sends them once
    it releases the order's `created` event (orders.tasks.created_released), for tests that run no relay;
    with eager tasks they are worked at once. The relay's own sending: orders/tests/test_api.py."""
    tasks.created_released(list(order.events.filter(type=OrderEvent.Type.CREATED)))
    return order


def signature_of(body: bytes, secret: str | None = None) -> str:
    """Bueno's `X-Bueno-Signature` of a body: sha256=<hex HMAC-SHA256>."""
    secret = settings.PROVIDERS["bueno"]["webhook_secret"] if secret is None else secret
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def raketa_signature(body: bytes, *, at: int | None = None, secret: str | None = None) -> str:
    """Raketa's `X-Raketa-Signature` of a body: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>."""
    secret = settings.PROVIDERS["raketa"]["webhook_secret"] if secret is None else secret
    at = int(time.time()) if at is None else at
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"
