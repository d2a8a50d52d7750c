"""Emails to customers about their order: received, courier on the way, and how it ended.

Every email carries a new shareable tracking link (orders.services.tracking_link_create): the customer, or
anyone they forward it to, follows the order without signing in. Plain text with an HTML alternative, both
rendered from templates/orders/email/ in the customer's language.
"""

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils import formats, translation
from django.utils.translation import gettext, gettext_lazy

from . import alerts, services
from .models import Order
from .status import PIPELINE, OrderStatus

logger = logging.getLogger(__name__)

SUBJECTS = {
    OrderStatus.SCHEDULED: gettext_lazy("We received your order #%(id)s"),
    OrderStatus.DELIVERING: gettext_lazy("Your courier is on the way with order #%(id)s"),
    OrderStatus.DELIVERED: gettext_lazy("Your order #%(id)s has been delivered"),
    OrderStatus.FAILED: gettext_lazy("We could not complete your order #%(id)s"),
    OrderStatus.CANCELLED: gettext_lazy("Your order #%(id)s was cancelled"),
}
# The "received" email is still news until the courier leaves: its task may run after the kitchens took
# the order (submitted, cooking ...), which must not lose it.
RECEIVED_UNTIL = frozenset(PIPELINE[: PIPELINE.index(OrderStatus.DELIVERING)])


def send_order_email(*, order_id: int) -> bool:
    """Tell the customer where their order stands: received, on its way, or how it ended.

    Order.notified_status holds the last email claimed: the received one goes once per order, the others
    once each time the order reaches their status. Other statuses send nothing. Returns whether an email
    went out.
    """
    order = (
        Order.objects.select_related("customer", "courier__user")
        .prefetch_related("items__dish", "legs__restaurant")
        .filter(pk=order_id)
        .first()
    )
    if order is None:
        return False
    kind = _email_due(order)
    if kind is None:
        return False
    if not order.customer.email:
        logger.info(
            "No %s email for order %s: customer %s has no email address", kind, order.pk, order.customer
        )
        return False
    # Claim the email in the database: a retried or duplicated task finds it claimed and sends nothing.
    claimed = Order.objects.filter(pk=order.pk)
    if kind == OrderStatus.SCHEDULED:
        claimed = claimed.filter(status__in=RECEIVED_UNTIL, notified_status="")
    else:
        claimed = claimed.filter(status=kind).exclude(notified_status=kind)
    if not claimed.update(notified_status=kind):
        return False
    try:
        # A link made for an email that then fails to go is harmless: nobody ever saw its token.
        token, link = services.tracking_link_create(order_id=order.pk, actor=order.customer)
        message = _message(
            order, kind, link_url=f"{settings.PUBLIC_URL}/t/{token}/", link_expires=link.expires_at
        )
        message.send()
    except Exception:
        # Give the claim back for the task's retry: it sends the email then.
        Order.objects.filter(pk=order.pk, notified_status=kind).update(notified_status=order.notified_status)
        raise
    logger.info("Emailed %s about order %s (%s)", order.customer.email, order.pk, kind)
    return True


def _email_due(order: Order) -> OrderStatus | None:
    """Which email the order's status calls for (whether it was sent already is the claim's to say)."""
    if order.status in RECEIVED_UNTIL:
        return OrderStatus.SCHEDULED
    if order.status in SUBJECTS:
        return OrderStatus(order.status)
    return None


def customer_language(customer: AbstractBaseUser) -> str:
    """The language the customer reads. No language is stored per user: the site's."""
    return settings.LANGUAGE_CODE


def _message(
    order: Order, kind: OrderStatus, *, link_url: str, link_expires: datetime
) -> EmailMultiAlternatives:
    with translation.override(customer_language(order.customer)):
        context = {
            "kind": kind.value,
            "order_id": order.pk,
            "address": order.delivery_address,
            "link_url": link_url,
            "link_expires": link_expires,
        }
        if kind == OrderStatus.SCHEDULED:
            context["items"] = [
                {
                    "name": item.dish.name,
                    "quantity": item.quantity,
                    "amount": money(item.price * item.quantity),
                }
                for item in order.items.all()
            ]
            context["total"] = money(order.total)
            context["promised_at"] = alerts.order_promised_at(order)
        elif kind == OrderStatus.DELIVERING:
            context["courier_name"] = _courier_first_name(order)
        message = EmailMultiAlternatives(
            subject=SUBJECTS[kind] % {"id": order.pk},
            body=render_to_string("orders/email/order.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[order.customer.email],
        )
        message.attach_alternative(render_to_string("orders/email/order.html", context), "text/html")
    return message


def money(minor: int) -> str:
    """An amount in kopiykas as the customer reads hryvnias: "UAH 1,250.00", "1 250,00 грн"."""
    amount = formats.number_format(Decimal(minor) / 100, decimal_pos=2, use_l10n=True, force_grouping=True)
    return gettext("UAH %(amount)s") % {"amount": amount}


def _courier_first_name(order: Order) -> str:
    courier = order.courier
    if courier is None:
        return ""
    if courier.user.first_name:
        return courier.user.first_name
    names = courier.name.split()
    return names[0] if names else ""
