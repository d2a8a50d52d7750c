import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from orders.models import Courier, Dish, Restaurant

pytestmark = pytest.mark.django_db


def snapshot() -> dict:
    users = get_user_model().objects.order_by("username")
    return {
        "restaurants": list(Restaurant.objects.values_list("name", "provider", "address")),
        "dishes": list(Dish.objects.values_list("id", "name", "price")),
        "users": list(users.values_list("id", "username", "password", "is_staff", "is_superuser")),
        "couriers": list(Courier.objects.values_list("id", "user__username", "name")),
    }


def test_seed_demo_creates_the_demo_world(settings):
    call_command("seed_demo", verbosity=0)
    assert sorted(Restaurant.objects.values_list("name", "provider")) == [
        ("Bueno", "bueno"),
        ("Melange", "melange"),
    ]
    assert Dish.objects.filter(restaurant__name="Melange").count() == 12
    assert Dish.objects.filter(restaurant__name="Bueno").count() == 12
    users = get_user_model().objects
    assert users.get(username="operator").is_staff
    assert not users.get(username="customer").is_staff
    for username in ["operator", "customer", "courier1", "courier2", "courier3"]:
        assert users.get(username=username).check_password(settings.DEMO_PASSWORD)
    assert sorted(Courier.objects.values_list("user__username", flat=True)) == [
        "courier1",
        "courier2",
        "courier3",
    ]
    assert users.get(username="operator").has_perm("orders.change_order")


def test_seed_demo_twice_changes_nothing():
    call_command("seed_demo", verbosity=0)
    first = snapshot()
    call_command("seed_demo", verbosity=0)
    assert snapshot() == first


def test_seed_demo_restores_a_changed_demo_password(settings):
    call_command("seed_demo", verbosity=0)
    user = get_user_model().objects.get(username="customer")
    user.set_password("something else")
    user.save()
    call_command("seed_demo", verbosity=0)
    user.refresh_from_db()
    assert user.check_password(settings.DEMO_PASSWORD)


def test_seed_demo_refuses_an_empty_demo_password(settings):
    """An empty DEMO_PASSWORD means "no demo users here" (production): nothing is created."""
    settings.DEMO_PASSWORD = ""
    with pytest.raises(CommandError, match="DEMO_PASSWORD"):
        call_command("seed_demo", verbosity=0)
    assert not get_user_model().objects.filter(username="operator").exists()
