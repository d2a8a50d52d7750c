"""Demo data: two restaurants (at their real Kyiv coordinates) with a dozen dishes each, an operator,
a customer and three couriers.

Idempotent: a second run finds everything in place and writes nothing. The users' password is
DEMO_PASSWORD; an empty one means this deployment has no demo users, so the command refuses to run
(core/settings.py refuses .env.default's published password when DEBUG is off).
"""

import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from orders.models import Courier, Dish, Restaurant

logger = logging.getLogger(__name__)

RESTAURANTS: dict[str, dict[str, Any]] = {
    "Melange": {
        "provider": "melange",
        "address": "Khreshchatyk St, 22, Kyiv",
        "point": (50.447731, 30.522507),  # by Maidan Nezalezhnosti
        "dishes": [
            ("Borscht with pampushky", 18500),
            ("Varenyky with potato", 16000),
            ("Chicken Kyiv", 27500),
            ("Holubtsi", 21000),
            ("Deruny with sour cream", 15500),
            ("Banosh with brynza", 19000),
            ("Salo platter", 14000),
            ("Olivier salad", 13500),
            ("Syrnyky", 14500),
            ("Pork shashlyk", 32000),
            ("Uzvar", 6000),
            ("Honey cake", 11000),
        ],
    },
    "Bueno": {
        "provider": "bueno",
        "address": "Velyka Vasylkivska St, 72, Kyiv",
        "point": (50.429470, 30.516180),  # near Olimpiiska metro station
        "dishes": [
            ("Margherita pizza", 24000),
            ("Pepperoni pizza", 28000),
            ("Quattro formaggi", 31000),
            ("Carbonara", 26500),
            ("Lasagne", 29000),
            ("Risotto ai funghi", 27000),
            ("Caesar salad", 19500),
            ("Caprese", 17500),
            ("Minestrone", 14500),
            ("Tiramisu", 13000),
            ("Panna cotta", 12000),
            ("Lemonade", 7000),
        ],
    },
}

# (username, name, the driver id and phone Uklon knows them by): the simulator's first three drivers.
COURIERS = [
    ("courier1", "Ostap Kovalenko", "drv_1", "+380670000001"),
    ("courier2", "Iryna Melnyk", "drv_2", "+380670000002"),
    ("courier3", "Taras Bondar", "drv_3", "+380670000003"),
]
OPERATOR_APPS = ["orders", "django_celery_beat"]


class Command(BaseCommand):
    help = "Create demo restaurants, dishes and users (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEMO_PASSWORD:
            raise CommandError("DEMO_PASSWORD is empty: set it to create the demo users (operator is staff).")
        with transaction.atomic():
            changes = self._seed()
        logger.debug("seed_demo wrote: %s", ", ".join(changes))
        summary = f"{len(changes)} objects created or reset" if changes else "nothing to change"
        self.stdout.write(f"Demo data ready ({summary}).")

    def _seed(self) -> list[str]:
        changes: list[str] = []
        for name, spec in RESTAURANTS.items():
            lat, lng = spec["point"]
            restaurant, created = Restaurant.objects.get_or_create(
                name=name,
                defaults={"provider": spec["provider"], "address": spec["address"], "lat": lat, "lng": lng},
            )
            if created:
                changes.append(f"restaurant {name}")
            elif restaurant.point is None:  # seeded before restaurants had coordinates
                restaurant.lat, restaurant.lng = lat, lng
                restaurant.save(update_fields=["lat", "lng"])
                changes.append(f"restaurant {name} location")
            for dish_name, price in spec["dishes"]:
                _, created = Dish.objects.get_or_create(
                    restaurant=restaurant, name=dish_name, defaults={"price": price}
                )
                if created:
                    changes.append(f"dish {dish_name}")

        operators, created = Group.objects.get_or_create(name="Operators")
        if created:
            operators.permissions.set(Permission.objects.filter(content_type__app_label__in=OPERATOR_APPS))
            changes.append("group Operators")

        operator, created = self._user("operator", is_staff=True)
        if created:
            operator.groups.add(operators)
            changes.append("user operator")
        if self._user("customer", email="customer@example.com", first_name="Oksana")[1]:
            changes.append("user customer")
        for username, full_name, driver_id, phone in COURIERS:
            user, created = self._user(username)
            if created:
                changes.append(f"user {username}")
            _, created = Courier.objects.get_or_create(
                user=user, defaults={"name": full_name, "external_id": driver_id, "phone": phone}
            )
            if created:
                changes.append(f"courier {username}")
        return changes

    def _user(
        self, username: str, *, is_staff: bool = False, email: str = "", first_name: str = ""
    ) -> tuple[Any, bool]:
        """Get or create a demo user whose password is DEMO_PASSWORD (reset only when it differs)."""
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": is_staff, "email": email, "first_name": first_name}
        )
        if created or not user.check_password(settings.DEMO_PASSWORD):
            user.set_password(settings.DEMO_PASSWORD)
            user.save(update_fields=["password"])
            created = True
        return user, created
