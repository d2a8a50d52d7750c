from django.apps import AppConfig
from django.db.models.signals import post_migrate


class OrdersConfig(AppConfig):
    name = "orders"
    verbose_name = "Orders"

    def ready(self) -> None:
        from . import checks, relay, signals, tasks
        from .schedules import install_schedules

        post_migrate.connect(install_schedules, sender=self, dispatch_uid="orders.install_schedules")
        relay.subscribe(tasks.created_released)
        signals.orders_changed.connect(tasks.enqueue_follow_up, dispatch_uid="orders.enqueue_follow_up")
        signals.order_due.connect(tasks.enqueue_submit, dispatch_uid="orders.enqueue_submit")
        signals.order_notify.connect(tasks.enqueue_email, dispatch_uid="orders.enqueue_email")
        checks.register()
