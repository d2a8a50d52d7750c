"""Emails to customers when their order ends: delivered, failed or cancelled."""

import logging

from django.conf import settings
from django.core.mail import send_mail

from .models import Order
from .status import OrderStatus

logger = logging.getLogger(__name__)

MESSAGES = {
    OrderStatus.DELIVERED: (
        "Your order #{id} has been delivered",
        "Enjoy your meal! Order #{id} arrived at {address}.",
    ),
    # No cause: `failure_reason` is written for operators and may quote a provider's error.
    OrderStatus.FAILED: (
        "We could not complete your order #{id}",
        "Sorry: order #{id} could not be completed. You will not be charged.",
    ),
    OrderStatus.CANCELLED: (
        "Your order #{id} was cancelled",
        "Order #{id} was cancelled. You will not be charged.",
    ),
}


def send_order_email(*, order_id: int) -> bool:
    """Tell the customer how their order ended. Sent at most once per order and final status."""
    order = Order.objects.select_related("customer").filter(pk=order_id).first()
    if order is None or order.status not in MESSAGES:
        return False
    if not order.customer.email:
        logger.info(
            "Order %s is %s; customer %s has no email address", order.pk, order.status, order.customer
        )
        return False
    # Claim the email in the database: a retried or duplicated task finds it claimed and sends nothing.
    claimed = Order.objects.filter(pk=order.pk, status=order.status).exclude(notified_status=order.status)
    if not claimed.update(notified_status=order.status):
        return False
    subject, body = MESSAGES[OrderStatus(order.status)]
    context = {"id": order.pk, "address": order.delivery_address}
    try:
        send_mail(
            subject.format(**context),
            body.format(**context),
            settings.DEFAULT_FROM_EMAIL,
            [order.customer.email],
        )
    except Exception:
        Order.objects.filter(pk=order.pk).update(notified_status="")  # the task's retry sends it
        raise
    logger.info("Emailed %s about order %s (%s)", order.customer.email, order.pk, order.status)
    return True
