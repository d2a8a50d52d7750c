from django.apps import AppConfig
from django.db.models.signals import post_migrate


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self) -> None:
        from .schedules import install_schedules

        post_migrate.connect(install_schedules, sender=self, dispatch_uid="orders.install_schedules")
