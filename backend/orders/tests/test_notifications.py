import pytest
from django.core import mail

from core.celery import app as celery_app
from orders import notifications, services
from orders.models import Order
from orders.tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(customer, restaurants):
    customer.email = "alice@example.com"
    customer.save()
    return factories.make_order(customer, restaurants["melange"])


@pytest.mark.parametrize(
    ("status", "subject"),
    [
        ("delivered", "Your order #{id} has been delivered"),
        ("failed", "We could not complete your order #{id}"),
        ("cancelled", "Your order #{id} was cancelled"),
    ],
)
def test_final_status_is_emailed_once(order, status, subject):
    Order.objects.filter(pk=order.pk).update(status=status, failure_reason="Melange down")
    assert notifications.send_order_email(order_id=order.pk) is True
    assert notifications.send_order_email(order_id=order.pk) is False, "a repeated task sends nothing"
    [email] = mail.outbox
    assert (email.to, email.subject) == (["alice@example.com"], subject.format(id=order.pk))
    assert "Melange down" not in email.body, "the cause is the operators' (orders.disclosure)"


def test_active_order_and_missing_address_send_nothing(order, customer):
    assert notifications.send_order_email(order_id=order.pk) is False
    customer.email = ""
    customer.save()
    Order.objects.filter(pk=order.pk).update(status="delivered")
    assert notifications.send_order_email(order_id=order.pk) is False
    assert notifications.send_order_email(order_id=999999) is False
    assert mail.outbox == []


def test_cancel_emails_after_commit(order, operator, django_capture_on_commit_callbacks):
    celery_app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            services.order_cancel(order_id=order.pk, actor=operator)
        assert mail.outbox == [], "nothing is sent before the commit"
        for callback in callbacks:
            callback()
    finally:
        celery_app.conf.task_always_eager = False
    assert [email.subject for email in mail.outbox] == [f"Your order #{order.pk} was cancelled"]
